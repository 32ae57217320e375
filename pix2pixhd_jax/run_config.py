"""Run configs as data: complete an older saved config, compare two, and validate values up front.

Defaults live in one place, the repository's `configs/default.py`; this module never imports it.
The command-line tools pass those defaults in, so a config saved before a key existed loads with
the key at today's default. `validate` runs before anything is created or compiled, so a bad value
fails in a second with the key named instead of deep inside JAX after a compile.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import ml_collections

from pix2pixhd_jax import choices
from pix2pixhd_jax.data.sources import SOURCE_KINDS
from pix2pixhd_jax.data.transforms import RESIZE_OR_CROP_MODES

# What a resumed run must share with its checkpoint. Shapes are checked array by array
# (checkpointing.check_compatible); these keys change what is computed without changing any shape
# (model.norm 'instance' -> 'none', loss.gan_mode, the training image size: resize_or_crop and the
# loadSize / fineSize / synthetic size that mode uses), so their values are compared. Everything
# else may change on resume: optimizer and schedule (optim.*, as the official --continue_train
# allows), train.* (max_steps, intervals, keep_checkpoints), where the data lives (data.dataroot,
# source, batch_size), eval.*, features.*, num_devices, mesh.* (a checkpoint restores onto any mesh) and seed.
RESUME_MUST_MATCH = ("model", "loss", "augment", "data.resize_or_crop")
# Inside those sections, keys that pick how (not what) is computed, or where a file lives.
RESUME_MAY_CHANGE = ("model.conv_impl", "model.upsample_impl", "model.remat_blocks", "model.compute_dtype",
                     "loss.vgg_weights")


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


def require_keys(config: Mapping[str, Any], keys: tuple[str, ...], what: str) -> None:
    """Raise ConfigError naming the dotted `keys` that `config` lacks (one saved by an older version) and the fix."""
    missing = [k for k in keys if _lookup(config, k) == "<missing>"]
    if missing:
        raise ConfigError(f"{what} lacks {', '.join(missing)}: it was written by an older version; complete it with "
                          "today's defaults (defaults=pix2pixhd_jax.configs.default.get_config() when loading a run)")


def _differing_leaves(saved: Any, given: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, given value) for every leaf that differs (lists and tuples compare equal)."""
    saved, given, out = _as_plain(saved), _as_plain(given), []
    for k in sorted(set(saved) | set(given)):
        a, b = saved.get(k, "<missing>"), given.get(k, "<missing>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differing_leaves(a, b, f"{prefix}{k}.")
        elif (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (list, tuple)) else b):
            out.append((f"{prefix}{k}", a, b))
    return out


def differences(saved: Mapping[str, Any], given: Mapping[str, Any], prefix: str = "") -> list[str]:
    """'key: checkpoint X vs given Y' for every leaf that differs (lists and tuples compare equal)."""
    return [f"{k}: checkpoint {a!r} vs given {b!r}" for k, a, b in _differing_leaves(saved, given, prefix)]


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    config = _as_plain(config)
    for part in dotted.split("."):
        if not isinstance(config, Mapping) or part not in config:
            return "<missing>"
        config = config[part]
    return _as_plain(config)


