"""Seed sensitivity: the report's numbers against numpy/statistics computed here, its
outliers against a robust z computed here, its groups, and every reason a run is left out."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rngvault import _seeds
from rngvault._errors import InvalidNameError, NotFoundError, RngVaultError, StoreError
from rngvault._seeding import seed_everything
from rngvault._seeds import (
    OUTLIER_Z,
    Observation,
    SeedReport,
    analyze,
    observe,
    seed_sensitivity,
    sweep_seeds,
)
from rngvault._vault import Vault
from rngvault.stores.base import SnapshotInfo

# seed_everything warns, once per process, that PYTHONHASHSEED is unset: not what is tested
pytestmark = pytest.mark.filterwarnings("ignore:PYTHONHASHSEED is not set")

SEEDS = 40
PLANTED = 17


def independent_z(values: np.ndarray) -> np.ndarray:
    """Iglewicz and Hoaglin's modified z-score, with numpy; the mean absolute deviation
    (times sqrt(pi/2)) where the MAD is 0."""
    median = np.median(values)
    mad = np.median(np.abs(values - median))
    if mad > 0:
        return 0.6745 * (values - median) / mad
    return (values - median) / (np.sqrt(np.pi / 2) * np.mean(np.abs(values - median)))


def sweep(
    values: Mapping[int, float], config: Mapping[str, Any] | None = None, prefix: str = "ns/r"
) -> list[Observation]:
    return [
        Observation(f"{prefix}-{seed}", seed, dict(config or {"lr": 0.1}), {"acc": value})
        for seed, value in values.items()
    ]


def planted(far: float = 70.0) -> dict[int, float]:
    """40 seeds around 90 from a fixed generator, seed 17 at ``far``."""
    rng = np.random.default_rng(2024)
    values = {seed: float(90 + rng.normal(scale=0.5)) for seed in range(SEEDS)}
    values[PLANTED] = far
    return values


def test_planted_outlier_is_flagged_and_no_other() -> None:
    """Of 40 seeds, the one planted far away is the only outlier, as a robust z computed
    with numpy says; its z is that z, and the verdict names it."""
    values = planted()
    report = analyze(sweep(values), pattern="ns/*", metric="acc")
    [group] = report.groups
    [stats] = group.metrics
    seeds = np.array(list(values))
    z = independent_z(np.array([values[s] for s in seeds]))
    expected = set(seeds[np.abs(z) > OUTLIER_Z].tolist())
    assert expected == {PLANTED}
    assert [o.seed for o in stats.outliers] == [PLANTED]
    [outlier] = report.outliers
    assert outlier.run == f"ns/r-{PLANTED}" and outlier.value == values[PLANTED]
    assert outlier.z == pytest.approx(z[list(seeds).index(PLANTED)], rel=1e-9)
    assert f"seed {PLANTED} (z {outlier.z:+.1f}) is an outlier" in stats.verdict
    assert f"across {SEEDS} seeds" in stats.verdict


def test_two_planted_outliers_on_both_sides() -> None:
    """A lucky and an unlucky seed are both flagged, farthest first, and named together."""
    values = planted(far=80.0)
    values[3] = 95.0
    report = analyze(sweep(values), metric="acc")
    z = dict(zip(values, independent_z(np.array(list(values.values()))), strict=True))
    flagged = [o.seed for o in report.outliers]
    assert sorted(flagged) == sorted(s for s in values if abs(z[s]) > OUTLIER_Z) == [3, PLANTED]
    assert abs(z[flagged[0]]) >= abs(z[flagged[1]])
    assert "seeds 3 (z " in report.verdicts[0] and "are outliers" in report.verdicts[0]


def test_stats_equal_numpy_and_statistics() -> None:
    """count, mean, sample std, median, extremes with their seeds, spread and spread in
    standard deviations: as numpy and statistics compute them."""
    values = planted()
    [stats] = analyze(sweep(values), metric="acc").groups[0].metrics
    array = np.array(list(values.values()))
    assert stats.count == SEEDS
    assert stats.mean == pytest.approx(float(np.mean(array)), rel=1e-12)
    assert stats.std == pytest.approx(float(np.std(array, ddof=1)), rel=1e-12)
    assert stats.median == pytest.approx(statistics.median(array.tolist()), rel=1e-12)
    assert (stats.min, stats.min_seed) == (array.min(), min(values, key=values.__getitem__))
    assert (stats.max, stats.max_seed) == (array.max(), max(values, key=values.__getitem__))
    assert stats.spread == pytest.approx(float(np.ptp(array)), rel=1e-12)
    assert stats.spread_in_std == pytest.approx(float(np.ptp(array) / np.std(array, ddof=1)))
    assert dict(stats.values) == values and list(stats.values) == sorted(values)


def test_groups_split_on_config_and_name_the_differing_keys() -> None:
    """Runs whose configs differ besides the seed are never pooled; split_by names exactly
    the dotted keys whose values differ, and the config's own "seed" key is not one."""
    base = {"lr": 0.1, "opt": {"name": "sgd", "momentum": 0.9}, "epochs": 3}
    other = {"lr": 0.1, "opt": {"name": "sgd", "momentum": 0.8}, "epochs": 3}
    third = {"lr": 0.1, "opt": {"name": "sgd", "momentum": 0.9}, "epochs": 3, "extra": True}
    observations = (
        sweep({s: 90.0 + s for s in range(6)}, {**base, "seed": 1}, "ns/a")
        + sweep({s: 80.0 + s for s in range(4)}, other, "ns/b")
        + sweep({s: 70.0 + s for s in range(3)}, third, "ns/c")
    )
    report = analyze(observations, metric="acc")
    assert report.split_by == ("extra", "opt.momentum")
    assert [len(g.runs) for g in report.groups] == [6, 4, 3]
    for group, prefix in zip(report.groups, ("ns/a", "ns/b", "ns/c"), strict=True):
        assert all(run.startswith(prefix + "-") for run in group.runs.values())
        assert "seed" not in group.config
    assert [g.metrics[0].mean for g in report.groups] == [92.5, 81.5, 71.0]
    alone = analyze(sweep({s: 1.0 for s in range(3)}, base), metric="acc")
    assert alone.split_by == ()


