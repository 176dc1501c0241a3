"""The rngvault error tree.

Every exception rngvault raises on purpose derives from ``RngVaultError``::

    RngVaultError
    ├── InvalidNameError      a generator, run or snapshot name breaks its rule
    ├── CaptureError          an object cannot be captured (unsupported type, missing library)
    ├── StateError            a generator state is invalid (names generator, field and value)
    ├── RestoreError          a restore was refused; no generator was touched
    │   └── DivergenceError   a reproduction drifted from its reference run
    ├── EncodeError           a snapshot holds a value the format cannot encode
    ├── DecodeError           bytes are not a valid rngvault snapshot
    ├── RecordError           a run record or its config is not valid JSON of the right shape
    ├── StoreError            a store could not keep or return a snapshot
    │   ├── NotFoundError     no such run or snapshot
    │   ├── ConflictError     the name is taken by a snapshot with other content
    │   ├── AuthError         the server refused the token (401/403)
    │   └── TransportError    the server could not be reached or answered badly
    ├── MissingExtraError     an optional dependency is not installed (also an ImportError)
    └── CheckpointError       a framework checkpoint's RNG states cannot be imported
        └── UnsafeCheckpointError  the file needs more than the few types it may hold

Messages name the generator, the field and the bad value, and say what to do.

Every warning rngvault gives derives from ``RngVaultWarning`` (a ``UserWarning``), so one
filter silences or raises them all (``-W error::rngvault.RngVaultWarning``)::

    RngVaultWarning
    ├── ReproducibilityWarning  something besides the generators' states can change a run
    ├── StoreWarning            a snapshot could not be stored (``on_error="warn"``)
    ├── SpoolWarning            snapshots wait in the spool, or the server refused some
    ├── DivergenceWarning       a reproduction drifted from its reference run
    ├── LateRestoreWarning      a DataLoader was restored while an iterator was running
    └── MidEpochWarning         a DataLoader captured mid-epoch cannot resume there

A warning points at the line of your code that led to it, and is given once per problem.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

__all__ = [
    "AuthError",
    "CaptureError",
    "CheckpointError",
    "ConflictError",
    "DecodeError",
    "DivergenceError",
    "EncodeError",
    "InvalidNameError",
    "MissingExtraError",
    "NotFoundError",
    "RecordError",
    "RestoreError",
    "RngVaultError",
    "RngVaultWarning",
    "SpoolWarning",
    "StateError",
    "StoreError",
    "TransportError",
    "UnsafeCheckpointError",
]


class RngVaultError(Exception):
    """Root of every error rngvault raises."""


class InvalidNameError(RngVaultError, ValueError):
    """A generator, namespace, run or snapshot name does not match its rule."""


class CaptureError(RngVaultError):
    """An object cannot be captured."""


class StateError(RngVaultError, ValueError):
    """A generator state is invalid.

    Attributes:
        generator: the generator's name in the snapshot, when known.
        field: the offending field (dotted path inside the state).
        value: the offending value (shortened for display).
    """

    def __init__(
        self,
        message: str,
        *,
        generator: str | None = None,
        field: str | None = None,
        value: Any = None,
    ) -> None:
        self.reason = message
        self.generator = generator
        self.field = field
        self.value = value
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.generator is not None:
            where.append(f"generator {self.generator!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.reason}" if prefix else self.reason

    def for_generator(self, name: str) -> StateError:
        """The same error, naming the generator it was found in."""
        return StateError(self.reason, generator=name, field=self.field, value=self.value)


class RestoreError(RngVaultError):
    """A restore was refused before any generator was touched (or was rolled back)."""


class DivergenceError(RestoreError):
    """A reproduction's generators drifted from its reference run.

    Attributes:
        report: the divergence report that describes the first drift.
    """

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class EncodeError(RngVaultError, ValueError):
    """A snapshot holds a value the format cannot encode (metadata, environment, probes)."""


class DecodeError(RngVaultError, ValueError):
    """Bytes are not a valid rngvault snapshot; the message says what is wrong and where."""


class RecordError(RngVaultError, ValueError):
    """A run record, or the config given for one, is not valid; the message says where."""


class StoreError(RngVaultError):
    """A store could not keep or return a snapshot."""


class NotFoundError(StoreError, LookupError):
    """No such run or snapshot."""


class ConflictError(StoreError):
    """A snapshot name is already taken by a snapshot with other content."""


class AuthError(StoreError):
    """The server refused the request's credentials or scope."""


class TransportError(StoreError):
    """The server could not be reached, timed out, or answered with a server error."""


class MissingExtraError(RngVaultError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, module: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs {module!r}, which is not installed: pip install 'rngvault[{extra}]'"
        )
        self.extra = extra


class RngVaultWarning(UserWarning):
    """Root of every warning rngvault gives."""


class SpoolWarning(RngVaultWarning):
    """A snapshot went to the spool, or the spool holds snapshots the server refused."""


_PACKAGE = os.path.dirname(__file__) + os.sep  # as frames spell it


def warn(message: str, category: type[RngVaultWarning]) -> None:
    """``warnings.warn`` pointed at the first frame outside rngvault: the user's line that
    led to the warning, however deep inside rngvault it is given (a background thread's
    warning points at the thread's start)."""
    level = 2  # the caller of warn()
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


class CheckpointError(RngVaultError):
    """A checkpoint cannot be imported: missing, unreadable, or not laid out as its framework
    writes it. The message names the file and, where it applies, the entry."""


class UnsafeCheckpointError(CheckpointError):
    """Loading the file would need a global outside the allowlist (it could run code); it
    was refused before anything in it was used.

    Attributes:
        path: the file.
        globals: the globals it asked for, as ``module.name``.
    """

    def __init__(self, path: str, wanted: list[str]) -> None:
        self.path = path
        self.globals = wanted
        names = ", ".join(wanted) if wanted else "something a weights-only load refuses"
        super().__init__(
            f"{path}: refused: loading it needs {names}, which is not a plain value (a pickle "
            "can run code through it); the frameworks' RNG states need only tensors, NumPy "
            "arrays and plain Python values"
        )
