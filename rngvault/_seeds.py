"""Seed sensitivity: how much the seed alone moves a metric, across runs that differ only in it.

``seed_sensitivity(store, pattern, metric=...)`` reads the runs matching ``pattern`` (a
shell-style pattern on ``namespace/run``, e.g. ``alice/resnet-*``), their records (the seed
and the config) and their metrics, and groups them: runs whose configs are equal once the
seed is left out share a group, and no other runs are pooled. For each group and metric it
gives the count, mean, standard deviation, median, minimum and maximum with their seeds, the
spread (max - min) in standard deviations, and the outlier seeds: a robust z-score
``0.6745 (x - median) / MAD`` (median absolute deviation; where the MAD is 0, the mean
absolute deviation times 1.2533 stands in) beyond ``OUTLIER_Z`` = 3.5 (Iglewicz and Hoaglin).

A run's seed is its record's ``seed`` (``seed_everything``'s), else its config's ``"seed"``.
Its value of a metric is, with ``at="final"``, the one in the latest snapshot that records
the metric, else the one in the snapshot named ``at``. Runs without a seed, without the
metric, or repeating a seed already counted in their group are skipped, each with a note.

``sweep_seeds(fn, seeds, store=..., run=...)`` runs ``fn`` once per seed, each in a run of
its own, and reports on them. ``analyze`` is the part that needs no store: the server's
``GET /v1/seeds`` and the command ``rngvault seeds`` give the numbers it gives.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from rngvault._errors import NotFoundError, RngVaultError, StoreError
from rngvault._names import check_name

if TYPE_CHECKING:
    from rngvault.stores.base import Store


class Listed(Protocol):
    """What a listing gives of a snapshot (the client's and the server's SnapshotInfo)."""

    @property
    def name(self) -> str: ...
    @property
    def created(self) -> float: ...
    @property
    def metrics(self) -> Mapping[str, Any]: ...


__all__ = [
    "OUTLIER_Z",
    "MetricStats",
    "Observation",
    "Outlier",
    "SeedGroup",
    "SeedReport",
    "Skipped",
    "analyze",
    "observe",
    "seed_sensitivity",
    "sweep_seeds",
]

OUTLIER_Z = 3.5
LARGEST = 1e300  # metric values larger in size are not summarized (not a number here)
_MAD_SCALE = 0.6745  # the standard normal's 75th percentile: z from a MAD
_MEAN_AD_SCALE = 1.2533  # sqrt(pi / 2): a mean absolute deviation to a standard deviation
_FINAL = "final"


@dataclass(frozen=True, slots=True)
class Observation:
    """What one run contributes: its name, seed (None: not recorded), config and metrics."""

    run: str
    seed: int | None
    config: Mapping[str, Any]
    metrics: Mapping[str, Any]
    missing: str | None = None  # why the run has no metrics (no such snapshot, none at all)


@dataclass(frozen=True, slots=True)
class Outlier:
    """A seed whose value is far from its group's: its robust z-score is beyond 3.5."""

    seed: int
    run: str
    value: float
    z: float

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "run": self.run, "value": self.value, "z": self.z}


@dataclass(frozen=True, slots=True)
class MetricStats:
    """One metric across the seeds of one group.

    Attributes:
        metric: its name.
        count: how many seeds have it.
        mean, std, median: of the values (``std``: the sample standard deviation, 0 for
            a single seed).
        min, min_seed, max, max_seed: the extremes and the seeds that gave them.
        spread: ``max - min``.
        spread_in_std: ``spread / std`` (None when ``std`` is 0).
        outliers: the seeds with a robust z-score beyond 3.5, farthest first.
        values: seed -> value, in seed order.
        verdict: one line that says it.
    """

    metric: str
    count: int
    mean: float
    std: float
    median: float
    min: float
    min_seed: int
    max: float
    max_seed: int
    spread: float
    spread_in_std: float | None
    outliers: tuple[Outlier, ...]
    values: Mapping[int, float]
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "count": self.count,
            "mean": self.mean,
            "std": self.std,
            "median": self.median,
            "min": self.min,
            "min_seed": self.min_seed,
            "max": self.max,
            "max_seed": self.max_seed,
            "spread": self.spread,
            "spread_in_std": self.spread_in_std,
            "outliers": [o.to_dict() for o in self.outliers],
            "values": [{"seed": s, "value": v} for s, v in self.values.items()],
            "verdict": self.verdict,
        }