def test_runs_without_metrics_seed_or_with_a_repeated_seed_are_skipped_with_a_note() -> None:
    """Each run left out is named with its reason, and counted nowhere."""
    observations = [
        *sweep({s: 90.0 + s for s in range(4)}),
        Observation("ns/nometrics", 10, {"lr": 0.1}, {}, missing="no snapshot records metrics"),
        Observation("ns/otherm", 11, {"lr": 0.1}, {"loss": 0.3}),
        Observation("ns/text", 12, {"lr": 0.1}, {"acc": "high"}),
        Observation("ns/noseed", None, {"lr": 0.1}, {"acc": 50.0}),
        Observation("ns/r-again", 2, {"lr": 0.1}, {"acc": 10.0}),
    ]
    report = analyze(observations, metric="acc")
    why = {s.run: s.why for s in report.skipped}
    assert why == {
        "ns/nometrics": "no snapshot records metrics",
        "ns/otherm": "no metric 'acc'",
        "ns/text": "no metric 'acc' that is a number of size at most 1e300 (it is 'high')",
        "ns/noseed": "no seed recorded (seed_everything or config 'seed')",
        "ns/r-again": "seed 2 is already counted, from ns/r-2",
    }
    [group] = report.groups
    assert dict(group.runs) == {s: f"ns/r-{s}" for s in range(4)}
    assert group.metrics[0].values[2] == 92.0
    every = analyze([Observation("ns/flag", 1, {}, {"ok": True})])
    assert every.groups == () and every.skipped[0].why == "no numeric metrics"


