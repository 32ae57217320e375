"""Convert official pix2pixHD `.pth` checkpoints into an Orbax checkpoint of our variables.

    python -m pix2pixhd_jax.cli.convert --net global --pth checkpoints/label2city_512p/latest_net_G.pth \
        --out converted/G --option input_nc=36 --option ngf=64

Options use the official names (see compat.official.build_module); values are parsed as Python
literals. The output folder holds the Orbax tree (`variables/`) and `options.json`; load it with
`load_converted(out)`.
"""
from __future__ import annotations

import ast
import json
import os

import orbax.checkpoint as ocp

from pix2pixhd_jax import storage
from pix2pixhd_jax.compat.official import build_from_torch, build_module, load_pth


def parse_options(pairs: list[str]) -> dict:
    """['ngf=64', 'norm=batch'] -> {'ngf': 64, 'norm': 'batch'} (values as Python literals where they parse)."""
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--option expects name=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value  # bare strings such as norm=batch
    return options


def convert(pth: str, net: str, out: str, options: dict) -> dict:
    """Read `pth`, check it strictly against `net`/`options`, write `out`; return the variables."""
    _, variables = build_from_torch(load_pth(pth), net, **options)
    out = os.fspath(storage.path(out))  # local or gs://
    storage.makedirs(out)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(storage.join(out, "variables"), variables, force=True)
    storage.write_text(storage.join(out, "options.json"),
                       json.dumps({"net": net, "options": options, "source": os.fspath(storage.path(pth))}, indent=2))
    return variables


def load_converted(path: str):
    """(module, variables) from a folder written by `convert`."""
    path = os.fspath(storage.path(path))
    meta = json.loads(storage.read_text(storage.join(path, "options.json")))
    module, _, _ = build_module(meta["net"], **meta["options"])
    with ocp.StandardCheckpointer() as ckptr:
        variables = ckptr.restore(storage.join(path, "variables"))
    return module, variables
