"""The run configs, importable as `pix2pixhd_jax.configs` (e.g. `from pix2pixhd_jax.configs import default`).

They live in the repository's top-level configs/ folder, so `--config=configs/x.py` works from the
repository root. An install copies that folder into the package (setup.cfg maps
pix2pixhd_jax.configs to it) and leaves this file out; in a source checkout this file points the
package at the folder.
"""
import os

__path__ = [os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")]
