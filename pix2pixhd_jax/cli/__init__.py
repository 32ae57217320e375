"""Command-line entry points, one module each, all built on `process` (flags, set-up, errors).

  train            python -m pix2pixhd_jax.cli.train --config=configs/x.py --workdir=W
  evaluate         L1 / LPIPS / FID / KID / segmentation score of a run's checkpoint
  synthesize       images (and feature draws) for a split's label maps
  encode_features  the per-class feature bank of a run trained with instance features
  edit             apply a JSON edit script to a scene
  train_segmenter  the segmenter behind the segmentation score
  make_synthetic   write synthetic street scenes in the official folder layout
  convert          official PyTorch .pth -> Orbax
  tfds_prepare     build a TFDS ArrayRecord dataset
"""
