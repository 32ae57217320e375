"""Per-layer-family profile of the train step: our jitted layers vs the official PyTorch layers.

  python -m benchmarks.layer_profile --config=bench_512x256 --rounds=5
  python -m benchmarks.layer_profile --config=bench_1024x512 --baseline=lax   # our conv rewrites vs plain lax

Each row is one unit of the official networks at the shapes the benchmark step runs (e.g. the
generator's front block is ReflectionPad2d(3) + Conv2d(7x7) + InstanceNorm2d + ReLU), timed as
forward + backward (gradients of the parameters and, past the input layer, of the input), with the
two frameworks alternating per round so machine load hits both alike; the minimum over rounds is
reported. The official side is built from torch.nn layers as the released networks.py stacks them;
ours uses the project's Flax modules, so the computational forms `model.conv_impl` selects are in.
Rows that repeat in the step say so ("x9"); the step total is not the sum (the step also runs the
losses, the three D passes and XLA's fusion across layers).
"""
from __future__ import annotations

from pix2pixhd_jax.cli import process
from pix2pixhd_jax import host_memory

import argparse
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness


def _normal(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.normal(size=shape).astype(np.float32)


def jax_unit(module, x: np.ndarray, input_grad: bool) -> Callable[[], Any]:
    """fn() running module forward + backward on x (NHWC) with a fixed random cotangent."""
    variables = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.asarray(x))
    out_shape = jax.eval_shape(module.apply, variables, jnp.asarray(x))
    cotangent = jax.tree_util.tree_map(lambda s: jnp.asarray(_normal(np.random.default_rng(1), s.shape)), out_shape)

    @jax.jit
    def fwd_bwd(params, x, cotangent):
        f = lambda p, a: module.apply({**variables, "params": p}, a)
        if input_grad:
            return jax.vjp(f, params, x)[1](cotangent)
        return jax.vjp(lambda p: f(p, x), params)[1](cotangent)

    x = jnp.asarray(x)
    return lambda: jax.block_until_ready(fwd_bwd(variables["params"], x, cotangent))


def torch_unit(module, x: np.ndarray, input_grad: bool) -> Callable[[], Any]:
    """fn() running module forward + backward on x (NHWC, moved to NCHW) with a random cotangent."""
    import torch

    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(input_grad)
    with torch.no_grad():
        out = module(xt)
    outs = out if isinstance(out, (list, tuple)) else [out]
    rng = np.random.default_rng(1)
    cotangents = [torch.from_numpy(_normal(rng, tuple(o.shape))) for o in outs]

    def run():
        module.zero_grad(set_to_none=True)
        xt.grad = None
        y = module(xt)
        torch.autograd.backward(list(y) if isinstance(y, (list, tuple)) else [y], cotangents)

    return run


