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
