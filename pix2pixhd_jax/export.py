"""Export a trained generator with jax.export, and run an exported one with jax alone.

    path = export_generator(synth, "runs/demo/export", height=128, width=256)
    ExportedGenerator(path)(label, inst, feature_map)   # no pix2pixhd_jax model code needed

`make_generator_fn` is the pure (params, label, inst, feats) -> image function that both the
Synthesizer jits and the export serialises.
"""
from __future__ import annotations

import io
import json
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pix2pixhd_jax import storage
from pix2pixhd_jax.models import factory

OUTPUTS = ("uint8", "float")


def to_output(fake: jax.Array, output: str) -> jax.Array:
    """[-1, 1] float -> uint8 (round half up as visualize.to_uint8) or the float image itself."""
    if output == "uint8":
        return jnp.clip(jnp.round((fake.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
    return fake.astype(jnp.float32)


def make_generator_fn(config: ml_collections.ConfigDict, nets: factory.Networks, output: str) -> Callable:
    """(generator params, generator collections, label, inst, feats) -> image: the function jitted and exported."""

    def generate(generator_params, generator_collections, label, inst, feats):
        batch = {"label": label, "inst": inst}
        fake, _ = factory.generate(nets, config.model, {"generator": generator_params},
                                   {"generator": generator_collections}, batch,
                                   factory.label_encoding(batch, config.model), train=False, features=feats)
        return to_output(fake, output)

    return generate


def export_generator(synth: Any, path: str, *, height: int, width: int, batch: Optional[int] = None,
                     output: str = "uint8", platforms: Optional[Sequence[str]] = None) -> str:
    """Serialise a Synthesizer's jitted generator with jax.export into folder `path`.

    Writes generator.jaxexport (StableHLO; params are an argument, so no giant constants),
    params.npz (the parameter leaves, plain arrays) and signature.json. batch None exports a
    symbolic batch dimension. Load with ExportedGenerator(path).
    """
    m = synth.options  # inference.InferenceOptions
    divisor = m.divisor
    if height % divisor or width % divisor:
        raise ValueError(f"export size {height}x{width} must be a multiple of {divisor}")
    gen = make_generator_fn(synth.config, synth.nets, output)
    variables = {"params": synth.g_params["generator"], "collections": synth.g_collections["generator"]}
    leaves, treedef = jax.tree_util.tree_flatten(variables)

    def served(leaves, label, inst, feats):
        v = jax.tree_util.tree_unflatten(treedef, leaves)
        return gen(v["params"], v["collections"], label, inst, feats)

    b = jax.export.symbolic_shape("b")[0] if batch is None else batch
    label_spec = (jax.ShapeDtypeStruct((b, height, width), jnp.int32) if m.label_nc
                  else jax.ShapeDtypeStruct((b, height, width, m.input_nc), jnp.float32))
    inst_spec = jax.ShapeDtypeStruct((b, height, width), jnp.int32) if m.use_instance else None
    feat_spec = jax.ShapeDtypeStruct((b, height, width, m.feat_num), jnp.float32) if m.uses_features else None
    leaf_specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
    exported = jax.export.export(jax.jit(served), platforms=platforms)(leaf_specs, label_spec, inst_spec, feat_spec)
    storage.write_bytes(storage.join(path, "generator.jaxexport"), exported.serialize())
    buf = io.BytesIO()
    np.savez(buf, **{f"p{i:05d}": np.asarray(x) for i, x in enumerate(leaves)})
    storage.write_bytes(storage.join(path, "params.npz"), buf.getvalue())
    signature = {"height": height, "width": width, "batch": batch, "output": output, "label_nc": m.label_nc,
                 "use_instance": m.use_instance, "feat_num": m.feat_num if m.uses_features else 0,
                 "platforms": list(exported.platforms), "step": synth.step}
    storage.write_text(storage.join(path, "signature.json"), json.dumps(signature, indent=2))
    return path


class ExportedGenerator:
    """Run an artifact written by Synthesizer.export with jax alone (no pix2pixhd_jax model code)."""

    SIGNATURE_KEYS = ("height", "width", "label_nc", "use_instance", "feat_num")

    def __init__(self, path: str):
        if not storage.isdir(path):
            raise FileNotFoundError(f"{path} is not an export folder (Synthesizer.export writes one)")
        names = {k: storage.join(path, k) for k in ("generator.jaxexport", "params.npz", "signature.json")}
        missing = [n for n in names.values() if not storage.isfile(n)]
        if missing:
            raise FileNotFoundError(f"{path} is not a complete export: {', '.join(missing)} missing")
        self.exported = self._read(names["generator.jaxexport"], "a jax.export artifact",
                                   lambda f: jax.export.deserialize(bytearray(f.read())))
        self.params = self._read(names["params.npz"], "an .npz of arrays", lambda f: self._arrays(f))
        self.signature = self._read(names["signature.json"], "JSON", json.load, mode="r")
        if not isinstance(self.signature, dict) or any(k not in self.signature for k in self.SIGNATURE_KEYS):
            raise ValueError(f"{names['signature.json']} is not an export signature: it needs the keys "
                             f"{list(self.SIGNATURE_KEYS)}")
        s = self.signature
        expected = len(self.exported.in_avals) - 1 - bool(s["use_instance"]) - bool(s["feat_num"])
        if len(self.params) != expected:
            raise ValueError(f"{names['params.npz']} holds {len(self.params)} arrays but the generator takes "
                             f"{expected}; the folder mixes files of two exports")

    @staticmethod
    def _arrays(f) -> list[jax.Array]:
        with np.load(f, allow_pickle=False) as data:
            return [jnp.asarray(data[k]) for k in sorted(data.files)]

    @staticmethod
    def _read(name: str, what: str, parse: Callable, mode: str = "rb") -> Any:
        """parse(open file), any failure reported as a ValueError naming the file."""
        try:
            with storage.open(name, mode) as f:
                return parse(f)
        except Exception as e:  # flatbuffer, zip and JSON decoders raise assorted types
            raise ValueError(f"cannot read {name} as {what} ({type(e).__name__}: {e})") from None

    def __call__(self, label, inst=None, feats=None) -> jax.Array:
        s = self.signature
        label = jnp.asarray(label, jnp.int32 if s["label_nc"] else jnp.float32)
        if s["use_instance"] and inst is None:
            raise ValueError("this generator was exported with instance maps: pass inst")
        if s["feat_num"] and feats is None:
            raise ValueError(f"this generator was exported with {s['feat_num']} feature channels: pass feats")
        if label.shape[1:3] != (s["height"], s["width"]):
            raise ValueError(f"label size {label.shape[1:3]} differs from the exported {s['height']}x{s['width']}")
        return self.exported.call(self.params, label, None if inst is None else jnp.asarray(inst, jnp.int32),
                                  None if feats is None else jnp.asarray(feats, jnp.float32))
