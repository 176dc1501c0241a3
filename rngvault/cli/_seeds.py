"""The seeds command: how much the seed alone moves a metric across matching runs."""

from __future__ import annotations

from pathlib import Path

import click

import rngvault._seeds as seeds_
from rngvault._errors import InvalidNameError
from rngvault._names import check_name
from rngvault.cli._common import example, json_option, print_json, say, store_options, the_store


def _at(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``final``, or a valid snapshot name (else a usage error naming it)."""
    if value == "final":
        return value
    try:
        return check_name(value)
    except InvalidNameError as exc:
        raise click.BadParameter(f"give 'final' or a snapshot name: {exc}") from None


@click.command(
    epilog=example(
        "rngvault seeds 'alice/resnet-*'",
        "rngvault seeds 'alice/resnet-*' --metric acc --at epoch89 --json",
        "rngvault seeds 'alice/sweep-*' --metric acc --plot seeds.png",
    )
)
@click.argument("pattern")
@click.option("--metric", metavar="NAME", help="only this metric (default: every numeric one)")
@click.option(
    "--at",
    default="final",
    show_default=True,
    callback=_at,
    metavar="final|SNAPSHOT",
    help="each run's latest value of a metric, or its value in the snapshot so named",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    metavar="FILE.png",
    help="also draw the values over seeds, outliers marked, as a PNG (needs rngvault[plot])",
)
@store_options
@json_option
def seeds(pattern: str, metric: str | None, at: str, plot: Path | None, as_json: bool) -> None:
    """How much the seed alone moves a metric: the runs matching PATTERN (a shell pattern on
    NAMESPACE/RUN, quoted) are grouped by their configs without the seed; per group and
    metric, the count, mean, standard deviation, median, extremes with their seeds, the
    spread, and the outlier seeds (robust z beyond 3.5). Runs left out are listed with the
    reason."""
    store = the_store()
    try:
        report = seeds_.seed_sensitivity(store, pattern, metric=metric, at=at)
    finally:
        store.close()
    if as_json:
        print_json(report.to_dict())
    else:
        click.echo(seeds_.render(report))
    if plot is not None:
        from rngvault._plot import plot_seeds

        say(f"plot written to {plot_seeds(report, plot, metric=metric)}")


COMMANDS = [seeds]