@dataclass(frozen=True, slots=True)
class SeedGroup:
    """Runs whose configs are equal but for the seed.

    Attributes:
        config: the config they share (without ``"seed"``).
        runs: seed -> run name, in seed order.
        metrics: one ``MetricStats`` per metric, by name.
    """

    config: Mapping[str, Any]
    runs: Mapping[int, str]
    metrics: tuple[MetricStats, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": dict(self.config),
            "runs": [{"seed": s, "run": r} for s, r in self.runs.items()],
            "metrics": [m.to_dict() for m in self.metrics],
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    """A run left out, and why."""

    run: str
    why: str

    def to_dict(self) -> dict[str, str]:
        return {"run": self.run, "why": self.why}


@dataclass(frozen=True, slots=True)
class SeedReport:
    """``seed_sensitivity``'s answer.

    Attributes:
        pattern: the runs asked about.
        metric: the metric asked about (None: every numeric metric found).
        at: ``"final"`` or a snapshot name.
        groups: the groups, largest first.
        split_by: config keys (dotted paths) whose values differ between groups.
        skipped: runs left out, each with the reason.
    """

    pattern: str
    metric: str | None
    at: str
    groups: tuple[SeedGroup, ...]
    split_by: tuple[str, ...] = ()
    skipped: tuple[Skipped, ...] = field(default=())

    @property
    def verdicts(self) -> list[str]:
        """One line per group and metric."""
        return [m.verdict for g in self.groups for m in g.metrics]

    @property
    def outliers(self) -> list[Outlier]:
        """Every outlier of every group and metric."""
        return [o for g in self.groups for m in g.metrics for o in m.outliers]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "metric": self.metric,
            "at": self.at,
            "groups": [g.to_dict() for g in self.groups],
            "split_by": list(self.split_by),
            "skipped": [s.to_dict() for s in self.skipped],
        }

    def __str__(self) -> str:
        return render(self)


def _number(value: Any) -> float | None:
    """``value`` as a float if it is an int or float of size at most ``LARGEST`` (so that
    sums of 10^4 of them stay finite), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        return None
    return number if abs(number) <= LARGEST else None


def _finite(value: float) -> float:
    """``value``, with an overflow to infinity held at the largest float (JSON has no inf)."""
    return value if math.isfinite(value) else math.copysign(sys.float_info.max, value)


def _text(value: float) -> str:
    return f"{value:.4g}"


def robust_z(values: Sequence[float]) -> list[float]:
    """Each value's robust z-score against ``values`` (0 for all when they are all equal)."""
    median = statistics.median(values)
    deviations = [abs(v - median) for v in values]
    mad = statistics.median(deviations)
    if mad > 0:
        return [_finite(_MAD_SCALE * (v - median) / mad) for v in values]
    mean_ad = statistics.fmean(deviations)
    if mean_ad > 0:
        return [_finite((v - median) / (_MEAN_AD_SCALE * mean_ad)) for v in values]
    return [0.0 for _ in values]


