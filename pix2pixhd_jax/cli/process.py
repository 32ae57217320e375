"""Process set-up shared by every command: XLA flags, logging, distributed init, flags, errors.

`setup()` sets the XLA flags every process needs; `run_command` calls it first, and scripts that
are not commands (benchmarks, test workers) call it themselves. XLA reads its flags once, when the
first computation starts its backend; importing JAX, flax or this package starts none (tests/
test_process.py checks it), so the import order does not matter. On CPU, jaxlib routes convolutions
to YNNPACK by default, which is several times slower than XLA's own Eigen convolutions for this
model's shapes; CPU_CONV_FLAG keeps convolutions on Eigen (GPU and TPU backends ignore it).

Every command is `main(argv) -> int`, built with `run_command`: absl flags on a fresh FlagValues
(so commands can run in-process side by side, as the tests do), `--help` that exits 0, one-line
errors for a bad config path, an unknown or mistyped key (with the closest match) or a bad value,
and `--print_config` for the commands that take a config.
"""
from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import sys
import threading
import warnings
from typing import Callable, Optional, Sequence

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

from pix2pixhd_jax import run_config, storage, workdir_lease
from pix2pixhd_jax.configs import default as configs_default

CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def add_xla_flags(*flags_: str) -> None:
    """Append XLA flags to the environment unless already present (effective only before JAX starts)."""
    current = os.environ.get("XLA_FLAGS", "")
    extra = [f for f in flags_ if f.split("=")[0] not in current]
    os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()


def setup() -> None:
    """The process-wide settings every command needs; call before the first JAX computation."""
    add_xla_flags(CPU_CONV_FLAG)

# Errors a user can fix from the message alone: printed as one line (set this variable for a traceback).
TRACEBACK_ENV = "PIX2PIXHD_TRACEBACK"
USER_ERRORS = (run_config.ConfigError, ValueError, FileNotFoundError, KeyError, FloatingPointError, IsADirectoryError,
               storage.StorageError, workdir_lease.WorkdirBusy)
# Exit statuses, one per kind of outcome (README, "Exit statuses"); 130/143 come from `stopping`.
FAILED, USAGE, WORKDIR_BUSY, INTERRUPTED = 1, 2, 3, 130
# How long interpreter exit may wait for background threads (a storage client retrying a dead endpoint).
EXIT_GRACE_S = 15.0
CONFIG_HELP = ("Config keys and their defaults, one commented line each: configs/default.py. Override any key "
               "as --config.<section>.<key>=value, e.g. --config.model.ngf=32; --print_config shows the result.")


class UsageError(Exception):
    """A command-line mistake: printed as one line with exit status 2."""


