"""One path type for local files and Google Cloud Storage: every file the project reads or writes.

Paths are `etils.epath.Path`s. A local path is made absolute; a URL (`gs://bucket/run`) is kept as
it is, never passed through `os.path.abspath`. Without TensorFlow, epath reaches `gs://` through
fsspec/gcsfs, which the `gcs` extra installs (`pip install -e .[gcs]`); the other clients that touch
a bucket bring their own GCS code: Orbax writes arrays with TensorStore, TFDS reads ArrayRecord
files with array_record's C++ client, tensorboardX writes events with google-cloud-storage.

Cloud objects are immutable and have no append: `append_text` rewrites the whole object (the
metrics file stays one readable JSON-lines file; each append costs one read and one upload of it,
so callers batch lines). Listings are never cached, so a file another host just wrote is seen.

`check_backend` fails before any work when a `gs://` path cannot be used (no backend installed, no
credentials, an emulator set up for some clients only, a missing or unreadable bucket).
"""
from __future__ import annotations

import importlib.util
import io
import os
import posixpath
import re
import shutil
import threading
from typing import IO, Any, Callable, Iterator, Optional, TypeVar, Union

from etils import epath

PathLike = Union[str, os.PathLike]
T = TypeVar("T")

# Every client's own setting for a custom GCS endpoint (the emulator in tests): gcsfs and
# google-cloud-storage (epath, tensorboardX) read STORAGE_EMULATOR_HOST, TensorStore (Orbax's array
# data) reads TENSORSTORE_GCS_HTTP_URL once per process, google-cloud-cpp (array_record, so TFDS
# data sources) reads CLOUD_STORAGE_EMULATOR_ENDPOINT. All three must point at the same server.
EMULATOR_VARIABLES = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "CLOUD_STORAGE_EMULATOR_ENDPOINT")
INSTALL_HINT = "pip install -e '.[gcs]'  (gcsfs and google-cloud-storage)"
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class StorageError(RuntimeError):
    """A path whose storage cannot be used: the message says what to install or set."""


class StorageUnavailable(StorageError):
    """A storage operation failed or did not answer in time; the message names the operation and the path."""


def _configure_fsspec() -> None:
    # fsspec keeps directory listings forever by default; on shared storage another host's writes
    # would stay invisible to this one, so gcsfs lists afresh each time (one request per listing).
    try:
        import fsspec.config
    except ImportError:
        return
    fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)


_configure_fsspec()


def scheme(p: PathLike) -> Optional[str]:
    """'gs' for 'gs://b/x', None for a local path."""
    m = _URL.match(os.fspath(p))
    return m.group(1).lower() if m else None


def is_remote(p: PathLike) -> bool:
    return scheme(p) is not None


def path(p: PathLike) -> epath.Path:
    """`p` as an epath.Path: URLs kept, local paths made absolute (with ~ expanded)."""
    s = os.fspath(p)
    if is_remote(s):
        return epath.Path(s)
    return epath.Path(os.path.abspath(os.path.expanduser(s)))


def join(p: PathLike, *parts: str) -> str:
    """os.path.join for local paths, '/'-joined for URLs (the URL's '//' kept)."""
    s = os.fspath(p)
    return posixpath.join(s, *parts) if is_remote(s) else os.path.join(s, *parts)


def bucket(p: PathLike) -> str:
    """'b' for 'gs://b/x/y'."""
    s = os.fspath(p)
    if not is_remote(s):
        raise ValueError(f"{s} is a local path, not a bucket URL")
    return _URL.sub("", s).split("/", 1)[0]


def exists(p: PathLike) -> bool:
    return path(p).exists()


def isdir(p: PathLike) -> bool:
    """True for a directory (on GCS: a prefix with at least one object under it)."""
    return path(p).is_dir()


def isfile(p: PathLike) -> bool:
    return path(p).is_file()


def makedirs(p: PathLike) -> None:
    """Create the directory and its parents; on GCS there are no directories, so nothing to do."""
    if not is_remote(p):
        os.makedirs(path(p), exist_ok=True)


def listdir(p: PathLike) -> list[str]:
    """Sorted names in the directory; FileNotFoundError if there is none."""
    d = path(p)
    if not d.is_dir():
        raise FileNotFoundError(f"no directory {os.fspath(p)}")
    return sorted(c.name for c in d.iterdir())


