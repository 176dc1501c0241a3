"""The bisect command: the first step at which two runs' generators differ.

Exit status, as diff(1) has it: 0 the runs agree on every step they share, 1 they diverge,
2 nothing could be compared (the runs share no step, a run is unknown, the store failed,
or the command was misused).
"""

from __future__ import annotations

import click

import rngvault
from rngvault._errors import RngVaultError
from rngvault.cli._common import (
    about_run,
    example,
    json_option,
    print_json,
    run_of,
    say,
    store_options,
    the_store,
)

AGREE, DIVERGED, TROUBLE = 0, 1, 2


@click.command(
    epilog=example(
        "rngvault bisect alice/resnet50 bob/resnet50-repro",
        "rngvault bisect alice/resnet50 bob/resnet50-repro --generator augment --json",
    )
)
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.option("--generator", metavar="NAME", help="compare only this generator's states")
@click.option("--rank", type=click.IntRange(min=0), default=0, show_default=True, help="which rank")
@store_options
@json_option
def bisect(run_a: str, run_b: str, generator: str | None, rank: int, as_json: bool) -> int:
    """Find the first step at which two runs' generators differ (comparing only the steps
    both runs snapshotted), which generators differ there and by how many draws in each
    one's unit, and the last step at which they were equal. Exit 0 when the runs agree,
    1 when they diverge, 2 when nothing could be compared."""
    try:
        run_a, run_b = run_of(run_a), run_of(run_b)
        store = the_store()
        try:
            with about_run(store, run_b), about_run(store, run_a):
                report = rngvault.bisect(store, run_a, run_b, generator=generator, rank=rank)
        finally:
            store.close()
    except RngVaultError as exc:
        from rngvault.cli import _message  # the one wording of errors, shared with main()

        say(f"rngvault: error: {_message(exc)}")
        return TROUBLE
    if as_json:
        print_json(report.to_dict())
    else:
        click.echo(str(report))
    if not report.compared:
        return TROUBLE
    return AGREE if report.agree else DIVERGED


COMMANDS = [bisect]
