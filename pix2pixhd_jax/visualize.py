"""Sample grids people can look at: colourised label | synthesized | real, as PNG plus index.html."""
from __future__ import annotations

import html
import re
from typing import Optional, Sequence

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


def write_sample_grid(folder: str, step: int, samples: dict[str, np.ndarray], fake: np.ndarray, *,
                      label_nc: int) -> str:
    """Write samples/step_{step:08d}.png and refresh samples/index.html (newest first); local or gs://."""
    name = f"step_{step:08d}.png"
    storage.write_image(storage.join(folder, name), Image.fromarray(sample_grid(samples, fake, label_nc)))
    write_index(folder)
    return storage.join(folder, name)


def write_index(folder: str) -> None:
    """samples/index.html: every step_*.png of `folder`, newest first."""
    names = sorted((n for n in storage.listdir(folder) if re.fullmatch(r"step_\d+\.png", n)), reverse=True)
    write_image_page(folder, "pix2pixhd-jax samples", [[n] for n in names],
                     captions=[f"step {int(n[5:13])}" for n in names], note="Each row: label | synthesized | real.")


def write_image_page(folder: str, title: str, rows: Sequence[Sequence[Optional[str]]], *,
                     columns: Sequence[str] = (), captions: Sequence[str] = (), note: str = "") -> str:
    """Write folder/index.html, a table of images people can open -> its path (local or gs://).

    rows: per row, image file names relative to `folder` (None leaves a cell empty); columns: the
    header cells; captions: a heading above each row; note: a line above the table. Text is escaped.
    """
    width = max([len(columns)] + [len(r) for r in rows])
    lines = [f"<p>{html.escape(note)}</p>"] if note else []
    lines.append("<table>")
    if columns:
        lines.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>")
    for i, row in enumerate(rows):
        if i < len(captions):
            lines.append(f'<tr><td colspan="{width}"><h3>{html.escape(captions[i])}</h3></td></tr>')
        cells = [f'<td><img src="{html.escape(n)}"></td>' if n else "<td></td>" for n in row]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    path = storage.join(folder, "index.html")
    storage.write_text(path, f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                       "<style>img{max-width:100%}td{vertical-align:top}</style></head><body>\n"
                       + "\n".join(lines) + "\n</body></html>\n")
    return path
