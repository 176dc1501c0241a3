"""What the pages show, computed from stored snapshots with the library's own functions:
``Family.describe`` for positions, ``rngvault.diff`` for what moved, the environment
grading of ``rngvault._environment.compare``, and ``compare_snapshots`` for divergence."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from rngvault._diff import DiffReport, diff
from rngvault._divergence import DivergenceReport, compare_snapshots
from rngvault._environment import compare
from rngvault._errors import InvalidNameError, NotFoundError
from rngvault._format import decode
from rngvault._names import check_name
from rngvault._report import EnvironmentDifference
from rngvault._snapshot import Snapshot, SnapshotRef
from rngvault.server.routes import MAX_RANK
from rngvault.server.storage.base import SnapshotInfo, SnapshotKey, Store
from rngvault.server.ui.session import PageError

_INLINE_DECODE = 256 * 1024  # larger bodies are decoded off the event loop
SHORT = 200  # characters of a value shown before it is cut


def short(value: Any, limit: int = SHORT) -> str:
    """``value`` as text of at most ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def when(seconds: float) -> str:
    """A time as ``2026-11-29 21:52:34 UTC``; a value no calendar holds (a writer's clock
    gone wrong: NaN, 1e300) as the number it is."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return f"{seconds!r} s since 1970 (not a date)"


def parse_rank(value: str | None) -> int:
    """The ``rank`` query parameter (0 when absent), or PageError 400 saying what is wrong."""
    if value is None or value == "":
        return 0
    if (
        not (value.isascii() and value.isdigit())
        or len(value) > len(str(MAX_RANK))  # before int(): a huge one is refused there
        or int(value) > MAX_RANK
    ):
        raise PageError(
            400,
            "Bad rank",
            f"rank must be a whole number from 0 to {MAX_RANK}, not {short(value, 40)!r}",
        )
    return int(value)


def parse_names(text: str | None, parts: int, what: str, field: str) -> tuple[str, ...]:
    """``NS/RUN`` or ``NS/RUN/NAME`` from a query parameter, checked; PageError 400 otherwise."""
    if not text:
        raise PageError(400, "Missing parameter", f"give {field}={what}")
    pieces = text.split("/")
    if len(pieces) != parts:
        raise PageError(400, "Bad parameter", f"{field} must be {what}, not {short(text, 80)!r}")
    try:
        for piece, kind in zip(pieces, ("namespace", "run", "snapshot"), strict=False):
            check_name(piece, kind)
    except InvalidNameError as exc:
        raise PageError(400, "Bad parameter", f"{field}: {exc}") from None
    return tuple(pieces)


def parse_key(text: str | None, field: str) -> tuple[str, str, str]:
    """``NS/RUN/NAME`` from the query parameter ``field``; PageError 400 otherwise."""
    namespace, run, name = parse_names(text, 3, "NAMESPACE/RUN/NAME", field)
    return namespace, run, name


def parse_run(text: str | None, field: str) -> tuple[str, str]:
    """``NS/RUN`` from the query parameter ``field``; PageError 400 otherwise."""
    namespace, run = parse_names(text, 2, "NAMESPACE/RUN", field)
    return namespace, run


async def load(store: Store, key: SnapshotKey) -> Snapshot:
    """The stored snapshot ``key`` (NotFoundError when there is none), with its ref."""
    body = await store.get(key)
    if len(body) <= _INLINE_DECODE:
        snapshot = decode(body)
    else:
        snapshot = await anyio.to_thread.run_sync(decode, body)
    ref = SnapshotRef(f"{key.namespace}/{key.run}", key.name, snapshot.digest, key.rank)
    return snapshot._with(ref=ref)


def environment_rows(environment: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, value) rows, nested mappings as dotted keys; the determinism flags excluded."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            rows.append((prefix, short(value)))

    walk("", {k: v for k, v in environment.items() if k != "flags"})
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_view(text: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """A run's record (stored JSON text) as (facts, config rows): seed, seeding, git,
    command line, host and when; the config flattened to dotted keys. Both empty for a run
    without a record."""
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict) or not record:
        return [], []
    seeding: dict[str, Any] = record.get("seeding") or {}
    git = record.get("git") if isinstance(record.get("git"), dict) else None
    command = record.get("command")
    facts = [
        ("Seed", record.get("seed")),
        ("Seeded", ", ".join(map(str, seeding.get("seeded", [])))),
        ("Deterministic", seeding.get("deterministic")),
        ("Per-worker base seeds", ", ".join(map(str, seeding.get("per_worker", [])))),
        (
            "Git commit",
            f"{git.get('commit')}{' (dirty tree)' if git.get('dirty') else ''}" if git else None,
        ),
        ("Command", shlex.join(map(str, command)) if isinstance(command, list) else None),
        ("Host", record.get("host")),
        ("Recorded", when(record["created"]) if _is_number(record.get("created")) else None),
    ]
    config = record.get("config")
    rows = environment_rows(config) if isinstance(config, dict) else []
    return [(k, short(v)) for k, v in facts if v not in (None, "")], rows


def flag_rows(environment: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The determinism flags a snapshot recorded (cuDNN, deterministic algorithms...)."""
    flags = environment.get("flags")
    if not isinstance(flags, Mapping):
        return []
    return [(str(k), short(v)) for k, v in flags.items()]


