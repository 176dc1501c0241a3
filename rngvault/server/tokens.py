"""The tokens file: bearer tokens with a scope and a namespace pattern, stored hashed.

A token reads ``rv_<id>_<secret>``: the id (12 hex digits) is public and names the token in
listings and revocations; the secret is 32 random bytes. The file keeps only the SHA-256 of
the whole token, so a leaked file reveals no token. The file is JSON, written atomically
with mode 0600::

    {"format": "rngvault-tokens", "version": 1, "tokens": [
      {"id": "3f9a1c2b7d4e", "sha256": "<hex>", "scope": "write", "namespace": "alice",
       "created": 1764200000.0, "expires": null, "revoked": null, "note": ""}]}

Scopes nest: ``read`` < ``write`` < ``admin`` (``admin`` may also delete). ``namespace`` is
a pattern of name characters and the wildcards ``*`` and ``?`` (``team-*``, ``*``).
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
from collections.abc import Iterator
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


def parse_duration(text: str) -> int:
    """Seconds in ``30d``, ``12h``, ``90m`` or ``2w``; ValueError naming the text otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"invalid duration {text!r}: write 30d, 12h, 90m or 2w")
    return int(match[1]) * _SECONDS[match[2]]


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
class TokenRecord:
    """One token as the file keeps it (its hash, never its secret).

    Attributes:
        id: the public id.
        sha256: SHA-256 (hex) of the whole token.
        scope: ``read``, ``write`` or ``admin``.
        namespace: the namespace pattern it may use.
        created: when it was made.
        expires: when it stops working, or None.
        revoked: when it was revoked, or None.
        note: a free-form label.
    """

    id: str
    sha256: str
    scope: str
    namespace: str
    created: float
    expires: float | None = None
    revoked: float | None = None
    note: str = ""

    def active(self, now: float) -> bool:
        return self.revoked is None and (self.expires is None or now < self.expires)

    def allows(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def covers(self, namespace: str) -> bool:
        return fnmatchcase(namespace, self.namespace)


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
        try:
            return [TokenRecord(**entry) for entry in data["tokens"]]
        except (KeyError, TypeError) as exc:
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
            "version": 1,
            "tokens": [dataclasses.asdict(r) for r in records],
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
        self, scope: str, namespace: str, *, expires: float | None = None, note: str = ""
    ) -> tuple[TokenRecord, str]:
        """Add a token; returns its record and the token itself (shown once, never stored)."""
        if scope not in SCOPES:
            raise RngVaultError(f"invalid scope {scope!r}: one of {', '.join(SCOPES)}")
        if not _PATTERN.fullmatch(namespace):
            raise RngVaultError(
                f"invalid namespace pattern {namespace!r}: patterns match {PATTERN_RULE}"
            )
        ident = secrets.token_hex(6)
        token = f"rv_{ident}_{secrets.token_urlsafe(32)}"
        record = TokenRecord(
            ident, token_hash(token), scope, namespace, time.time(), expires, note=note
        )
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
