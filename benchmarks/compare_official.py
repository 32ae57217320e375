"""Our jitted train step vs the official PyTorch step, interleaved in one process (CPU or GPU).

  python -m benchmarks.compare_official --config=bench_512x256 --rounds=5
  python -m benchmarks.compare_official --config=bench_512x256 --rounds=5 --infer   # G forward only
  python -m benchmarks.compare_official --config=bench_1024x512 --rounds=10 --device=cuda   # on a GPU
  python -m benchmarks.compare_official --config=bench_1024x512 --rounds=10 --device=cuda --dtype=bfloat16
  python -m benchmarks.compare_official --config=bench_512x256 --rounds=4 --alone   # + peak RSS

The official side is the released code's networks (`pix2pixhd` package: GlobalGenerator,
MultiscaleDiscriminator, GANLoss) driven as its pix2pixHD_model.forward + train.py do: D on
fake.detach(), D on real, D on fake again for G, feature matching, VGG19 loss (torchvision's
layer layout, random weights), loss_G.backward + Adam step, loss_D.backward + Adam step. Steps
alternate between the two so that load on the shared machine hits both alike; medians reported.
With --alone each side instead runs in its own fresh process (official first, as a plain process
like its train.py), which also gives each its own peak RSS (getrusage; ours includes compilation).
"""
from __future__ import annotations

from pix2pixhd_jax.cli import process
from pix2pixhd_jax import host_memory

import argparse
import json
import resource
import statistics
import subprocess
import sys

import jax
import numpy as np

from benchmarks import harness


