"""Stop requests: Ctrl-C (SIGINT) and preemption (SIGTERM) end a run at a step boundary, saved.

The first signal only records why the run should stop; the loop finishes the step in flight, saves
a checkpoint, flushes metrics and returns, and the command exits with a status that says why
(`EXIT_STATUS`). After the first Ctrl-C, SIGINT is back to its default action, so a second Ctrl-C
quits at once without saving: the kernel applies a default action even while XLA compiles or a
step runs, where a Python handler would wait for them to return.

On several hosts a preemption notice may reach the processes at different steps. Every process
contributes its own flag to `agreed`, an all-reduce that runs right after each step, and stops
only on the agreed value: all processes stop after the same step and save the same checkpoint.
"""
from __future__ import annotations

import signal
import sys
from typing import Optional

INTERRUPTED = "interrupted"
PREEMPTED = "preempted"
# The conventional shell statuses of a process ended by the signal (128 + number): a supervisor
# (Slurm requeue, TPU queued resources, a Kubernetes Job) reads 143 as "preempted, restart me".
EXIT_STATUS = {INTERRUPTED: 128 + signal.SIGINT, PREEMPTED: 128 + signal.SIGTERM}
_REASON = {signal.SIGINT: INTERRUPTED, signal.SIGTERM: PREEMPTED}
# Sent to every process when another process received the notice (the all-reduce tells which).
_CODES = {None: 0, INTERRUPTED: 1, PREEMPTED: 2}


class StopRequests:
    """SIGINT/SIGTERM handlers for the duration of a `with` block; `reason` is None until a signal arrives."""

    def __init__(self) -> None:
        self.reason: Optional[str] = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequests":
        for signum in _REASON:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (a library caller): signals keep their meaning
                pass
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        del frame
        first = self.reason is None
        self.reason = self.reason or _REASON[signum]
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # the next Ctrl-C quits at once
        if first:
            what = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM (preemption)"
            extra = "; press Ctrl-C again to quit at once without saving" if signum == signal.SIGINT else ""
            sys.stderr.write(f"\n{what}: stopping after the step in flight to save a checkpoint{extra}\n")
            sys.stderr.flush()

    def code(self) -> int:
        """This process's request as a number for the cross-process all-reduce (max wins)."""
        return _CODES[self.reason]

    @staticmethod
    def reason_of(code: int) -> Optional[str]:
        """The agreed reason for an all-reduced code."""
        return {v: k for k, v in _CODES.items()}[int(code)]
