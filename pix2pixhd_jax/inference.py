"""Inference: a trained checkpoint -> Synthesizer.synthesize(label, inst, features) -> images; export.

    synth = Synthesizer.from_workdir("runs/demo")          # config + G (+E) + feature bank
    img = synth.synthesize(label, inst)                      # features sampled from the bank (seeded)
    img = synth.synthesize(label, inst, "encode", image=photo)        # E on a real photo
    img = synth.synthesize(label, inst, {26001: 3, 26002: [0.1, -0.4, 0.7]})  # chosen cluster / vector
    synth.export("runs/demo/export", height=128, width=256)  # jax.export artifact, no model code needed
    ExportedGenerator("runs/demo/export")(label, inst, feature_map)

Inputs may be host numpy or device arrays, (H, W) or batched (B, H, W). The generator itself is
one jitted function of (params, label, inst, feature map), so it compiles once per input shape.
Per-instance features are assembled on the host from the bank (cheap: one table lookup per pixel).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pix2pixhd_jax import checkpointing, features as features_lib, inputs, run_config
from pix2pixhd_jax.export import OUTPUTS, make_generator_fn, export_generator
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.semantics import check_labels

FeatureSpec = Union[None, str, np.ndarray, jax.Array, Mapping[int, Any], Sequence[Mapping[int, Any]]]


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
    """What synthesis, export and the tools read from a run's config, read once."""

    label_nc: int  # 0: the label is an RGB image of input_nc channels
    input_nc: int
    use_instance: bool
    uses_features: bool  # model.instance_feat or model.label_feat
    label_feat: bool  # features pooled per label region, not per instance
    feat_num: int
    generator: str  # model.netG
    divisor: int  # H and W must be multiples of it
    sample_seed: int  # features.sample_seed: the default seed of bank draws
    colour_features: bool  # feature channels 0..2 trained to be a region's mean colour

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "InferenceOptions":
        run_config.require_keys(config, ("features.sample_seed", "loss.lambda_feature_colour"), "the run's config")
        m = config.model
        uses = factory.uses_features(m)
        return cls(label_nc=int(m.label_nc), input_nc=int(m.input_nc), use_instance=bool(m.use_instance),
                   uses_features=uses, label_feat=bool(m.label_feat), feat_num=int(m.feat_num), generator=m.netG,
                   divisor=factory.downsample_factor(m), sample_seed=int(config.features.sample_seed),
                   colour_features=uses and config.loss.lambda_feature_colour > 0)


class CheckedInputs(NamedTuple):
    """synthesize()'s inputs batched (B, H, W, ...) and edge-padded to G's multiple; the size to crop back to."""

    label: np.ndarray
    inst: Optional[np.ndarray]
    image: Optional[np.ndarray]
    feats: Optional[np.ndarray]
    height: int
    width: int
    squeeze: bool  # the label came without a batch axis


