"""A seed-sensitivity report as a PNG: each group's metric values over its seeds.

One panel per group and metric: the values in seed order (dots), the mean and median as
lines, outlier seeds in red and labelled with their seed, and beside them the values'
histogram. matplotlib (the ``rngvault[plot]`` extra) is imported only here, when a plot is
asked for, and drawn on its own ``Figure`` with the Agg canvas: pyplot, and with it the
user's backend and open figures, is never touched.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rngvault._errors import MissingExtraError, RngVaultError
from rngvault._seeds import MetricStats, SeedGroup, SeedReport, _flatten

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["MAX_LABELS", "MAX_PANELS", "OUTLIER_COLOR", "plot_seeds"]

OUTLIER_COLOR = "#d62728"  # used for outliers and their labels only
_VALUE_COLOR = "#1f77b4"
_MEAN_COLOR = "#555555"
_MEDIAN_COLOR = "#2ca02c"
MAX_PANELS = 16  # more groups x metrics than this: the first ones, and a note saying so
MAX_LABELS = 12  # outlier seeds labelled per panel (the farthest); the rest counted


def _panels(report: SeedReport, metric: str | None) -> list[tuple[int, SeedGroup, MetricStats]]:
    """(group number, group, stats) for each panel to draw, or RngVaultError saying why
    there is nothing to draw."""
    panels = [
        (index, group, stats)
        for index, group in enumerate(report.groups, 1)
        for stats in group.metrics
        if metric is None or stats.metric == metric
    ]
    if panels:
        return panels
    if metric is not None:
        found = sorted({m.metric for g in report.groups for m in g.metrics})
        have = f"the report has {', '.join(found)}" if found else "the report has no values"
        raise RngVaultError(f"nothing to plot: no values of metric {metric!r} ({have})")
    raise RngVaultError(
        f"nothing to plot: no run matching {report.pattern!r} has a seed and a numeric metric"
        + (f" ({len(report.skipped)} run(s) skipped)" if report.skipped else "")
    )


def _group_label(index: int, group: SeedGroup, split_by: tuple[str, ...]) -> str:
    """``group 2 (lr=0.01, opt=sgd)``: the keys that split the groups, with this one's values."""
    flat = _flatten(group.config)
    said = [f"{key}={flat.get(key, '-')}" for key in split_by]
    text = ", ".join(said)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"group {index}" + (f" ({text})" if text else "")


def _draw(axes: Axes, hist: Axes, stats: MetricStats, title: str) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    seeds = list(stats.values)
    values = [stats.values[s] for s in seeds]
    flagged = {o.seed for o in stats.outliers}
    count = len(seeds)
    size = max(2.0, min(36.0, 4000.0 / count))
    alpha = 1.0 if count <= 200 else 0.6
    plain = [(i, v) for i, (s, v) in enumerate(zip(seeds, values, strict=True)) if s not in flagged]
    if plain:
        xs, ys = zip(*plain, strict=True)
        axes.scatter(xs, ys, s=size, color=_VALUE_COLOR, alpha=alpha, linewidths=0, label="seed")
    if flagged:
        at = {s: i for i, s in enumerate(seeds)}
        axes.scatter(
            [at[o.seed] for o in stats.outliers],
            [o.value for o in stats.outliers],
            s=max(size * 2.5, 24.0),
            color=OUTLIER_COLOR,
            linewidths=0,
            zorder=3,
            label=f"outlier (|z| > 3.5): {len(flagged)}",
        )
        for o in stats.outliers[:MAX_LABELS]:
            axes.annotate(
                str(o.seed),
                (at[o.seed], o.value),
                xytext=(4, 4),
                textcoords="offset points",
                color=OUTLIER_COLOR,
                fontsize=8,
            )
        if len(stats.outliers) > MAX_LABELS:
            axes.text(
                0.99,
                0.02,
                f"{len(stats.outliers) - MAX_LABELS} more outliers not labelled",
                transform=axes.transAxes,
                ha="right",
                fontsize=8,
                color=OUTLIER_COLOR,
            )
    axes.axhline(stats.mean, color=_MEAN_COLOR, linestyle="--", linewidth=1, label="mean")
    axes.axhline(stats.median, color=_MEDIAN_COLOR, linewidth=1, label="median")
    axes.set_xlim(-0.5 - count * 0.02, count - 0.5 + count * 0.02)
    axes.xaxis.set_major_locator(MaxNLocator(nbins=min(count, 12), integer=True))
    axes.xaxis.set_major_formatter(
        FuncFormatter(lambda x, _: str(seeds[int(x)]) if 0 <= x < count and x == int(x) else "")
    )
    axes.set_xlabel("seed (in seed order)")
    # What users named is drawn as written: "$...$" in a name is no math formula.
    axes.set_ylabel(stats.metric, parse_math=False)
    axes.set_title(title, fontsize=10, loc="left", parse_math=False)
    # Above the panel, right of the title: never over the points.
    axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=4, fontsize=8, frameon=False)
    bins = max(5, min(50, int(math.sqrt(count)) + 1))
    hist.hist(values, bins=bins, orientation="horizontal", color=_VALUE_COLOR, alpha=0.7)
    hist.axhline(stats.mean, color=_MEAN_COLOR, linestyle="--", linewidth=1)
    hist.axhline(stats.median, color=_MEDIAN_COLOR, linewidth=1)
    hist.xaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
    hist.set_xlabel("runs")
    hist.tick_params(labelleft=False)


def _stats_line(stats: MetricStats) -> str:
    spread = f" = {stats.spread_in_std:.1f} std" if stats.spread_in_std is not None else ""
    return (
        f"n={stats.count}  mean {stats.mean:.4g}  median {stats.median:.4g}  "
        f"std {stats.std:.4g}  spread {stats.spread:.4g}{spread}"
    )


def plot_seeds(
    report: SeedReport, path: str | os.PathLike[str], *, metric: str | None = None
) -> Path:
    """Write ``report`` as a PNG at ``path`` and return the path.

    One panel per group and metric (``metric``: only that one; at most ``MAX_PANELS``,
    the figure says how many were left out): the values in seed order, mean and median
    lines, outlier seeds in red labelled with their seed (the ``MAX_LABELS`` farthest), and
    the values' histogram. The file is replaced only once the image is complete.

    Raises:
        MissingExtraError: matplotlib is not installed (``pip install 'rngvault[plot]'``).
        RngVaultError: the report has no values to draw (or none of ``metric``).
        OSError: the file cannot be written.
    """
    panels = _panels(report, metric)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("matplotlib", "plot", "plotting seed sensitivity") from None

    target = Path(path)
    shown = panels[:MAX_PANELS]
    figure = Figure(figsize=(11, 0.9 + 3.3 * len(shown)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(len(shown), 2, width_ratios=(5, 1))
    what = metric or report.metric or "every metric"
    heading = f"seed sensitivity of {what} at {report.at}: runs {report.pattern}"
    if len(panels) > len(shown):
        heading += f" (first {len(shown)} of {len(panels)} panels)"
    figure.suptitle(heading, fontsize=12, parse_math=False)
    for row, (index, group, stats) in enumerate(shown):
        axes = figure.add_subplot(grid[row, 0])
        hist = figure.add_subplot(grid[row, 1], sharey=axes)
        title = f"{_group_label(index, group, report.split_by)}: {stats.metric}\n"
        _draw(axes, hist, stats, title + _stats_line(stats))
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    options: dict[str, Any] = {"format": "png", "metadata": {"Software": "rngvault"}}
    try:
        figure.savefig(partial, **options)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
