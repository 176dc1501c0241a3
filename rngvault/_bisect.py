"""Bisect two runs: the first training step at which their generators differ.

``bisect(store, run_a, run_b)`` walks the two runs' step listings (``Store.steps``) side by
side, in step order, and compares the states digests of the snapshots both runs took at the
same step (with ``generator=NAME``, that generator's state hashes). It stops at the first
shared step that differs; only there does it download the two snapshots, to grade each
generator with ``rngvault.diff``: how many draws, in the generator's own unit, run B is
ahead of (or behind) run A, or that neither is on the other's stream.

Steps only one run has are counted and skipped. When a run took several snapshots at one
step, the first stored is the one compared.

``name_at_step`` finds the snapshot a run took at a step, for ``Vault.restore(step=N)``.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rngvault._diff import GeneratorDiff, diff
from rngvault._errors import NotFoundError, RestoreError, StoreError
from rngvault._format import decode
from rngvault._names import check_generator_name, split_run
from rngvault._report import table
from rngvault.stores import StepEntry, Store, open_store

__all__ = ["BisectReport", "bisect", "name_at_step"]


@dataclass(frozen=True, slots=True)
class BisectReport:
    """Where two runs first differ; ``print(report)`` says it in words and a table.

    Attributes:
        run_a: the first run (``"namespace/run"``): distances say how far B is from it.
        run_b: the second run.
        rank: the rank whose snapshots were compared.
        generator: the one generator compared, or None when all were.
        diverged_at: the first step both runs have at which a state differs; None when
            they agree.
        names: the snapshot names of A and B at ``diverged_at`` (None when they agree).
        generators: at ``diverged_at``, each generator that differs (B compared with A):
            its status, and its draw distance in its own unit, or None where B is not on
            A's stream (reseeded, missing, or beyond the search limit: ``unreachable``).
        last_equal: the last shared step before ``diverged_at`` (or, when they agree, the
            last shared step) at which the states were equal; None if there is none.
        compared: how many shared steps were compared.
        only_a: how many steps, among those walked, only run A has.
        only_b: how many steps, among those walked, only run B has.
    """

    run_a: str
    run_b: str
    rank: int = 0
    generator: str | None = None
    diverged_at: int | None = None
    names: tuple[str, str] | None = None
    generators: tuple[GeneratorDiff, ...] = ()
    last_equal: int | None = None
    compared: int = 0
    only_a: int = 0
    only_b: int = 0

    @property
    def agree(self) -> bool:
        """Whether no shared step differs (true also when the runs share no step)."""
        return self.diverged_at is None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (``distance`` None: unreachable)."""
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "rank": self.rank,
            "generator": self.generator,
            "agree": self.agree,
            "diverged_at": self.diverged_at,
            "names": list(self.names) if self.names is not None else None,
            "generators": [g.to_dict() for g in self.generators],
            "last_equal": self.last_equal,
            "compared": self.compared,
            "only_a": self.only_a,
            "only_b": self.only_b,
        }

    def __str__(self) -> str:
        a, b = self.run_a, self.run_b
        which = f"generator {self.generator!r}" if self.generator else "every generator"
        counts = (
            f"{self.compared} shared step(s) compared ({which}, rank {self.rank}); "
            f"{self.only_a} step(s) only in {a}, {self.only_b} only in {b}"
        )
        if self.diverged_at is None:
            if not self.compared:
                return f"{a} and {b} share no step: nothing to compare\n{counts}"
            return f"{a} and {b} agree on every shared step\n{counts}"
        last = "none" if self.last_equal is None else str(self.last_equal)
        names = f" (snapshots {self.names[0]} and {self.names[1]})" if self.names else ""
        lines = [
            f"{a} and {b} diverge at step {self.diverged_at}{names}; last equal step: {last}",
            counts,
        ]
        rows = [("generator", "family", "status", "distance", "unit", "detail")]
        for g in self.generators:
            distance = "unreachable" if g.distance is None else str(g.distance)
            rows.append((g.name, g.family, g.status, distance, g.unit, g.detail))
        if self.generators:
            lines += ["", *table(rows)]
        return "\n".join(lines)


def bisect(
    store: Store | str | os.PathLike[str],
    run_a: str,
    run_b: str,
    *,
    generator: str | None = None,
    rank: int = 0,
) -> BisectReport:
    """The first step at which runs ``run_a`` and ``run_b`` of ``store`` differ.

    ``store`` is a Store or a location (a directory, a ``file://`` or ``http(s)://`` URL).
    Only snapshots that recorded a step take part; the two runs are compared on the steps
    both have (the first snapshot stored at a step, when there are several). With
    ``generator=NAME``, only that generator's states are compared. Listings are read
    lazily and the walk stops at the first difference, whose two snapshots are the only
    ones downloaded. NotFoundError names a run the store does not have, or a generator
    that no compared snapshot holds.
    """
    run_a, run_b = (_run(r) for r in (run_a, run_b))
    if generator is not None:
        check_generator_name(generator)
    if type(rank) is not int or rank < 0:
        raise StoreError(f"rank must be an int >= 0, not {rank!r}")
    if isinstance(store, (str, os.PathLike)):
        opened = open_store(store)
        try:
            return _bisect(opened, run_a, run_b, generator, rank)
        finally:
            opened.close()
    if not isinstance(store, Store):
        raise StoreError(f"bisect needs a Store or a store location, not {type(store).__name__}")
    return _bisect(store, run_a, run_b, generator, rank)


