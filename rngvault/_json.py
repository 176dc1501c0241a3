"""A faithful JSON rendering of a snapshot, for people (curl | jq) and scripts.

JSON has no bytes, no integers past 2**53 that every reader keeps exactly, no NaN and no
typed arrays, so values are rendered as:

==========================  ==========================================================
value                       JSON
==========================  ==========================================================
int within +-(2**53 - 1)    a number
other int                   a string of its decimal digits (``"340282366920938463..."``)
float NaN, +-inf            the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
bytes                       ``{"base64": "..."}``
numpy array                 ``{"dtype": "uint32", "shape": [624], "base64": "..."}``
                            (little-endian, C order, as in the msgpack format)
tuple, list                 an array
map                         an object (keys as strings)
==========================  ==========================================================

Each generator is ``{"family", "position", "state"}``: ``position`` is the one-line summary
``State.describe()`` gives (MT index, PCG state, Philox counter, CUDA offset).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from rngvault._format import FORMAT_TAG
from rngvault._snapshot import Snapshot

__all__ = ["snapshot_to_json", "to_jsonable"]

_SAFE_INT = 2**53 - 1


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON types, following the table in this module's docstring."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        value = int(value)
        return value if -_SAFE_INT <= value <= _SAFE_INT else str(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
        return {
            "dtype": value.dtype.name,
            "shape": list(value.shape),
            "base64": base64.b64encode(data).decode("ascii"),
        }
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [to_jsonable(v) for v in value]
    raise TypeError(f"cannot render a {type(value).__name__} as JSON")


def snapshot_to_json(snapshot: Snapshot, generators: Iterable[str] | None = None) -> dict[str, Any]:
    """The snapshot as a JSON-ready dict; ``generators`` keeps only those states."""
    names = list(snapshot.states) if generators is None else list(generators)
    return {
        "format": FORMAT_TAG,
        "version": snapshot.format_version,
        "digest": snapshot.digest,
        "created": to_jsonable(snapshot.created),
        "metadata": to_jsonable(snapshot.metadata.to_dict()),
        "generators": {
            name: {
                "family": snapshot.states[name].family,
                "position": snapshot.states[name].describe(),
                "state": to_jsonable(snapshot.states[name].fields),
            }
            for name in names
        },
        "environment": to_jsonable(snapshot.environment),
        "probes": to_jsonable(snapshot.probes),
    }