@dataclass(frozen=True, slots=True)
class GeneratorRow:
    """One generator of a snapshot, as the snapshot page shows it.

    Attributes:
        name: its name in the snapshot.
        family: its family.
        position: ``Family.describe`` of its state.
        probes: its probes as text ("" when it has none).
    """

    name: str
    family: str
    position: str
    probes: str


def generator_rows(snapshot: Snapshot) -> list[GeneratorRow]:
    positions = snapshot.describe()
    return [
        GeneratorRow(
            name,
            state.family,
            positions[name],
            short(snapshot.probes[name]) if name in snapshot.probes else "",
        )
        for name, state in snapshot.states.items()
    ]


@dataclass(frozen=True, slots=True)
class DiffView:
    """Two snapshots and how B differs from A.

    Attributes:
        a: snapshot A.
        b: snapshot B.
        report: the library's ``DiffReport``.
        environment: the environment differences, graded by ``_environment.compare``.
        positions: generator name -> (A's position, B's position), "" where absent.
    """

    a: Snapshot
    b: Snapshot
    report: DiffReport
    environment: list[EnvironmentDifference]
    positions: dict[str, tuple[str, str]]


def _families(*snapshots: Snapshot) -> set[str]:
    return {state.family for s in snapshots for state in s.states.values()}


async def diff_view(a: Snapshot, b: Snapshot, labels: tuple[str, str]) -> DiffView:
    """Diff ``a`` and ``b`` off the event loop (an MT19937 search takes up to ~0.1 s)."""

    def work() -> DiffView:
        report = diff(a, b, labels=labels)
        grades = compare(a.environment, b.environment, _families(a, b))
        pa, pb = a.describe(), b.describe()
        positions = {e.name: (pa.get(e.name, ""), pb.get(e.name, "")) for e in report}
        return DiffView(a, b, report, grades, positions)

    return await anyio.to_thread.run_sync(work)


def distance_text(distance: int | None, unit: str) -> str:
    """``3 raw 64-bit outputs``, or ``-`` when the distance is not known."""
    return "-" if distance is None else f"{distance} {unit}".strip()


SCAN = 5000  # snapshots of each run a divergence page looks through
_BATCH = 1000


async def listing(store: Store, namespace: str, run: str) -> tuple[list[SnapshotInfo], bool]:
    """Up to SCAN of a run's snapshots, in stored order; and whether there are more."""
    found: list[SnapshotInfo] = []
    cursor = None
    while len(found) < SCAN:
        page = await store.list_snapshots(
            namespace, run, cursor=cursor, limit=min(_BATCH, SCAN - len(found))
        )
        found += page.items
        cursor = page.next_cursor
        if cursor is None:
            return found, False
    return found, True


@dataclass(frozen=True, slots=True)
class DivergenceView:
    """A run, its reference, and where they first differ.

    Attributes:
        run: the run's snapshots looked at.
        reference: the reference's snapshots looked at.
        report: the first divergence, or None.
        compared: how many snapshot names both runs hold (of those looked at).
        truncated: whether either run has more than ``SCAN`` snapshots (not looked at).
    """

    run: list[SnapshotInfo]
    reference: list[SnapshotInfo]
    report: DivergenceReport | None
    compared: int
    truncated: bool


async def divergence_view(
    store: Store, run: tuple[str, str], ref: tuple[str, str]
) -> DivergenceView:
    """Compare a run with its reference snapshot by snapshot, by name, rank 0, as a Vault
    with ``reference=`` does: equal states digests are equal states; the first pair whose
    digests differ is loaded and compared with ``compare_snapshots``."""
    mine, more = await listing(store, *run)
    theirs, more_ref = await listing(store, *ref)
    by_name = {info.name: info for info in theirs}
    report = None
    compared = 0
    for info in mine:
        other = by_name.get(info.name)
        if other is None:
            continue
        compared += 1
        if other.digest == info.digest:
            continue
        try:
            a = await load(store, SnapshotKey(*ref, info.name, 0))
            b = await load(store, SnapshotKey(*run, info.name, 0))
        except NotFoundError:
            continue  # deleted since the listing
        found = await anyio.to_thread.run_sync(
            compare_snapshots, info.name, "/".join(run), b, "/".join(ref), a
        )
        if found is not None:
            report = found
            break
    return DivergenceView(mine, theirs, report, compared, more or more_ref)


def window(infos: list[SnapshotInfo], name: str | None, around: int = 12) -> list[SnapshotInfo]:
    """The snapshots around ``name`` (or the first ones), so a long run's timeline stays short."""
    names = [i.name for i in infos]
    at = names.index(name) if name in names else 0
    start = max(0, at - around)
    return infos[start : start + 2 * around + 1]


def union(values: Iterable[Iterable[str]]) -> list[str]:
    """Every distinct value, in first-seen order."""
    out: dict[str, None] = {}
    for group in values:
        out.update(dict.fromkeys(group))
    return list(out)