def _size_keys(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The data keys that set the training image size under data.resize_or_crop (and the source)."""
    mode, keys = data.get("resize_or_crop"), ()
    if mode in ("resize_and_crop", "scale_width", "scale_width_and_crop"):
        keys += ("data.loadSize",)
    if mode is not None and "crop" in mode:
        keys += ("data.fineSize",)
    if data.get("source") == "synthetic":
        keys += ("data.synthetic_width", "data.synthetic_height")
    return keys


def resume_conflicts(saved: Mapping[str, Any], given: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, checkpoint value, given value) for the RESUME_MUST_MATCH keys that differ, less RESUME_MAY_CHANGE."""
    out = []
    for key in RESUME_MUST_MATCH + _size_keys(_as_plain(given)["data"]):
        a, b = _lookup(saved, key), _lookup(given, key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += [d for d in _differing_leaves(a, b, key + ".") if d[0] not in RESUME_MAY_CHANGE]
        else:
            out += _differing_leaves({key: a}, {key: b})
    return out


def _require(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def _one_of(value: Any, key: str, allowed: tuple[str, ...]) -> None:
    _require(value in allowed, key, value, f"must be one of {allowed}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError for values no run can use (checked before any file is written)."""
    m, d, t, o, loss = config.model, config.data, config.train, config.optim, config.loss
    for key in ("ngf", "ndf", "n_layers_D", "num_D", "output_nc"):
        _require(m[key] >= 1, f"model.{key}", m[key], "must be >= 1")
    for key in ("n_downsample_global", "n_blocks_global", "n_blocks_local", "n_local_enhancers", "label_nc"):
        _require(m[key] >= 0, f"model.{key}", m[key], "must be >= 0")
    if m.instance_feat or m.label_feat:
        for key in ("feat_num", "nef", "n_downsample_E"):
            _require(m[key] >= 1, f"model.{key}", m[key], "must be >= 1 when G is conditioned on features")
    _one_of(m.netG, "model.netG", choices.GENERATORS)
    _one_of(m.norm, "model.norm", choices.NORMS)
    _one_of(m.compute_dtype, "model.compute_dtype", choices.COMPUTE_DTYPES)
    _one_of(m.conv_impl, "model.conv_impl", choices.CONV_IMPLS)
    _one_of(loss.gan_mode, "loss.gan_mode", choices.GAN_LOSSES)
    _require(d.batch_size >= 1, "data.batch_size", d.batch_size, "must be >= 1 (the global batch)")
    _require(config.num_devices >= 0, "num_devices", config.num_devices, "must be >= 0 (0 = all devices)")
    _require(t.max_steps >= 0, "train.max_steps", t.max_steps, "must be >= 0 (0 = niter + niter_decay epochs)")
    for key in ("log_every", "sample_every", "checkpoint_every", "keep_checkpoints"):
        _require(t[key] >= 1, f"train.{key}", t[key], "must be >= 1")
    _require(t.num_samples >= 1, "train.num_samples", t.num_samples, "must be >= 1")
    for key in ("storage_timeout_s", "lease_stale_s"):
        _require(t[key] > 0, f"train.{key}", t[key], "must be > 0 (seconds)")
    for key in ("lr_G", "lr_D"):
        _require(o[key] > 0, f"optim.{key}", o[key], "must be > 0")
    for key in ("beta1_G", "beta1_D", "beta2_G", "beta2_D"):
        _require(0 <= o[key] < 1, f"optim.{key}", o[key], "must be in [0, 1)")
    for key in ("niter", "niter_decay", "niter_fix_global"):
        _require(o[key] >= 0, f"optim.{key}", o[key], "must be >= 0")
    _require(0 <= o.ema_decay < 1, "optim.ema_decay", o.ema_decay, "must be in [0, 1) (0 = no EMA)")
    _require(loss.r1_every >= 1, "loss.r1_every", loss.r1_every, "must be >= 1 (the lazy R1 interval)")
    _require(config.eval.every_steps >= 0, "eval.every_steps", config.eval.every_steps, "must be >= 0 (0 = never)")
    _validate_more(config)


def _validate_more(config: ml_collections.ConfigDict) -> None:
    """The keys beyond the ones above that otherwise fail late (in the data pipeline, a loss, a tool)."""
    m, d, loss, o = config.model, config.data, config.loss, config.optim
    e, f, a = config.eval, config.features, config.augment
    _one_of(m.upsample_layer, "model.upsample_layer", choices.UPSAMPLE_LAYERS)  # 'transpose' is the official one
    _one_of(m.upsample_impl, "model.upsample_impl", choices.UPSAMPLE_IMPLS)
    _one_of(m.attention_form, "model.attention_form", choices.ATTENTION_FORMS)
    _one_of(loss.lattice_reference, "loss.lattice_reference", choices.LATTICE_REFERENCES)
    _one_of(loss.lattice_sides, "loss.lattice_sides", choices.LATTICE_SIDES)
    _require(loss.lattice_margin >= 1, "loss.lattice_margin", loss.lattice_margin,
             "must be >= 1 (a bin's allowed power over its neighbours')")
    for key in ("attention_pool", "attention_window", "attention_reduction"):
        _require(m[key] >= 1, f"model.{key}", m[key], "must be >= 1")
    _require(m.init_std > 0, "model.init_std", m.init_std, "must be > 0")
    _require(m.label_nc > 0 or m.input_nc >= 1, "model.input_nc", m.input_nc, "must be >= 1 when label_nc=0")
    _one_of(d.source, "data.source", SOURCE_KINDS)
    _one_of(d.resize_or_crop, "data.resize_or_crop", RESIZE_OR_CROP_MODES)
    for key in ("loadSize", "fineSize", "synthetic_num", "synthetic_width", "synthetic_height"):
        _require(d[key] >= 1, f"data.{key}", d[key], "must be >= 1")
    for key in ("max_dataset_size", "worker_count"):
        _require(d[key] >= 0, f"data.{key}", d[key], "must be >= 0")
    _require(len(loss.vgg_layers) == len(loss.vgg_layer_weights), "loss.vgg_layer_weights", tuple(loss.vgg_layer_weights),
             f"needs one weight per loss.vgg_layers entry ({len(loss.vgg_layers)})")
    for key in ("lambda_feat", "lambda_l1", "lambda_lattice", "lambda_region_colour", "lambda_feature_colour", "r1_gamma"):
        _require(loss[key] >= 0, f"loss.{key}", loss[key], "must be >= 0")
    _require(loss.lambda_region_colour == 0 or m.instance_feat or m.label_feat, "loss.lambda_region_colour",
             loss.lambda_region_colour, "needs model.instance_feat or model.label_feat (it compares the regions E pools over)")
    _require(loss.lambda_feature_colour == 0 or ((m.instance_feat or m.label_feat) and m.feat_num >= 3),
             "loss.lambda_feature_colour", loss.lambda_feature_colour,
             "needs model.instance_feat or model.label_feat and model.feat_num >= 3 (it anchors E's first 3 channels)")
    _require(o.eps > 0, "optim.eps", o.eps, "must be > 0")
    _require(e.num_examples >= 0, "eval.num_examples", e.num_examples, "must be >= 0 (0 = the whole split)")
    _require(e.batch_size >= 1, "eval.batch_size", e.batch_size, "must be >= 1")
    for key in ("n_clusters", "kmeans_iters", "kmeans_n_init", "batch_size"):
        _require(f[key] >= 1, f"features.{key}", f[key], "must be >= 1")
    _require(f.num_examples >= 0, "features.num_examples", f.num_examples, "must be >= 0 (0 = the whole split)")
    _require(0 <= f.min_area_fraction < 1, "features.min_area_fraction", f.min_area_fraction, "must be in [0, 1)")
    ops = [p.strip() for p in a.policy.split(",") if p.strip()]
    unknown = [p for p in ops if p not in choices.AUGMENT_OPS]
    _require(not unknown, "augment.policy", a.policy, f"must be a comma list of {choices.AUGMENT_OPS}")
    for key in ("p_color", "p_translation", "p_cutout", "translation_ratio", "cutout_ratio"):
        _require(0 <= a[key] <= 1, f"augment.{key}", a[key], "must be in [0, 1]")
    ms = config.mesh
    _require(isinstance(ms.space, int) and ms.space >= 1, "mesh.space", ms.space,
             "must be an integer >= 1 (devices one image's height is split over)")
    _require(ms.min_shard_size >= 0, "mesh.min_shard_size", ms.min_shard_size, "must be >= 0")
    for key in ("local_margin_px", "local_feather_px"):
        v = config.editing[key]
        _require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"editing.{key}", v,
                 "must be an integer >= 0 (pixels)")
