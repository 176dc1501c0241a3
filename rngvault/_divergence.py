"""Divergence: where a reproduction's generators first drift from its reference run."""

from __future__ import annotations

from dataclasses import dataclass

from rngvault._snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class DivergenceReport:
    """The first snapshot at which a run's generators differ from its reference run.

    Attributes:
        snapshot: the snapshot name where the runs first differ.
        run: the run being checked.
        reference: the reference run.
        generator: the first generator that differs (one with a known distance if any).
        status: "advanced", "behind", "reseeded", "missing" or "unknown".
        distance: how far ``run`` is ahead of ``reference`` (negative: behind), when known.
        unit: the unit of ``distance`` ("32-bit MT outputs"...).
        others: the other generators that differ at this snapshot.
    """

    snapshot: str
    run: str
    reference: str
    generator: str
    status: str
    distance: int | None
    unit: str
    others: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.distance is not None:
            how = (
                f"is {abs(self.distance)} {self.unit} "
                f"{'ahead of' if self.distance > 0 else 'behind'}"
            )
        elif self.status == "missing":
            how = "is present in only one of the runs, compared with"
        elif self.status == "reseeded":
            how = "was reseeded relative to"
        else:
            how = "differs by an unknown distance from"
        text = (
            f"divergence at snapshot {self.snapshot!r}: generator {self.generator!r} of run "
            f"{self.run} {how} the reference run {self.reference}"
        )
        if self.others:
            text += f"; also differ: {', '.join(self.others)}"
        return text


def compare_snapshots(
    name: str, run: str, snapshot: Snapshot, reference_run: str, reference: Snapshot
) -> DivergenceReport | None:
    """None when every generator matches, else a report on the first that differs."""
    from rngvault._diff import state_distance

    names = sorted(set(snapshot.states) | set(reference.states))
    found = [state_distance(reference.states.get(n), snapshot.states.get(n), name=n) for n in names]
    differing = [d for d in found if d.changed]
    if not differing:
        return None
    known = [d for d in differing if d.distance is not None]
    first = (known or differing)[0]
    return DivergenceReport(
        snapshot=name,
        run=run,
        reference=reference_run,
        generator=first.name,
        status=first.status,
        distance=first.distance,
        unit=first.unit,
        others=tuple(d.name for d in differing if d is not first),
    )