def walk(p: PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk for local folders and URLs: (dirpath, sorted dirnames, sorted filenames), top-down."""
    s = os.fspath(p)
    if not is_remote(s):
        for dirpath, dirs, files in os.walk(s):
            dirs.sort()
            yield dirpath, dirs, sorted(files)
        return
    prefix = f"{scheme(s)}://"
    for dirpath, dirs, files in path(s).walk():
        d = os.fspath(dirpath)  # epath's fsspec walk drops the scheme: 'bucket/x' for 'gs://bucket/x'
        yield (d if is_remote(d) else prefix + d.lstrip("/")), sorted(dirs), sorted(files)


def open(p: PathLike, mode: str = "rb") -> IO[Any]:  # noqa: A001  (the module's file opener)
    """A file object (for PIL, np.load/np.savez, json); remote writes are uploaded on close."""
    if "a" in mode and is_remote(p):
        # gcsfs would silently turn 'a' into an overwrite.
        raise ValueError(f"{os.fspath(p)}: objects cannot be appended to; use storage.append_text")
    if any(c in mode for c in "wax") and not is_remote(p):
        makedirs(os.path.dirname(path(p)))
    return path(p).open(mode)


def read_bytes(p: PathLike) -> bytes:
    return path(p).read_bytes()


def read_text(p: PathLike) -> str:
    return path(p).read_text(encoding="utf-8")


def write_bytes(p: PathLike, data: bytes) -> None:
    """Write `data` to `p` whole (parents created): readers never see half a file.

    A GCS object appears at once when its upload completes; locally a temporary file is renamed.
    """
    if is_remote(p):
        with open(p, "wb") as f:
            f.write(data)
        return
    target = os.fspath(path(p))
    tmp = f"{target}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, target)


def write_text(p: PathLike, text: str) -> None:
    write_bytes(p, text.encode("utf-8"))


def write_image(p: PathLike, image: Any) -> None:
    """Save a PIL image to `p` whole, in the format its extension names (.png, .jpg, ...)."""
    ext = posixpath.splitext(os.fspath(p))[1][1:].upper()
    buf = io.BytesIO()
    image.save(buf, format={"JPG": "JPEG", "TIF": "TIFF"}.get(ext, ext or "PNG"))
    write_bytes(p, buf.getvalue())


def append_text(p: PathLike, text: str) -> None:
    """Append `text`; on GCS by rewriting the object with its old content first (objects are immutable)."""
    if not is_remote(p):
        with open(p, "ab") as f:
            f.write(text.encode("utf-8"))
        return
    old = read_text(p) if exists(p) else ""
    write_text(p, old + text)


def remove(p: PathLike) -> None:
    path(p).unlink()


def copy(src: PathLike, dst: PathLike) -> None:
    """Copy one file between any two locations (local <-> gs://), streaming."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, length=8 << 20)


def copytree(src: PathLike, dst: PathLike) -> list[str]:
    """Copy every file under `src` to the same relative place under `dst`; returns the files written."""
    written = []
    for child in sorted(path(src).iterdir()):
        target = join(dst, child.name)
        if child.is_dir():
            written += copytree(child, target)
        else:
            copy(child, target)
            written.append(target)
    return written


def emulator_env(url: str) -> dict[str, str]:
    """The environment that points every GCS client at a local emulator at `url` (http://host:port)."""
    env = {name: url for name in EMULATOR_VARIABLES}
    # gcsfs's zonal-bucket probe talks gRPC to the real control plane; an emulator has none.
    env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    return env


def _check_installed(p: str) -> None:
    missing = [m for m in ("gcsfs", "google.cloud.storage") if _find_spec(m) is None]
    if missing:
        raise StorageError(f"{p} is on Google Cloud Storage, but the GCS backend is not installed "
                           f"(missing {', '.join(missing)}): {INSTALL_HINT}")


def _find_spec(module: str) -> Any:
    try:
        return importlib.util.find_spec(module)
    except ImportError:  # a missing parent package (google.cloud)
        return None


def _emulator_url(p: str) -> Optional[str]:
    """The emulator all clients point at, None for real GCS; an error if only some are set."""
    values = {name: os.environ.get(name, "") for name in EMULATOR_VARIABLES}
    set_ = {name: v.rstrip("/") if "://" in v else f"http://{v}".rstrip("/") for name, v in values.items() if v}
    if not set_:
        return None
    if len(set_) < len(values) or len(set(set_.values())) > 1:
        shown = ", ".join(f"{k}={v or '(unset)'}" for k, v in values.items())
        raise StorageError(f"{p}: a GCS emulator is configured for some clients only ({shown}); set all of "
                           f"{', '.join(EMULATOR_VARIABLES)} to the same URL, or none of them for real GCS")
    return next(iter(set_.values()))


def _check_credentials(p: str) -> None:
    import google.auth
    import google.auth.exceptions

    try:
        google.auth.default()
    except google.auth.exceptions.DefaultCredentialsError as e:
        raise StorageError(
            f"{p} is on Google Cloud Storage, but no Google credentials were found ({e}). On a Cloud TPU/GCE "
            "VM the VM's service account is used; elsewhere set GOOGLE_APPLICATION_CREDENTIALS to a "
            "service-account JSON key or run `gcloud auth application-default login`. For a local "
            f"emulator set {', '.join(EMULATOR_VARIABLES)} to its URL.") from e


def _check_bucket(p: str, timeout_s: float) -> None:
    from google.api_core import exceptions as api_exceptions
    from google.cloud import storage as gcs
    from google.cloud.storage import retry as gcs_retry

    name = bucket(p)
    try:
        # A short retry budget: an unreachable endpoint should fail the check, not stall it for minutes.
        blobs = gcs.Client(project=None).list_blobs(name, max_results=1, timeout=min(10.0, timeout_s),
                                                    retry=gcs_retry.DEFAULT_RETRY.with_timeout(timeout_s))
        list(blobs)
    except api_exceptions.NotFound as e:
        raise StorageError(f"{p}: bucket gs://{name} does not exist ({e.message}). Create it "
                           f"(`gcloud storage buckets create gs://{name}`) or fix the path.") from e
    except api_exceptions.GoogleAPICallError as e:
        raise StorageError(f"{p}: the credentials in use cannot list gs://{name} ({e.code}: {e.message}); "
                           "grant them roles/storage.objectAdmin on the bucket") from e
    except Exception as e:  # connection refused, DNS, timeouts: the endpoint is not there
        where = _emulator_url(p) or "storage.googleapis.com"
        raise StorageError(f"{p}: cannot reach Google Cloud Storage at {where} ({type(e).__name__}: {e})") from e


# (endpoint, bucket) pairs this process has listed once: a command's several start-up checks (the
# workdir lease, then the trainer) probe a bucket over the network only the first time.
_listed_buckets: set[tuple[str, str]] = set()


def check_backend(*paths: Optional[PathLike], probe: bool = True, timeout_s: float = 20.0) -> None:
    """Raise StorageError unless every remote path in `paths` can be used; local paths and None pass.

    Checks, in order: the scheme is gs://, the GCS backend is installed, an emulator is configured
    for all clients or none, credentials exist (real GCS), and (probe=True) the bucket can be listed
    within `timeout_s` (retries included) -- once per bucket and endpoint in a process; a failed
    probe is tried again next time.
    """
    for p in paths:
        if not p or not is_remote(p):
            continue
        s = os.fspath(p)
        if scheme(s) != "gs":
            raise StorageError(f"{s}: only local paths and gs:// URLs are supported")
        _check_installed(s)
        if _emulator_url(s) is None:
            _check_credentials(s)
        else:
            # An emulator needs no credentials; without a token TensorStore (Orbax's array writes)
            # logs an error line about the missing gcloud credentials file on every command.
            os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
        listed = (_emulator_url(s) or "storage.googleapis.com", bucket(s))
        if probe and listed not in _listed_buckets:
            _check_bucket(s, timeout_s)
            _listed_buckets.add(listed)


# Modules whose exceptions mean "the storage did not answer" (HTTP clients of gcsfs, google-cloud-storage).
_IO_ERROR_MODULES = ("aiohttp", "google.", "requests", "urllib3", "gcsfs", "fsspec")
# TensorStore (Orbax's array writes) reports transport failures as ValueErrors carrying a status code.
_IO_STATUS = re.compile(r"\b(UNAVAILABLE|DEADLINE_EXCEEDED|ABORTED|INTERNAL|UNKNOWN|RESOURCE_EXHAUSTED)\b")


def is_io_error(error: BaseException) -> bool:
    """True when `error`, or an exception it was raised from, is a failure of storage I/O."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (OSError, TimeoutError, StorageError)):
            return True
        if type(error).__module__.startswith(_IO_ERROR_MODULES):
            return True
        if isinstance(error, ValueError) and _IO_STATUS.search(str(error)):
            return True
        error = error.__cause__ or error.__context__
    return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else ""


def bounded(what: str, timeout_s: Optional[float], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs), given at most `timeout_s` seconds (None: no bound).

    `what` names the operation and its path ("saving checkpoint 50 to gs://b/run/checkpoints/50").
    A storage failure, or no answer in time, becomes one StorageUnavailable naming `what`; any other
    exception passes through unchanged. The call runs in a daemon thread, so a request that never
    returns is abandoned instead of blocking the caller or the interpreter's exit.
    """
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001  (handed to the caller's thread)
            outcome["error"] = e

    worker = threading.Thread(target=call, name=f"storage: {what}"[:60], daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise StorageUnavailable(f"{what}: no answer from storage within {timeout_s:.0f} s")
    error = outcome.get("error")
    if error is None:
        return outcome.get("value")
    if isinstance(error, StorageError) or not is_io_error(error):
        raise error
    raise StorageUnavailable(f"{what} failed ({type(error).__name__}: {_first_line(error)})") from error
