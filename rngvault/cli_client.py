"""The ``rngvault`` commands that read and write snapshots: runs, ls, show, diff, pull, push,
export, import, verify and spool.

They work on the store named by the top-level ``--url`` (an ``http(s)://`` server or a
directory; default ``$RNGVAULT_URL``, else the local store in the data directory). Tables
are for people; ``--json`` prints data for scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import rngvault
from rngvault._errors import InvalidNameError, RngVaultError, StoreError
from rngvault._json import snapshot_to_json, to_jsonable
from rngvault._names import check_name, split_run
from rngvault._report import table
from rngvault.stores import Store, open_store

Subparsers = Any  # argparse's _SubParsersAction, private
MANIFEST = "manifest.json"
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")  # a file name right inside the export


def _when(epoch: float) -> str:
    """A time for people; "?" for one that is not a time (NaN, infinite, out of range)."""
    try:
        return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    except (ValueError, OverflowError, OSError, TypeError):
        return "?"


def _store(args: argparse.Namespace) -> Store:
    return open_store(args.url, token=args.token)


def _run(text: str) -> str:
    return "/".join(split_run(text))


def _print_json(data: Any) -> None:
    print(json.dumps(to_jsonable(data), indent=1))


def _print_table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    print("\n".join(table([list(headers), *[[str(c) for c in row] for row in rows]])))


def _progress(done: int, total: int, label: str) -> None:
    """A one-line progress bar on stderr."""
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done == total else ""
    bar = "#" * filled + "." * (width - filled)
    print(f"\r{label} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _get(store: Store, run: str, name: str, rank: int) -> rngvault.Snapshot:
    return rngvault.decode(store.get(_run(run), check_name(name), rank))


# -- runs, ls ---------------------------------------------------------------------------------


def add_runs(sub: Subparsers) -> None:
    p = sub.add_parser("runs", help="list the runs in the store", description=cmd_runs.__doc__)
    _json_flag(p)
    p.set_defaults(func=cmd_runs)


def cmd_runs(args: argparse.Namespace) -> int:
    """List every run in the store."""
    runs = _store(args).runs()
    if args.json:
        _print_json(runs)
    else:
        print("\n".join(runs) if runs else "no runs", file=sys.stdout if runs else sys.stderr)
    return 0


def add_ls(sub: Subparsers) -> None:
    p = sub.add_parser("ls", help="list a run's snapshots", description=cmd_ls.__doc__)
    p.add_argument("run", help="namespace/run")
    _json_flag(p)
    p.set_defaults(func=cmd_ls)


def cmd_ls(args: argparse.Namespace) -> int:
    """List a run's snapshots with their metadata, oldest first."""
    infos = _store(args).snapshots(_run(args.run))
    if args.json:
        _print_json([info.to_dict() for info in infos])
        return 0
    rows = [
        (
            i.name,
            _when(i.created),
            ",".join(map(str, i.ranks)),
            "" if i.epoch is None else i.epoch,
            "" if i.step is None else i.step,
            len(i.generators),
            i.size,
            i.digest[:12],
        )
        for i in infos
    ]
    _print_table(
        rows, ("NAME", "CREATED", "RANKS", "EPOCH", "STEP", "GENERATORS", "BYTES", "DIGEST")
    )
    return 0


# -- show, verify ---------------------------------------------------------------------------


def _rank_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rank", type=int, default=0, help="which rank's states (default 0)")


def add_show(sub: Subparsers) -> None:
    p = sub.add_parser(
        "show", help="show a snapshot's generators and environment", description=cmd_show.__doc__
    )
    p.add_argument("run", help="namespace/run")
    p.add_argument("name", help="the snapshot's name")
    _rank_flag(p)
    _json_flag(p)
    p.set_defaults(func=cmd_show)


