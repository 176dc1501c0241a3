"""The tokens file: bearer tokens, each with one or more grants, stored hashed.

A token reads ``rv_<id>_<secret>``: the id (12 hex digits) is public and names the token in
listings and revocations; the secret is 32 random bytes. The file keeps only the SHA-256 of
the whole token, so a leaked file reveals no token. The file is JSON, written atomically
with mode 0600::

    {"format": "rngvault-tokens", "version": 2, "tokens": [
      {"id": "3f9a1c2b7d4e", "sha256": "<hex>",
       "grants": [{"scope": "read", "namespace": "*"}, {"scope": "write", "namespace": "bob"}],
       "created": 1764200000.0, "expires": null, "revoked": null, "note": ""}]}

A grant is a scope and a namespace pattern, written ``SCOPE:PATTERN`` (``read:*``,
``write:bob``; ``parse_grant``). Scopes nest: ``read`` < ``write`` < ``admin`` (``admin``
may also delete). A pattern is name characters and the wildcards ``*`` and ``?``
(``team-*``, ``*``). A token may do what any one of its grants allows: with ``read:*`` and
``write:bob`` it reads every namespace and writes only ``bob``.

Version 1 files, whose tokens carry one ``"scope"`` and one ``"namespace"`` instead of
``"grants"``, are read as tokens of one grant; the next change rewrites the file as version 2.
Times are seconds since the Unix epoch; ``expires`` and ``revoked`` are null when unset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from rngvault._errors import RngVaultError

try:
    import fcntl
except ImportError:  # Windows: changes are not serialised between processes
    fcntl = None  # type: ignore[assignment]

SCOPES = ("read", "write", "admin")
PATTERN_RULE = "[A-Za-z0-9._*?-]{1,128}"
FORMAT_TAG = "rngvault-tokens"
FORMAT_VERSION = 2
_PATTERN = re.compile(PATTERN_RULE)
_TOKEN = re.compile(r"rv_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_DURATION = re.compile(r"(\d+)([mhdw])")
_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(token: str) -> str | None:
    """The id part of a well-formed token, else None."""
    match = _TOKEN.fullmatch(token)
    return match[1] if match else None


MAX_DURATION = 1000 * 366 * 86400  # seconds: a thousand years is longer than any retention


def parse_duration(text: str) -> int:
    """Seconds in ``30d``, ``12h``, ``90m`` or ``2w`` (at most ``MAX_DURATION``); ValueError
    naming the text otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"invalid duration {text[:40]!r}: write 30d, 12h, 90m or 2w")
    seconds = int(match[1][:20]) * _SECONDS[match[2]] if len(match[1]) <= 20 else MAX_DURATION + 1
    if seconds > MAX_DURATION:
        raise ValueError(f"duration {text[:40]!r} is longer than a thousand years")
    return seconds


