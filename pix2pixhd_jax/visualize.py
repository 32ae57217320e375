"""Sample grids people can look at: colourised label | synthesized | real, as PNG plus index.html."""
from __future__ import annotations

import html
import re

import numpy as np
from PIL import Image

from pix2pixhd_jax import storage
from pix2pixhd_jax.data.cityscapes import colorize_labels


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[-1, 1] float image -> uint8."""
    return np.clip(np.round((np.asarray(image, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def label_to_rgb(label: np.ndarray, label_nc: int) -> np.ndarray:
    """Colourise a label map (Cityscapes palette) or pass an RGB label image through."""
    return to_uint8(label) if label_nc == 0 else colorize_labels(label)


def sample_grid(samples: dict[str, np.ndarray], fake: np.ndarray, label_nc: int) -> np.ndarray:
    """One row per example: label | fake | real (if present)."""
    rows = []
    for i in range(fake.shape[0]):
        cols = [label_to_rgb(samples["label"][i], label_nc), to_uint8(fake[i])]
        if "image" in samples:
            cols.append(to_uint8(samples["image"][i]))
        rows.append(np.concatenate(cols, axis=1))
    return np.concatenate(rows, axis=0)


def write_sample_grid(workdir: str, step: int, samples: dict[str, np.ndarray], fake: np.ndarray, *,
                      label_nc: int) -> str:
    """Write samples/step_{step:08d}.png and refresh samples/index.html (newest first); local or gs://."""
    folder = storage.join(workdir, "samples")
    name = f"step_{step:08d}.png"
    storage.write_image(storage.join(folder, name), Image.fromarray(sample_grid(samples, fake, label_nc)))
    write_index(folder)
    return storage.join(folder, name)


def write_index(folder: str) -> None:
    names = sorted((n for n in storage.listdir(folder) if re.fullmatch(r"step_\d+\.png", n)), reverse=True)
    items = "\n".join(f"<h3>step {int(n[5:13])}</h3><img src=\"{html.escape(n)}\" style=\"max-width:100%\">"
                      for n in names)
    storage.write_text(storage.join(folder, "index.html"),
                       "<!doctype html><html><head><meta charset=\"utf-8\"><title>pix2pixhd-jax samples</title></head>"
                       f"<body><p>Each row: label | synthesized | real.</p>\n{items}\n</body></html>\n")