def torch_vgg19_slices(torch):
    """torchvision vgg19.features[:30] split as the official Vgg19 (relu1_1 .. relu5_1), random weights."""
    nn = torch.nn
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512]
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    bounds = (0, 2, 7, 12, 21, 30)
    slices = [nn.Sequential(*layers[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    for p in nn.ModuleList(slices).parameters():
        p.requires_grad_(False)
    return slices


def make_official_step(config, device: str = "cpu"):
    """step() running one official training iteration on random inputs; returns its closure."""
    import torch

    from pix2pixhd_jax.compat.official import official_networks_module

    networks = official_networks_module()
    m, loss_cfg, b = config.model, config.loss, config.bench
    g_in = m.label_nc + (1 if m.use_instance else 0)
    net_g = networks.define_G(g_in, m.output_nc, m.ngf, m.netG, m.n_downsample_global, m.n_blocks_global,
                              m.n_local_enhancers, m.n_blocks_local, m.norm, gpu_ids=[])
    net_d = networks.define_D(g_in + m.output_nc, m.ndf, m.n_layers_D, m.norm, False, m.num_D,
                              not loss_cfg.no_ganFeat_loss, gpu_ids=[])
    cuda = device == "cuda"
    gan = networks.GANLoss(use_lsgan=loss_cfg.gan_mode == "lsgan",
                           tensor=torch.cuda.FloatTensor if cuda else torch.FloatTensor)
    vgg = [s.to(device) for s in torch_vgg19_slices(torch)]
    net_g, net_d = net_g.to(device), net_d.to(device)
    weights = list(loss_cfg.vgg_layer_weights)
    opt_g = torch.optim.Adam(net_g.parameters(), lr=config.optim.lr_G, betas=(config.optim.beta1_G, 0.999))
    opt_d = torch.optim.Adam(net_d.parameters(), lr=config.optim.lr_D, betas=(config.optim.beta1_D, 0.999))
    rng = np.random.default_rng(0)
    label = torch.from_numpy(rng.integers(0, m.label_nc, (1, 1, b.height, b.width))).long()
    onehot = torch.zeros(1, m.label_nc, b.height, b.width).scatter_(1, label, 1.0)
    edge = torch.from_numpy((rng.uniform(size=(1, 1, b.height, b.width)) > 0.9).astype(np.float32))
    inp = torch.cat([onehot, edge], 1).to(device)
    real = torch.from_numpy(rng.uniform(-1, 1, (1, m.output_nc, b.height, b.width)).astype(np.float32)).to(device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    l1 = torch.nn.L1Loss()

    def vgg_feats(x):
        out = []
        for s in vgg:
            x = s(x)
            out.append(x)
        return out

    def step():
        fake = net_g(inp)
        pred_fake_pool = net_d(torch.cat([inp, fake.detach()], 1))
        loss_d_fake = gan(pred_fake_pool, False)
        pred_real = net_d(torch.cat([inp, real.detach()], 1))
        loss_d_real = gan(pred_real, True)
        pred_fake = net_d(torch.cat([inp, fake], 1))
        loss_g = gan(pred_fake, True)
        feat_w, d_w = 4.0 / (m.n_layers_D + 1), 1.0 / m.num_D
        for i in range(m.num_D):
            for j in range(len(pred_fake[i]) - 1):
                loss_g = loss_g + d_w * feat_w * l1(pred_fake[i][j], pred_real[i][j].detach()) * loss_cfg.lambda_feat
        fx, fy = vgg_feats(fake), vgg_feats(real)
        loss_g = loss_g + loss_cfg.lambda_feat * sum(w * l1(a, c.detach()) for w, a, c in zip(weights, fx, fy))
        loss_d = (loss_d_fake + loss_d_real) * 0.5
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        sync()
        return float(loss_g)

    def infer():
        with torch.no_grad():
            net_g.eval()
            out = net_g(inp)
            sync()
            net_g.train()
            return out

    return step, infer


def make_jax_step(config, infer: bool = False):
    """Our compiled train step (or, with infer, G's forward alone) on random inputs (same shapes).

    Only what the timed call needs is built, as the train and synthesize commands do: the full
    train state for the step, the generator's variables for inference.
    """
    from pix2pixhd_jax.models import factory
    from pix2pixhd_jax.state import split_generator_variables

    if infer:
        b, batch = config.bench, harness.synthetic_batch(config)
        nets = factory.build(config)
        init = lambda rng: split_generator_variables(
            factory.init_generator_variables(nets, config.model, rng, rng, height=b.height, width=b.width))
        g = jax.jit(init)(jax.random.PRNGKey(0))
        host_memory.release_freed()
        sample = jax.jit(factory.make_generate_fn(config, nets))
        sample = sample.lower(g["g_params"], g["g_collections"], batch).compile()
        host_memory.release_freed()
        return lambda: jax.block_until_ready(sample(g["g_params"], g["g_collections"], batch))

    train = harness.compile_train_step(config)
    return lambda: jax.block_until_ready(train.advance())


def run_alone(a: argparse.Namespace) -> dict:
    """Each side in a fresh process of its own: its step times and its peak RSS."""
    rows = {}
    for side in ("official_pytorch", "ours_jax"):
        cmd = [sys.executable, "-m", "benchmarks.compare_official", f"--config={a.config}", f"--rounds={a.rounds}",
               f"--device={a.device}", f"--side={side}", f"--dtype={a.dtype}"]
        cmd += ["--infer"] * a.infer + ["--plain_process"] * a.plain_process
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{side} failed:\n{out.stderr[-3000:]}")
        rows[side] = json.loads(out.stdout.strip().splitlines()[-1])
        r = rows[side]
        print(f"{side}: median {r['median_s']:.3f} s, min {r['min_s']:.3f} s, peak RSS {r['peak_rss_gb']:.2f} GB "
              f"({r['rounds']} steps after a warm-up, alone)", flush=True)
    o, j = rows["official_pytorch"], rows["ours_jax"]
    print(f"{a.config} {'G inference' if a.infer else 'train step'}, each alone: speed-up "
          f"{o['median_s'] / j['median_s']:.2f}x (medians), peak RSS official {o['peak_rss_gb']:.2f} GB, "
          f"ours {j['peak_rss_gb']:.2f} GB")
    return rows


def run_side(a: argparse.Namespace, fn) -> dict:
    """--side: warm up, time --rounds calls, print one JSON line (read by run_alone)."""
    fn()
    times = harness.timed(fn, a.rounds)
    row = {"median_s": statistics.median(times), "min_s": min(times), "rounds": a.rounds,
           "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}
    print(json.dumps(row))
    return row


COLUMNS: tuple[harness.Column, ...] = (
    ("side", lambda r: r["side"]), ("median s", lambda r: f"{r['median_s']:.3f}"),
    ("min s", lambda r: f"{r['min_s']:.3f}"), ("rounds", lambda r: f"{r['rounds']}"),
    ("peak RSS GB", lambda r: f"{r['peak_rss_gb']:.2f}" if "peak_rss_gb" in r else "-"))


def write_results(a: argparse.Namespace, rows: dict[str, dict]) -> None:
    """--out: <out>/compare_official_<config>_<train|infer>[_alone].json and .md, one row per side."""
    table_rows = [{"side": side, "config": a.config, **row} for side, row in rows.items()]
    stem = f"compare_official_{a.config}_{'infer' if a.infer else 'train'}{'_alone' if a.alone else ''}"
    harness.write_results(a.out, stem, table_rows, harness.markdown_table(table_rows, COLUMNS))


def main(argv=None) -> dict:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="bench_512x256", help="configs/<name>.py")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--infer", action="store_true", help="time G inference instead of the train step")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the official PyTorch code runs")
    p.add_argument("--plain_process", action="store_true",
                   help="train step: skip the process set-up our train command does (host_memory.keep_temporaries_resident)")
    p.add_argument("--dtype", default="", help="our model.compute_dtype, e.g. bfloat16 (the official side stays "
                   "float32, as it ships)")
    p.add_argument("--alone", action="store_true", help="run each side in its own process; report peak RSS too")
    p.add_argument("--out", default="", help="also write the per-side times as JSON + Markdown to this folder")
    p.add_argument("--side", choices=("official_pytorch", "ours_jax"), help=argparse.SUPPRESS)  # set by --alone
    a = p.parse_args(argv)
    if a.alone:
        rows = run_alone(a)
        if a.out:
            write_results(a, rows)
        return rows
    # The process set-up of the command that runs the measured work: `train` keeps XLA's temporaries
    # resident, the inference commands do not. It changes malloc for the whole process, so
    # interleaved the official side gets it too; alone it runs as its own train.py does, plainly.
    plain = a.plain_process or a.infer or a.side == "official_pytorch"
    resident = False if plain else host_memory.keep_temporaries_resident()
    config = harness.load_config(a.config)
    if a.dtype:
        config.model.compute_dtype = a.dtype
    torch.manual_seed(0)
    if a.side:
        official = a.side == "official_pytorch"
        return run_side(a, make_official_step(config, a.device)[a.infer] if official else make_jax_step(config, a.infer))
    official = make_official_step(config, a.device)[a.infer]
    ours = make_jax_step(config, a.infer)
    progress = lambda r, times: print(r, {k: round(v[-1], 3) for k, v in times.items()}, flush=True)
    times = harness.interleave({"official_pytorch": official, "ours_jax": ours}, a.rounds, after_round=progress)
    med = harness.medians(times)
    print(f"{a.config} {'G inference' if a.infer else 'train step'} {config.bench.width}x{config.bench.height}: "
          f"official {med['official_pytorch']:.3f} s, ours {med['ours_jax']:.3f} s, "
          f"speed-up {med['official_pytorch'] / med['ours_jax']:.2f}x (medians of {a.rounds}, torch threads "
          f"{torch.get_num_threads()}, jax on {jax.devices()[0].device_kind}, "
          f"ours in {config.model.compute_dtype}, CPU temporaries kept resident: {resident})")
    if a.device == "cuda":
        print(f"official peak CUDA memory allocated: {torch.cuda.max_memory_allocated() / 2 ** 30:.2f} GiB")
    if a.out:
        write_results(a, {k: {"median_s": med[k], "min_s": min(v), "rounds": a.rounds} for k, v in times.items()})
    return med


if __name__ == "__main__":
    process.setup()  # XLA flags before the first computation
    main()
