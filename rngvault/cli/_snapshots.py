"""Commands that read and write snapshots: runs, ls, show, verify, diff, pull, push."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click

import rngvault
from rngvault._errors import NotFoundError, RngVaultError
from rngvault._json import snapshot_to_json
from rngvault.cli._common import (
    Ref,
    about_run,
    example,
    json_option,
    print_json,
    print_json_items,
    print_table,
    rank_option,
    refs,
    run_of,
    say,
    store_options,
    suggest_run,
    the_store,
    when,
)
from rngvault.stores import SnapshotInfo, Store

words = click.argument("words", nargs=-1, metavar="SNAPSHOT")


def fetch(store: Store, ref: Ref, rank: int) -> rngvault.Snapshot:
    with about_run(store, ref.run):
        return rngvault.decode(store.get(ref.run, ref.name, rank))


@click.command(epilog=example("rngvault runs", "rngvault runs --url http://vault.lab:8000"))
@store_options
@json_option
def runs(as_json: bool) -> None:
    """List every run in the store (it names the store on stderr)."""
    store = the_store()
    found = store.runs()
    if as_json:
        print_json(found)
    elif found:
        click.echo("\n".join(found))
    say(f"{len(found)} run(s) in {store.location}")


def listing(store: Store, run: str, limit: int | None) -> Iterator[SnapshotInfo]:
    """A run's snapshots as the store gives them, page by page where it pages (a Store
    of another kind lists them whole)."""
    pages = getattr(store, "iter_snapshots", None)
    if pages is None:
        yield from store.snapshots(run)[:limit]
    else:
        yield from pages(run, limit=limit)


@click.command(
    epilog=example(
        "rngvault ls alice/resnet50",
        "rngvault ls alice/resnet50 --limit 20 --json",
        "rngvault ls alice/big | head -3",
    )
)
@click.argument("run")
@click.option("--limit", type=click.IntRange(min=0), metavar="N", help="list at most N snapshots")
@store_options
@json_option
def ls(run: str, limit: int | None, as_json: bool) -> None:
    """List a run's snapshots, oldest first: name, time, ranks, epoch, step, generators,
    size and digest. Rows print as the store sends them."""
    store = the_store()
    run = run_of(run)
    with about_run(store, run):
        infos = listing(store, run, limit)
        if as_json:
            print_json_items(info.to_dict() for info in infos)
            return
        print_table(
            ("NAME", "CREATED", "RANKS", "EPOCH", "STEP", "GENERATORS", "BYTES", "DIGEST"),
            _rows(infos),
        )


def _rows(infos: Iterable[SnapshotInfo]) -> Iterator[tuple[object, ...]]:
    for i in infos:
        yield (
            i.name,
            when(i.created),
            ",".join(map(str, i.ranks)),
            "" if i.epoch is None else i.epoch,
            "" if i.step is None else i.step,
            len(i.generators),
            i.size,
            i.digest[:12],
        )


def _flatten(mapping: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _show_record(run: str, as_json: bool) -> None:
    """A run's record: what produced it (seed, config, git, command line, host)."""
    store = the_store()
    read = getattr(store, "record", None)
    if not callable(read):
        raise RngVaultError(f"{store.location} keeps no run records")
    try:
        record = read(run)
    except NotFoundError as exc:
        raise suggest_run(store, run, exc) from None
    if as_json:
        print_json({"run": run, "record": record})
        return
    if not record:
        click.echo(f"run {run} has no record (stored before run records, or without a Vault)")
        return
    seeding = record.get("seeding") or {}
    git = record.get("git")
    command = record.get("command")
    details: list[tuple[str, object]] = [
        ("seed", record.get("seed")),
        ("seeded", ", ".join(seeding.get("seeded", []))),
        ("deterministic", seeding.get("deterministic")),
        ("per-worker base seeds", ", ".join(seeding.get("per_worker", []))),
        ("git", f"{git['commit']}{' (dirty tree)' if git['dirty'] else ''}" if git else None),
        ("command", shlex.join(command) if command else None),
        ("host", record.get("host")),
        ("recorded", when(record["created"]) if record.get("created") is not None else None),
    ]
    click.echo(f"run {run}")
    for key, value in details:
        if value not in (None, ""):
            click.echo(f"  {key}: {value}")
    config = record.get("config") or {}
    click.echo()
    if config:
        print_table(("CONFIG", "VALUE"), _flatten(config))
    else:
        click.echo("no config (Vault(..., config={...}) records one)")
    if record.get("environment"):
        click.echo()
        print_table(("ENVIRONMENT", "VALUE"), _flatten(record["environment"]))