def _stats(metric: str, values: Mapping[int, float], runs: Mapping[int, str]) -> MetricStats:
    seeds = list(values)
    numbers = [values[s] for s in seeds]
    count = len(numbers)
    mean = statistics.fmean(numbers)
    std = statistics.stdev(numbers) if count > 1 else 0.0
    low = min(seeds, key=lambda s: (values[s], s))
    high = max(seeds, key=lambda s: (values[s], -s))
    spread = values[high] - values[low]
    outliers: list[Outlier] = []
    if count >= 3:
        for seed, z in zip(seeds, robust_z(numbers), strict=True):
            if abs(z) > OUTLIER_Z:
                outliers.append(Outlier(seed, runs[seed], values[seed], z))
        outliers.sort(key=lambda o: (-abs(o.z), o.seed))
    spread_in_std = _finite(spread / std) if std > 0 else None
    verdict = (
        f"{metric}: the seed alone spreads it over {_text(spread)} "
        f"({_text(values[low])} at seed {low} to {_text(values[high])} at seed {high}) "
        f"across {count} seed{'s' if count != 1 else ''}"
    )
    if spread_in_std is not None:
        verdict += f", {spread_in_std:.1f} standard deviations of {_text(std)}"
    if count < 3:
        verdict += "; too few seeds to look for outliers"
    elif outliers:
        named = [f"{o.seed} (z {o.z:+.1f})" for o in sorted(outliers, key=lambda o: o.seed)]
        verb = "is an outlier" if len(named) == 1 else "are outliers"
        said = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
        verdict += f"; seed{'s' if len(named) > 1 else ''} {said} {verb}"
    else:
        verdict += "; no outlier seeds"
    return MetricStats(
        metric=metric,
        count=count,
        mean=mean,
        std=std,
        median=statistics.median(numbers),
        min=values[low],
        min_seed=low,
        max=values[high],
        max_seed=high,
        spread=spread,
        spread_in_std=spread_in_std,
        outliers=tuple(outliers),
        values=dict(sorted(values.items())),
        verdict=verdict,
    )


def _without_seed(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "seed"}


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted key -> JSON text of each leaf (an empty object is a leaf)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = json.dumps(value, sort_keys=True)
    return flat