def test_mad_zero_falls_back_to_the_mean_absolute_deviation() -> None:
    """Most seeds equal (MAD 0): z comes from the mean absolute deviation, as computed
    here, and the far seed is flagged; all seeds equal: no outliers at all."""
    values = {s: 90.0 for s in range(10)} | {10: 90.5, 11: 99.0}
    array = np.array(list(values.values()))
    assert np.median(np.abs(array - np.median(array))) == 0
    z = dict(zip(values, independent_z(array), strict=True))
    [stats] = analyze(sweep(values), metric="acc").groups[0].metrics
    assert [o.seed for o in stats.outliers] == [s for s in values if abs(z[s]) > OUTLIER_Z] == [11]
    assert stats.outliers[0].z == pytest.approx(z[11], rel=1e-4)  # sqrt(pi/2) to 5 digits
    [flat] = analyze(sweep({s: 3.0 for s in range(8)}), metric="acc").groups[0].metrics
    assert flat.outliers == () and flat.std == 0 and flat.spread_in_std is None
    assert "no outlier seeds" in flat.verdict


def test_fewer_than_three_seeds_give_no_outliers() -> None:
    """Two seeds far apart: extremes and spread, but no outlier, and the verdict says why."""
    [stats] = analyze(sweep({1: 10.0, 2: 1000.0}), metric="acc").groups[0].metrics
    assert stats.outliers == () and stats.spread == 990.0
    assert (stats.min_seed, stats.max_seed) == (1, 2)
    assert "too few seeds to look for outliers" in stats.verdict
    [one] = analyze(sweep({5: 1.0}), metric="acc").groups[0].metrics
    assert (one.count, one.std, one.outliers) == (1, 0.0, ())


def info(name: str, created: float, metrics: Mapping[str, Any]) -> SnapshotInfo:
    return SnapshotInfo("ns/r", name, (0,), created, "0" * 64, 100, metrics=metrics)


def test_at_picks_the_named_snapshot_and_final_the_latest_value() -> None:
    """at=NAME reads that snapshot's metrics; "final" takes each metric from the latest
    snapshot recording it; a missing snapshot is a reason to skip the run."""
    listing = [
        info("epoch0", 1.0, {"acc": 50.0, "loss": 2.0}),
        info("epoch1", 2.0, {"acc": 70.0}),
        info("epoch2", 3.0, {}),
    ]
    record = {"seed": 7, "config": {"lr": 0.1}}
    assert observe("ns/r", record, listing, "epoch0").metrics == {"acc": 50.0, "loss": 2.0}
    final = observe("ns/r", record, listing, "final")
    assert (final.metrics, final.seed, final.config) == ({"acc": 70.0, "loss": 2.0}, 7, {"lr": 0.1})
    gone = observe("ns/r", record, listing, "epoch9")
    assert gone.missing == "no snapshot 'epoch9'"
    report = analyze([gone], metric="acc", at="epoch9")
    assert report.skipped[0].why == "no snapshot 'epoch9'"
    empty = observe("ns/r", record, [info("e", 1.0, {})], "final")
    assert empty.missing == "no snapshot records metrics"


def test_seed_comes_from_the_record_else_the_config() -> None:
    """The record's seed wins; without one, the config's "seed"; a bool or negative is none."""
    assert observe("ns/r", {"seed": 3, "config": {"seed": 4}}, [], "final").seed == 3
    assert observe("ns/r", {"config": {"seed": 4}}, [], "final").seed == 4
    assert observe("ns/r", {"config": {"seed": True}}, [], "final").seed is None
    assert observe("ns/r", {"seed": -1}, [], "final").seed is None
    assert observe("ns/r", {}, [], "final").seed is None


def test_every_metric_when_none_is_named() -> None:
    """metric=None: one MetricStats per numeric metric, by name."""
    observations = [
        Observation(f"ns/r-{s}", s, {}, {"acc": 90.0 + s, "loss": 1.0 - s / 10, "note": "x"})
        for s in range(5)
    ]
    [group] = analyze(observations).groups
    assert [m.metric for m in group.metrics] == ["acc", "loss"]
    assert group.metrics[1].mean == pytest.approx(np.mean([1.0 - s / 10 for s in range(5)]))


