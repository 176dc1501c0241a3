"""rngvault: capture, store and restore the exact state of every random number generator.

The public API is re-exported here; everything in underscore modules is private.
"""

from rngvault._api import capture, restore
from rngvault._errors import (
    AuthError,
    CaptureError,
    ConflictError,
    DecodeError,
    DivergenceError,
    InvalidNameError,
    MissingExtraError,
    NotFoundError,
    RestoreError,
    RngVaultError,
    StateError,
    StoreError,
    TransportError,
)
from rngvault._format import decode, encode
from rngvault._report import EnvironmentDifference, GeneratorOutcome, RestoreReport
from rngvault._snapshot import FORMAT_VERSION, Metadata, Snapshot, State

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "AuthError",
    "CaptureError",
    "ConflictError",
    "DecodeError",
    "DivergenceError",
    "EnvironmentDifference",
    "GeneratorOutcome",
    "InvalidNameError",
    "Metadata",
    "MissingExtraError",
    "NotFoundError",
    "RestoreError",
    "RestoreReport",
    "RngVaultError",
    "Snapshot",
    "State",
    "StateError",
    "StoreError",
    "TransportError",
    "__version__",
    "capture",
    "decode",
    "encode",
    "restore",
]
