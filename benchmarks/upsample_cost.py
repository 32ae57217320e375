"""Time G's forward + backward for each model.upsample_layer, interleaved, on one config's G.

  python -m benchmarks.upsample_cost --config=synthetic_demo --rounds=5

Each round times every layer once, so machine load shifts all of them alike; medians are printed
as one JSON line per layer. Only G: D and the perceptual loss, the rest of a step, do not depend on
the upsampling layer.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Optional, Sequence

from pix2pixhd_jax.cli import process

import jax
import jax.numpy as jnp

from benchmarks import harness
from pix2pixhd_jax.models import factory
from pix2pixhd_jax.models.layers import UPSAMPLE_LAYERS


def g_grad_fn(config, layer: str, x: jax.Array):
    """(jitted grad of a mean-square of G's output, G's params) for config with upsample_layer=layer."""
    config = config.copy_and_resolve_references()
    config.model.upsample_layer = layer
    g = factory.make_generator(config.model)
    params = jax.jit(g.init)(jax.random.PRNGKey(0), x)["params"]  # eager init compiles op by op
    return jax.jit(jax.grad(lambda p, x: jnp.mean(g.apply({"params": p}, x) ** 2))), params


COLUMNS: tuple[harness.Column, ...] = (
    ("upsample_layer", lambda r: r["upsample_layer"]), ("config", lambda r: r["config"]), ("size", lambda r: r["size"]),
    ("G fwd+bwd s (median)", lambda r: f"{r['g_fwd_bwd_s']:.4f}"))


def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="synthetic_demo", help="a module of configs/")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--layers", default=",".join(UPSAMPLE_LAYERS))
    p.add_argument("--out", default="", help="also write the rows as upsample_cost.json and .md to this folder")
    a = p.parse_args(argv)
    config = harness.load_config(a.config)
    h, w = config.data.synthetic_height, config.data.synthetic_width
    x = jax.random.normal(jax.random.PRNGKey(0), (1, h, w, factory.generator_input_nc(config.model)))
    fns = {layer: g_grad_fn(config, layer, x) for layer in a.layers.split(",")}
    # The warm-up call compiles outside the timed rounds.
    seconds = harness.interleave({layer: (lambda f=f, params=params: f(params, x)) for layer, (f, params) in fns.items()},
                                 a.rounds)
    rows = [{"upsample_layer": layer, "config": a.config, "size": f"{w}x{h}", "rounds": a.rounds,
             "g_fwd_bwd_s": median} for layer, median in harness.medians(seconds).items()]
    for row in rows:
        print(json.dumps(row))
    if a.out:
        harness.write_results(a.out, "upsample_cost", rows, harness.markdown_table(rows, COLUMNS))
    return rows


if __name__ == "__main__":
    process.setup()  # XLA flags before the first computation
    main()
