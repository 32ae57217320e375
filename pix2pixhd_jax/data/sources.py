"""One entry point from a data config to a random-access source (what the trainer calls)."""
from __future__ import annotations

from typing import Any

from pix2pixhd_jax.data import folders, synthetic

SOURCE_KINDS = ("synthetic", "folder", "cityscapes", "tfds")


def make_source(kind: str, *, split: str = "train", label_nc: int = 35, use_instance: bool = True,
                load_image: bool | None = True, dataroot: str = "", max_dataset_size: int | None = None,
                num_examples: int = 0, width: int = 512, height: int = 256, seed: int = 0,
                tfds_name: str = "", tfds_data_dir: str | None = None) -> Any:
    """Build the source `kind`: synthetic (num_examples, width, height, seed), folder / cityscapes
    (dataroot, split = official phase or Cityscapes split) or tfds (tfds_name, tfds_data_dir).
    load_image=None reads photos only where the folder has them (inference on label maps alone)."""
    if kind == "synthetic":
        if label_nc < 34:
            raise ValueError(f"synthetic scenes use Cityscapes label ids 0..33; label_nc={label_nc} cannot hold them")
        return synthetic.SyntheticSource(num_examples, width=width, height=height, seed=seed,
                                         use_instance=use_instance)
    if kind == "folder":
        return folders.OfficialFolderSource(dataroot, split, label_nc=label_nc, use_instance=use_instance,
                                            load_image=load_image, max_dataset_size=max_dataset_size)
    if kind == "cityscapes":
        return folders.CityscapesSource(dataroot, split, label_nc=label_nc, use_instance=use_instance,
                                        load_image=load_image, max_dataset_size=max_dataset_size)
    if kind == "tfds":
        from pix2pixhd_jax.data import tfds_builders  # imports TFDS only when asked for

        return tfds_builders.TfdsSource(tfds_name, split=split, data_dir=tfds_data_dir)
    raise ValueError(f"unknown data source kind {kind!r}; expected one of {SOURCE_KINDS}")
