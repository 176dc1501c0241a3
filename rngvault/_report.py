"""What a restore did, per generator, and how this environment differs from the recorded one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["restored", "skipped", "failed", "missing"]
Severity = Literal["breaks", "may-break", "info"]


@dataclass(frozen=True, slots=True)
class GeneratorOutcome:
    """What happened to one generator.

    Attributes:
        name: the generator's name in the snapshot.
        family: its family (``"numpy.bitgen"``...).
        status: ``restored``; ``skipped`` (no target in this process); ``failed``;
            ``missing`` (a target was given but the snapshot has no state for it).
        detail: why, or the restored position.
        verified: whether re-capturing after the restore gave back the stored state.
    """

    name: str
    family: str
    status: Status
    detail: str = ""
    verified: bool | None = None


@dataclass(frozen=True, slots=True)
class EnvironmentDifference:
    """One way this process differs from where the snapshot was taken.

    Attributes:
        key: what differs (``"numpy"``, ``"torch"``, ``"flags.cudnn.deterministic"``...).
        recorded: the value in the snapshot.
        current: the value here.
        severity: ``breaks`` (bit-exactness is likely lost), ``may-break``, or ``info``.
        affects: what it can break, in words.
    """

    key: str
    recorded: object
    current: object
    severity: Severity
    affects: str


@dataclass(frozen=True)
class RestoreReport:
    """The outcome of a restore; ``print(report)`` shows it as a table.

    Attributes:
        outcomes: one entry per generator.
        differences: environment differences, graded by what they can break.
        digest: the digest of the restored snapshot.
        notes: further remarks (rank remapping, probes that disagree...).
    """

    outcomes: tuple[GeneratorOutcome, ...]
    differences: tuple[EnvironmentDifference, ...] = ()
    digest: str = ""
    notes: tuple[str, ...] = field(default=())

    def _names(self, status: Status) -> list[str]:
        return [o.name for o in self.outcomes if o.status == status]

    @property
    def restored(self) -> list[str]:
        return self._names("restored")

    @property
    def skipped(self) -> list[str]:
        return self._names("skipped")

    @property
    def missing(self) -> list[str]:
        return self._names("missing")

    @property
    def failed(self) -> list[str]:
        return self._names("failed")

    @property
    def ok(self) -> bool:
        """True when nothing failed and every restored generator verified."""
        return not self.failed and all(
            o.verified is not False for o in self.outcomes if o.status == "restored"
        )

    def __getitem__(self, name: str) -> GeneratorOutcome:
        for outcome in self.outcomes:
            if outcome.name == name:
                return outcome
        raise KeyError(name)

    def __str__(self) -> str:
        rows = [("generator", "family", "status", "detail")]
        for o in self.outcomes:
            status = o.status + (" (unverified)" if o.verified is False else "")
            rows.append((o.name, o.family, status, o.detail))
        text = [f"restore of snapshot {self.digest[:12]}" if self.digest else "restore"]
        text += table(rows)
        if self.differences:
            text.append("")
            diff_rows = [("environment", "recorded", "here", "severity", "can break")]
            diff_rows += [
                (d.key, str(d.recorded), str(d.current), d.severity, d.affects)
                for d in self.differences
            ]
            text += table(diff_rows)
        text += [f"note: {n}" for n in self.notes]
        return "\n".join(text)


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as left-aligned columns, the first row as the header."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines
