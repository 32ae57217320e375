"""Multi-process runs on one gs:// workdir: 2 processes x 2 CPU devices (jax.distributed + gloo
collectives), each image's rows split over a process's 2 devices (mesh.space=2), train like 1 process
x 2 devices splitting only the batch; a restart resumes from their shared checkpoint; and a preemption
notice (SIGTERM) that reaches one process only stops both after the same step, with a checkpoint.

One scenario serves all three, since every 2-process launch pays two start-ups and two compiles: the
train command as 2 child processes (tests/train_process.py) trains step 1, then a restart resumes and
trains on until process 1 gets SIGTERM. The 1-process reference is train.run in this process.
"""
import json
import os
import signal
import socket
import tempfile
import uuid

import numpy as np
import pytest
from flax import traverse_util

from gcs_emulator import BUCKET, gcs_emulator  # noqa: F401  (the session fixture)
from pix2pixhd_jax import storage, train
from pix2pixhd_jax.configs import tiny_test
from run_helpers import saved_state
from train_process import TrainProcess

# Both layouts see the same 2 examples as their global batch at every step: one batch per epoch, in order,
# unflipped (flips are drawn per process shard). Adam's eps keeps its step smooth in noise-level gradients
# (see test_train_step); XLA's own convolutions serve both layouts (the CPU rewrites refuse space > 1).
SAME_BATCHES = {"data.synthetic_num": 2, "data.serial_batches": True, "data.no_flip": True, "optim.eps": 1e-3,
                "model.conv_impl": "lax", "train.checkpoint_every": 1, "train.keep_checkpoints": 1000}
TWO_PROCESSES = {**SAME_BATCHES, "num_devices": 0, "mesh.space": 2}  # all 4 devices: data 2 x space 2
ONE_PROCESS = {**SAME_BATCHES, "num_devices": 2, "mesh.space": 1, "train.max_steps": 2}  # data 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_device_xla_flags() -> str:
    """The session's XLA flags (its fast-compile CPU setting included) with 2 devices instead of 8."""
    count = "--xla_force_host_platform_device_count="
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(count)]
    return " ".join([*kept, f"{count}2"])


def _launch(workdir: str, max_steps: int) -> list[TrainProcess]:
    port = _free_port()
    flags = [f"--config.{k}={v}" for k, v in TWO_PROCESSES.items()]
    return [TrainProcess(workdir, *flags, f"--config.train.max_steps={max_steps}", "--distributed=on",
                         f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}",
                         cwd=tempfile.mkdtemp(), extra_env={"XLA_FLAGS": _two_device_xla_flags(),
                                                            "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"},
                         every_process_caches=True)  # the restart then compiles nothing
            for i in range(2)]


def _losses(workdir: str) -> dict[int, float]:
    lines = storage.read_text(storage.join(workdir, "metrics.jsonl")).splitlines()
    return {r["step"]: r["loss_G"] for r in map(json.loads, lines) if "loss_G" in r}


def _committed(workdir: str, step: int) -> bool:
    return storage.exists(storage.join(workdir, "checkpoints", str(step), "commit_success.txt"))


def _params(workdir: str, step: int) -> dict[str, np.ndarray]:
    """G's and D's parameters in checkpoint `step`, by path (read on this process's first device: the
    checkpoint's own device layout is another process topology's)."""
    state = saved_state(workdir, step)
    flat = traverse_util.flatten_dict({k: state[k] for k in ("g_params", "d_params")}, sep="/")
    return {k: np.asarray(v) for k, v in flat.items()}


@pytest.mark.slow
def test_two_processes_train_like_one_resume_together_and_stop_together_on_sigterm(gcs_emulator,  # noqa: F811
                                                                                    tmp_path):
    workdir = f"gs://{BUCKET}/two-processes-{uuid.uuid4().hex[:6]}"
    first = _launch(workdir, max_steps=1)
    assert [p.finish() for p in first] == [0, 0], [p.output[-2000:] for p in first]

    # The restart resumes from the checkpoint both processes wrote, then a preemption notice reaches
    # process 1 only: process 0 gets no signal at all, and both must save the same last step.
    procs = _launch(workdir, max_steps=100000)
    procs[0].wait_for(lambda: 2 in _losses(workdir), "step 2 stored")
    procs[1].proc.send_signal(signal.SIGTERM)
    statuses = [p.finish(timeout=300) for p in procs]
    assert statuses == [143, 143], [p.output[-2000:] for p in procs]
    assert all("resumed from step 1" in p.output for p in procs), procs[0].output[-2000:]
    last = procs[0].last_line()
    assert last.startswith("preempted at step ") and "saved; rerun to resume" in last, procs[0].output[-2000:]
    stopped = int(last.split("preempted at step ")[1].split(",")[0])
    assert stopped >= 2 and _committed(workdir, stopped)
    assert "SIGTERM (preemption)" in procs[1].output and "SIGTERM" not in procs[0].output
    assert not any("may cause a hang" in p.output for p in procs)  # NO_PROXY alone is not a proxy
    assert os.environ.get("STORAGE_EMULATOR_HOST")  # the children really talked to the emulator

    reference = str(tmp_path / "one")
    config = tiny_test.get_config()
    for key, value in ONE_PROCESS.items():
        *section, name = key.split(".")
        (config[section[0]] if section else config)[name] = value
    train.run(config, reference)
    one, two = _params(reference, 1), _params(workdir, 1)
    assert sorted(one) == sorted(two) and one
    # After step 1: float32 agreement (the all-reduce sums in another order).
    scale = max(float(np.abs(x).max()) for x in one.values())
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=0, atol=1e-5 * scale, err_msg=k)
    # After the resumed step 2, Adam's normalised step turns 1e-6 gradient differences into up to
    # ~0.3 lr in a few weights; bound each weight by one Adam step (lr = 2e-4).
    one, two = _params(reference, 2), _params(workdir, 2)
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=0, atol=2e-4, err_msg=k)
    assert [_losses(workdir)[s] for s in (1, 2)] == pytest.approx([_losses(reference)[s] for s in (1, 2)], rel=1e-5)
