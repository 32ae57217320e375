"""Run configs as data: complete an older saved config, compare two, and validate values up front.

Defaults live in one place, the repository's `configs/default.py`; this module never imports it.
The command-line tools pass those defaults in, so a config saved before a key existed loads with
the key at today's default. `validate` runs before anything is created or compiled, so a bad value
fails in a second with the key named instead of deep inside JAX after a compile.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import ml_collections


class ConfigError(ValueError):
    """A config value that cannot work, with the key and the fix in the message."""


def _as_plain(value: Any) -> Any:
    return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def complete(saved: Mapping[str, Any], defaults: Optional[ml_collections.ConfigDict]) -> ml_collections.ConfigDict:
    """`saved` with every key it lacks taken from `defaults` (saved values always win)."""
    saved = dict(_as_plain(saved))
    if defaults is None:
        return ml_collections.ConfigDict(saved)

    def merge(base: dict, over: Mapping[str, Any]) -> dict:
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
        return out

    return ml_collections.ConfigDict(merge(defaults.to_dict(), saved))


def missing_keys(config: Mapping[str, Any], defaults: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Dotted keys of `defaults` absent from `config`."""
    config, out = _as_plain(config), []
    for k, v in defaults.items():
        if k not in config:
            out.append(prefix + k)
        elif isinstance(v, ml_collections.ConfigDict) and isinstance(config[k], Mapping):
            out += missing_keys(config[k], v, f"{prefix}{k}.")
    return out


def differences(saved: Mapping[str, Any], given: Mapping[str, Any], prefix: str = "") -> list[str]:
    """'key: checkpoint X vs given Y' for every leaf that differs (lists and tuples compare equal)."""
    saved, given, out = _as_plain(saved), _as_plain(given), []
    for k in sorted(set(saved) | set(given)):
        a, b = saved.get(k, "<missing>"), given.get(k, "<missing>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, f"{prefix}{k}.")
        elif (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (list, tuple)) else b):
            out.append(f"{prefix}{k}: checkpoint {a!r} vs given {b!r}")
    return out


def _require(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError for values no run can use (checked before any file is written)."""
    m, d, t, o, l = config.model, config.data, config.train, config.optim, config.loss
    for key in ("ngf", "ndf", "n_layers_D", "num_D", "output_nc"):
        _require(m[key] >= 1, f"model.{key}", m[key], "must be >= 1")
    for key in ("n_downsample_global", "n_blocks_global", "n_blocks_local", "n_local_enhancers", "label_nc"):
        _require(m[key] >= 0, f"model.{key}", m[key], "must be >= 0")
    if m.instance_feat or m.label_feat:
        for key in ("feat_num", "nef", "n_downsample_E"):
            _require(m[key] >= 1, f"model.{key}", m[key], "must be >= 1 when G is conditioned on features")
    _require(m.netG in ("global", "local"), "model.netG", m.netG, "must be 'global' or 'local'")
    _require(m.norm in ("instance", "batch", "none"), "model.norm", m.norm, "must be 'instance', 'batch' or 'none'")
    _require(m.compute_dtype in ("float32", "bfloat16"), "model.compute_dtype", m.compute_dtype,
             "must be 'float32' or 'bfloat16'")
    _require(m.conv_impl in ("auto", "rewrite", "lax"), "model.conv_impl", m.conv_impl,
             "must be 'auto', 'rewrite' or 'lax'")
    _require(l.gan_mode in ("lsgan", "vanilla", "hinge"), "loss.gan_mode", l.gan_mode,
             "must be 'lsgan', 'vanilla' or 'hinge'")
    _require(d.batch_size >= 1, "data.batch_size", d.batch_size, "must be >= 1 (the global batch)")
    _require(config.num_devices >= 0, "num_devices", config.num_devices, "must be >= 0 (0 = all devices)")
    _require(t.max_steps >= 0, "train.max_steps", t.max_steps, "must be >= 0 (0 = niter + niter_decay epochs)")
    for key in ("log_every", "sample_every", "checkpoint_every", "keep_checkpoints"):
        _require(t[key] >= 1, f"train.{key}", t[key], "must be >= 1")
    _require(t.num_samples >= 1, "train.num_samples", t.num_samples, "must be >= 1")
    for key in ("lr_G", "lr_D"):
        _require(o[key] > 0, f"optim.{key}", o[key], "must be > 0")
    for key in ("beta1_G", "beta1_D", "beta2_G", "beta2_D"):
        _require(0 <= o[key] < 1, f"optim.{key}", o[key], "must be in [0, 1)")
    for key in ("niter", "niter_decay", "niter_fix_global"):
        _require(o[key] >= 0, f"optim.{key}", o[key], "must be >= 0")
    _require(0 <= o.ema_decay < 1, "optim.ema_decay", o.ema_decay, "must be in [0, 1) (0 = no EMA)")
    _require(l.r1_every >= 1, "loss.r1_every", l.r1_every, "must be >= 1 (the lazy R1 interval)")
    _require(config.eval.every_steps >= 0, "eval.every_steps", config.eval.every_steps, "must be >= 0 (0 = never)")