@click.command(
    epilog=example(
        "rngvault show alice/resnet50/epoch3",
        "rngvault show alice/resnet50 epoch3",
        "rngvault show alice/resnet50",
    )
)
@words
@rank_option
@store_options
@json_option
def show(words: tuple[str, ...], rank: int, as_json: bool) -> None:
    """Show a snapshot (NAMESPACE/RUN/NAME, or NAMESPACE/RUN NAME): each generator's
    family and position, its metadata and its environment. Given only NAMESPACE/RUN, show
    the run's record: the seed, config, git commit, command line, host and environment."""
    if len(words) == 1 and words[0].count("/") == 1:
        _show_record(run_of(words[0]), as_json)
        return
    [ref] = refs(words, 1)
    snapshot = fetch(the_store(), ref, rank)
    if as_json:
        print_json(snapshot_to_json(snapshot))
        return
    meta = snapshot.metadata
    click.echo(
        f"snapshot {ref}  rank {meta.rank}/{meta.world_size}  "
        f"taken {when(snapshot.created)}  digest {snapshot.digest}"
    )
    details: list[tuple[str, object]] = [
        ("epoch", meta.epoch),
        ("step", meta.step),
        ("tags", ", ".join(meta.tags)),
    ]
    details += [(f"metric {k}", v) for k, v in meta.metrics.items()]
    click.echo("  ".join(f"{k}: {v}" for k, v in details if v not in (None, "")))
    click.echo()
    rows = [(name, state.family, state.describe()) for name, state in snapshot.states.items()]
    print_table(("GENERATOR", "FAMILY", "POSITION"), rows)
    if snapshot.environment:
        click.echo()
        print_table(("ENVIRONMENT", "VALUE"), _flatten(snapshot.environment))


@click.command(epilog=example("rngvault verify alice/resnet50/epoch3"))
@words
@rank_option
@store_options
@json_option
def verify(words: tuple[str, ...], rank: int, as_json: bool) -> None:
    """Recompute each generator's first draws from a snapshot's states and compare them
    with the recorded ones: "differs" means same state, different numbers on this
    machine. Exit 1 if any generator differs."""
    [ref] = refs(words, 1)
    verdicts = rngvault.verify(fetch(the_store(), ref, rank))
    if as_json:
        print_json(verdicts)
    else:
        print_table(("GENERATOR", "PROBE"), sorted(verdicts.items()))
    bad = [
        name for name, found in verdicts.items() if found.verdict is rngvault.ProbeVerdict.DIFFERS
    ]
    if bad:
        raise RngVaultError(f"{len(bad)} generator(s) draw other numbers here: {', '.join(bad)}")


@click.command(
    epilog=example(
        "rngvault diff alice/resnet50 epoch3 epoch4",
        "rngvault diff alice/resnet50/epoch3 bob/repro/epoch3",
        "rngvault diff --exit-code alice/resnet50 epoch3 epoch4 || echo moved",
    )
)
@click.argument("words", nargs=-1, metavar="A B")
@rank_option
@click.option("--exit-code", is_flag=True, help="exit 1 when any generator moved")
@store_options
@json_option
def diff(words: tuple[str, ...], rank: int, exit_code: bool, as_json: bool) -> int:
    """Which generators moved between snapshots A and B, and how far: unchanged, advanced
    or behind (by how many draws, in the generator's own unit), reseeded, missing or
    unknown. Write RUN A B for two snapshots of one run; either may be
    NAMESPACE/RUN/NAME."""
    a_ref, b_ref = refs(words, 2)
    store = the_store()
    a, b = fetch(store, a_ref, rank), fetch(store, b_ref, rank)
    report = rngvault.diff(a, b, labels=(str(a_ref), str(b_ref)))
    if as_json:
        print_json(report.to_dict())
    else:
        click.echo(str(report))
    return 1 if exit_code and report.changed else 0


@click.command(epilog=example("rngvault pull alice/resnet50/epoch3 -o epoch3.msgpack"))
@words
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="the file to write",
)
@rank_option
@store_options
def pull(words: tuple[str, ...], output: Path, rank: int) -> None:
    """Write a snapshot, exactly as stored, to a file (msgpack, docs/format.md)."""
    [ref] = refs(words, 1)
    store = the_store()
    with about_run(store, ref.run):
        data = store.get(ref.run, ref.name, rank)
    rngvault.decode(data)  # never write out something that is not a valid snapshot
    output.write_bytes(data)
    say(f"wrote {len(data)} bytes to {output}")


def read_snapshot(path: Path) -> tuple[bytes, rngvault.Snapshot]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RngVaultError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return data, rngvault.decode(data)
    except rngvault.DecodeError as exc:
        raise rngvault.DecodeError(f"{path}: {exc}") from None


@click.command(
    epilog=example(
        "rngvault push epoch3.msgpack alice/resnet50/epoch3",
        "rngvault push epoch3.msgpack alice/resnet50 epoch3 --url ./local-store",
    )
)
@click.argument("file", type=click.Path(path_type=Path))
@words
@store_options
def push(file: Path, words: tuple[str, ...]) -> None:
    """Validate a snapshot file and store it under a name (its rank comes from its
    metadata). A server that is away gets it later from the spool."""
    [ref] = refs(words, 1)
    data, snapshot = read_snapshot(file)
    store = the_store()
    try:
        created = store.put(ref.run, ref.name, data, snapshot)
        left = store.flush()
    finally:
        store.close()  # what is left waits in the spool on disk, for `rngvault spool flush`
    where = f"in the spool (the server is away; {left} waiting)" if left else store.location
    state = "stored" if created else "already stored (identical)"
    say(f"{ref} rank {snapshot.metadata.rank}: {state} in {where}")


COMMANDS = [runs, ls, show, verify, diff, pull, push]
