"""Small charts drawn as inline SVG by the templates: line charts of the metrics a page of
snapshots carries, and dot plots of a metric by seed (the seed-sensitivity page). This module
only computes the coordinates; the templates escape every text."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rngvault._seeds import MetricStats
from rngvault.server.storage.base import SnapshotInfo

WIDTH = 240
HEIGHT = 64
PAD = 4
MAX_CHARTS = 12  # metrics beyond these are listed in the table, not drawn


@dataclass(frozen=True, slots=True)
class Chart:
    """One metric over a page of snapshots.

    Attributes:
        key: the metric's name (from the client: escaped when shown).
        axis: what the x axis counts: ``"step"``, ``"epoch"`` or ``"snapshot"``.
        points: the polyline's ``"x,y x,y ..."`` in a WIDTH x HEIGHT box.
        low: the smallest value drawn.
        high: the largest value drawn.
        first: the first x value.
        last: the last x value.
        count: how many values are drawn.
    """

    key: str
    axis: str
    points: str
    low: float
    high: float
    first: float
    last: float
    count: int

    @property
    def title(self) -> str:
        """What the chart shows, in words (its SVG <title>)."""
        return (
            f"{self.key} by {self.axis}: {self.count} values from {_num(self.low)} to "
            f"{_num(self.high)}, {self.axis} {_num(self.first)} to {_num(self.last)}"
        )


def _num(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _scale(value: float, low: float, high: float, size: float) -> float:
    # halves: the span of two finite floats (1e308 and -1e308) overflows, its half does not
    span = high / 2 - low / 2
    return size / 2 if span == 0 else (value / 2 - low / 2) / span * size


def _axis(infos: Sequence[SnapshotInfo]) -> tuple[str, list[float]]:
    if infos and all(i.step is not None for i in infos):
        return "step", [float(i.step) for i in infos if i.step is not None]
    if infos and all(i.epoch is not None for i in infos):
        return "epoch", [float(i.epoch) for i in infos if i.epoch is not None]
    return "snapshot", [float(n) for n in range(len(infos))]


def charts(infos: Sequence[SnapshotInfo]) -> list[Chart]:
    """One chart per numeric metric (bools and strings are not drawn), in first-seen order."""
    axis, xs = _axis(infos)
    keys: dict[str, None] = {}  # first-seen order, one lookup per key
    for info in infos:
        keys.update(dict.fromkeys(info.metrics))
    out = []
    for key in list(keys)[:MAX_CHARTS]:
        pairs = []
        for x, info in zip(xs, infos, strict=True):
            value = info.metrics.get(key)
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and isinstance(value, (int, float)) and math.isfinite(value):
                pairs.append((x, float(value)))
        if pairs:
            out.append(_chart(key, axis, pairs))
    return out


def _chart(key: str, axis: str, pairs: list[tuple[float, float]]) -> Chart:
    x0, x1 = min(p[0] for p in pairs), max(p[0] for p in pairs)
    y0, y1 = min(p[1] for p in pairs), max(p[1] for p in pairs)
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    points = " ".join(
        f"{PAD + _scale(x, x0, x1, inner_w):.1f},{HEIGHT - PAD - _scale(y, y0, y1, inner_h):.1f}"
        for x, y in pairs
    )
    return Chart(key, axis, points, y0, y1, pairs[0][0], pairs[-1][0], len(pairs))


SEED_WIDTH = 480
SEED_HEIGHT = 160
SEED_PAD = 14  # room for the outliers' labels above and below the dots
MAX_SEED_PLOTS = 24  # dot plots on one page; further metrics are in the tables only
DOT_TITLES = 200  # up to this many seeds, each dot has a <title> (seed and value)


@dataclass(frozen=True, slots=True)
class Dot:
    """One seed's value in a dot plot.

    Attributes:
        x: the dot's centre, across (seeds in ascending order, evenly spaced).
        y: the dot's centre, down (larger values higher).
        seed: the seed.
        value: its value of the metric.
        outlier: whether its robust z-score puts it beyond the outlier threshold.
    """

    x: float
    y: float
    seed: int
    value: float
    outlier: bool

    @property
    def title(self) -> str:
        """The dot in words (its SVG <title>)."""
        return f"seed {self.seed}: {_num(self.value)}" + (" (outlier)" if self.outlier else "")


@dataclass(frozen=True, slots=True)
class Label:
    """An outlier's seed written next to its dot: ``anchor`` is the SVG text-anchor."""

    x: float
    y: float
    text: str
    anchor: str


@dataclass(frozen=True, slots=True)
class SeedPlot:
    """A metric's value by seed in one group, for a SEED_WIDTH x SEED_HEIGHT box.

    Attributes:
        metric: the metric's name (from the client: escaped when shown).
        dots: one per seed, in seed order.
        mean_y: the height of the mean's line.
        median_y: the height of the median's line.
        labels: the outliers' seeds, by their dots.
        radius: the dots' radius (smaller when there are many).
        titled: whether each dot carries its own <title> (at most DOT_TITLES seeds).
        title: what the plot shows, in words (its SVG <title>).
    """

    metric: str
    dots: tuple[Dot, ...]
    mean_y: float
    median_y: float
    labels: tuple[Label, ...]
    radius: float
    titled: bool
    title: str
    width: int = SEED_WIDTH
    height: int = SEED_HEIGHT


def seed_plot(stats: MetricStats) -> SeedPlot:
    """The dot plot of ``stats``: its values by seed, the mean and the median as lines, the
    outliers marked and labelled with their seeds."""
    seeds = list(stats.values)
    outliers = {o.seed for o in stats.outliers}
    inner_w, inner_h = SEED_WIDTH - 2 * SEED_PAD, SEED_HEIGHT - 2 * SEED_PAD

    def x_of(index: int) -> float:
        return SEED_PAD + (inner_w / 2 if len(seeds) == 1 else index / (len(seeds) - 1) * inner_w)

    def y_of(value: float) -> float:
        return SEED_HEIGHT - SEED_PAD - _scale(value, stats.min, stats.max, inner_h)

    dots = tuple(
        Dot(round(x_of(i), 1), round(y_of(stats.values[s]), 1), s, stats.values[s], s in outliers)
        for i, s in enumerate(seeds)
    )
    labels = []
    for dot in dots:
        if dot.outlier:
            # above the dot, or below it when the dot is at the top
            y = dot.y - 6 if dot.y - 6 > SEED_PAD / 2 + 4 else dot.y + 13
            anchor = "start" if dot.x < 40 else "end" if dot.x > SEED_WIDTH - 40 else "middle"
            labels.append(Label(dot.x, round(y, 1), str(dot.seed), anchor))
    named = sorted(outliers)
    title = (
        f"{stats.metric} by seed: {stats.count} seed{'s' if stats.count != 1 else ''}"
        f" ({seeds[0]} to {seeds[-1]}), from {_num(stats.min)} at seed {stats.min_seed}"
        f" to {_num(stats.max)} at seed {stats.max_seed}; mean {_num(stats.mean)},"
        f" median {_num(stats.median)}; "
        + (
            f"outlier{'s' if len(named) > 1 else ''} (red): seed{'s' if len(named) > 1 else ''} "
            + ", ".join(map(str, named))
            if named
            else "no outliers"
        )
    )
    return SeedPlot(
        metric=stats.metric,
        dots=dots,
        mean_y=round(y_of(stats.mean), 1),
        median_y=round(y_of(stats.median), 1),
        labels=tuple(labels),
        radius=3.0 if len(dots) <= 100 else 1.5,
        titled=len(dots) <= DOT_TITLES,
        title=title,
    )
