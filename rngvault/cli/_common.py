"""What every ``rngvault`` command shares: the ``--url``/``--token`` options, snapshot
references, the one table printer, the one date helper, JSON output and the progress bar."""

from __future__ import annotations

import contextlib
import difflib
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple, TypeVar

import click

from rngvault._errors import NotFoundError
from rngvault._json import to_jsonable
from rngvault._names import check_name, split_run
from rngvault._report import table
from rngvault.stores import Store, open_store

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

URL_HELP = (
    "the store: an http(s):// server or a directory (default: $RNGVAULT_URL, else the local "
    "store in the data directory)"
)
TOKEN_HELP = "the server token (default: $RNGVAULT_TOKEN)"


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> object:
    """Keep a given --url/--token where every command finds it; one given after the
    subcommand wins over one given before it (or taken from the environment)."""
    if value is not None:
        ctx.meta[f"rngvault.{param.name}"] = value
    return value


def root_store_options(command: F) -> F:
    """``--url``/``--token`` on the top-level command, with their environment variables."""
    command = click.option(
        "--url", envvar="RNGVAULT_URL", callback=_remember, expose_value=False, help=URL_HELP
    )(command)
    return click.option(
        "--token",
        envvar="RNGVAULT_TOKEN",
        callback=_remember,
        expose_value=False,
        help=TOKEN_HELP,
    )(command)


def store_options(command: F) -> F:
    """``--url``/``--token`` on a subcommand too, so they may follow it."""
    command = click.option("--url", callback=_remember, expose_value=False, help=URL_HELP)(command)
    return click.option("--token", callback=_remember, expose_value=False, help=TOKEN_HELP)(command)


def given_url() -> str | None:
    value: str | None = click.get_current_context().meta.get("rngvault.url")
    return value


def given_token() -> str | None:
    value: str | None = click.get_current_context().meta.get("rngvault.token")
    return value


def the_store() -> Store:
    """The store named by --url (or $RNGVAULT_URL, else the local store), with --token."""
    return open_store(given_url(), token=given_token())


json_option = click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
rank_option = click.option(
    "--rank", type=int, default=0, show_default=True, help="which rank's states"
)


# -- references -----------------------------------------------------------------------------


class Ref(NamedTuple):
    """One snapshot: its run (namespace/run) and its name."""

    run: str
    name: str

    def __str__(self) -> str:
        return f"{self.run}/{self.name}"


def run_of(text: str) -> str:
    """A checked ``namespace/run``."""
    return "/".join(split_run(text))


REF_FORMS = "NAMESPACE/RUN/NAME, or NAMESPACE/RUN NAME"


def refs(words: Sequence[str], count: int) -> list[Ref]:
    """``count`` snapshot references from ``words``: each is ``ns/run/name``, or ``ns/run``
    followed by a name, or a bare name in the run named last (``alice/r e3 e4``)."""
    found: list[Ref] = []
    run: str | None = None  # the run named last
    pending = False  # a run was just named: a name must follow
    for word in words:
        if pending:
            assert run is not None
            found.append(Ref(run, check_name(word)))
            pending = False
        elif word.count("/") >= 2:
            head, _, name = word.rpartition("/")
            run = run_of(head)
            found.append(Ref(run, check_name(name)))
        elif "/" in word:
            run, pending = run_of(word), True
        elif run is not None:
            found.append(Ref(run, check_name(word)))
        else:
            raise click.UsageError(f"{word!r} names no run: write {REF_FORMS}")
    if pending:
        raise click.UsageError(f"a snapshot name must follow the run {run}: write {REF_FORMS}")
    if len(found) != count:
        what = "one snapshot" if count == 1 else f"{count} snapshots"
        raise click.UsageError(f"give {what} ({REF_FORMS}), not {len(found)}")
    return found


def suggest_run(store: Store, run: str, exc: NotFoundError) -> NotFoundError:
    """``exc``, or for a run the store does not hold, one that names close runs."""
    try:
        runs = store.runs()
    except Exception:  # the suggestion is a courtesy; the error stands without it
        return exc
    if run in runs:
        return exc
    close = difflib.get_close_matches(run, runs, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return NotFoundError(f"no run {run} in {store.location}{hint}")


@contextlib.contextmanager
def about_run(store: Store, run: str) -> Iterator[None]:
    """NotFoundError inside the block: say whether the run exists, suggest close names."""
    try:
        yield
    except NotFoundError as exc:
        raise suggest_run(store, run, exc) from None


# -- output ---------------------------------------------------------------------------------


def when(epoch: object) -> str:
    """A time for people (UTC); "never" for None, "?" for what is not a time."""
    if epoch is None:
        return "never"
    try:
        return datetime.fromtimestamp(epoch, timezone.utc).strftime(  # type: ignore[arg-type]
            "%Y-%m-%d %H:%M:%SZ"
        )
    except (ValueError, OverflowError, OSError, TypeError):
        return "?"


def print_json(data: Any) -> None:
    click.echo(json.dumps(to_jsonable(data), indent=1))


def print_json_items(items: Iterable[Any]) -> None:
    """A JSON list written as the items come (a listing of any length), ``SIZE_FROM`` at
    a time."""
    parts: list[str] = []
    first = True
    for item in items:
        text = json.dumps(to_jsonable(item), indent=1).replace("\n", "\n ")
        parts.append(("[\n " if first else ",\n ") + text)
        first = False
        if len(parts) == SIZE_FROM:
            click.echo("".join(parts), nl=False)
            parts = []
    click.echo("".join(parts) + ("[]" if first else "\n]"))


SIZE_FROM = 1000  # rows that set the column widths of a streamed table


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Left-aligned columns under a header, for people. Rows are printed as they come:
    the first ``SIZE_FROM`` set the widths; a later, wider cell only pushes its own line."""
    it = iter(rows)
    first = [[str(c) for c in row] for _, row in zip(range(SIZE_FROM), it, strict=False)]
    lines = table([list(headers), *first])
    click.echo("\n".join(lines))
    widths = [len(c) for c in lines[1].split("  ")]
    chunk: list[str] = []
    for row in it:
        cells = [str(c) for c in row]
        chunk.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if len(chunk) == SIZE_FROM:
            click.echo("\n".join(chunk))
            chunk = []
    if chunk:
        click.echo("\n".join(chunk))


def say(message: str) -> None:
    """A note for people, on stderr."""
    click.echo(message, err=True)


def progress(items: Iterable[T], length: int, label: str) -> Iterator[T]:
    """``items``, with click's progress bar on stderr when stderr is a terminal (a log file
    gets no bar, and no carriage returns)."""
    if not sys.stderr.isatty():
        yield from items
        return
    bar = click.progressbar(items, length=length, label=label, file=sys.stderr, show_pos=True)
    with bar:
        yield from bar


def example(*lines: str) -> str:
    """An ``Examples:`` epilog for --help."""
    body = "\n".join(f"  $ {line}" for line in lines)
    return f"\b\nExamples:\n{body}"
