"""rngvault: capture, store and restore the exact state of every random number generator.

The public API is re-exported here; everything in underscore modules is private. The Vault,
the client stores and the spool are imported on first use (``rngvault.Vault``), so that
the server, which shares only the codec, the name rules and the errors with the client,
does not load them.
"""

import importlib
import typing

from rngvault import convert
from rngvault._api import capture, restore
from rngvault._checkpoint import load_ref, save_ref
from rngvault._diff import DiffReport, GeneratorDiff, diff, state_distance
from rngvault._divergence import DivergenceReport
from rngvault._errors import (
    AuthError,
    CaptureError,
    CheckpointError,
    ConflictError,
    DecodeError,
    DivergenceError,
    EncodeError,
    InvalidNameError,
    MissingExtraError,
    NotFoundError,
    RecordError,
    RestoreError,
    RngVaultError,
    RngVaultWarning,
    SpoolWarning,
    StateError,
    StoreError,
    TransportError,
    UnsafeCheckpointError,
)
from rngvault._format import decode, encode
from rngvault._probes import ProbeCheck, ProbeVerdict, verify
from rngvault._report import EnvironmentDifference, GeneratorOutcome, RestoreReport
from rngvault._seeding import ReproducibilityWarning, per_worker, seed_everything, seed_worker
from rngvault._snapshot import FORMAT_VERSION, Metadata, Snapshot, SnapshotRef, State
from rngvault._version import __version__
from rngvault._writer import StoreWarning
from rngvault.families.dataloader import LateRestoreWarning, MidEpochWarning

if typing.TYPE_CHECKING:
    from rngvault._bisect import BisectReport, bisect
    from rngvault._plot import plot_seeds
    from rngvault._seeds import SeedReport, seed_sensitivity, sweep_seeds
    from rngvault._vault import DivergenceWarning, Vault, fetch
    from rngvault.stores import LocalStore, SnapshotInfo, StepEntry, Store, open_store
    from rngvault.stores.spool import drop as spool_drop
    from rngvault.stores.spool import list_entries as spool_list
    from rngvault.stores.spool import retry as spool_retry

# name -> (module, attribute), imported by __getattr__ on first use (PEP 562)
_LAZY = {
    "BisectReport": ("rngvault._bisect", "BisectReport"),
    "bisect": ("rngvault._bisect", "bisect"),
    "plot_seeds": ("rngvault._plot", "plot_seeds"),
    "SeedReport": ("rngvault._seeds", "SeedReport"),
    "seed_sensitivity": ("rngvault._seeds", "seed_sensitivity"),
    "sweep_seeds": ("rngvault._seeds", "sweep_seeds"),
    "DivergenceWarning": ("rngvault._vault", "DivergenceWarning"),
    "Vault": ("rngvault._vault", "Vault"),
    "fetch": ("rngvault._vault", "fetch"),
    "LocalStore": ("rngvault.stores", "LocalStore"),
    "SnapshotInfo": ("rngvault.stores", "SnapshotInfo"),
    "StepEntry": ("rngvault.stores", "StepEntry"),
    "Store": ("rngvault.stores", "Store"),
    "open_store": ("rngvault.stores", "open_store"),
    "spool_drop": ("rngvault.stores.spool", "drop"),
    "spool_list": ("rngvault.stores.spool", "list_entries"),
    "spool_retry": ("rngvault.stores.spool", "retry"),
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'rngvault' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # the next lookup finds it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "FORMAT_VERSION",
    "AuthError",
    "BisectReport",
    "CaptureError",
    "CheckpointError",
    "ConflictError",
    "DecodeError",
    "DiffReport",
    "DivergenceError",
    "DivergenceReport",
    "DivergenceWarning",
    "EncodeError",
    "EnvironmentDifference",
    "GeneratorDiff",
    "GeneratorOutcome",
    "InvalidNameError",
    "LateRestoreWarning",
    "LocalStore",
    "Metadata",
    "MidEpochWarning",
    "MissingExtraError",
    "NotFoundError",
    "ProbeCheck",
    "ProbeVerdict",
    "RecordError",
    "ReproducibilityWarning",
    "RestoreError",
    "RestoreReport",
    "RngVaultError",
    "RngVaultWarning",
    "SeedReport",
    "Snapshot",
    "SnapshotInfo",
    "SnapshotRef",
    "SpoolWarning",
    "State",
    "StateError",
    "StepEntry",
    "Store",
    "StoreError",
    "StoreWarning",
    "TransportError",
    "UnsafeCheckpointError",
    "Vault",
    "__version__",
    "bisect",
    "capture",
    "convert",
    "decode",
    "diff",
    "encode",
    "fetch",
    "load_ref",
    "open_store",
    "per_worker",
    "plot_seeds",
    "restore",
    "save_ref",
    "seed_everything",
    "seed_sensitivity",
    "seed_worker",
    "spool_drop",
    "spool_list",
    "spool_retry",
    "state_distance",
    "sweep_seeds",
    "verify",
]