def parse_expiry(text: str, now: float) -> float:
    """``30d``, ``12h``, ``90m``, ``2w``, or an ISO date/time (UTC unless it says) -> epoch."""
    if _DURATION.fullmatch(text.strip()):
        return now + parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RngVaultError(
            f"invalid expiry {text!r}: write a duration (30d, 12h, 90m, 2w) or an ISO date"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token may do in some namespaces.

    Attributes:
        scope: ``read``, ``write`` or ``admin``.
        namespace: the namespace pattern (``alice``, ``team-*``, ``*``).
    """

    scope: str
    namespace: str

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise RngVaultError(f"invalid scope {self.scope!r}: one of {', '.join(SCOPES)}")
        if not isinstance(self.namespace, str) or not _PATTERN.fullmatch(self.namespace):
            raise RngVaultError(
                f"invalid namespace pattern {self.namespace!r}: patterns match {PATTERN_RULE}"
            )

    def __str__(self) -> str:
        return f"{self.scope}:{self.namespace}"

    def allows(self, scope: str) -> bool:
        """Whether this grant's scope includes ``scope`` (scopes nest)."""
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def covers(self, namespace: str) -> bool:
        return fnmatchcase(namespace, self.namespace)


def parse_grant(text: str) -> Grant:
    """``"write:bob"`` -> Grant("write", "bob"); RngVaultError naming the text otherwise."""
    scope, colon, pattern = text.strip().partition(":")
    if not colon:
        raise RngVaultError(
            f"invalid grant {text!r}: write SCOPE:PATTERN, e.g. read:'*' or write:alice"
        )
    return Grant(scope.strip(), pattern.strip())


def _grants(given: Iterable[Grant | tuple[str, str] | str]) -> tuple[Grant, ...]:
    """Grants from Grant objects, (scope, pattern) pairs or ``SCOPE:PATTERN`` text, in order,
    without repeats."""
    grants: list[Grant] = []
    for item in given:
        if isinstance(item, Grant):
            grant = item
        elif isinstance(item, str):
            grant = parse_grant(item)
        elif isinstance(item, tuple) and len(item) == 2:
            grant = Grant(*item)
        else:
            raise RngVaultError(f"invalid grant {item!r}: write SCOPE:PATTERN")
        if grant not in grants:
            grants.append(grant)
    if not grants:
        raise RngVaultError("a token needs at least one grant, e.g. read:'*'")
    return tuple(grants)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One token as the file keeps it (its hash, never its secret).

    Attributes:
        id: the public id.
        sha256: SHA-256 (hex) of the whole token.
        grants: what it may do, one or more grants.
        created: when it was made.
        expires: when it stops working, or None.
        revoked: when it was revoked, or None.
        note: a free-form label.
    """

    id: str
    sha256: str
    grants: tuple[Grant, ...]
    created: float
    expires: float | None = None
    revoked: float | None = None
    note: str = ""

    @property
    def scope(self) -> str:
        """The widest scope among its grants."""
        return max((g.scope for g in self.grants), key=SCOPES.index)

    @property
    def namespace(self) -> str:
        """Its grants' patterns, comma-separated (one pattern for a token of one grant)."""
        return ",".join(dict.fromkeys(g.namespace for g in self.grants))

    def active(self, now: float) -> bool:
        return self.revoked is None and (self.expires is None or now < self.expires)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["grants"] = [{"scope": g.scope, "namespace": g.namespace} for g in self.grants]
        return data

    @classmethod
    def from_json(cls, entry: Any) -> TokenRecord:
        """A record from the file: version 2's ``grants``, or version 1's scope and namespace."""
        entry = dict(entry)
        if "grants" in entry:
            entry["grants"] = _grants((g["scope"], g["namespace"]) for g in entry["grants"])
        else:
            entry["grants"] = (Grant(entry.pop("scope"), entry.pop("namespace")),)
        return cls(**entry)


class TokenFile:
    """Reads and changes a tokens file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[TokenRecord]:
        """The file's tokens; a missing file holds none."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise RngVaultError(f"cannot read the tokens file {str(self.path)!r}: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_TAG:
            raise RngVaultError(f"{str(self.path)!r} is not an rngvault tokens file")
        if data.get("version", 1) not in (1, FORMAT_VERSION):
            raise RngVaultError(
                f"tokens file {str(self.path)!r} has version {data.get('version')!r}; this "
                f"rngvault reads versions 1 and {FORMAT_VERSION}: upgrade rngvault"
            )
        try:
            return [TokenRecord.from_json(entry) for entry in data["tokens"]]
        except (KeyError, TypeError, AttributeError, RngVaultError) as exc:
            raise RngVaultError(f"malformed tokens file {str(self.path)!r}: {exc}") from None

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Held while the file is read, changed and written back, so that two commands
        changing it at once (two ``token create``) both keep their change."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(f".{self.path.name}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _save(self, records: list[TokenRecord]) -> None:
        data: dict[str, Any] = {
            "format": FORMAT_TAG,
            "version": FORMAT_VERSION,
            "tokens": [r.to_json() for r in records],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)

    def create(
        self,
        scope: str | None = None,
        namespace: str | None = None,
        *,
        grants: Iterable[Grant | tuple[str, str] | str] | None = None,
        expires: float | None = None,
        note: str = "",
    ) -> tuple[TokenRecord, str]:
        """Add a token with one grant (``scope``, ``namespace``) or several (``grants``:
        Grant objects, (scope, pattern) pairs or ``SCOPE:PATTERN`` text); returns its record
        and the token itself (shown once, never stored)."""
        if (grants is None) == (scope is None or namespace is None):
            raise RngVaultError("give a token either a scope and a namespace, or grants")
        chosen = _grants(grants if grants is not None else [(str(scope), str(namespace))])
        ident = secrets.token_hex(6)
        token = f"rv_{ident}_{secrets.token_urlsafe(32)}"
        record = TokenRecord(ident, token_hash(token), chosen, time.time(), expires, note=note)
        with self._changing():
            self._save([*self.load(), record])
        return record, token

    def revoke(self, ident: str) -> TokenRecord:
        """Mark a token revoked (it stays listed, so its id is never reused unnoticed)."""
        with self._changing():
            records = self.load()
            for i, record in enumerate(records):
                if record.id == ident:
                    if record.revoked is None:
                        records[i] = dataclasses.replace(record, revoked=time.time())
                        self._save(records)
                    return records[i]
        raise RngVaultError(f"no token with id {ident!r} in {str(self.path)!r}")
