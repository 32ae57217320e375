"""One run per workdir: process 0 holds a lease (lease.json) for as long as it trains.

Two runs writing one workdir would interleave their metrics, overwrite each other's config.json
and delete each other's checkpoints. The lease makes the second one refuse at start, naming the
holder (run id, host, process, last heartbeat).

- On a local (or mounted) disk the lease is an OS file lock on lease.json: it ends with the process
  that holds it, so a run killed with kill -9 frees the workdir at once.
- On gs:// the lease is an object written with generation preconditions, which the server checks
  atomically: creating it requires that none exists, and every heartbeat and takeover requires the
  generation last seen, so of two racing runs exactly one wins. The holder rewrites it every
  `stale_s / 5` seconds; a lease not rewritten for `stale_s` seconds (its holder died), or one whose
  holder ran on this host in a process that no longer exists (the usual rerun after a crash or an
  outage), is taken over with a warning, and `take_over=True` takes a live one. A holder whose heartbeat finds
  another run's generation has lost the lease (`lost` says to whom) and must stop without saving.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import uuid
from typing import Any, Optional

from pix2pixhd_jax import storage
from pix2pixhd_jax.run_folder import RunFolder

log = logging.getLogger(__name__)
_HELD_HERE: set[str] = set()  # run ids of the leases this process holds now


class WorkdirBusy(RuntimeError):
    """Another live run holds the workdir's lease; nothing was done."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _holder_text(holder: dict[str, Any]) -> str:
    return (f"run {holder.get('run_id', '?')} on host {holder.get('host', '?')} "
            f"(process {holder.get('pid', '?')}, started {holder.get('started', '?')})")


