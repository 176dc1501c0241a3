"""Run records: what produced a run, written once when its first snapshot is stored.

A record is a JSON object (every key optional; a run stored before records has ``{}``)::

    seed         the seed given to ``seed_everything`` in this process (int), or null
    seeding      {"seeded": [generator names], "deterministic": bool | "warn",
                  "per_worker": [base seed entropy of each ``per_worker`` generator, as text]}
    config       the user's ``Vault(..., config={...})``: any JSON object
    git          {"commit": 40 hex digits, "dirty": bool} inside a git checkout, else null
    command      the command line (``sys.argv``), a list of strings
    host         the host name
    environment  the first snapshot's environment fingerprint
    created      when the record was made (seconds since the epoch)

``check_record`` is the one validator (client and server); ``check_config`` checks a
config when a Vault is made, so a bad one fails at once and names what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from rngvault._errors import RecordError

__all__ = ["CONFIG_MAX_BYTES", "RECORD_MAX_BYTES", "RecordError", "check_config", "check_record"]

CONFIG_MAX_BYTES = 32 * 1024  # a config's compact JSON
RECORD_MAX_BYTES = 64 * 1024  # a whole record's compact JSON
_MAX_DEPTH = 16
_GIT_TIMEOUT = 2.0  # seconds for each git command; a slow or missing git gives no git field
_HEX = re.compile("[0-9a-f]+")
FIELDS = ("seed", "seeding", "config", "git", "command", "host", "environment", "created")


def _check_json(value: Any, where: str, depth: int = 0) -> None:
    """``value`` is JSON: null, bool, int, finite float, str, list, or str-keyed object."""
    if depth > _MAX_DEPTH:
        raise RecordError(f"{where} is nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise RecordError(f"{where} = {value} does not fit in 64 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RecordError(f"{where} = {value!r} is not a finite number (JSON has none)")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise RecordError(f"{where} has a key {key!r} that is not a string")
            _check_json(item, f"{where}[{key!r}]", depth + 1)
        return
    raise RecordError(
        f"{where} is a {type(value).__name__}, which is not JSON "
        "(use None, bool, int, float, str, lists and dicts with str keys)"
    )


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _size(text: str, what: str) -> int:
    """The UTF-8 length of ``text``; RecordError for a lone surrogate, which has none."""
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise RecordError(f"{what} holds a lone surrogate, which is not valid Unicode") from None


def check_config(config: object) -> dict[str, Any]:
    """A plain-dict copy of ``config`` (a mapping of JSON values, at most ``CONFIG_MAX_BYTES``
    as JSON), or RecordError naming what is wrong."""
    if not isinstance(config, Mapping):
        raise RecordError(f"config must be a mapping (a dict), not {type(config).__name__}")
    _check_json(config, "config")
    text = _compact(config)
    size = _size(text, "config")
    if size > CONFIG_MAX_BYTES:
        raise RecordError(
            f"config is {size} bytes as JSON, more than the {CONFIG_MAX_BYTES} a record keeps"
        )
    copied: dict[str, Any] = json.loads(text)
    return copied


def _expect(ok: bool, field: str, what: str, value: Any) -> None:
    if not ok:
        raise RecordError(f"record field {field!r} must be {what}, not {value!r:.80}")


def check_record(record: object, *, allow_unknown: bool = False) -> dict[str, Any]:
    """``record`` checked field by field (see the module docstring), as a plain dict.

    A field this version does not know is refused, unless ``allow_unknown`` (reading what
    a newer version wrote): then it is kept as it is, JSON-checked like the rest."""
    if not isinstance(record, Mapping):
        raise RecordError(f"a run record must be a JSON object, not {type(record).__name__}")
    unknown = sorted(str(k) for k in record if k not in FIELDS)
    if unknown and not allow_unknown:
        raise RecordError(
            f"a run record has no field {', '.join(map(repr, unknown))} "
            f"(fields: {', '.join(FIELDS)})"
        )
    for key, value in record.items():
        if not isinstance(key, str):
            raise RecordError(f"a run record has a key {key!r} that is not a string")
        if key != "config":  # checked below as a config is, from its own top
            _check_json(value, f"record[{key!r}]")
    get = record.get
    seed = get("seed")
    _expect(seed is None or (type(seed) is int and seed >= 0), "seed", "an int >= 0", seed)
    seeding = get("seeding")
    if seeding is not None:
        _expect(isinstance(seeding, Mapping), "seeding", "an object", seeding)
        seeded = seeding.get("seeded", [])
        _expect(
            isinstance(seeded, list) and all(isinstance(s, str) for s in seeded),
            "seeding.seeded",
            "a list of generator names",
            seeded,
        )
        det = seeding.get("deterministic", False)
        _expect(
            det is True or det is False or det == "warn",
            "seeding.deterministic",
            'a bool or "warn"',
            det,
        )
        workers = seeding.get("per_worker", [])
        _expect(
            isinstance(workers, list) and all(isinstance(s, str) for s in workers),
            "seeding.per_worker",
            "a list of strings",
            workers,
        )
    config = get("config")
    _expect(config is None or isinstance(config, Mapping), "config", "an object", config)
    if config is not None:
        check_config(config)
    git = get("git")
    if git is not None:
        _expect(isinstance(git, Mapping), "git", "an object", git)
        commit, dirty = git.get("commit"), git.get("dirty")
        _expect(
            isinstance(commit, str) and len(commit) in (40, 64) and bool(_HEX.fullmatch(commit)),
            "git.commit",
            "a commit id of 40 (or 64) hex digits",
            commit,
        )
        _expect(isinstance(dirty, bool), "git.dirty", "a bool", dirty)
    command = get("command")
    _expect(
        command is None or (isinstance(command, list) and all(isinstance(a, str) for a in command)),
        "command",
        "a list of strings",
        command,
    )
    host = get("host")
    _expect(host is None or isinstance(host, str), "host", "a string", host)
    environment = get("environment")
    _expect(
        environment is None or isinstance(environment, Mapping),
        "environment",
        "an object",
        environment,
    )
    created = get("created")
    _expect(
        created is None or (isinstance(created, (int, float)) and not isinstance(created, bool)),
        "created",
        "a number of seconds",
        created,
    )
    text = _compact(record)
    size = _size(text, "a run record")
    if size > RECORD_MAX_BYTES:
        raise RecordError(f"a run record is {size} bytes as JSON, more than {RECORD_MAX_BYTES}")
    checked: dict[str, Any] = json.loads(text)
    return checked


def record_json(record: Mapping[str, Any]) -> str:
    """A checked record as compact JSON text (sorted keys): what stores keep."""
    return _compact(check_record(record))


def _git(*args: str, where: str | None = None) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return done.stdout if done.returncode == 0 else None


def _script_dir() -> str | None:
    """The directory of the script this process runs (``sys.argv[0]``), if it is a file."""
    script = sys.argv[0] if sys.argv else ""
    return os.path.dirname(os.path.abspath(script)) if script and os.path.isfile(script) else None


def git_state(where: str | None = None) -> dict[str, Any] | None:
    """The commit of the git checkout holding ``where`` and whether its tree has changes
    (tracked or untracked files that are not ignored). By default: the checkout of the
    running script (``sys.argv[0]``), else of the current directory (a script run from
    elsewhere, or a command installed outside the checkout). None outside a checkout,
    without git, or if git is slow."""
    if where is None:
        script = _script_dir()
        found = git_state(script) if script is not None else None
        return found if found is not None else git_state(os.getcwd())
    commit = _git("rev-parse", "--verify", "HEAD", where=where)
    if commit is None:
        return None
    commit = commit.strip()
    if len(commit) not in (40, 64) or not _HEX.fullmatch(commit):
        return None
    status = _git("status", "--porcelain", "--untracked-files=normal", where=where)
    if status is None:
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def gather(
    *,
    config: Mapping[str, Any] | None,
    environment: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A record of this process: its seeding, ``config``, git state, command line and host,
    with ``environment`` (the first snapshot's). Never fails on what it cannot find out."""
    from rngvault import _seeding

    seeding = _seeding.recorded()
    try:
        host: str | None = socket.gethostname()
    except OSError:
        host = None
    record: dict[str, Any] = {
        "seed": seeding.get("seed") if seeding else None,
        "seeding": {k: v for k, v in seeding.items() if k != "seed"} if seeding else None,
        "config": dict(config) if config is not None else {},
        "git": git_state(),
        "command": [_text(a) for a in sys.argv],
        "host": _text(host) if host is not None else None,
        "environment": dict(environment) if environment is not None else None,
        "created": time.time(),
    }
    if _size(_compact(record), "a run record") > RECORD_MAX_BYTES:  # a huge command line
        record["command"] = [a[:_ARG_CHARS] for a in record["command"][:_ARGS]]
    if _size(_compact(record), "a run record") > RECORD_MAX_BYTES:
        record["environment"] = None
    return record


_ARGS, _ARG_CHARS = 64, 256  # what is kept of a command line too long for a record


def _text(value: object) -> str:
    """``value`` as text that is valid Unicode: a file name's undecodable bytes (held as
    lone surrogates) become U+FFFD."""
    text = str(value)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
