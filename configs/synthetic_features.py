"""The README main job with per-instance appearance features (E, feature banks, the editor).

configs/synthetic_demo.py plus model.instance_feat and the appearance recipe below (all beyond
the paper; each is off in configs/default.py, so the official recipe stays one flag away):

  model.encoder_image_skip   E's output conv sees the photo: E's instance norm otherwise removes
                             each image's mean colour, and features end up relative, not absolute
  model.feature_skip_G       G's output conv sees the features: a feature sets a region's colour
                             through one conv instead of every normalised layer of G
  loss.lambda_region_colour  L1 of per-region mean colours, fake vs real: G must render what E encodes
  loss.lambda_feature_colour anchors E's 3 channels to the region's mean colour: clusters span the
                             real colours, and a colour can be asked for directly
  data.recolour_p            half the training cars take a random mean colour: the dataset has 12 car
                             colours, and the picker's saturated red / green lie outside them
  loss.lambda_lattice        no 8- / 4-pixel grid over the images the editor shows (synthetic_demo.py's;
                             its noise inputs are off here, see below)

Measured with benchmarks/feature_control.py (1000 steps at 128x64, ngf 16): per-channel r of
cluster colour vs rendered car colour 0.88 / 0.74 / 0.13 (R/G/B) with the official recipe,
0.99 / 0.99 / 0.99 with this one (before recolouring and the lattice penalty joined it); the numbers
and the command are in benchmarks/RESULTS.md.
"""
from pix2pixhd_jax.configs import synthetic_demo


def get_config():
    config = synthetic_demo.get_config()
    m, l = config.model, config.loss
    m.instance_feat = True
    m.encoder_image_skip = True
    m.feature_skip_G = True
    l.lambda_region_colour = 10.0
    l.lambda_feature_colour = 10.0
    # The editor's colour picker (python -m benchmarks.colour_picker, 5 cars, 300 steps): red (255,32,32)
    # renders (174,110,49) without recolouring (199 steps), (217,49,40) with it; green (40,200,60)
    # (116,109,80) -> (68,176,55); all numbers and commands in benchmarks/RESULTS.md.
    config.data.recolour_p = 0.5
    # The lattice penalty as measured for the editor (weight 1; the demo's is 0.3): 300 steps, 100 held-out
    # scenes: lattice figure 5.39 / 15.51 -> 0.87 / 0.61 (real photos ~1), LPIPS 0.419 -> 0.446, mIoU 0.424 -> 0.415.
    l.lambda_lattice = 1.0
    # Without the demo's noise inputs: the editor renders a local edit in a window around it, which needs
    # a G whose every pixel is a function of its neighbourhood alone (a noise draw is one per image).
    m.noise_inputs = False
    return config