def _flatten(mapping: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in mapping.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def cmd_show(args: argparse.Namespace) -> int:
    """Show a snapshot: each generator's family and position, its metadata, its environment."""
    snapshot = _get(_store(args), args.run, args.name, args.rank)
    if args.json:
        print(json.dumps(snapshot_to_json(snapshot), indent=1))
        return 0
    meta = snapshot.metadata
    print(
        f"snapshot {args.run}/{args.name}  rank {meta.rank}/{meta.world_size}  "
        f"taken {_when(snapshot.created)}  digest {snapshot.digest}"
    )
    details: list[tuple[str, object]] = [
        ("epoch", meta.epoch),
        ("step", meta.step),
        ("tags", ", ".join(meta.tags)),
    ]
    details += [(f"metric {k}", v) for k, v in meta.metrics.items()]
    print("  ".join(f"{k}: {v}" for k, v in details if v not in (None, "")))
    print()
    rows = [(name, state.family, state.describe()) for name, state in snapshot.states.items()]
    _print_table(rows, ("GENERATOR", "FAMILY", "POSITION"))
    if snapshot.environment:
        print()
        _print_table(list(_flatten(snapshot.environment)), ("ENVIRONMENT", "VALUE"))
    return 0


def add_verify(sub: Subparsers) -> None:
    p = sub.add_parser(
        "verify", help="check a snapshot's probes on this machine", description=cmd_verify.__doc__
    )
    p.add_argument("run", help="namespace/run")
    p.add_argument("name", help="the snapshot's name")
    _rank_flag(p)
    _json_flag(p)
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    """Recompute each generator's first draws from the stored states and compare them with
    the recorded ones: "differs" means same state, different numbers here. Exit 1 if any
    generator differs."""
    from rngvault import _probes

    snapshot = _get(_store(args), args.run, args.name, args.rank)
    verdicts = _probes.check(snapshot.states, snapshot.probes)
    if args.json:
        _print_json(verdicts)
    else:
        _print_table(sorted(verdicts.items()), ("GENERATOR", "PROBE"))
    bad = [
        name for name, found in verdicts.items() if found.verdict is _probes.ProbeVerdict.DIFFERS
    ]
    if bad:
        raise RngVaultError(f"{len(bad)} generator(s) draw other numbers here: {', '.join(bad)}")
    return 0


# -- diff -----------------------------------------------------------------------------------


def add_diff(sub: Subparsers) -> None:
    p = sub.add_parser(
        "diff",
        help="which generators moved between two snapshots, and how far",
        description=cmd_diff.__doc__,
    )
    p.add_argument("run", help="namespace/run")
    p.add_argument("a", help="snapshot A")
    p.add_argument("b", help="snapshot B, or namespace/run/name for one of another run")
    _rank_flag(p)
    _json_flag(p)
    p.set_defaults(func=cmd_diff)


def cmd_diff(args: argparse.Namespace) -> int:
    """Per generator: unchanged, advanced or behind (by how many draws, in the generator's
    own unit), reseeded, missing or unknown."""
    store = _store(args)
    a = _get(store, args.run, args.a, args.rank)
    run_b, name_b = args.run, args.b
    if "/" in args.b:
        run_b, _, name_b = args.b.rpartition("/")
    b = _get(store, run_b, name_b, args.rank)
    report = rngvault.diff(a, b, labels=(f"{args.run}/{args.a}", f"{run_b}/{name_b}"))
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report)
    return 0


# -- pull, push -----------------------------------------------------------------------------


def add_pull(sub: Subparsers) -> None:
    p = sub.add_parser(
        "pull", help="save a snapshot's bytes to a file", description=cmd_pull.__doc__
    )
    p.add_argument("run", help="namespace/run")
    p.add_argument("name", help="the snapshot's name")
    p.add_argument("-o", "--output", type=Path, required=True, help="the file to write")
    _rank_flag(p)
    p.set_defaults(func=cmd_pull)


def cmd_pull(args: argparse.Namespace) -> int:
    """Write a snapshot, exactly as stored, to a file (msgpack, docs/format.md)."""
    data = _store(args).get(_run(args.run), check_name(args.name), args.rank)
    rngvault.decode(data)  # never write out something that is not a valid snapshot
    args.output.write_bytes(data)
    print(f"wrote {len(data)} bytes to {args.output}", file=sys.stderr)
    return 0


def add_push(sub: Subparsers) -> None:
    p = sub.add_parser(
        "push", help="store a snapshot file under a name", description=cmd_push.__doc__
    )
    p.add_argument("file", type=Path, help="an encoded snapshot (e.g. from pull)")
    p.add_argument("run", help="namespace/run")
    p.add_argument("name", help="the name to store it under")
    p.set_defaults(func=cmd_push)


def _read_snapshot(path: Path) -> tuple[bytes, rngvault.Snapshot]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RngVaultError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return data, rngvault.decode(data)
    except rngvault.DecodeError as exc:
        raise rngvault.DecodeError(f"{path}: {exc}") from None


def cmd_push(args: argparse.Namespace) -> int:
    """Validate a snapshot file and store it (its rank comes from its metadata)."""
    data, snapshot = _read_snapshot(args.file)
    store = _store(args)
    try:
        created = store.put(_run(args.run), check_name(args.name), data, snapshot)
        left = store.flush()
    finally:
        store.close()  # what is left waits in the spool on disk, for `rngvault spool flush`
    where = f"in the spool (the server is away; {left} waiting)" if left else store.location
    state = "stored" if created else "already stored (identical)"
    print(
        f"{args.run}/{args.name} rank {snapshot.metadata.rank}: {state} in {where}", file=sys.stderr
    )
    return 0