def _run(run: str) -> str:
    return "/".join(split_run(run))


def _bisect(store: Store, run_a: str, run_b: str, generator: str | None, rank: int) -> BisectReport:
    steps_a = _first_per_step(store, run_a, rank, generator)
    steps_b = _first_per_step(store, run_b, rank, generator)
    a, b = next(steps_a, None), next(steps_b, None)
    compared = only_a = only_b = 0
    last_equal: int | None = None
    seen = False  # whether any compared snapshot holds ``generator``
    while a is not None and b is not None:
        if a.step < b.step:
            only_a += 1
            a = next(steps_a, None)
        elif b.step < a.step:
            only_b += 1
            b = next(steps_b, None)
        else:
            compared += 1
            seen = seen or a.state is not None or b.state is not None
            if _key(a, generator) != _key(b, generator):
                return BisectReport(
                    run_a,
                    run_b,
                    rank,
                    generator,
                    diverged_at=a.step,
                    names=(a.name, b.name),
                    generators=_graded(store, (run_a, a), (run_b, b), generator, rank),
                    last_equal=last_equal,
                    compared=compared,
                    only_a=only_a,
                    only_b=only_b,
                )
            last_equal = a.step
            a, b = next(steps_a, None), next(steps_b, None)
    only_a += (a is not None) + sum(1 for _ in steps_a)
    only_b += (b is not None) + sum(1 for _ in steps_b)
    if generator is not None and compared and not seen:
        raise NotFoundError(
            f"no snapshot of {run_a} or {run_b} at their {compared} shared step(s) holds a "
            f"generator {generator!r} (rank {rank})"
        )
    return BisectReport(
        run_a,
        run_b,
        rank,
        generator,
        last_equal=last_equal,
        compared=compared,
        only_a=only_a,
        only_b=only_b,
    )


def _key(entry: StepEntry, generator: str | None) -> str | None:
    return entry.digest if generator is None else entry.state


def _first_per_step(
    store: Store, run: str, rank: int, generator: str | None
) -> Iterator[StepEntry]:
    """``run``'s step entries, the first stored at each step; NotFoundError names the run."""
    try:
        entries = store.steps(run, rank=rank, generator=generator)
        last: int | None = None
        for entry in entries:
            if last is not None and entry.step < last:
                raise StoreError(
                    f"{store.location} listed the steps of {run} out of order "
                    f"({entry.step} after {last})"
                )
            if entry.step != last:
                yield entry
            last = entry.step
    except NotFoundError as exc:
        if run in str(exc):
            raise
        raise NotFoundError(f"no run {run} in {store.location} ({exc})") from None


def _graded(
    store: Store,
    a: tuple[str, StepEntry],
    b: tuple[str, StepEntry],
    generator: str | None,
    rank: int,
) -> tuple[GeneratorDiff, ...]:
    """The generators that differ between the two snapshots (only ``generator``, if given),
    graded by ``rngvault.diff``."""
    (run_a, entry_a), (run_b, entry_b) = a, b
    snap_a = decode(store.get(run_a, entry_a.name, rank, digest=entry_a.digest))
    snap_b = decode(store.get(run_b, entry_b.name, rank, digest=entry_b.digest))
    report = diff(snap_a, snap_b, labels=(f"{run_a}/{entry_a.name}", f"{run_b}/{entry_b.name}"))
    return tuple(g for g in report.changed if generator is None or g.name == generator)


def name_at_step(store: Store, run: str, step: int, *, rank: int = 0) -> str:
    """The name of the snapshot ``run`` took at training ``step`` for ``rank``.

    NotFoundError names the step and the run's nearest steps when it has none there;
    RestoreError names the snapshots when several at that step hold different states
    (equal states: the first stored).
    """
    try:
        step = operator.index(step)
    except TypeError:
        raise RestoreError(f"step must be an int, not {type(step).__name__} {step!r}") from None
    if isinstance(step, bool):
        raise RestoreError(f"step must be an int, not the bool {step!r}")
    at: list[StepEntry] = []
    after: int | None = None
    for entry in store.steps(run, rank=rank, start=step):
        if entry.step != step:
            after = entry.step
            break
        at.append(entry)
    if not at:
        before = _step_before(store, run, rank, step)
        near = [f"{s}" for s in (before, after) if s is not None]
        hint = f"; its nearest steps are {' and '.join(near)}" if near else "; it has no steps"
        raise NotFoundError(f"run {run} has no snapshot at step {step} for rank {rank}{hint}")
    if len({e.digest for e in at}) > 1:
        names = ", ".join(e.name for e in at)
        raise RestoreError(
            f"run {run} has several snapshots at step {step} with different states ({names}): "
            "restore one by its name"
        )
    return at[0].name


def _step_before(store: Store, run: str, rank: int, step: int) -> int | None:
    """The largest step below ``step`` that ``run`` has, reading windows of doubling size
    back from ``step`` (so a nearby step costs a short read, not the whole listing)."""
    first = next(store.steps(run, rank=rank), None)
    if first is None or first.step >= step:
        return None
    width = 1
    while True:
        below = [
            e.step
            for e in _until(store.steps(run, rank=rank, start=max(step - width, first.step)), step)
        ]
        if below:
            return below[-1]
        width *= 2


def _until(entries: Iterator[StepEntry], step: int) -> Iterator[StepEntry]:
    for entry in entries:
        if entry.step >= step:
            return
        yield entry
