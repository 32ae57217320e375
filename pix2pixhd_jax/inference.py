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

import functools
import os
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pix2pixhd_jax import checkpointing, features as features_lib, inputs, run_config, state as state_lib, storage
from pix2pixhd_jax.export import OUTPUTS, make_generator_fn, export_generator
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.semantics import check_labels

FeatureSpec = Union[None, str, np.ndarray, jax.Array, Mapping[int, Any], Sequence[Mapping[int, Any]]]


class Synthesizer:
    """A trained generator (+ encoder and feature bank) behind one jitted synthesize()."""

    def __init__(self, config: ml_collections.ConfigDict, g_params: Any, g_collections: Any, *,
                 bank: Optional[features_lib.FeatureBank] = None, step: Optional[int] = None,
                 workdir: Optional[str] = None):
        self.config, self.g_params, self.g_collections = config, g_params, g_collections
        self.bank, self.step, self.workdir = bank, step, workdir
        self.nets = factory.build(config)
        self.uses_features = factory.uses_features(config.model)
        self.divisor = factory.downsample_factor(config.model)
        self._traces = {o: 0 for o in OUTPUTS}
        self._generate = {o: jax.jit(self._counting_traces(make_generator_fn(config, self.nets, o), o))
                          for o in OUTPUTS}
        self._encode = jax.jit(functools.partial(factory.encode, self.nets)) if self.uses_features else None

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def from_workdir(cls, workdir: str, *, step: Optional[int] = None, config: Optional[ml_collections.ConfigDict] = None,
                     defaults: Optional[ml_collections.ConfigDict] = None, load_bank: bool = True) -> "Synthesizer":
        """Restore G (+E) of `workdir`'s checkpoint (latest or `step`) with the config saved beside it.

        Only G's arrays are read (not D, not the optimizer states). If `config` is given, its model
        section must equal the saved one (strict check, all differing keys listed); array shapes
        are checked against the checkpoint either way. `defaults` (configs/default.py's
        get_config()) fills keys a config saved by an older version lacks.
        """
        workdir = os.fspath(storage.path(workdir))
        storage.check_backend(workdir)
        if not storage.isdir(checkpointing.checkpoint_directory(workdir)):
            raise FileNotFoundError(f"{workdir} has no checkpoints/ folder; pass the --workdir a training run wrote")
        manager = checkpointing.make_manager(workdir, max_to_keep=1, async_save=False)
        try:
            step = manager.latest_step() if step is None else int(step)
            if step is None or step not in manager.all_steps():
                raise FileNotFoundError(f"no checkpoint step {step} in {workdir}/checkpoints; "
                                        f"steps present: {sorted(manager.all_steps())}")
            saved = checkpointing.restore_config(manager, step, defaults=defaults if config is None else config)
            if config is not None:
                diffs = run_config.differences(saved.model.to_dict(), config.model.to_dict(), "model.")
                if diffs:
                    raise ValueError(f"the config given does not match the one saved with {workdir} step {step} "
                                     f"({len(diffs)} model keys differ):\n  " + "\n  ".join(diffs)
                                     + "\nDrop the config to use the saved one, or load the matching workdir.")
            try:
                nets = factory.build(saved)
            except AttributeError as e:  # a ConfigDict without a key this version reads
                raise ValueError(f"the config saved with {workdir} lacks a key this version needs ({e}); it was "
                                 "written by an older version: pass defaults=configs.default.get_config() "
                                 "to fill the keys it lacks with their defaults") from None
            h = w = factory.downsample_factor(saved.model) * 2  # params do not depend on the image size
            rng = jax.random.PRNGKey(0)
            abstract = jax.eval_shape(lambda: state_lib.split_generator_variables(
                factory.init_generator_variables(nets, saved.model, rng, rng, height=h, width=w)))
            single = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = checkpointing.abstract_with_sharding(abstract, jax.tree_util.tree_map(lambda _: single, abstract))
            g = checkpointing.restore_generator(manager, step, target)
        finally:
            manager.close()
        bank = features_lib.load_bank(workdir, step) if load_bank else None
        # G's exponential moving average when the run kept one (optim.ema_decay > 0), else its params.
        params = g["g_params"] if g["g_ema"] is None else g["g_ema"]
        return cls(saved, params, g["g_collections"], bank=bank, step=step, workdir=workdir)

    # ------------------------------------------------------------------------------ features
    @property
    def colour_features(self) -> bool:
        """Whether feature channels 0..2 were trained to be a region's mean colour (loss.lambda_feature_colour > 0)."""
        return bool(self.uses_features and (self.config.get("loss") or {}).get("lambda_feature_colour", 0) > 0)

    def require_bank(self) -> features_lib.FeatureBank:
        """The feature bank, or a ValueError saying how to build it."""
        if self.bank is None:
            where = f" for {self.workdir} step {self.step}" if self.workdir else ""
            raise ValueError(f"no feature bank{where}: build it with `python -m pix2pixhd_jax.cli.encode_features "
                             f"--workdir {self.workdir or 'W'}`, or pass features='encode' with a real image, "
                             "or an explicit {instance_id: vector} mapping")
        return self.bank

    def region_features(self, label: np.ndarray, pool_ids: np.ndarray, chosen: Optional[Mapping[int, Any]] = None,
                        *, seed: int = 0) -> dict[int, tuple[Optional[int], np.ndarray]]:
        """region id -> (cluster or None, vector) for one example: chosen entries, the rest drawn from the bank.

        A draw depends only on (seed, region id), so editing one region never changes another's draw.
        """
        chosen = {int(k): v for k, v in (chosen or {}).items()}  # JSON keys arrive as strings
        ids, first = np.unique(pool_ids, return_index=True)
        classes = np.asarray(label).reshape(-1)[first]
        present = set(ids.tolist())
        unknown = [k for k in chosen if int(k) not in present]
        if unknown:
            raise KeyError(f"feature given for region id(s) {sorted(unknown)} not in the map; ids present: "
                           f"{sorted(present)[:30]}{' ...' if len(present) > 30 else ''}")
        out = {}
        feat_num = self.config.model.feat_num
        for rid, cls in zip(ids.tolist(), classes.tolist()):
            spec = chosen.get(rid)
            if spec is None:
                out[rid] = self.require_bank().draw(cls, np.random.default_rng([int(seed), int(rid)]))
            elif isinstance(spec, (int, np.integer)):
                out[rid] = (int(spec), self.require_bank().center(cls, int(spec)))
            else:
                vec = np.asarray(spec, np.float32).reshape(-1)
                if vec.shape != (feat_num,):
                    raise ValueError(f"feature vector for region {rid} has {vec.size} values; model.feat_num={feat_num}")
                out[rid] = (None, vec)
        return out

    def feature_map(self, label: np.ndarray, pool_ids: np.ndarray, vectors: Mapping[int, Any]) -> np.ndarray:
        """(H, W) region ids + {id: (cluster, vector) or vector} -> (H, W, feat_num) float32 (features.feature_map)."""
        return features_lib.feature_map(pool_ids, vectors)

    @staticmethod
    def _check_finite_features(feats: Any, pool: Optional[np.ndarray], where: str) -> None:
        """Raise ValueError naming the regions whose features are NaN or inf (they would blank the image)."""
        feats = np.asarray(feats)
        bad_pixels = ~np.isfinite(feats).all(-1)
        if not bad_pixels.any():
            return
        regions = sorted(set(np.unique(pool[bad_pixels]).tolist())) if pool is not None else []
        named = f" in region id(s) {regions[:20]}" if regions else ""
        raise ValueError(f"{where}: features hold NaN or inf at {int(bad_pixels.sum())} pixels{named}; "
                         "one such region turns the whole image black")

    # ------------------------------------------------------------------------------ checks
    def _prepare(self, label, inst, image, feats, pad: bool):
        """Host-side validation, batching and optional edge padding; returns arrays and the crop."""
        m = self.config.model
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
        ph, pw = -h % self.divisor, -w % self.divisor
        if ph or pw:
            if not pad:
                raise ValueError(
                    f"label map size {h}x{w} (HxW): the generator needs multiples of {self.divisor} "
                    f"(2**n_downsample_global{' * 2**n_local_enhancers' if m.netG == 'local' else ''}); resize to "
                    f"{h + ph}x{w + pw} or pass pad=True to pad by edge replication and crop the output back")

            def padded(x):
                return None if x is None else np.pad(x, [(0, 0), (0, ph), (0, pw)] + [(0, 0)] * (x.ndim - 3), mode="edge")

            label, inst, image, feats = padded(label), padded(inst), padded(image), padded(feats)
        return label, inst, image, feats, (h, w), squeeze

    # ------------------------------------------------------------------------------ synthesis
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
        seed = self.config.features.sample_seed if seed is None else seed
        feats = features if isinstance(features, (np.ndarray, jax.Array)) else None
        label, inst, image, feats, (h, w), squeeze = self._prepare(label, inst, image, feats, pad)
        m = self.config.model
        if not self.uses_features:
            if features is not None:
                raise ValueError("features were given but this model was trained without model.instance_feat / "
                                 "model.label_feat, so its generator takes none")
        elif isinstance(features, str):
            if features != "encode":
                raise ValueError(f"features={features!r}; the only string is 'encode' (E on a real image)")
            if image is None:
                raise ValueError("features='encode' runs E on a real photo: pass image=(B, H, W, 3) in [-1, 1]")
            pool = features_lib.pool_ids_of(m, label, inst)
            feats = self.encode(image, pool)
            self._check_finite_features(feats, pool, "features='encode' (E on the image)")
        elif feats is None:
            chosen = features if isinstance(features, (list, tuple)) else [features] * label.shape[0]
            if len(chosen) != label.shape[0]:
                raise ValueError(f"{len(chosen)} feature mappings for a batch of {label.shape[0]}")
            pool = features_lib.pool_ids_of(m, label, inst)
            feats = np.stack([self.feature_map(label[b], pool[b], self.region_features(label[b], pool[b], chosen[b], seed=seed))
                              for b in range(label.shape[0])])
        elif feats.ndim != 4 or feats.shape[:3] != label.shape[:3] or feats.shape[3] != m.feat_num:
            raise ValueError(f"feature map shape {feats.shape} does not match {label.shape[:3] + (m.feat_num,)}")
        else:
            self._check_finite_features(feats, features_lib.pool_ids_of(m, label, inst)
                                        if (m.label_feat or inst is not None) else None, "the feature map given")
        out = self._generate[output](self.g_params["generator"], self.g_collections["generator"],
                                     jnp.asarray(label, jnp.int32) if m.label_nc else jnp.asarray(label, jnp.float32),
                                     None if inst is None else jnp.asarray(inst, jnp.int32),
                                     None if feats is None else jnp.asarray(feats, jnp.float32))
        out = out[:, :h, :w]
        return out[0] if squeeze else out

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
    config = ml_collections.ConfigDict(synth.config.to_dict())
    if not synth.uses_features:
        raise ValueError(f"the model in {synth.workdir} was trained without model.instance_feat / model.label_feat; "
                         "it has no encoder to build a feature bank from")
    for k, v in (config_overrides or {}).items():
        if k not in config.features:
            raise KeyError(f"unknown features option {k!r}; known: {sorted(config.features)}")
        config.features[k] = v
    f, d = config.features, config.data
    source = inputs.make_source(config, f.split, d.synthetic_num, d.synthetic_seed)
    regions = features_lib.encode_source(synth.encode, source,
                                         model_cfg=config.model, transform=inputs.transform_config(config),
                                         batch_size=f.batch_size, num_examples=f.num_examples, progress=progress)
    bank = features_lib.bank_from_config(regions, config, meta={"step": synth.step, "split": f.split,
                                                                "pool": "label" if config.model.label_feat else "instance"})
    return bank, bank.save(features_lib.bank_path(synth.workdir, synth.step))