def _gone_from_this_host(holder: dict[str, Any]) -> bool:
    """True when the holder ran on this host and its process no longer exists (a crash, kill -9, an outage)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by another user
        return False
    # This very process: gone unless one of its leases is still held (a run that ended without releasing).
    return holder["pid"] == os.getpid() and holder.get("run_id") not in _HELD_HERE


def _parse(text: str) -> dict[str, Any]:
    try:
        holder = json.loads(text)
        return holder if isinstance(holder, dict) else {}
    except ValueError:
        return {}


class WorkdirLease:
    """The lease on `run.lease`. Acquire with `acquire()` (raises WorkdirBusy), end with `release()`; `lost` is set if taken over."""

    def __init__(self, run: RunFolder, *, stale_s: float, take_over: bool = False, timeout_s: Optional[float] = None):
        self.workdir = run.root
        self.path = run.lease
        self.stale_s = float(stale_s)
        self.take_over = take_over
        self.timeout_s = timeout_s
        self.run_id = uuid.uuid4().hex[:12]
        self.lost: Optional[str] = None
        self._fd: Optional[int] = None
        self._created_workdir = False
        self._generation: Optional[int] = None
        self._stop = threading.Event()
        self._heartbeat: Optional[threading.Thread] = None

    def _payload(self) -> str:
        return json.dumps({"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                           "started": self._started, "heartbeat": _now().isoformat(timespec="seconds")})

    def acquire(self) -> "WorkdirLease":
        self._started = _now().isoformat(timespec="seconds")
        if storage.is_remote(self.path):
            storage.bounded(f"taking the lease {self.path}", self.timeout_s, self._acquire_object)
            self._heartbeat = threading.Thread(target=self._beat, name="workdir lease heartbeat", daemon=True)
            self._heartbeat.start()
        else:
            self._acquire_file()
        _HELD_HERE.add(self.run_id)
        return self

    # Local disks: an OS lock.
    def _acquire_file(self) -> None:
        self._created_workdir = not os.path.isdir(self.workdir)
        os.makedirs(self.workdir, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                with open(self.path) as f:
                    holder = _parse(f.read())
                self._release_workdir()
                raise self._locked_by(holder) from None
            try:  # the holder may have released (and removed) the file between our open and lock
                same = os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _parse(os.pread(fd, 1 << 16, 0).decode("utf-8", "replace"))
        if previous:
            log.warning("%s: taking over the lease of %s, which ended without releasing it", self.workdir,
                        _holder_text(previous))
        data = self._payload().encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._fd = fd

    def _locked_by(self, holder: dict[str, Any]) -> WorkdirBusy:
        return WorkdirBusy(f"{self.workdir} is in use by {_holder_text(holder)}, which is still running (it holds "
                           f"the lock on {self.path}); stop that run first, or train in another --workdir")

    def _release_workdir(self) -> None:
        """Remove a workdir this lease created if nothing else was written into it."""
        if self._created_workdir:
            try:
                if not [n for n in os.listdir(self.workdir) if n != os.path.basename(self.path)]:
                    if os.path.exists(self.path):
                        os.remove(self.path)
                    os.rmdir(self.workdir)
            except OSError:
                pass

    # gs://: generation preconditions.
    def _blob(self) -> Any:
        from google.cloud import storage as gcs

        if not hasattr(self, "_bucket"):
            self._bucket = gcs.Client(project=None).bucket(storage.bucket(self.path))
        return self._bucket.blob(self.path.split("/", 3)[3])

    def _acquire_object(self) -> None:
        from google.api_core import exceptions as api_exceptions

        for _ in range(5):  # each retry follows a race another run won or a lease released meanwhile
            blob = self._blob()
            try:
                blob.upload_from_string(self._payload(), content_type="application/json", if_generation_match=0)
                self._generation = blob.generation
                return
            except api_exceptions.PreconditionFailed:
                pass
            current = self._bucket.get_blob(blob.name)
            if current is None:
                continue
            holder, age, gone = self._holder_of(current)
            if self._refuses(age, gone):
                raise self._held_by(holder, age)
            why = (f"its process {holder.get('pid')} on this host is gone" if gone
                   else f"its last heartbeat was {age:.0f} s ago" if age >= self.stale_s else "on request (--take_over)")
            try:
                blob.upload_from_string(self._payload(), content_type="application/json",
                                        if_generation_match=current.generation)
            except api_exceptions.PreconditionFailed:
                continue  # another run took it first; look again
            self._generation = blob.generation
            log.warning("%s: took over the lease of %s (%s)", self.workdir, _holder_text(holder), why)
            return
        raise WorkdirBusy(f"{self.workdir}: the lease {self.path} changed hands five times while this run "
                          "tried to take it; another run is starting there")

    def _holder_of(self, current: Any) -> tuple[dict[str, Any], float, bool]:
        """The lease object's holder, seconds since its last heartbeat, and whether its process is gone from this host."""
        holder = _parse(current.download_as_text())
        age = (_now() - current.updated).total_seconds() if current.updated else float("inf")
        return holder, age, _gone_from_this_host(holder)

    def _refuses(self, age: float, gone: bool) -> bool:
        return age < self.stale_s and not self.take_over and not gone

    def _held_by(self, holder: dict[str, Any], age: float) -> WorkdirBusy:
        return WorkdirBusy(
            f"{self.workdir} is in use by {_holder_text(holder)}: its last heartbeat was {age:.0f} s ago "
            f"(a lease is stale after {self.stale_s:.0f} s, train.lease_stale_s). Wait for it to finish, "
            "train in another --workdir, or pass --take_over if that run is certainly gone")

    # A look before the work: refuse the way acquire() would, taking and writing nothing.
    def check_free(self) -> None:
        """Raise WorkdirBusy if a live run holds the lease now, as acquire() would; creates and writes nothing.

        A command asks this before it loads its libraries and data, so a refused run ends in a second or two.
        acquire() stays the check that counts (a run that takes the lease after this look is refused there).
        Storage errors are raised; anything else (no lease to read, no storage client installed) is left to
        the command's own checks and to acquire().
        """
        try:
            if storage.is_remote(self.path):
                # The backend first: no credentials, no bucket or no answer get their own message.
                storage.check_backend(self.path, **({} if self.timeout_s is None else {"timeout_s": self.timeout_s}))
                storage.bounded(f"reading the lease {self.path}", self.timeout_s, self._check_object)
            else:
                self._check_file()
        except (WorkdirBusy, storage.StorageError):
            raise
        except Exception as e:  # noqa: BLE001  (reported, if it matters, where the run takes the lease)
            log.debug("could not look at the lease %s before starting: %s", self.path, e)

    def _check_file(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            # A shared lock conflicts only with a holder's exclusive one, and is dropped at once with the fd.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise self._locked_by(_parse(os.pread(fd, 1 << 16, 0).decode("utf-8", "replace"))) from None
        finally:
            os.close(fd)

    def _check_object(self) -> None:
        blob = self._blob()
        current = self._bucket.get_blob(blob.name)
        if current is not None:
            holder, age, gone = self._holder_of(current)
            if self._refuses(age, gone):
                raise self._held_by(holder, age)

    def _beat(self) -> None:
        from google.api_core import exceptions as api_exceptions

        while not self._stop.wait(self.stale_s / 5):
            blob = self._blob()
            try:
                blob.upload_from_string(self._payload(), content_type="application/json",
                                        if_generation_match=self._generation)
                self._generation = blob.generation
            except api_exceptions.PreconditionFailed:
                current = self._bucket.get_blob(blob.name)
                holder = _parse(current.download_as_text()) if current is not None else {}
                self.lost = (f"this run's lease on {self.workdir} was taken over by {_holder_text(holder)}"
                             if holder else f"this run's lease {self.path} was removed")
                return
            except Exception as e:  # an outage: the operations the loop waits on report it
                log.debug("lease heartbeat failed: %s", e)

    def release(self, *, quiet: bool = False) -> None:
        """End the lease (bounded on gs://; errors are logged, never raised; `quiet`: at debug level)."""
        self._stop.set()
        _HELD_HERE.discard(self.run_id)
        if self._heartbeat is not None:
            self._heartbeat.join(self.timeout_s)  # a heartbeat in flight changes the generation
        if self._fd is not None:
            try:
                os.remove(self.path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
            self._release_workdir()
        elif self._generation is not None and self.lost is None:
            generation, self._generation = self._generation, None
            try:
                storage.bounded(f"releasing the lease {self.path}", self.timeout_s,
                                lambda: self._blob().delete(if_generation_match=generation))
            except Exception as e:  # a lease left behind goes stale; nothing is lost
                (log.debug if quiet else log.warning)("could not release the lease %s (%s); it goes stale after %.0f s",
                            self.path, e, self.stale_s)