def _split_keys(configs: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    flats = [_flatten(c) for c in configs]
    keys = set().union(*flats) if flats else set()
    return tuple(sorted(k for k in keys if len({f.get(k) for f in flats}) > 1))


def analyze(
    observations: Iterable[Observation],
    *,
    pattern: str = "*",
    metric: str | None = None,
    at: str = _FINAL,
) -> SeedReport:
    """The report on ``observations`` (see the module docstring); no store needed."""
    skipped: list[Skipped] = []
    groups: dict[str, tuple[dict[str, Any], list[Observation]]] = {}
    for obs in sorted(observations, key=lambda o: o.run):
        if obs.missing is not None:
            skipped.append(Skipped(obs.run, obs.missing))
            continue
        if obs.seed is None:
            skipped.append(Skipped(obs.run, "no seed recorded (seed_everything or config 'seed')"))
            continue
        if metric is not None and _number(obs.metrics.get(metric)) is None:
            found = obs.metrics.get(metric)
            skipped.append(
                Skipped(
                    obs.run,
                    f"no metric {metric!r}"
                    + (
                        f" that is a number of size at most 1e300 (it is {found!r:.40})"
                        if found is not None
                        else ""
                    )
                    + (f" in snapshot {at!r}" if at != _FINAL else ""),
                )
            )
            continue
        if metric is None and not any(_number(v) is not None for v in obs.metrics.values()):
            skipped.append(Skipped(obs.run, "no numeric metrics"))
            continue
        config = _without_seed(obs.config)
        key = json.dumps(config, sort_keys=True)
        groups.setdefault(key, (config, []))[1].append(obs)

    built: list[SeedGroup] = []
    for config, members in groups.values():
        runs: dict[int, str] = {}
        kept: list[Observation] = []
        for obs in members:
            assert obs.seed is not None
            if obs.seed in runs:
                skipped.append(
                    Skipped(obs.run, f"seed {obs.seed} is already counted, from {runs[obs.seed]}")
                )
                continue
            runs[obs.seed] = obs.run
            kept.append(obs)
        names = [metric] if metric is not None else sorted({m for o in kept for m in o.metrics})
        stats = []
        for name in names:
            values = {
                o.seed: number
                for o in kept
                if o.seed is not None and (number := _number(o.metrics.get(name))) is not None
            }
            if values:
                stats.append(_stats(name, values, runs))
        built.append(
            SeedGroup(config=config, runs=dict(sorted(runs.items())), metrics=tuple(stats))
        )
    built.sort(key=lambda g: (-len(g.runs), json.dumps(dict(g.config), sort_keys=True)))
    return SeedReport(
        pattern=pattern,
        metric=metric,
        at=at,
        groups=tuple(built),
        split_by=_split_keys([g.config for g in built]),
        skipped=tuple(sorted(skipped, key=lambda s: s.run)),
    )


def _seed_of(record: Mapping[str, Any]) -> int | None:
    seed = record.get("seed")
    if seed is None:
        config = record.get("config")
        seed = config.get("seed") if isinstance(config, Mapping) else None
    return seed if type(seed) is int and seed >= 0 else None


def _taken_order(info: Listed) -> tuple[bool, float, str]:
    """Oldest first; a snapshot whose time is not a number (a writer's clock gone wrong)
    sorts first, so that it never hides a later value."""
    known = isinstance(info.created, (int, float)) and math.isfinite(info.created)
    return (known, info.created if known else 0.0, info.name)


def metrics_at(snapshots: Iterable[Listed], at: str) -> tuple[dict[str, Any], str | None]:
    """A run's metrics ``at`` "final" (each metric from the latest snapshot recording it)
    or at the snapshot named ``at``; with the reason when there are none."""
    listed = list(snapshots)
    if at != _FINAL:
        for info in listed:
            if info.name == at:
                return dict(info.metrics), None
        return {}, f"no snapshot {at!r}"
    found: dict[str, Any] = {}
    for info in sorted(listed, key=_taken_order):
        found.update(info.metrics)
    return found, (None if found else "no snapshot records metrics")


def observe(
    run: str, record: Mapping[str, Any], snapshots: Iterable[Listed], at: str
) -> Observation:
    """One run's ``Observation`` from its record and its snapshots' listing."""
    config = record.get("config")
    metrics, missing = metrics_at(snapshots, at)
    return Observation(
        run=run,
        seed=_seed_of(record),
        config=config if isinstance(config, Mapping) else {},
        metrics=metrics,
        missing=missing,
    )


def _check_at(at: str) -> str:
    if at != _FINAL:
        check_name(at)
    return at


def seed_sensitivity(
    store: Store | str | os.PathLike[str],
    pattern: str,
    *,
    metric: str | None = None,
    at: str = _FINAL,
) -> SeedReport:
    """How much the seed alone moves ``metric`` across the runs of ``store`` matching
    ``pattern`` (see the module docstring). ``store`` is a Store or a location. A store
    without run records (``record``) reads every run's record as ``{}``: only configs'
    ``"seed"`` keys then give seeds."""
    from rngvault.stores import open_store

    if not isinstance(pattern, str) or not pattern:
        raise StoreError(
            f"pattern must be a non-empty string like 'alice/resnet-*', not {pattern!r}"
        )
    _check_at(at)
    opened = open_store(store) if isinstance(store, (str, os.PathLike)) else store
    try:
        runs = [r for r in opened.runs() if fnmatch.fnmatchcase(r, pattern)]
        if not runs:
            raise NotFoundError(f"no run matches {pattern!r}")
        return _report(opened, runs, pattern=pattern, metric=metric, at=at)
    finally:
        if opened is not store:
            opened.close()


def _report(
    store: Store, runs: Iterable[str], *, pattern: str, metric: str | None, at: str
) -> SeedReport:
    """The report on ``runs`` of ``store``; a run deleted meanwhile is skipped, saying so."""
    read = getattr(store, "record", None)
    observations = []
    for run in runs:
        try:
            record = read(run) if callable(read) else {}
            listed = store.snapshots(run)
        except NotFoundError:
            observations.append(Observation(run, None, {}, {}, "deleted while reading"))
            continue
        observations.append(observe(run, record, listed, at))
    return analyze(observations, pattern=pattern, metric=metric, at=at)


def _names(store: Store, run: str) -> set[str]:
    try:
        return {i.name for i in store.snapshots(run)}
    except NotFoundError:
        return set()


def sweep_seeds(
    fn: Callable[[int, Any], Mapping[str, Any] | None],
    seeds: Iterable[int],
    *,
    run: str,
    store: Store | str | os.PathLike[str] | None = None,
    config: Mapping[str, Any] | None = None,
    deterministic: bool = False,
    metric: str | None = None,
) -> SeedReport:
    """Run ``fn(seed, vault)`` once per seed, each in a run of its own, and report on them.

    ``run`` names each run with ``{seed}`` in it (``"alice/sweep-{seed}"``). For each seed:
    ``seed_everything(seed, deterministic=...)``, a ``Vault(store, run=..., config=config)``,
    then ``fn``; the metrics it returns are stored as snapshot ``"final"`` (if it returns
    None, having stored its own metrics, a ``"final"`` snapshot without metrics marks the
    seed done, unless ``fn`` took one of that name). A seed whose run already has a
    ``"final"`` snapshot is not run again, so an interrupted sweep resumes. Returns the
    report on the sweep's runs (those of ``seeds`` only; its pattern is ``run`` with ``*``
    for ``{seed}``).
    """
    from rngvault._seeding import seed_everything
    from rngvault._vault import Vault
    from rngvault.stores import open_store

    if "{seed}" not in run:
        raise RngVaultError(f"run {run!r} must contain {{seed}}, e.g. 'alice/sweep-{{seed}}'")
    opened = open_store(store)
    try:
        names = []
        for seed in seeds:
            name = run.replace("{seed}", str(int(seed)))
            names.append(name)
            if _FINAL in _names(opened, name):
                continue
            seed_everything(int(seed), deterministic=deterministic)
            with Vault(opened, run=name, config=config, on_error="raise") as vault:
                result = fn(int(seed), vault)
                if result is not None:
                    vault.snapshot(_FINAL, metrics=result, durable=True)
                    continue
                vault.flush()
                if _FINAL not in _names(opened, name):
                    vault.snapshot(_FINAL, durable=True)  # the seed is done
        opened.flush()
        pattern = run.replace("{seed}", "*")
        return _report(opened, dict.fromkeys(names), pattern=pattern, metric=metric, at=_FINAL)
    finally:
        if opened is not store:
            opened.close()


def render(report: SeedReport) -> str:
    """The report as text: one block per group, then what was skipped."""
    lines = [f"runs {report.pattern!r}, metrics at {report.at}: {len(report.groups)} group(s)"]
    if report.split_by:
        lines.append(f"groups differ in: {', '.join(report.split_by)}")
    for index, group in enumerate(report.groups, 1):
        config = json.dumps(dict(group.config), sort_keys=True)
        lines.append("")
        lines.append(f"group {index}: {len(group.runs)} run(s), config {config:.200}")
        for m in group.metrics:
            spread = f"{m.spread_in_std:.1f} std" if m.spread_in_std is not None else "-"
            lines.append(
                f"  {m.metric}: n={m.count} mean={_text(m.mean)} std={_text(m.std)} "
                f"median={_text(m.median)} min={_text(m.min)} (seed {m.min_seed}) "
                f"max={_text(m.max)} (seed {m.max_seed}) spread={_text(m.spread)} ({spread})"
            )
            for o in m.outliers:
                lines.append(f"    outlier: seed {o.seed} ({o.run}) {_text(o.value)}, z {o.z:+.2f}")
            lines.append(f"  {m.verdict}")
    if report.skipped:
        lines.append("")
        lines.append(f"skipped {len(report.skipped)} run(s):")
        lines.extend(f"  {s.run}: {s.why}" for s in report.skipped)
    return "\n".join(lines)