def check_inputs(m: InferenceOptions, label: Any, inst: Any = None, image: Any = None,
                 feats: Any = None, *, pad: bool = False) -> CheckedInputs:
    """Host-side checks of synthesize()'s inputs (ids, shapes, dtypes, ranges), batching and optional padding."""
    label = np.asarray(label)
    squeeze = label.ndim == (2 if m.label_nc else 3)
    if squeeze:
        label = label[None]
    if m.label_nc:
        if label.ndim == 3 and label.shape[-1] in (3, 4):
            # No label map is 3 or 4 pixels wide: this is a colour-coded label image (H, W, RGB[A]).
            raise ValueError(f"label has shape {label.shape}, a colour image: label maps are class ids "
                             f"(H, W) or (B, H, W) in [0, {m.label_nc}), not colours. Convert the colours to "
                             "ids first (for Cityscapes, the *_labelIds.png files hold the ids)")
        if label.ndim != 3:
            raise ValueError(f"label must be (H, W) or (B, H, W) integer ids, got shape {label.shape}")
        if not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"label must hold integer class ids, got dtype {label.dtype}")
        check_labels(label, m.label_nc, "the label map given to synthesize")
    batch_hw = label.shape[:3]
    if m.use_instance:
        if inst is None:
            raise ValueError("this model uses instance maps (model.use_instance): pass inst (the instance-id map; "
                             "for maps without instances, pass the label map itself)")
        inst = np.asarray(inst)
        inst = inst[None] if inst.ndim == 2 else inst
        if inst.shape != batch_hw:
            raise ValueError(f"instance map shape {inst.shape} does not match the label shape {batch_hw}")
        if not np.issubdtype(inst.dtype, np.integer):
            raise ValueError(f"inst must hold integer instance ids, got dtype {inst.dtype}")
        lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
        if inst.size and (int(inst.min()) < lo or int(inst.max()) > hi):
            raise ValueError(f"instance ids span [{int(inst.min())}, {int(inst.max())}], outside int32: they "
                             "would wrap into other ids; Cityscapes-style ids are class*1000+k (< 65536)")
    if image is not None:
        image = np.asarray(image, np.float32)
        image = image[None] if image.ndim == 3 else image
        if image.shape[:3] != batch_hw:
            raise ValueError(f"image shape {image.shape} does not match the label shape {batch_hw}")
        if not np.isfinite(image).all():
            b, y, x = np.argwhere(~np.isfinite(image).all(-1))[0]
            raise ValueError(f"image holds NaN or inf (first at batch {b}, pixel y={y} x={x}); "
                             "a photo must be finite values in [-1, 1]")
        if image.size and (image.min() < -1.001 or image.max() > 1.001):
            raise ValueError(f"image values span [{image.min():g}, {image.max():g}]; expected [-1, 1] "
                             "(for a 0..255 photo pass photo / 127.5 - 1)")
    h, w = batch_hw[1:]
    divisor = m.divisor
    ph, pw = -h % divisor, -w % divisor
    if ph or pw:
        if not pad:
            raise ValueError(
                f"label map size {h}x{w} (HxW): the generator needs multiples of {divisor} "
                f"(2**n_downsample_global{' * 2**n_local_enhancers' if m.generator == 'local' else ''}); resize to "
                f"{h + ph}x{w + pw} or pass pad=True to pad by edge replication and crop the output back")

        def padded(x):
            return None if x is None else np.pad(x, [(0, 0), (0, ph), (0, pw)] + [(0, 0)] * (x.ndim - 3), mode="edge")

        label, inst, image, feats = padded(label), padded(inst), padded(image), padded(feats)
    return CheckedInputs(label, inst, image, feats, h, w, squeeze)


