"""The background writer: encodes and stores snapshots off the training thread.

The training thread only appends a job to a queue (a C-level ``SimpleQueue.put``); one
daemon thread per Vault does the rest. ``flush`` waits for every job submitted so far. At
interpreter exit each writer gets a bounded wait (``RNGVAULT_EXIT_TIMEOUT``, default 10 s).
A thread with nothing to do for ``IDLE_EXIT`` seconds ends (the next snapshot starts a new
one), so a Vault that is not closed does not keep a thread; until ``close()`` a Vault that
took snapshots is held for the exit flush and report. Where no thread can start (at
interpreter shutdown), the jobs run on the thread that submits them.

Fork safety: a forked child (a DataLoader worker) never runs or flushes its parent's
writer; if it uses the parent's Vault, it gets a fresh, empty writer of its own.
"""

from __future__ import annotations

import atexit
import itertools
import os
import queue
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, Literal

from rngvault._errors import RngVaultError, RngVaultWarning, warn

OnError = Literal["warn", "raise"]
IDLE_EXIT = 30.0  # seconds an idle writer thread waits before it ends
MAX_BATCH = 64  # jobs handled together when they queue up (``handle_many``)


class StoreWarning(RngVaultWarning):
    """A snapshot could not be stored (with ``on_error="warn"``)."""


class Job:
    """One snapshot to store; ``flush()`` returns once it is stored or has failed."""

    __slots__ = ("error", "payload", "result")

    def __init__(self, payload: Any) -> None:
        self.payload = payload
        self.error: BaseException | None = None
        self.result: Any = None


Outcome = tuple[Any, BaseException | None]
"""One job's (result, error) from ``handle_many``."""


