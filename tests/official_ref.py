"""Access to the official PyTorch pix2pixHD networks (the `pix2pixhd` PyPI package) for parity tests.

The package imports torchvision at module level only for its VGG19 (built with downloaded
weights, which we never use); torchvision from PyPI cannot load beside the CPU torch wheel, so an
empty stand-in module is registered for that import alone.
"""
import numpy as np
import pytest

from pix2pixhd_jax.compat import official

torch = pytest.importorskip("torch", reason="parity tests need torch: pip install -e '.[test]'")


official_networks = official.official_networks_module


def randomize_(module, seed: int, scale: float = 0.15):
    """Replace every parameter and BN running stat with seeded random values of a useful size."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))
    return module


def state_dict_numpy(module):
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def to_nchw(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def to_nhwc(t) -> np.ndarray:
    return np.transpose(t.detach().cpu().numpy(), (0, 2, 3, 1))