class _DropLibraryChatter(logging.Filter):
    """Orbax logs every checkpoint step at INFO through absl; keep its warnings only.

    Libraries' tracebacks are dropped too (their one-line message stays): a storage client that
    retries a dead endpoint logs one per attempt from its own threads, and the error that ends the
    command says what failed in one line. PIX2PIXHD_TRACEBACK=1 keeps them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("pix2pixhd_jax") and not os.environ.get(TRACEBACK_ENV):
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def _ignore_callbacks_on_closed_loops(unraisable: "sys.UnraisableHookArgs") -> None:
    """sys.unraisablehook that drops one known straggler and passes everything else on.

    Orbax reads a checkpoint with TensorStore futures on a private asyncio loop and closes the loop
    when the first read fails (a truncated array); the other reads' completion callbacks then find
    the loop closed, and Python would print that traceback after the command's one-line error. The
    failure itself has already been raised and reported.
    """
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


def setup_logging(verbose: bool) -> None:
    """INFO from this package (training progress), warnings only from the libraries."""
    logging.basicConfig(format="%(levelname).1s %(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S", force=True)
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    logging.getLogger("pix2pixhd_jax").setLevel(logging.INFO if verbose else logging.WARNING)
    for handler in root.handlers + logging.getLogger("absl").handlers:
        handler.addFilter(_DropLibraryChatter())
    logging.getLogger("absl").setLevel(logging.WARNING)


def initialize_distributed(mode: str, coordinator: Optional[str], num_processes: Optional[int],
                           process_id: Optional[int]) -> None:
    """jax.distributed.initialize() when asked, or ('auto') on Cloud TPU pods and Slurm jobs."""
    explicit = coordinator is not None
    auto = any(k in os.environ for k in ("TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID", "MEGASCALE_COORDINATOR_ADDRESS"))
    if mode == "off" or (mode == "auto" and not (explicit or auto)):
        return
    # JAX warns that proxy variables may hang the coordinator; NO_PROXY (which only exempts hosts,
    # e.g. a local storage emulator) cannot, so only real proxy settings keep the warning.
    proxies = [k for k in os.environ if "_proxy" in k.lower() and k.lower() != "no_proxy"]
    if not proxies:
        jax.config.update("jax_check_proxy_envs", False)
    if explicit:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    else:
        jax.distributed.initialize()


def define_distributed_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                      "jax.distributed.initialize(): 'auto' = on Cloud TPU pods and Slurm jobs", flag_values=fv)
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (explicit multi-host)", flag_values=fv)
    flags.DEFINE_integer("num_processes", None, "total processes (explicit multi-host)", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "this process's index (explicit multi-host)", flag_values=fv)


def define_config_flag(fv: flags.FlagValues, argv: Sequence[str], required: bool = True) -> None:
    """--config=configs/x.py[:arg] with --config.a.b=value overrides (read from argv), and --print_config."""
    config_flags.DEFINE_config_file("config", None, "ml_collections config file. " + CONFIG_HELP,
                                    flag_values=fv, lock_config=True, sys_argv=list(argv))
    flags.DEFINE_bool("print_config", False, "print the resolved config and exit", flag_values=fv)
    if required:
        flags.mark_flag_as_required("config", flag_values=fv)


def default_config() -> ml_collections.ConfigDict:
    """configs/default.py: the defaults that complete configs saved by older versions."""
    return configs_default.get_config()


def _config_keys(config: ml_collections.ConfigDict, prefix: str = "config.") -> list[str]:
    out = []
    for k, v in config.items():
        out += _config_keys(v, f"{prefix}{k}.") if isinstance(v, ml_collections.ConfigDict) else [prefix + k]
    return out


def _config_file_keys(argv: Sequence[str]) -> list[str]:
    """Dotted keys ('config.train.max_steps', ...) of the --config file on the command line, if it loads."""
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if not path:
        return []
    file, _, arg = path.partition(":")
    try:
        spec = importlib.util.spec_from_file_location("_config_file_for_key_hints", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return _config_keys(module.get_config(arg) if arg else module.get_config())
    except Exception:  # the override error is the message that matters
        return []


def _explain_override_error(argv: Sequence[str], fallback: str) -> str:
    """'unknown config key --config.train.max_step; did you mean --config.train.max_steps?' style messages."""
    keys = _config_file_keys(argv)
    overrides = [a[2:].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    for name in overrides:
        if keys and name not in keys:
            close = difflib.get_close_matches(name, keys, n=1)
            hint = f"; did you mean --{close[0]}?" if close else "; the keys are listed in configs/default.py"
            return f"unknown config key --{name}{hint}"
    return fallback


def parse(fv: flags.FlagValues, argv: Sequence[str], doc: str) -> None:
    """Parse argv into fv; --help prints the usage and raises SystemExit(0)."""
    if any(a in ("-h", "--help", "--helpfull", "-?") for a in argv[1:]):
        has_config = "config" in fv
        print(doc.strip() + "\n\nflags:\n" + fv.get_help(include_special_flags=False)
              + ("\n\n" + CONFIG_HELP if has_config else ""))
        raise SystemExit(0)
    try:
        fv(list(argv))
    except flags.Error as e:
        raise UsageError(_explain_override_error(argv, str(e).splitlines()[0])) from None
    except (AttributeError, KeyError) as e:  # ml_collections: an override of a key the config lacks
        raise UsageError(_explain_override_error(argv, str(e).splitlines()[0])) from None
    # Libraries that read absl flags (grain workers) require the global registry parsed.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def loaded_config(fv: flags.FlagValues) -> ml_collections.ConfigDict:
    """The --config value, with a failed load turned into a one-line error."""
    try:
        config = fv.config
        config.keys()  # an unloadable file surfaces here
    except (OSError, ImportError, SyntaxError, AttributeError) as e:
        message = str(e).splitlines()
        detail = next((line.strip() for line in reversed(message) if line.strip()), repr(e))
        raise UsageError(f"cannot load --config={fv['config'].config_filename}: {detail}") from None
    return config


def run_command(define: Callable[[flags.FlagValues, Sequence[str]], None], body: Callable[[flags.FlagValues], Optional[int]],
                argv: Optional[Sequence[str]], doc: str, *, verbose_logs: bool = False) -> int:
    """Parse flags, set up the process, run body; user errors become one line and a non-zero status."""
    setup()
    argv = list(sys.argv if argv is None else argv)
    fv = flags.FlagValues()
    define(fv, argv)
    try:
        parse(fv, argv, doc)
        if "print_config" in fv and fv.print_config:
            print(loaded_config(fv).to_json_best_effort(indent=2) if "config" in fv else "")
            return 0
        setup_logging(verbose_logs)
        sys.unraisablehook = _ignore_callbacks_on_closed_loops
        return int(body(fv) or 0)
    except (UsageError, run_config.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C) before anything was trained", file=sys.stderr)
        return INTERRUPTED
    except USER_ERRORS as e:
        if os.environ.get(TRACEBACK_ENV):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        # One line: a supervisor's log shows the last line of a failed job.
        print(f"error: {message} ({TRACEBACK_ENV}=1 shows the traceback)", file=sys.stderr)
        return WORKDIR_BUSY if isinstance(e, workdir_lease.WorkdirBusy) else FAILED


def exit_with(status: int) -> None:
    """sys.exit for `python -m` entry points, flushing tqdm/logging first; the exit itself is bounded.

    Interpreter exit joins every background thread; a storage client retrying an endpoint that is
    gone (an async checkpoint save, an upload) would hold the process for minutes or for ever, and a
    supervisor never restarts a job that does not exit. After EXIT_GRACE_S the process ends anyway,
    with the same status.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if not os.environ.get(TRACEBACK_ENV):  # the command's last line stays its last line
        logging.disable(logging.CRITICAL)
        threading.excepthook = lambda args: None
        # Teardown collects what an abandoned storage call left, e.g. an async save's coroutine that
        # was never awaited; its RuntimeWarning would otherwise print after the last line.
        warnings.simplefilter("ignore")
    watchdog = threading.Timer(EXIT_GRACE_S, os._exit, args=(status,))
    watchdog.daemon = True
    watchdog.start()
    sys.exit(status)
