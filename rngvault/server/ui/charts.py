"""Small line charts of the metrics a page of snapshots carries, drawn as inline SVG by the
templates: this module only computes the coordinates (the templates escape every text)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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

    def scale(value: float, low: float, high: float, size: float) -> float:
        # halves: the span of two finite floats (1e308 and -1e308) overflows, its half does not
        span = high / 2 - low / 2
        return size / 2 if span == 0 else (value / 2 - low / 2) / span * size

    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    points = " ".join(
        f"{PAD + scale(x, x0, x1, inner_w):.1f},{HEIGHT - PAD - scale(y, y0, y1, inner_h):.1f}"
        for x, y in pairs
    )
    return Chart(key, axis, points, y0, y1, pairs[0][0], pairs[-1][0], len(pairs))