class Synthesizer:
    """A trained generator (+ encoder and feature bank) behind one jitted synthesize()."""

    def __init__(self, config: ml_collections.ConfigDict, g_params: Any, g_collections: Any, *,
                 bank: Optional[features_lib.FeatureBank] = None, step: Optional[int] = None,
                 workdir: Optional[str] = None):
        self.config, self.g_params, self.g_collections = config, g_params, g_collections
        self.bank, self.step, self.workdir = bank, step, workdir
        self.nets = factory.build(config)
        self.options = InferenceOptions.from_config(config)
        self.uses_features, self.divisor = self.options.uses_features, self.options.divisor
        self._traces = {o: 0 for o in OUTPUTS}
        self._generate = {o: jax.jit(self._counting_traces(make_generator_fn(config, self.nets, o), o))
                          for o in OUTPUTS}
        self._encode = jax.jit(functools.partial(factory.encode, self.nets)) if self.uses_features else None

    @classmethod
    def from_workdir(cls, workdir: str, *, step: Optional[int] = None, config: Optional[ml_collections.ConfigDict] = None,
                     defaults: Optional[ml_collections.ConfigDict] = None, load_bank: bool = True) -> "Synthesizer":
        """G (+E) of `workdir`'s checkpoint (checkpointing.load_generator) and the feature bank beside it."""
        g = checkpointing.load_generator(workdir, step=step, config=config, defaults=defaults)
        bank = features_lib.load_bank(g.workdir, g.step) if load_bank else None
        return cls(g.config, g.params, g.collections, bank=bank, step=g.step, workdir=g.workdir)

    @property
    def colour_features(self) -> bool:
        """Whether feature channels 0..2 were trained to be a region's mean colour (loss.lambda_feature_colour > 0)."""
        return self.options.colour_features

    def require_bank(self) -> features_lib.FeatureBank:
        """The feature bank, or a ValueError saying how to build it."""
        return features_lib.require_bank(self.bank, self.workdir, self.step)

    def region_features(self, label: np.ndarray, pool_ids: np.ndarray, chosen: Optional[Mapping[int, Any]] = None,
                        *, seed: int = 0) -> dict[int, tuple[Optional[int], np.ndarray]]:
        """region id -> (cluster or None, vector) for one example (features.region_features on this bank)."""
        return features_lib.region_features(label, pool_ids, chosen, bank=self.require_bank,
                                            feat_num=self.options.feat_num, seed=seed)

    def feature_map(self, label: np.ndarray, pool_ids: np.ndarray, vectors: Mapping[int, Any]) -> np.ndarray:
        """(H, W) region ids + {id: (cluster, vector) or vector} -> (H, W, feat_num) float32 (features.feature_map)."""
        return features_lib.feature_map(pool_ids, vectors)

    def synthesize(self, label, inst=None, features: FeatureSpec = None, *, image=None, seed: Optional[int] = None,
                   output: str = "uint8", pad: bool = False) -> jax.Array:
        """Images for label maps: (B, H, W, 3) uint8 (or float in [-1, 1] with output='float').

        features (models trained with instance_feat / label_feat):
          None        every region draws a cluster of its class from the bank (seeded by `seed`,
                      default config.features.sample_seed); classes without clusters use the bank's
                      class mean, unseen classes zeros
          'encode'    E on the real `image` (B, H, W, 3) in [-1, 1]
          mapping     {region_id: cluster_index | vector} (one for all, or a list per example);
                      regions not named are drawn from the bank as with None
          array       a ready (B, H, W, feat_num) feature map
        """
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r}; expected one of {OUTPUTS}")
        m = self.options
        given = features if isinstance(features, (np.ndarray, jax.Array)) else None
        x = check_inputs(m, label, inst, image, given, pad=pad)
        feats = features_lib.resolve_features(
            features, x.label, x.inst, model_cfg=self.config.model, bank=self.require_bank, encode=self.encode,
            seed=m.sample_seed if seed is None else seed, image=x.image, given=x.feats)
        out = self._generate[output](self.g_params["generator"], self.g_collections["generator"],
                                     jnp.asarray(x.label, jnp.int32) if m.label_nc else jnp.asarray(x.label, jnp.float32),
                                     None if x.inst is None else jnp.asarray(x.inst, jnp.int32),
                                     None if feats is None else jnp.asarray(feats, jnp.float32))
        out = out[:, :x.height, :x.width]
        return out[0] if x.squeeze else out

    def encode(self, image, pool_ids) -> jax.Array:
        """E's features of real images (B, H, W, 3) in [-1, 1], averaged inside each region of pool_ids."""
        if self._encode is None:
            raise ValueError("this model was trained without model.instance_feat / model.label_feat: it has no encoder")
        feats, _ = self._encode(self.g_params, self.g_collections, jnp.asarray(image, jnp.float32),
                                jnp.asarray(pool_ids, jnp.int32))
        return feats

    def _counting_traces(self, fn: Callable, output: str) -> Callable:
        """fn, counting its traces: jit traces once per new input shape, so this counts compiled variants."""

        def traced(*args: Any) -> Any:
            self._traces[output] += 1  # a Python side effect: runs at trace time only
            return fn(*args)

        return traced

    def compiled_shapes(self, output: str = "uint8") -> int:
        """Number of compiled variants of the generator (one per input shape)."""
        return self._traces[output]

    def export(self, path: str, **kw: Any) -> str:
        """export.export_generator(self, path, height=, width=, batch=, output=, platforms=)."""
        return export_generator(self, path, **kw)


def encode_feature_bank(synth: Synthesizer, *, config_overrides: Optional[Mapping[str, Any]] = None,
                        progress: bool = True) -> tuple[features_lib.FeatureBank, str]:
    """Encode the configured split with the checkpoint's E, cluster per class, save the bank beside the weights.

    Uses the config saved with the checkpoint (config.features.* may be overridden, e.g.
    {'n_clusters': 5}); returns (bank, path written).
    """
    if not synth.uses_features:
        raise ValueError(f"the model in {synth.workdir} was trained without model.instance_feat / model.label_feat; "
                         "it has no encoder to build a feature bank from")
    config = ml_collections.ConfigDict(synth.config.to_dict())
    for k, v in (config_overrides or {}).items():
        if k not in config.features:
            raise KeyError(f"unknown features option {k!r}; known: {sorted(config.features)}")
        config.features[k] = v
    o = features_lib.BankOptions.from_config(config.features)
    regions = features_lib.encode_source(synth.encode, inputs.train_source(config, o.split),
                                         model_cfg=config.model, transform=inputs.transform_config(config),
                                         batch_size=o.batch_size, num_examples=o.num_examples, progress=progress)
    bank = features_lib.bank_from_regions(regions, o, meta={"step": synth.step, "split": o.split,
                                                            "pool": "label" if synth.options.label_feat else "instance"})
    return bank, bank.save(features_lib.bank_path(synth.workdir, synth.step))
