"""export and import: a whole run to a directory of snapshot files and back."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

import rngvault
from rngvault._errors import InvalidNameError, RngVaultError, StoreError
from rngvault._names import check_name
from rngvault._record import FIELDS, check_record
from rngvault.cli._common import (
    about_run,
    example,
    given_token,
    given_url,
    progress,
    run_of,
    say,
    store_options,
    the_store,
)
from rngvault.stores import Store, open_store

MANIFEST = "manifest.json"
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")  # a file name right inside the export
SENDERS = 4  # snapshots an import sends to a server at once


def _write_file(directory: Path, file: str, data: bytes) -> None:
    """Write ``directory/file`` through a temporary file and a rename, so that whatever
    was at that name (a symbolic link to elsewhere, say) is replaced, never followed."""
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(temp, directory / file)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _plain_file(directory: Path, file: object) -> Path:
    """``directory/file`` for a plain file name (no path, no ``..``); else an error."""
    if not isinstance(file, str) or not _FILE.fullmatch(file):
        raise RngVaultError(
            f"{directory}: {MANIFEST} names the file {file!r:.300}; an export holds only plain "
            f"file names ({_FILE.pattern})"
        )
    return directory / file


def _check_file(path: Path) -> None:
    """A regular file, not a symbolic link (checked for every file before the first send)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        raise RngVaultError(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISLNK(mode):
        raise RngVaultError(f"cannot read {path}: a symbolic link")
    if not stat.S_ISREG(mode):
        raise RngVaultError(f"cannot read {path}: not a regular file")


def _read_file(path: Path) -> bytes:
    """The bytes of the regular file ``path``, never through a link (whatever was checked
    before, a link planted since is refused here)."""
    try:
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        )
    except OSError as exc:
        why = "a symbolic link" if os.path.islink(path) else exc.strerror
        raise RngVaultError(f"cannot read {path}: {why}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise RngVaultError(f"cannot read {path}: not a regular file")
        return fh.read()


def _export_jobs(store: Store, run: str) -> list[tuple[str, int]]:
    """(name, rank) of every snapshot file of ``run``, each checked before it names a file."""
    jobs = []
    with about_run(store, run):
        infos = store.snapshots(run)
    for info in infos:
        name = check_name(info.name)
        for rank in info.ranks:
            if type(rank) is not int or rank < 0:
                raise StoreError(f"{store.location} lists rank {rank!r:.40} for {run}/{name}")
            jobs.append((name, rank))
    return jobs


@click.command(epilog=example("rngvault export alice/resnet50 ./resnet50-export"))
@click.argument("run")
@click.argument("directory", type=click.Path(path_type=Path))
@store_options
def export(run: str, directory: Path) -> None:
    """Write every snapshot of RUN (each rank) into DIRECTORY as NAME.rank-R.msgpack, with
    a manifest. Every name is checked and every snapshot decoded before it is written;
    files are only ever created right inside DIRECTORY."""
    store = the_store()
    run = run_of(run)
    jobs = _export_jobs(store, run)
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for name, rank in progress(jobs, len(jobs), f"export {run}"):
        data = store.get(run, name, rank)
        try:
            rngvault.decode(data)  # never write out something that is not a valid snapshot
        except rngvault.DecodeError as exc:
            where = f"{run}/{name} rank {rank} from {store.location}"
            raise rngvault.DecodeError(f"{where}: {exc}") from None
        file = f"{name}.rank-{rank}.msgpack"
        _write_file(directory, file, data)
        files.append({"name": name, "rank": rank, "file": file})
    manifest: dict[str, Any] = {"run": run, "snapshots": files}
    read = getattr(store, "record", None)
    record = read(run) if callable(read) else {}
    if record:
        manifest["record"] = record  # what produced the run travels with it
    _write_file(directory, MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    say(f"exported {len(jobs)} snapshot file(s) of {run} to {directory}")


def _manifest(
    directory: Path, run: str | None
) -> tuple[str, list[tuple[str, Path]], dict[str, Any]]:
    """The run, the (name, path) entries and the run's record (``{}`` if none) of an
    export's manifest: names, file names, files (regular, no links) and the record all
    checked, no snapshot read yet."""
    try:
        manifest = json.loads(_read_file(directory / MANIFEST))
        run = run_of(run or manifest["run"])
        entries = [(e["name"], e["file"]) for e in manifest["snapshots"]]
        found = check_record(manifest.get("record", {}), allow_unknown=True)
        record = {k: v for k, v in found.items() if k in FIELDS}  # what this version keeps
    except (ValueError, KeyError, TypeError, AttributeError, RngVaultError) as exc:
        if isinstance(exc, InvalidNameError):
            raise
        raise RngVaultError(f"{directory} is not an export (bad {MANIFEST}: {exc})") from None
    checked = [(check_name(name), _plain_file(directory, file)) for name, file in entries]
    for _, path in checked:
        _check_file(path)
    return run, checked, record


def _decoded(entries: list[tuple[str, Path]]) -> Iterator[tuple[str, bytes, rngvault.Snapshot]]:
    """Each entry's bytes and snapshot, one file at a time."""
    for name, path in entries:
        data = _read_file(path)
        try:
            yield name, data, rngvault.decode(data)
        except rngvault.DecodeError as exc:
            raise rngvault.DecodeError(f"{path}: {exc}") from None


@click.command(
    "import",
    epilog=example(
        "rngvault import ./resnet50-export",
        "rngvault import ./resnet50-export --run bob/resnet50-copy",
    ),
)
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--run", help="store under this run (namespace/run) instead of the exported one")
@store_options
def import_(directory: Path, run: str | None) -> None:
    """Validate and store every snapshot of a directory written by export (identical ones
    are skipped). Only the regular files that manifest.json names by plain file name are
    read; the manifest and every file it names are checked before the first is stored,
    then files are decoded one at a time and sent to a server several at once."""
    run, entries, record = _manifest(directory, run)
    url, token = given_url(), given_token()
    store = open_store(url, token=token)
    if record and callable(getattr(store, "put_record", None)):
        store.put_record(run, record)  # a run that has a record keeps its own
    remote = store.location.lower().startswith(("http://", "https://"))
    # A store sends one snapshot at a time; a server gets several, each from a store of
    # its own (they share the spool on disk).
    local = threading.local()

    def put(name: str, data: bytes, snapshot: rngvault.Snapshot) -> bool:
        if not remote:
            return store.put(run, name, data, snapshot)
        mine = getattr(local, "store", None)
        if mine is None:
            mine = local.store = open_store(url, token=token)
            senders.append(mine)
        return mine.put(run, name, data, snapshot)

    senders: list[Store] = []
    workers = SENDERS if remote else 1
    created = stored = 0
    with concurrent.futures.ThreadPoolExecutor(workers, "rngvault-import") as pool:
        waiting: set[concurrent.futures.Future[bool]] = set()

        def settle(until: int) -> None:
            nonlocal waiting, created, stored
            while len(waiting) > until:
                done, waiting = concurrent.futures.wait(
                    waiting, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    created += bool(future.result())
                    stored += 1

        try:
            for name, data, snapshot in progress(_decoded(entries), len(entries), f"import {run}"):
                settle(2 * workers - 1)  # a bounded window: memory stays a few snapshots
                waiting.add(pool.submit(put, name, data, snapshot))
            settle(0)
        except RngVaultError as exc:
            concurrent.futures.wait(waiting)  # the few already decoded and sent go in
            went = [f for f in waiting if f.exception() is None]
            stored += len(went)
            if not stored:
                raise
            raise type(exc)(
                f"{exc} ({stored} of {len(entries)} stored before it; run import again to "
                "store the rest: identical ones are skipped)"
            ) from None
    left = max([store.flush(), *(s.flush() for s in senders)])
    for each in (store, *senders):
        each.close()
    note = f"; {left} wait in the spool" if left else ""
    say(f"imported {stored} snapshot file(s) into {run} ({created} new){note}")


COMMANDS = [export, import_]