# -- export, import -------------------------------------------------------------------------


def add_export(sub: Subparsers) -> None:
    p = sub.add_parser(
        "export", help="copy a whole run into a directory", description=cmd_export.__doc__
    )
    p.add_argument("run", help="namespace/run")
    p.add_argument("directory", type=Path, help="where to write the snapshots")
    p.set_defaults(func=cmd_export)


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


def _read_file(directory: Path, file: object) -> bytes:
    """The bytes of a regular file named ``file`` right inside ``directory``: a name with a
    path in it, a symbolic link or anything but a regular file is refused."""
    if not isinstance(file, str) or not _FILE.fullmatch(file):
        raise RngVaultError(
            f"{directory}: {MANIFEST} names the file {file!r:.300}; an export holds only plain "
            f"file names ({_FILE.pattern})"
        )
    path = directory / file
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
    for info in store.snapshots(run):
        name = check_name(info.name)
        for rank in info.ranks:
            if type(rank) is not int or rank < 0:
                raise StoreError(f"{store.location} lists rank {rank!r:.40} for {run}/{name}")
            jobs.append((name, rank))
    return jobs


def cmd_export(args: argparse.Namespace) -> int:
    """Write every snapshot of a run (each rank) as NAME.rank-R.msgpack, with a manifest.
    Every name is checked and every snapshot decoded before it is written; files are only
    ever created right inside DIRECTORY."""
    store = _store(args)
    run = _run(args.run)
    jobs = _export_jobs(store, run)
    args.directory.mkdir(parents=True, exist_ok=True)
    files = []
    for n, (name, rank) in enumerate(jobs, 1):
        data = store.get(run, name, rank)
        try:
            rngvault.decode(data)  # never write out something that is not a valid snapshot
        except rngvault.DecodeError as exc:
            where = f"{run}/{name} rank {rank} from {store.location}"
            raise rngvault.DecodeError(f"{where}: {exc}") from None
        file = f"{name}.rank-{rank}.msgpack"
        _write_file(args.directory, file, data)
        files.append({"name": name, "rank": rank, "file": file})
        _progress(n, len(jobs), f"export {run}")
    manifest = {"run": run, "snapshots": files}
    _write_file(args.directory, MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    print(f"exported {len(jobs)} snapshot file(s) of {run} to {args.directory}", file=sys.stderr)
    return 0


def add_import(sub: Subparsers) -> None:
    p = sub.add_parser(
        "import", help="store a directory written by export", description=cmd_import.__doc__
    )
    p.add_argument("directory", type=Path, help="a directory written by 'rngvault export'")
    p.add_argument("--run", help="store under this run instead of the exported one")
    p.set_defaults(func=cmd_import)


def _manifest(directory: Path, run: str | None) -> tuple[str, list[tuple[str, object]]]:
    """The run and the (name, file) entries of an export's manifest, names checked."""
    try:
        manifest = json.loads(_read_file(directory, MANIFEST))
        run = _run(run or manifest["run"])
        entries = [(e["name"], e["file"]) for e in manifest["snapshots"]]
    except (ValueError, KeyError, TypeError, RngVaultError) as exc:
        if isinstance(exc, InvalidNameError):
            raise
        raise RngVaultError(f"{directory} is not an export (bad {MANIFEST}: {exc})") from None
    return run, [(check_name(name), file) for name, file in entries]


def cmd_import(args: argparse.Namespace) -> int:
    """Validate and store every snapshot of an exported run (identical ones are skipped).
    Only the files of DIRECTORY that manifest.json names (plain names, no links) are read,
    and all are checked before the first is stored."""
    run, entries = _manifest(args.directory, args.run)
    loaded = []
    for name, file in entries:
        data = _read_file(args.directory, file)
        try:
            loaded.append((name, data, rngvault.decode(data)))
        except rngvault.DecodeError as exc:
            raise rngvault.DecodeError(f"{args.directory / str(file)}: {exc}") from None
    store = _store(args)
    created = 0
    for n, (name, data, snapshot) in enumerate(loaded, 1):
        created += bool(store.put(run, name, data, snapshot))
        _progress(n, len(loaded), f"import {run}")
    left = store.flush()
    note = f"; {left} wait in the spool" if left else ""
    print(
        f"imported {len(loaded)} snapshot file(s) into {run} ({created} new){note}", file=sys.stderr
    )
    return 0


# -- spool ----------------------------------------------------------------------------------


def add_spool(sub: Subparsers) -> None:
    p = sub.add_parser("spool", help="snapshots waiting for a server that was away")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser(
        "status", help="what waits, for which server", description=cmd_spool_status.__doc__
    )
    _json_flag(status)
    status.set_defaults(func=cmd_spool_status)
    flush = actions.add_parser(
        "flush", help="send what waits for --url", description=cmd_spool_flush.__doc__
    )
    flush.set_defaults(func=cmd_spool_flush)
    retry = actions.add_parser(
        "retry", help="send the failed ones for --url again", description=cmd_spool_retry.__doc__
    )
    retry.set_defaults(func=cmd_spool_retry)


def _label(entry: Any) -> str:
    return f"{entry.run}/{entry.name}#{entry.rank}"


def cmd_spool_status(args: argparse.Namespace) -> int:
    """List each server's spool: snapshots waiting, refused ones (409), failed ones (the
    server failed to take them several times: set aside with its last error), bytes and
    location. Sends nothing."""
    from rngvault.stores.spool import all_spools

    rows: list[dict[str, Any]] = []
    for spool in all_spools():
        rows.append(
            {
                "url": spool.url,
                "waiting": [_label(e) for e in spool.entries()],
                "conflicts": [_label(e) for e in spool.conflicting()],
                "failed": [
                    {"snapshot": _label(e), "attempts": e.attempts, "error": e.error}
                    for e in spool.failures()
                ],
                "bytes": spool.size(),
                "directory": str(spool.directory),
            }
        )
    if args.json:
        _print_json(rows)
    elif not rows:
        print("the spool is empty", file=sys.stderr)
    else:
        _print_table(
            [
                (
                    r["url"],
                    len(r["waiting"]),
                    len(r["conflicts"]),
                    len(r["failed"]),
                    r["bytes"],
                    r["directory"],
                )
                for r in rows
            ],
            ("SERVER", "WAITING", "CONFLICTS", "FAILED", "BYTES", "DIRECTORY"),
        )
        for row in rows:
            for failed in row["failed"]:
                error = " ".join(failed["error"].split())
                print(f"failed {failed['snapshot']} for {row['url']}: {error}")
    return 0


def _spool_store(args: argparse.Namespace, action: str) -> Any:
    """The HTTP store of ``--url`` (its token goes to that server only); with no URL, a
    list of what waits for which server and an error saying to pass one."""
    from rngvault.stores.http import HttpStore
    from rngvault.stores.spool import all_spools

    url = args.url
    if not url:
        waiting = [
            f"{spool.url} ({len(spool)} waiting, {len(spool.failures())} failed)"
            for spool in all_spools()
            if len(spool) or spool.failures()
        ]
        if not waiting:
            print("the spool is empty", file=sys.stderr)
            return None
        raise RngVaultError(
            f"spool {action} sends to one server at a time, with its token: pass --url for "
            f"one of: {'; '.join(waiting)}"
        )
    if not str(url).lower().startswith(("http://", "https://")):
        raise RngVaultError(f"spool {action} needs a server URL (http:// or https://), not {url!r}")
    return HttpStore(url, token=args.token)


def _send_spool(store: Any) -> int:
    """Flush one server's spool, its warnings as lines; exit 1 if some still wait."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        left = store.flush()
    store.close()
    for warning in caught:
        print(f"rngvault: {warning.message}", file=sys.stderr)
    if left:
        raise RngVaultError(f"{left} snapshot(s) still wait in the spool of {store.url}")
    print(f"{store.url}: all sent", file=sys.stderr)
    return 0


def cmd_spool_flush(args: argparse.Namespace) -> int:
    """Send what waits in the spool of the server named by --url (or $RNGVAULT_URL), with
    --token (or $RNGVAULT_TOKEN): no other server ever sees that token. Exit 1 if some
    still wait. With no URL, list the servers that have snapshots waiting."""
    store = _spool_store(args, "flush")
    if store is None:
        return 0
    if not len(store.spool):
        print(f"{store.url}: nothing waits", file=sys.stderr)
        store.close()
        return 0
    return _send_spool(store)


def cmd_spool_retry(args: argparse.Namespace) -> int:
    """Put the snapshots the server of --url failed to take (the FAILED ones of
    `spool status`) back with the waiting ones, and send them all now. Exit 1 if some
    still wait."""
    store = _spool_store(args, "retry")
    if store is None:
        return 0
    moved = store.spool.retry_failed()
    print(f"{store.url}: {len(moved)} failed snapshot(s) to send again", file=sys.stderr)
    return _send_spool(store)


COMMANDS = [
    add_runs,
    add_ls,
    add_show,
    add_diff,
    add_pull,
    add_push,
    add_export,
    add_import,
    add_verify,
    add_spool,
]
