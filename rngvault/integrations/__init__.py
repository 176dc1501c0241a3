"""rngvault inside the training frameworks people use, and the RNG states their checkpoints hold.

- ``rngvault.integrations.lightning``: ``RngVaultCallback`` for Lightning's ``Trainer``;
- ``rngvault.integrations.transformers``: ``RngVaultTrainerCallback`` for the Hugging Face
  ``Trainer``;
- ``rngvault.integrations.accelerate``: ``track(accelerator, vault)``, carried by
  ``save_state`` and ``load_state``;
- ``import_checkpoint(kind, path)``: the RNG states a framework's checkpoint holds, as
  snapshots (also ``rngvault import-checkpoint``).

Each module imports its framework when it is imported itself; ``import rngvault`` never
imports any framework.
"""

from __future__ import annotations

import importlib
from typing import Any

from rngvault._errors import CheckpointError, UnsafeCheckpointError

__all__ = ["CheckpointError", "UnsafeCheckpointError", "import_checkpoint"]


def __getattr__(name: str) -> Any:
    # imported on first use: the importer needs torch, which this package does not
    if name == "import_checkpoint":
        value = importlib.import_module("rngvault.integrations._import").import_checkpoint
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rngvault.integrations' has no attribute {name!r}")
