"""The Vault's background writer: thread lifetime and close() under concurrent submits."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from rngvault import _writer


def test_close_does_not_wait_for_the_idle_timeout_when_a_job_races_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job submitted right behind close()'s stop signal is handled, and close() returns
    as soon as the queue is empty instead of after IDLE_EXIT."""
    monkeypatch.setattr(_writer, "IDLE_EXIT", 5.0)
    handled: list[str] = []
    writer = _writer.Writer(handled.append, "warn", "race")
    writer.submit("first")
    writer.flush()
    real = writer._queue

    class RacingQueue:
        """The real queue; when close() puts its stop signal, another thread submits."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def put(self, item: object) -> None:
            real.put(item)
            if item is None:
                threading.Thread(target=writer.submit, args=("late",)).start()
                deadline = time.monotonic() + 2
                while writer._last_submitted < 2 and time.monotonic() < deadline:
                    time.sleep(0.001)

    writer._queue = RacingQueue()  # type: ignore[assignment]
    started = time.monotonic()
    assert writer.close(timeout=10)
    assert time.monotonic() - started < 2.0, "close() waited for the idle timeout"
    assert writer.flush(timeout=5) and handled == ["first", "late"]


def test_a_bad_exit_timeout_set_late_is_a_warning_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At exit a raise would skip the flush: a bad RNGVAULT_EXIT_TIMEOUT warns, waits 10 s."""
    from rngvault import RngVaultWarning
    from rngvault._writer import exit_timeout

    monkeypatch.setenv("RNGVAULT_EXIT_TIMEOUT", "3")
    assert exit_timeout() == 3.0
    monkeypatch.setenv("RNGVAULT_EXIT_TIMEOUT", "later")
    with pytest.warns(RngVaultWarning, match="RNGVAULT_EXIT_TIMEOUT"):
        assert exit_timeout() == 10.0


def _gated_writer(
    handled: list[list[Any]], fail: set[Any] | None = None
) -> tuple[_writer.Writer, threading.Event]:
    """A writer whose first job waits on the returned event (so that later jobs queue up
    behind it) and that records each call: [payload] for handle, the list for handle_many."""
    gate = threading.Event()
    fail = fail or set()

    def handle(payload: Any) -> Any:
        if payload == "first":
            gate.wait(10)
        handled.append([payload])
        if payload in fail:
            raise ValueError(f"bad {payload}")
        return payload.upper()

    def handle_many(payloads: list[Any]) -> list[_writer.Outcome]:
        handled.append(list(payloads))
        return [
            (None, ValueError(f"bad {p}")) if p in fail else (p.upper(), None) for p in payloads
        ]

    return _writer.Writer(handle, "raise", "test", handle_many=handle_many), gate


def test_jobs_that_queue_up_are_handled_together_each_with_its_own_outcome() -> None:
    handled: list[list[Any]] = []
    writer, gate = _gated_writer(handled, fail={"c"})
    first = writer.submit("first")
    jobs = [writer.submit(p) for p in "abcd"]
    gate.set()
    with pytest.raises(ValueError, match="bad c"):
        writer.flush(5)
    assert handled == [["first"], ["a", "b", "c", "d"]]
    assert first.result == "FIRST"
    assert [j.result for j in jobs] == ["A", "B", None, "D"]
    assert [type(j.error).__name__ if j.error else None for j in jobs] == [
        None,
        None,
        "ValueError",
        None,
    ]
    writer.flush(5)  # the error was raised once
    writer.close(5)


def test_a_batch_stops_at_max_batch_and_at_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_writer, "MAX_BATCH", 3)
    handled: list[list[Any]] = []
    writer, gate = _gated_writer(handled)
    writer.submit("first")
    jobs = [writer.submit(p) for p in "abcde"]
    gate.set()
    assert writer.close(5)
    assert handled == [["first"], ["a", "b", "c"], ["d", "e"]]
    assert [j.result for j in jobs] == list("ABCDE")


def test_a_batch_that_fails_as_a_whole_fails_each_job_and_reports_once() -> None:
    gate = threading.Event()

    def handle(payload: Any) -> Any:
        gate.wait(10)
        return payload

    def handle_many(payloads: list[Any]) -> list[_writer.Outcome]:
        raise OSError("disk gone")

    writer = _writer.Writer(handle, "raise", "test", handle_many=handle_many)
    writer.submit("first")
    jobs = [writer.submit(p) for p in "ab"]
    gate.set()
    with pytest.raises(OSError, match="disk gone"):
        writer.flush(5)
    assert all(isinstance(j.error, OSError) for j in jobs)
    writer.flush(5)  # reported once: nothing left to raise
    writer.close(5)


def _recording_writer(linger: float) -> tuple[_writer.Writer, list[list[Any]]]:
    batches: list[list[Any]] = []

    def handle_many(payloads: list[Any]) -> list[_writer.Outcome]:
        batches.append(list(payloads))
        return [(p, None) for p in payloads]

    def handle(payload: Any) -> Any:
        batches.append([payload])
        return payload

    writer = _writer.Writer(
        handle,
        "raise",
        "test",
        handle_many=handle_many,
        linger=linger,
        urgent=lambda payload: payload.startswith("urgent"),
    )
    return writer, batches


def test_with_linger_jobs_submitted_apart_are_handled_together() -> None:
    writer, batches = _recording_writer(linger=30.0)
    writer.submit("a")
    time.sleep(0.05)
    writer.submit("b")
    writer.submit("urgent c")  # ends the wait: everything queued goes now
    job = writer.submit("urgent d")
    writer.wait_for(job)
    assert [p for batch in batches for p in batch] == ["a", "b", "urgent c", "urgent d"]
    assert batches[0][:3] == ["a", "b", "urgent c"]
    writer.close(5)


def test_flush_does_not_wait_out_the_linger() -> None:
    writer, batches = _recording_writer(linger=30.0)
    writer.submit("a")
    writer.submit("b")
    assert writer.flush(timeout=10) is True  # well before the 30 s linger ends
    assert batches == [["a", "b"]]
    assert writer.close(timeout=10) is True
