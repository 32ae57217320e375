"""How runs end on a local disk: Ctrl-C keeps the run, one run per workdir, metrics that continue exactly,
storage calls that cannot hang the loop.

The end-to-end tests run the train command as a child process (tests/train_process.py); the lease,
the metric writer and the storage bound are also tested directly, without JAX programs.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pix2pixhd_jax import storage, workdir_lease
from pix2pixhd_jax.metric_writer import MetricWriter
from pix2pixhd_jax.run_folder import RunFolder
from train_process import TrainProcess, checkpoint_steps, logged_steps, metric_records


def _no_duplicates(workdir):
    seen = [(r["step"], k) for r in metric_records(workdir) for k in r if k != "step"]
    assert len(seen) == len(set(seen)), sorted(x for x in seen if seen.count(x) > 1)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_refuses_a_second_run_and_the_rerun_resumes(tmp_path):
    """Ctrl-C used to exit with a 20-line traceback and an empty checkpoints/ (issue 26); nothing stopped a
    second run in the same workdir (issue 22). The first run starts in another directory than the repository,
    as a user's does (the config path is absolute)."""
    workdir = tmp_path / "w"
    first = TrainProcess(workdir, "--config.train.max_steps=100000", cwd=str(tmp_path))
    first.wait_for_steps(3)
    # Paused, the first run keeps its lease (and its process) but trains no steps while the second starts.
    first.proc.send_signal(signal.SIGSTOP)
    try:
        assert json.load(open(RunFolder.of(workdir).lease))["pid"] == first.proc.pid  # the run holds the lease
        second = TrainProcess(workdir, "--config.train.max_steps=100000")
        assert second.finish() == 3, second.output[-3000:]
    finally:
        first.proc.send_signal(signal.SIGCONT)
    assert second.last_line().startswith(f"error: {workdir} is in use by run "), second.output[-2000:]
    assert second.last_line().endswith("(PIX2PIXHD_TRACEBACK=1 shows the traceback)")
    assert "still running" in second.output and "Traceback" not in second.output

    first.proc.send_signal(signal.SIGINT)
    assert first.finish() == 130, first.output[-3000:]
    saved = checkpoint_steps(workdir)
    assert saved, first.output[-3000:]
    assert first.last_line().startswith(f"interrupted at step {saved[-1]}, checkpoint {saved[-1]} saved; "
                                        "rerun to resume (held-out L1 ")
    assert "Traceback" not in first.output and "KeyboardInterrupt" not in first.output
    assert not os.path.exists(RunFolder.of(workdir).lease)  # released on the way out
    _no_duplicates(workdir)

    rerun = TrainProcess(workdir, f"--config.train.max_steps={saved[-1] + 2}")
    assert rerun.finish() == 0, rerun.output[-3000:]
    assert f"resumed from step {saved[-1]}" in rerun.output
    assert rerun.last_line().startswith(f"done: step {saved[-1] + 2}, held-out L1 ")
    assert logged_steps(workdir) == list(range(1, saved[-1] + 3))  # every step once, in order
    _no_duplicates(workdir)


@pytest.mark.slow
def test_a_second_ctrl_c_quits_at_once(tmp_path):
    run = TrainProcess(tmp_path / "w", "--config.train.max_steps=100000")
    run.wait_for_output("compiling the train step")
    run.proc.send_signal(signal.SIGINT)
    run.wait_for_output("press Ctrl-C again to quit at once", timeout=60)
    run.proc.send_signal(signal.SIGINT)
    # Killed by the signal itself (SIGINT's default action), not by a clean-up that ran to its end.
    assert run.finish(timeout=120) == -signal.SIGINT


