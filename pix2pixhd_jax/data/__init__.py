"""Data: synthetic street scenes, pix2pixHD/Cityscapes folders, TFDS builders, one grain pipeline.

  synthetic.py       seeded procedural (label, instance, photo) triplets in Cityscapes ids
  make_synthetic.py  CLI writing N scenes in the official folder layout
  folders.py         official {phase}_label/_inst/_img and Cityscapes gtFine/leftImg8bit readers
  tfds_builders.py   ArrayRecord TFDS builders + TfdsSource (random access via tfds.data_source)
  sources.py         make_source(kind, ...) from a data config
  transforms.py      resize_or_crop modes, same crop/flip for all maps, [-1, 1] photos
  pipeline.py        build_dataset: shard, shuffle, epochs, transforms, batches, resumable iterator
  cityscapes.py      label ids, names, colours (format facts)
Nothing here imports the models; batches are host-local numpy arrays.
"""
