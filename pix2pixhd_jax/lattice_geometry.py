"""Where a p-pixel lattice sits in an image's spectrum, and which bins each of its bins is compared with.

One definition for the two users: the periodic-artifact figure (evaluation/lattice.py, numpy) and
the self-referenced lattice penalty (losses.lattice_loss, jnp). Both take these index arrays as
static facts of the image size; neither module imports the other.
"""
from __future__ import annotations

import numpy as np


def lattice_bins(h: int, w: int, period: int) -> np.ndarray:
    """(N, 2) frequency bins (row, column) of a `period`-pixel lattice in an h x w spectrum, DC left out."""
    a, b = np.meshgrid(np.arange(period), np.arange(period), indexing="ij")
    bins = np.stack([(a.ravel() * h // period) % h, (b.ravel() * w // period) % w], axis=1)
    return bins[(bins != 0).any(axis=1)]


def neighbour_bins(h: int, w: int, period: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, keep), each (N, 4): the bins each lattice bin is compared with, and which of them count.

    On an axis of the spectrum (row or column 0) the bins 1 and 2 away along that axis, since
    axis-aligned edges (buildings, the horizon) put far more power on the axes than beside them;
    elsewhere the bins up, down, left and right (wrapping). Neighbours that are lattice bins or DC
    do not count (keep False).
    """
    bins = lattice_bins(h, w, period)
    on_row0, on_col0 = bins[:, :1] == 0, bins[:, 1:] == 0
    along = np.array([-2, -1, 1, 2])
    dy = np.where(on_row0, 0, np.where(on_col0, along, np.array([-1, 1, 0, 0])))
    dx = np.where(on_row0, along, np.where(on_col0, 0, np.array([0, 0, -1, 1])))
    rows, cols = (bins[:, :1] + dy) % h, (bins[:, 1:] + dx) % w
    excluded = np.zeros((h, w), bool)
    excluded[bins[:, 0], bins[:, 1]] = True
    excluded[0, 0] = True
    return rows, cols, ~excluded[rows, cols]
