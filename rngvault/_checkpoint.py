"""Keep a snapshot's reference inside a model checkpoint, and read it back.

A checkpoint (the dict a training loop gives ``torch.save``) gets one small entry, a plain
string, so ``torch.load(..., weights_only=True)`` reads it back::

    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    rngvault.save_ref(checkpoint, vault.snapshot(f"epoch{epoch}", epoch=epoch))
    torch.save(checkpoint, "ckpt.pt")
    ...
    checkpoint = torch.load("ckpt.pt", weights_only=True)
    vault.restore(rngvault.load_ref(checkpoint))
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from rngvault._errors import InvalidNameError, RngVaultError
from rngvault._snapshot import Snapshot, SnapshotRef

KEY = "rngvault"


def save_ref(
    checkpoint: MutableMapping[str, Any], snapshot: Snapshot | SnapshotRef, *, key: str = KEY
) -> SnapshotRef:
    """Put ``snapshot``'s reference into ``checkpoint[key]`` (a string) and return it.

    ``snapshot`` is one a Vault took or read (it knows where it is stored) or a
    ``SnapshotRef``. Its digest is computed here if the Vault's writer has not done so yet.
    """
    if isinstance(snapshot, Snapshot):
        ref = snapshot.ref
        if ref is None:
            raise RngVaultError(
                "this snapshot is not stored anywhere, so it has no reference: take it with "
                "Vault.snapshot() or read it with Vault.get()"
            )
    elif isinstance(snapshot, SnapshotRef):
        ref = snapshot
    else:
        raise TypeError(
            f"save_ref takes a Snapshot or a SnapshotRef, not {type(snapshot).__name__}"
        )
    if not isinstance(checkpoint, MutableMapping):
        raise TypeError(f"save_ref needs a dict to write into, not {type(checkpoint).__name__}")
    checkpoint[key] = str(ref)
    return ref


def load_ref(checkpoint: Mapping[str, Any], *, key: str = KEY) -> SnapshotRef | None:
    """The reference ``save_ref`` put into ``checkpoint``; None if it holds none."""
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"load_ref reads a dict, not {type(checkpoint).__name__}")
    text = checkpoint.get(key)
    if text is None:
        return None
    if not isinstance(text, str):
        raise InvalidNameError(
            f"checkpoint[{key!r}] should be a snapshot reference string, not {type(text).__name__}"
        )
    return SnapshotRef.parse(text)