def units(config) -> list[tuple[str, str, Callable[[], Any], Callable[[], Any]]]:
    """(name, times per step, ours, official) for each layer family at the config's bench shapes."""
    import torch
    from torch import nn as tnn

    from pix2pixhd_jax.models import generator as g
    from pix2pixhd_jax.models.discriminator import NLayerDiscriminator
    from pix2pixhd_jax.models.layers import ResnetBlock

    m, b = config.model, config.bench
    torch.manual_seed(0)  # the official layers' default init draws from torch's generator
    rng = np.random.default_rng(0)
    impl = dict(conv_impl=m.conv_impl)
    g_in = m.label_nc + (1 if m.use_instance else 0)
    h, w, ngf = b.height, b.width, m.ngf
    rows = []

    def add(name, count, ours, official, x, input_grad=True):
        rows.append((name, count, jax_unit(ours, x, input_grad), torch_unit(official, x, input_grad)))

    conv_block = lambda ci, co, k, s, p, reflect: tnn.Sequential(
        *([tnn.ReflectionPad2d(reflect)] if reflect else []), tnn.Conv2d(ci, co, k, s, p),
        tnn.InstanceNorm2d(co), tnn.ReLU(True))
    add(f"G front: pad, 7x7 conv {g_in}->{ngf}, IN, ReLU @{w}x{h}", "1",
        g.ConvNormReLU(ngf, 7, reflect=3, **impl), conv_block(g_in, ngf, 7, 1, 0, 3), _normal(rng, (1, h, w, g_in)),
        input_grad=False)
    for i in range(m.n_downsample_global):
        ci, s = ngf * 2 ** i, 2 ** i
        add(f"G down{i}: 3x3/s2 conv {ci}->{2 * ci}, IN, ReLU @{w // s}x{h // s}", "1",
            g.ConvNormReLU(2 * ci, 3, stride=2, padding=1, **impl), conv_block(ci, 2 * ci, 3, 2, 1, 0),
            _normal(rng, (1, h // s, w // s, ci)))
    s, c = 2 ** m.n_downsample_global, ngf * 2 ** m.n_downsample_global

    class TorchResBlock(tnn.Module):
        def __init__(self, dim):
            super().__init__()
            self.body = tnn.Sequential(tnn.ReflectionPad2d(1), tnn.Conv2d(dim, dim, 3), tnn.InstanceNorm2d(dim),
                                       tnn.ReLU(True), tnn.ReflectionPad2d(1), tnn.Conv2d(dim, dim, 3),
                                       tnn.InstanceNorm2d(dim))

        def forward(self, x):
            return x + self.body(x)

    add(f"G residual block {c}ch @{w // s}x{h // s}", f"x{m.n_blocks_global}", ResnetBlock(**impl), TorchResBlock(c),
        _normal(rng, (1, h // s, w // s, c)))
    for i in range(m.n_downsample_global):
        ci, s = ngf * 2 ** (m.n_downsample_global - i), 2 ** (m.n_downsample_global - i)
        up = tnn.Sequential(tnn.ConvTranspose2d(ci, ci // 2, 3, 2, 1, output_padding=1), tnn.InstanceNorm2d(ci // 2),
                            tnn.ReLU(True))
        add(f"G up{i}: 3x3/s2 transposed conv {ci}->{ci // 2}, IN, ReLU @{w // s}x{h // s}", "1",
            g.UpNormReLU(ci // 2, upsample_impl=m.upsample_impl, **impl), up, _normal(rng, (1, h // s, w // s, ci)))
    add(f"G output: pad, 7x7 conv {ngf}->{m.output_nc}, tanh @{w}x{h}", "1", g.OutputConv(m.output_nc, **impl),
        tnn.Sequential(tnn.ReflectionPad2d(3), tnn.Conv2d(ngf, m.output_nc, 7), tnn.Tanh()),
        _normal(rng, (1, h, w, ngf)))

    from pix2pixhd_jax.compat.official import official_networks_module

    networks = official_networks_module()
    d_in = g_in + m.output_nc
    for scale in range(m.num_D):
        f = 2 ** scale
        official_d = networks.NLayerDiscriminator(d_in, m.ndf, m.n_layers_D, networks.get_norm_layer(m.norm),
                                                 False, True)
        add(f"D at 1/{f}: {m.n_layers_D + 2} 4x4 convs, IN, LeakyReLU @{w // f}x{h // f}", "3 fwd, 2 bwd",
            NLayerDiscriminator(m.ndf, m.n_layers_D, **impl), official_d, _normal(rng, (1, h // f, w // f, d_in)))
    return rows


def with_conv_impl(config, conv_impl: str):
    """A copy of config whose layers use conv_impl."""
    import ml_collections

    config = ml_collections.ConfigDict(config.to_dict())
    config.model.conv_impl = conv_impl
    return config


def main(argv=None) -> list[dict]:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="bench_512x256", help="configs/<name>.py")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--baseline", default="official", choices=("official", "lax"),
                   help="what our layers are timed against: the official PyTorch layers, or our own layers "
                        "with plain lax convolutions (ours then forced to the rewrites: which form wins here)")
    p.add_argument("--out", default="", help="also write the rows as layer_profile_<config>_<baseline>.json/.md here")
    a = p.parse_args(argv)
    resident = host_memory.keep_temporaries_resident()
    config = harness.load_config(a.config)
    if a.baseline == "lax":
        rewrites, plain = units(with_conv_impl(config, "rewrite")), units(with_conv_impl(config, "lax"))
        rows = [(name, count, ours, base[2]) for (name, count, ours, _), base in zip(rewrites, plain)]
    else:
        rows = units(config)
    # Baseline and ours alternate within each round; warm-up calls compile.
    calls = {}
    for name, _, ours, baseline in rows:
        calls[(name, "baseline")], calls[(name, "ours")] = baseline, ours
    times = harness.interleave(calls, a.rounds)
    results = [{"unit": name, "per_step": count, "baseline": a.baseline,
                "baseline_ms": min(times[(name, "baseline")]) * 1e3, "ours_ms": min(times[(name, "ours")]) * 1e3}
               for name, count, *_ in rows]
    ours_label = "ours (rewrites) ms" if a.baseline == "lax" else "ours ms"
    columns: tuple[harness.Column, ...] = (
        (f"{a.config}, fwd+bwd, min of {a.rounds} on {jax.devices()[0].device_kind} (torch threads "
         f"{torch.get_num_threads()}, temporaries resident: {resident})", lambda r: r["unit"]),
        ("per step", lambda r: r["per_step"]), (f"{a.baseline} ms", lambda r: f"{r['baseline_ms']:.1f}"),
        (ours_label, lambda r: f"{r['ours_ms']:.1f}"), ("speed-up", lambda r: f"{r['baseline_ms'] / r['ours_ms']:.2f}x"))
    table = harness.markdown_table(results, columns)
    print(table)
    if a.out:
        harness.write_results(a.out, f"layer_profile_{a.config}_{a.baseline}", results, table)
    return results


if __name__ == "__main__":
    process.setup()  # XLA flags before the first computation
    main()