def test_report_to_dict_and_text_agree() -> None:
    """to_dict carries the same numbers as the report; the text holds each verdict."""
    report = analyze(sweep(planted()), pattern="ns/*", metric="acc")
    data = report.to_dict()
    [stats] = report.groups[0].metrics
    [group] = data["groups"]
    assert group["metrics"][0]["mean"] == stats.mean
    assert group["metrics"][0]["outliers"][0]["seed"] == PLANTED
    assert len(group["metrics"][0]["values"]) == SEEDS
    assert isinstance(report, SeedReport) and stats.verdict in str(report)


def test_store_errors_are_clear(tmp_path: Path) -> None:
    """No matching run, an empty pattern, or a bad snapshot name: errors that say so."""
    with pytest.raises(NotFoundError, match="no run matches 'ns/\\*'"):
        seed_sensitivity(tmp_path, "ns/*")
    with pytest.raises(StoreError, match="pattern must be a non-empty string"):
        seed_sensitivity(tmp_path, "")
    with pytest.raises(InvalidNameError):
        seed_sensitivity(tmp_path, "ns/*", at="../up")
    assert issubclass(InvalidNameError, RngVaultError)


def test_through_real_vaults_into_a_local_store(tmp_path: Path) -> None:
    """Runs seeded with seed_everything and stored by Vaults with a config: the store's
    records give the seeds, the planted outlier is found and no other, the groups split on
    lr, and the numbers equal analyze() on the same values."""
    rng = np.random.default_rng(11)
    values = {s: 60.0 if s == PLANTED else float(90 + rng.normal(scale=0.5)) for s in range(20)}
    for lr, seeds in ((0.1, values), (0.2, {s: 80.0 + s for s in range(3)})):
        for seed, acc in seeds.items():
            seed_everything(seed)
            with Vault(tmp_path, run=f"ns/lr{lr}-{seed}", config={"lr": lr}) as vault:
                vault.snapshot("epoch0", metrics={"acc": 1.0})
                vault.snapshot("end", metrics={"acc": acc})
    report = seed_sensitivity(tmp_path, "ns/*", metric="acc")
    assert report.split_by == ("lr",) and report.skipped == ()
    first, second = report.groups
    assert dict(first.runs) == {s: f"ns/lr0.1-{s}" for s in values}
    assert [o.seed for o in report.outliers] == [PLANTED]
    alone = analyze(sweep(values, {"lr": 0.1}, "ns/lr0.1"), metric="acc")
    assert first.metrics[0] == alone.groups[0].metrics[0]
    assert second.metrics[0].mean == pytest.approx(81.0)
    at_start = seed_sensitivity(tmp_path, "ns/lr0.1-*", metric="acc", at="epoch0")
    assert at_start.groups[0].metrics[0].spread == 0.0


def test_sweep_seeds_runs_each_seed_once_and_resumes(tmp_path: Path) -> None:
    """sweep_seeds runs fn once per seed in its own run, seeded; a second call over more
    seeds runs only the new ones, and its report covers them all."""
    calls: list[int] = []

    def train(seed: int, vault: Vault) -> dict[str, float]:
        calls.append(seed)
        draw = float(np.random.random())  # the global generator, seeded by the sweep
        return {"acc": 90.0 + draw, "seed_echo": float(seed)}

    first = sweep_seeds(train, range(5), run="ns/sweep-{seed}", store=tmp_path, config={"h": 8})
    assert calls == [0, 1, 2, 3, 4]
    assert [len(g.runs) for g in first.groups] == [5]
    echo = {m.metric: m for m in first.groups[0].metrics}["seed_echo"]
    assert dict(echo.values) == {s: float(s) for s in range(5)}
    again = sweep_seeds(train, range(7), run="ns/sweep-{seed}", store=tmp_path, config={"h": 8})
    assert calls == [0, 1, 2, 3, 4, 5, 6]
    acc = {m.metric: m for m in again.groups[0].metrics}["acc"]
    for seed in range(7):
        np.random.seed(seed)
        assert acc.values[seed] == 90.0 + float(np.random.random())
    assert again.to_dict() == seed_sensitivity(tmp_path, "ns/sweep-*").to_dict()
    with pytest.raises(RngVaultError, match="must contain \\{seed\\}"):
        sweep_seeds(train, [1], run="ns/sweep", store=tmp_path)


