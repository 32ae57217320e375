"""The first hour at the command line: help, one-line errors, printed configs, nothing left behind."""
import json
import os

import pytest

from pix2pixhd_jax import run_config
from pix2pixhd_jax.cli import process, train as train_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny_test.py")


def _run(capsys, *args):
    status = train_cli.main(["prog", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_help_exits_zero_and_says_where_the_config_keys_live(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["prog", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--workdir" in out and "configs/default.py" in out and "--print_config" in out


@pytest.mark.parametrize("args, message", [
    (["--config=/nowhere/x.py"], "error: cannot load --config=/nowhere/x.py: [Errno 2] No such file"),
    ([f"--config={TINY}", "--config.train.max_step=20"],
     "error: unknown config key --config.train.max_step; did you mean --config.train.max_steps?"),
    ([f"--config={TINY}", "--config.train.max_steps=abc"], "error: flag --config.train.max_steps=abc"),
    ([f"--config={TINY}", "--config.train.log_every=0"], "error: train.log_every=0: must be >= 1"),
    ([f"--config={TINY}", "--config.model.conv_impl=fast"], "error: model.conv_impl='fast': must be"),
    ([f"--config={TINY}", "--workdr=x"], "error: Unknown command line flag 'workdr'. Did you mean: workdir ?"),
    ([f"--config={TINY}", "--config.model.norm=foo"], "error: model.norm='foo': must be"),
    ([f"--config={TINY}", "--config.train.max_steps=-5"], "error: train.max_steps=-5: must be >= 0"),
])
def test_mistakes_give_one_line_and_create_nothing(capsys, tmp_path, args, message):
    """Usage and config mistakes alike exit with status 2 (they used to differ: 2 for a flag, 1 for a value)."""
    workdir = tmp_path / "w"
    status, out, err = _run(capsys, *args, f"--workdir={workdir}")
    assert status == process.USAGE == 2
    assert err.startswith(message), err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not workdir.exists()


def test_print_config_shows_the_resolved_values_and_exits(capsys, tmp_path):
    status, out, _ = _run(capsys, f"--config={TINY}", "--config.model.ngf=7", "--print_config")
    assert status == 0 and json.loads(out)["model"]["ngf"] == 7
    assert not (tmp_path / "w").exists()


def test_older_saved_configs_are_completed_from_the_defaults():
    defaults = process.default_config()
    saved = defaults.to_dict()
    del saved["model"]["conv_impl"], saved["augment"]
    saved["model"]["ngf"] = 7
    assert sorted(run_config.missing_keys(saved, defaults)) == ["augment", "model.conv_impl"]
    done = run_config.complete(saved, defaults)
    assert done.model.ngf == 7 and done.model.conv_impl == defaults.model.conv_impl
    assert done.augment.to_dict() == defaults.augment.to_dict() and not run_config.missing_keys(done, defaults)
    assert run_config.differences(done.model, defaults.model) == ["ngf: checkpoint 7 vs given 64"]
