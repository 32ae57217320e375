"""Test session setup: 8 fake CPU devices and XLA's fast CPU conv path, set before JAX starts."""
import os

# Both flags must be in place before jax initialises its backend (PLATFORM_NOTES.md).
_FLAGS = (
    "--xla_force_host_platform_device_count=8",
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
)
_existing = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join([_existing, *(f for f in _FLAGS if f.split("=")[0] not in _existing)]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
