"""Ways to damage a checkpoint step or a folder, shared by the reliability and training tests."""
import contextlib
import glob
import os
import shutil
import subprocess

import pytest


def truncate_array_data(step_dir):
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True) if os.path.isfile(f)]
    for f in files:
        with open(f, "r+b") as data:
            data.truncate(os.path.getsize(f) // 2)


def garble_manifest(step_dir):
    for f in glob.glob(os.path.join(step_dir, "state", "**", "manifest.ocdbt"), recursive=True):
        open(f, "wb").write(b"garbage" * 8)


def delete_metadata(step_dir):
    os.remove(os.path.join(step_dir, "state", "_METADATA"))


def garbage_iterator_json(step_dir):
    for f in glob.glob(os.path.join(step_dir, "data_iter", "*.json")):
        open(f, "w").write("{not json")


def empty_step(step_dir):
    shutil.rmtree(step_dir)
    os.makedirs(step_dir)


@contextlib.contextmanager
def read_only(path):
    """Make `path` read-only for this process: a read-only bind mount as root, chmod otherwise."""
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "--bind", "-o", "ro", path, path],
                                                   capture_output=True).returncode == 0
    if not mounted:
        os.chmod(path, 0o555)
    try:
        try:
            open(os.path.join(path, ".probe"), "w").close()
            os.remove(os.path.join(path, ".probe"))
            pytest.skip("cannot make a read-only folder here")
        except OSError:
            pass
        yield
    finally:
        if mounted:
            subprocess.run(["umount", path], check=True)
        else:
            os.chmod(path, 0o755)