def test_a_killed_holder_frees_a_local_workdir_at_once(tmp_path, caplog):
    """On a local disk the lease is an OS lock: kill -9 of its holder frees it; the next run says so."""
    workdir = str(tmp_path / "w")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pix2pixhd_jax import workdir_lease
        from pix2pixhd_jax.run_folder import RunFolder
        workdir_lease.WorkdirLease(RunFolder({workdir!r}), stale_s=300).acquire()
        print("held", flush=True)
        time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(workdir_lease.WorkdirBusy, match=rf"in use by run \w+ on host .* \(process {holder.pid}"):
            workdir_lease.WorkdirLease(RunFolder(workdir), stale_s=300).acquire()
        # The look the train command takes before loading anything refuses the same way, and takes nothing.
        with pytest.raises(workdir_lease.WorkdirBusy, match=rf"in use by run \w+ on host .* \(process {holder.pid}"):
            workdir_lease.WorkdirLease(RunFolder(workdir), stale_s=300).check_free()
        assert json.load(open(RunFolder(workdir).lease))["pid"] == holder.pid
        holder.kill()
        holder.wait()
        workdir_lease.WorkdirLease(RunFolder(workdir), stale_s=300).check_free()  # a dead holder's file: free
        lease = workdir_lease.WorkdirLease(RunFolder(workdir), stale_s=300).acquire()
        assert "taking over the lease of run" in caplog.text and "ended without releasing it" in caplog.text
        assert json.load(open(RunFolder(workdir).lease))["pid"] == os.getpid()
        lease.release()
        assert not os.path.exists(RunFolder(workdir).lease)
    finally:
        holder.kill()


def test_a_refused_lease_leaves_no_workdir_behind(tmp_path):
    workdir = str(tmp_path / "new")
    workdir_lease.WorkdirLease(RunFolder(workdir), stale_s=300).check_free()
    assert not os.path.exists(workdir)  # looking creates nothing
    lease = workdir_lease.WorkdirLease(RunFolder(workdir), stale_s=300).acquire()
    lease.release()
    assert not os.path.exists(workdir)  # it created the folder and wrote nothing else into it


def test_metrics_continue_from_the_resumed_checkpoint(tmp_path):
    """Lines a run wrote after its last checkpoint are dropped on resume; a resumed step is not written twice."""
    workdir = str(tmp_path)
    writer = MetricWriter(RunFolder(workdir), resume_step=None)
    for step in (0, 1, 2, 3):
        writer.write(step, {"loss_G": float(step)})
    writer.write(2, {"holdout_L1": 0.5})
    writer.close()
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write('{"step": 4, "loss_G"')  # a crash in the middle of a line
    resumed = MetricWriter(RunFolder(workdir), resume_step=2)
    resumed.write(2, {"holdout_L1": 0.5, "eval/x": 1.0})  # the resumed step: only the new key is written
    resumed.write(3, {"loss_G": 30.0})
    resumed.close()
    records = metric_records(workdir)
    assert [(r["step"], sorted(k for k in r if k != "step")) for r in records] == [
        (0, ["loss_G"]), (1, ["loss_G"]), (2, ["loss_G"]), (2, ["holdout_L1"]), (2, ["eval/x"]), (3, ["loss_G"])]
    assert records[-1]["loss_G"] == 30.0
    fresh = MetricWriter(RunFolder(workdir), resume_step=None)  # a run that never checkpointed: nothing of it is kept
    fresh.close()
    assert metric_records(workdir) == []


def test_a_storage_call_that_never_answers_is_abandoned_within_its_bound():
    release = threading.Event()
    t0 = time.monotonic()
    with pytest.raises(storage.StorageUnavailable, match=r"^saving checkpoint 5 to gs://b/c/5: no answer from "
                                                         r"storage within 1 s$"):
        storage.bounded("saving checkpoint 5 to gs://b/c/5", 1.0, release.wait)
    assert time.monotonic() - t0 < 60  # not the call's own (unbounded) wait, even on a loaded machine
    release.set()


def test_storage_failures_become_one_line_and_other_errors_pass_through():
    def refused():
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as e:
            raise RuntimeError("upload failed") from e

    with pytest.raises(storage.StorageUnavailable,
                       match=r"^writing metrics to gs://b/m.jsonl failed \(RuntimeError: upload failed\)$"):
        storage.bounded("writing metrics to gs://b/m.jsonl", 5.0, refused)
    with pytest.raises(FloatingPointError, match="NaN"):  # not a storage failure: unchanged
        storage.bounded("saving checkpoint 1 to x", 5.0, lambda: (_ for _ in ()).throw(FloatingPointError("NaN")))
    assert storage.bounded("reading", 5.0, lambda a, b=0: a + b, 2, b=3) == 5
