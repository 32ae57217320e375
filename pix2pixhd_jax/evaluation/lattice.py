"""Periodic-artifact figure: how much a p-pixel lattice stands out of an image's power spectrum.

Strided transposed convolutions (the official generator's upsampling) give even and odd output
pixels different sums of kernel taps, and stacked 2x layers leave a faint grid with a period of
2, 4, 8, ... pixels over every synthesized image. A p-periodic pattern puts all its energy on the
frequency bins (a*H/p, b*W/p), a, b in 0..p-1; a natural image spreads its energy smoothly over
frequencies, so at those bins it holds about as much as at their neighbours.

Definition (lattice_ratio, per image; evaluation reports the mean over images):
  1. x = the image as float64 (H, W, C); H and W must be multiples of the period p.
  2. Remove the border jumps: x := the periodic component of x (Moisan's periodic plus smooth
     decomposition, per channel). The FFT treats an image as tiled, and the jumps between
     opposite borders would otherwise put a cross of energy on the axes, where lattice bins lie.
  3. P = sum over channels of |FFT2(x - mean(x))|^2.
  4. Lattice bins L = {(a*H/p mod H, b*W/p mod W): 0 <= a, b < p} without (0, 0). Each is
     compared with 4 neighbouring bins (wrapping): on an axis of the spectrum (row or column 0)
     the bins 1 and 2 away along that axis, since axis-aligned edges (buildings, the horizon) put
     far more power on the axes than beside them; elsewhere the bins up, down, left and right.
     Neighbours that are lattice bins or (0, 0) are left out. (Bins and neighbours:
     pix2pixhd_jax/lattice_geometry.py, shared with the self-referenced lattice penalty.)
  5. ratio = (sum over L of P[bin] + eps) / (sum over L of mean(P[neighbours of bin]) + eps),
     eps = 1e-9 * len(L) * mean(P) + 1e-30 (a bin set holding a billionth of the image's average
     power per bin counts as empty, so a flat or very smooth image scores about 1).
A ratio near 1 means no lattice (real photos: about 1); 2 means the lattice bins hold twice the
power their surroundings predict.
"""
from __future__ import annotations

import numpy as np

from pix2pixhd_jax.lattice_geometry import lattice_bins, neighbour_bins

# The periods evaluation reports: the 4- and 8-pixel grids that two and three stacked 2x
# upsamplings leave (part of the measure's definition, not a tunable).
REPORTED_PERIODS = (8, 4)


def power_spectrum(image: np.ndarray) -> np.ndarray:
    """(H, W) power of an (H, W, C) image's periodic component, summed over channels, DC set to 0.

    Moisan (2011): image = periodic + smooth, where the smooth part s solves laplacian(s) = the
    border jumps of the image, which the DFT diagonalises; so FFT(periodic) = FFT(image) - FFT(s),
    and the cross of border energy on the axes is gone while the interior detail stays.
    """
    u = np.asarray(image, np.float64)
    h, w = u.shape[:2]
    v = np.zeros_like(u)
    v[0] += u[-1] - u[0]
    v[-1] += u[0] - u[-1]
    v[:, 0] += u[:, -1] - u[:, 0]
    v[:, -1] += u[:, 0] - u[:, -1]
    denom = (2 * np.cos(2 * np.pi * np.arange(h) / h)[:, None] + 2 * np.cos(2 * np.pi * np.arange(w) / w)[None, :]
             - 4)
    denom[0, 0] = 1.0  # the mean: s has none
    spectrum = np.fft.fft2(u, axes=(0, 1)) - np.fft.fft2(v, axes=(0, 1)) / denom[..., None]
    power = (np.abs(spectrum) ** 2).sum(axis=-1)
    power[0, 0] = 0.0  # the mean is no part of any lattice
    return power


def lattice_ratio(image: np.ndarray, period: int) -> float:
    """Power at the `period`-pixel lattice bins over the power their neighbours predict (module docstring)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    _check_period(image.shape[0], image.shape[1], period)
    return _ratio(power_spectrum(image), period)


def _check_period(h: int, w: int, period: int) -> None:
    if period < 2 or h % period or w % period:
        raise ValueError(f"lattice period {period} must be >= 2 and divide the image size {h}x{w} (HxW)")


def _ratio(power: np.ndarray, period: int) -> float:
    """Steps 4-5 of the definition on a power spectrum from power_spectrum."""
    h, w = power.shape
    bins = lattice_bins(h, w, period)
    ny, nx, keep = neighbour_bins(h, w, period)
    neighbour_power = np.where(keep, power[ny, nx], 0.0).sum(1) / np.maximum(keep.sum(1), 1)
    eps = 1e-9 * len(bins) * power.mean() + 1e-30
    return float((power[bins[:, 0], bins[:, 1]].sum() + eps) / (neighbour_power.sum() + eps))


def lattice_ratios(image: np.ndarray, periods: tuple[int, ...] = REPORTED_PERIODS) -> dict[str, float]:
    """{'period8': ratio, 'period4': ratio} of one (H, W, C) image; periods that do not divide H and W are left out."""
    h, w = image.shape[:2]
    periods = [p for p in periods if p >= 2 and h % p == 0 and w % p == 0]
    power = power_spectrum(image if image.ndim == 3 else image[..., None]) if periods else None
    return {f"period{p}": _ratio(power, p) for p in periods}


def mean_over_images(per_image: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each key of lattice_ratios over images (the figure evaluation reports)."""
    keys = per_image[0].keys() if per_image else ()
    return {k: float(np.mean([r[k] for r in per_image])) for k in keys}