class Writer:
    """Runs ``handle(payload)`` for each submitted job on one background thread.

    With ``handle_many``, jobs that queued up while the thread was busy are handled
    together (up to ``MAX_BATCH``): ``handle_many(payloads)`` returns one ``(result,
    error)`` per payload, so one job's failure is that job's alone. A writer that keeps up
    handles its jobs one by one, unless ``linger`` (seconds) is set: then it waits that long
    after a job for more to join it, except for a job ``urgent(payload)`` calls urgent and
    while a ``flush()``, ``close()`` or durable wait is in progress.
    """

    def __init__(
        self,
        handle: Callable[[Any], Any],
        on_error: OnError,
        label: str,
        at_exit: Callable[[], None] | None = None,
        handle_many: Callable[[list[Any]], list[Outcome]] | None = None,
        linger: float = 0.0,
        urgent: Callable[[Any], bool] | None = None,
    ) -> None:
        if on_error not in ("warn", "raise"):
            raise ValueError(f"on_error must be 'warn' or 'raise', not {on_error!r}")
        self._handle = handle
        self._handle_many = handle_many
        self._linger = linger if handle_many is not None else 0.0
        self._urgent = urgent or (lambda payload: False)
        self._waiting = 0  # threads waiting for the jobs: the writer does not linger then
        self._on_error = on_error
        self._label = label
        self._at_exit = at_exit
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._submitted = itertools.count(1)
        self._submit_lock = threading.Lock()
        self._last_submitted = 0
        self._completed = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._inline: threading.Thread | None = None  # runs the jobs when no thread can start
        self._errors: list[BaseException] = []
        self._warned: set[tuple[type, str]] = set()
        _USED.discard(self)

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet handled."""
        return self._last_submitted - self._completed

    def submit(self, payload: Any) -> Job:
        if self._pid != os.getpid():
            self._reset()  # a forked child: the parent's queue and thread are not ours
        job = Job(payload)
        with self._submit_lock:  # several training threads: the count only grows
            self._last_submitted = next(self._submitted)
            self._queue.put(job)
        # Kept until close() or exit, thread or not, so that exit flushes and reports it.
        _USED.add(self)
        # Under the lock: a thread that is just ending (idle, or closed) has either seen
        # this job in the queue or cleared _thread before we look.
        with self._cond:
            if self._thread is not None or self._inline is not None:
                return job
            self._thread = threading.Thread(
                target=self._run, name=f"rngvault-writer[{self._label}]", daemon=True
            )
            try:
                self._thread.start()
            except RuntimeError:  # at interpreter shutdown, or out of threads
                self._thread = None
            else:
                return job
        self.run_here()
        return job

    def run_here(self) -> None:
        """Handle what is queued on the calling thread (no writer thread could start)."""
        with self._cond:
            if self._thread is not None or self._inline is not None:
                return
            self._inline = threading.current_thread()
        try:
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    with self._cond:  # as in _end_if_idle: a submit sees us or we see it
                        if self._queue.empty():
                            self._inline = None
                            return
                    continue
                if job is not None:
                    self._handle_jobs(self._more(job, linger=False)[0])
        finally:
            with self._cond:
                if self._inline is threading.current_thread():
                    self._inline = None

    def _end_if_idle(self) -> bool:
        """End this thread if nothing is queued (under the lock, see ``submit``)."""
        with self._cond:
            if not self._queue.empty():
                return False
            self._thread = None
            return True

    def _run(self) -> None:
        wait: float | None = IDLE_EXIT
        try:
            while True:
                try:
                    job = self._queue.get(timeout=wait)
                except queue.Empty:
                    job = None
                stop = job is None
                if job is not None:
                    batch, stop = self._more(job)
                    self._handle_jobs(batch)
                if stop:  # idle for IDLE_EXIT seconds, or close() asked
                    if self._end_if_idle():
                        return
                    wait = 0.0  # close() asked: end as soon as the queue is empty
        finally:
            with self._cond:  # also when this thread dies of an error: the next submit
                if self._thread is threading.current_thread():  # starts another
                    self._thread = None

    def _more(self, job: Job, linger: bool = True) -> tuple[list[Job], bool]:
        """``job`` and, with ``handle_many``, the jobs already queued behind it, or that
        join it within ``linger`` seconds (up to ``MAX_BATCH``); and whether close() asked
        to stop (a None met on the way)."""
        batch = [job]
        if self._handle_many is None:
            return batch, False
        wait = self._linger if linger and not self._urgent(job.payload) else 0.0
        deadline = time.monotonic() + wait
        while len(batch) < MAX_BATCH:
            left = deadline - time.monotonic()
            try:
                if left <= 0 or self._waiting:
                    more = self._queue.get_nowait()
                else:  # short naps, so that a flush() is not kept waiting
                    more = self._queue.get(timeout=min(left, 0.01))
            except queue.Empty:
                if left <= 0 or self._waiting:
                    break
                continue
            if more is None:
                return batch, True
            batch.append(more)
            if self._urgent(more.payload):
                deadline = 0.0  # take what is queued now, wait no longer
        return batch, False

    def _handle_jobs(self, jobs: list[Job]) -> None:
        try:
            if len(jobs) == 1 or self._handle_many is None:
                for job in jobs:
                    try:
                        job.result = self._handle(job.payload)
                    except BaseException as exc:
                        job.error = exc
                        self._report(exc)
                return
            try:
                outcomes = self._handle_many([job.payload for job in jobs])
            except BaseException as exc:  # the batch as a whole failed: every job did
                outcomes = [(None, exc)] * len(jobs)
            reported: set[int] = set()
            for job, (result, error) in zip(jobs, outcomes, strict=True):
                job.result, job.error = result, error
                if error is not None and id(error) not in reported:
                    reported.add(id(error))
                    self._report(error)
        finally:
            with self._cond:
                self._completed += len(jobs)
                self._cond.notify_all()

    def _report(self, exc: BaseException) -> None:
        if self._on_error == "raise":
            self._errors.append(exc)
            return
        key = (type(exc), str(exc))
        if key not in self._warned:
            self._warned.add(key)
            try:
                warn(f"rngvault: {exc}", StoreWarning)
            except Warning as raised:  # warnings are errors here (-W error): raise it later
                self._errors.append(raised)

    def raise_pending(self) -> None:
        """With ``on_error="raise"``: raise the first error the writer met since last time."""
        if self._errors:
            first, self._errors = self._errors[0], []
            raise first

    def on_writer_thread(self) -> bool:
        current = threading.current_thread()
        return current is self._thread or current is self._inline

    def wait_for(self, job: Job) -> None:
        """Wait until ``job`` (and every job before it) is handled; errors stay on the job."""
        target = self._last_submitted
        with self._cond:
            self._waiting += 1
            try:
                self._cond.wait_for(lambda: self._completed >= target)
            finally:
                self._waiting -= 1
        if job.error is not None and job.error in self._errors:
            self._errors.remove(job.error)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every job submitted so far is handled; False if ``timeout`` passed."""
        if self._pid != os.getpid():
            return True
        target = self._last_submitted
        with self._cond:
            self._waiting += 1
            try:
                done = self._cond.wait_for(lambda: self._completed >= target, timeout)
            finally:
                self._waiting -= 1
        self.raise_pending()
        return done

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the thread."""
        done = self.flush(timeout)
        # Stop the thread only once the queue is empty: a thread still busy keeps going, so
        # that a later submit never starts a second consumer of the same queue.
        if done and self._pid == os.getpid():
            with self._cond:
                thread = self._thread
                if thread is not None:
                    self._queue.put(None)
                if not self.pending:
                    _USED.discard(self)
            if thread is not None:
                thread.join(timeout)
        return done


# Writers with snapshots since their last close(), held (with their Vault) until exit.
_USED: set[Writer] = set()


def exit_timeout() -> float:
    """Seconds exit waits for pending snapshots (``RNGVAULT_EXIT_TIMEOUT``). A bad value
    fails ``Vault(...)`` already; one set since is warned about here, never raised, so that
    the exit flush still runs."""
    from rngvault._config import DEFAULT_EXIT_TIMEOUT, client_config

    try:
        return client_config().exit_timeout
    except RngVaultError as exc:
        warnings.warn(
            f"rngvault: {exc}; waiting {DEFAULT_EXIT_TIMEOUT:g} s", RngVaultWarning, stacklevel=1
        )
        return DEFAULT_EXIT_TIMEOUT


@atexit.register
def _flush_at_exit() -> None:
    for writer in list(_USED):
        if writer._pid != os.getpid():
            continue
        try:
            if writer._thread is None:
                writer.run_here()  # its thread ended or never started: store what is queued
            done = writer.flush(exit_timeout())
            if not done:
                warnings.warn(
                    f"rngvault: {writer.pending} snapshot(s) of {writer._label} were not "
                    f"stored within {exit_timeout():g} s at exit",
                    StoreWarning,
                    stacklevel=1,
                )
            elif writer._at_exit is not None:
                writer._at_exit()
        except Exception as exc:
            warnings.warn(f"rngvault: {exc}", StoreWarning, stacklevel=1)
    # Only now, after the last uploads, close the HTTP stores' connections.
    http = sys.modules.get("rngvault.stores.http")
    if http is not None:
        http.close_all()
