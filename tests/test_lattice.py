"""The periodic-artifact figure: a p-pixel grid stands out, smooth and natural-like images and the
built-in real photos score about 1, and evaluation reports it for fake and real images."""
import numpy as np
import pytest

from pix2pixhd_jax.configs import synthetic_demo, tiny_test
from pix2pixhd_jax import inputs
from pix2pixhd_jax.evaluation import evaluate, lattice

H, W = 64, 128


def _natural_like(seed: int) -> np.ndarray:
    """Gaussian noise with a 1/f amplitude spectrum (the statistics of natural images), unit std."""
    rng = np.random.default_rng(seed)
    f2 = np.fft.fftfreq(H)[:, None] ** 2 + np.fft.fftfreq(W)[None] ** 2
    f2[0, 0] = 1.0
    x = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(H, W, 3)), axes=(0, 1)) / np.sqrt(f2)[..., None],
                             axes=(0, 1)))
    return x / x.std()


def _smooth() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W] / 40.0
    return np.stack([np.sin(yy), np.cos(xx), yy * xx / 8], -1)


def _grid(period: int) -> np.ndarray:
    """A faint upsampling-like lattice: one brighter row and column every `period` pixels."""
    g = np.zeros((H, W, 3))
    g[::period] += 1.0
    g[:, ::period] += 1.0
    return g - g.mean()


def _mean(images, period):
    return float(np.mean([lattice.lattice_ratio(im, period) for im in images]))


def test_a_grid_scores_clearly_higher_than_smooth_and_natural_like_images():
    natural = [_natural_like(s) for s in range(6)]
    for period in (8, 4):
        clean = _mean(natural, period)
        assert 0.75 < clean < 1.3, (period, clean)
        # A smooth image's power falls off steeply, so its neighbours' mean is a little above the bin.
        assert 0.5 < lattice.lattice_ratio(_smooth(), period) < 1.3
        # A grid of a fifth of the texture's std more than doubles the figure.
        with_grid = _mean([im + 0.2 * _grid(period) for im in natural], period)
        assert with_grid > 2 * clean, (period, clean, with_grid)
        assert lattice.lattice_ratio(_smooth() + 0.05 * _grid(period), period) > 10


def test_a_4px_grid_also_shows_at_period_8():
    """A 4-periodic pattern is 8-periodic too: its bins are a subset of the 8-pixel lattice's."""
    natural = [_natural_like(s) for s in range(6)]
    assert _mean([im + 0.2 * _grid(8) for im in natural], 8) > 2 * _mean(natural, 8)
    assert _mean([im + 0.2 * _grid(4) for im in natural], 8) > 2 * _mean(natural, 8)


def test_border_jumps_do_not_count_as_a_lattice():
    """An image whose left and right halves differ tiles with a jump; the periodic component removes it."""
    step = np.zeros((H, W, 3))
    step[:, W // 3:] = 1.0
    ramp = np.broadcast_to(np.linspace(-1, 1, W)[None, :, None], (H, W, 3))
    for image in (step + 0.1 * _natural_like(0), ramp + 0.1 * _natural_like(1)):
        assert 0.6 < lattice.lattice_ratio(image, 8) < 1.6


def test_real_photos_of_the_built_in_synthetic_data_score_near_one():
    config = synthetic_demo.get_config()
    examples = inputs.load_examples(config, "test", 24)
    ratios = lattice.mean_over_images([lattice.lattice_ratios(e["image"]) for e in examples])
    assert set(ratios) == {"period8", "period4"}
    assert 0.75 < ratios["period8"] < 1.3 and 0.75 < ratios["period4"] < 1.4, ratios


def test_a_period_that_does_not_divide_the_image_is_refused_or_left_out():
    with pytest.raises(ValueError, match="lattice period 8 must be >= 2 and divide the image size 60x128"):
        lattice.lattice_ratio(np.zeros((60, 128, 3)), 8)
    assert set(lattice.lattice_ratios(np.zeros((60, 128, 3)))) == {"period4"}


def test_evaluation_reports_the_figure_for_fake_and_real_images():
    config = tiny_test.get_config()
    examples = inputs.load_examples(config, "test", 4)
    grid = np.zeros(examples[0]["image"].shape, np.float32)
    grid[::4] += 0.1
    grid[:, ::4] += 0.1
    report = evaluate.evaluate_generator(lambda b: np.clip(b["image"] + grid, -1, 1), examples, batch_size=2,
                                         use_lpips=False)
    fake, real = report["lattice_ratio"]["fake"], report["lattice_ratio"]["real"]
    assert fake["period4"] > 2 * real["period4"] and fake["period8"] > 2 * real["period8"]
    scalars = evaluate.flat_scalars(report)
    assert scalars["eval/lattice_ratio/fake/period8"] == fake["period8"]
    assert scalars["eval/lattice_ratio/real/period4"] == real["period4"]


def test_the_ablation_table_shows_the_figure_beside_l1_and_lpips():
    from benchmarks import ablation
    row = {"variant": "baseline", "step_s": 1.0, "peak_rss_bytes": 2e9, "eval_l1": 0.3, "lpips_to_real": 0.44,
           "lattice8_fake": 2.26, "lattice8_real": 1.05, "lattice4_fake": 2.24, "lattice4_real": 1.01}
    table = ablation.markdown([row, {**row, "variant": "old report"} | {k: float("nan") for k in row if "lattice" in k}])
    assert "| 2.26 (1.05) | 2.24 (1.01) |" in table and "| nan (nan) | nan (nan) |" in table