def test_a_sweep_whose_fn_stores_its_own_metrics_resumes_and_reports_only_its_seeds(
    tmp_path: Path,
) -> None:
    """fn returning None (its metrics in a snapshot of its own) still marks the seed done;
    runs that match the pattern but are not the sweep's seeds stay out of its report."""
    calls: list[int] = []

    def train(seed: int, vault: Vault) -> None:
        calls.append(seed)
        vault.snapshot("end", metrics={"acc": 90.0 + seed / 10})

    with Vault(tmp_path, run="ns/sw-old") as vault:  # matches ns/sw-*, not a swept seed
        vault.snapshot("end", metrics={"acc": 1.0})
    report = sweep_seeds(train, range(3), run="ns/sw-{seed}", store=tmp_path)
    assert calls == [0, 1, 2]
    assert report.pattern == "ns/sw-*" and "ns/sw-old" not in {s.run for s in report.skipped}
    [group] = report.groups
    assert dict(group.runs) == {0: "ns/sw-0", 1: "ns/sw-1", 2: "ns/sw-2"}
    assert dict(group.metrics[0].values) == {0: 90.0, 1: 90.1, 2: 90.2}
    again = sweep_seeds(train, range(3), run="ns/sw-{seed}", store=tmp_path)
    assert calls == [0, 1, 2] and again.to_dict() == report.to_dict()


def test_huge_and_tiny_values_give_finite_numbers_and_valid_json() -> None:
    """Values near the float limits neither overflow the sums nor put inf into the JSON:
    beyond 1e300 a value is not summarized (the run is skipped, saying why); scores that
    overflow are held at the largest float."""
    runs = {"ns/a": 1.7e308, "ns/b": 1e300, "ns/c": -1e300, "ns/d": 0.0, "ns/e": 5e-324}
    observations = [
        Observation(run, seed, {}, {"m": value})
        for seed, (run, value) in enumerate(sorted(runs.items()))
    ]
    report = analyze(observations, metric="m")
    json.dumps(report.to_dict(), allow_nan=False)  # raises on inf or nan
    [group] = report.groups
    [stats] = group.metrics
    assert stats.count == 4 and stats.spread == 2e300
    assert [s.run for s in report.skipped] == ["ns/a"]
    assert "at most 1e300 (it is 1.7e+308)" in report.skipped[0].why
    values = [-1e-323, -5e-324, 0.0, 5e-324, 1e-323, 1e300]  # MAD 5e-324: z overflows
    tiny = analyze([Observation(f"ns/t{i}", i, {}, {"m": v}) for i, v in enumerate(values)])
    json.dumps(tiny.to_dict(), allow_nan=False)
    [outlier] = tiny.outliers
    assert outlier.seed == 5 and outlier.z == sys.float_info.max


def test_a_run_deleted_while_reading_is_skipped_saying_so(tmp_path: Path) -> None:
    """A run listed and then deleted (by retention, say) before its record is read is
    skipped with a note; the rest is reported."""
    from rngvault.stores import LocalStore

    class Deleting(LocalStore):
        def record(self, run: str) -> dict[str, Any]:
            if run == "ns/r-2":
                raise NotFoundError(f"no run {run!r}")
            return {"seed": int(run.rsplit("-", 1)[1])}

    store = Deleting(tmp_path)
    for seed in range(4):
        store.put_record(f"ns/r-{seed}", {"seed": seed})
    report = _seeds._report(
        store, [f"ns/r-{s}" for s in range(4)], pattern="ns/*", metric=None, at="final"
    )
    assert [(s.run, s.why) for s in report.skipped] == [
        ("ns/r-0", "no snapshot records metrics"),
        ("ns/r-1", "no snapshot records metrics"),
        ("ns/r-2", "deleted while reading"),
        ("ns/r-3", "no snapshot records metrics"),
    ]
