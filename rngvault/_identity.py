"""When two snapshots are the same snapshot: the rule every store applies to a re-put.

A snapshot is its generators' states and what the user said about it: step, epoch, tags,
metrics, rank and world size. When it was taken (``created``), the environment recorded
with it and its probes are observations of the moment, not its content: a run that is
taken again from the same seed, on another day or another machine, produces the same
snapshot. So a store that already holds a name answers a re-put whose states digest and
user metadata match as "already stored" (no conflict, the stored bytes are kept), and one
whose states or user metadata differ as a conflict.
"""

from __future__ import annotations

from typing import Any

from rngvault._snapshot import Metadata, Snapshot, values_equal


def user_metadata(metadata: Metadata) -> dict[str, Any]:
    """The metadata that is part of a snapshot's identity: step, epoch, tags, metrics,
    rank and world size (``Metadata.to_dict``)."""
    return metadata.to_dict()


def same_snapshot(a: Snapshot, b: Snapshot) -> bool:
    """Whether ``a`` and ``b`` are the same snapshot: the same states (digest) and the same
    user metadata, with types compared exactly (metric ``1`` differs from ``1.0``) and NaN
    equal to NaN; ``created``, the environment and the probes are not compared."""
    return a.digest == b.digest and values_equal(
        user_metadata(a.metadata), user_metadata(b.metadata)
    )
