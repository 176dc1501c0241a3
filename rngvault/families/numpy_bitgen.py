"""NumPy ``Generator`` and ``BitGenerator``: PCG64, PCG64DXSM, MT19937, Philox and SFC64.

State: every field of the bit generator's ``.state`` (128-bit ints for the PCG family, the
buffered half-word ``has_uint32``/``uinteger``, Philox's ``buffer`` and ``buffer_pos``) plus
its ``SeedSequence`` (entropy, spawn_key, pool_size, n_children_spawned). The seed sequence
is not part of ``.state``, but ``spawn()`` depends on it: restoring it makes the children
spawned after a restore the same as in the original process.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rngvault._errors import StateError
from rngvault.families import Family, Fields
from rngvault.families import _fields as f

U32 = 2**32 - 1
U128 = 2**128 - 1
_SEED_SEQ_KEYS = frozenset({"entropy", "spawn_key", "pool_size", "n_children_spawned"})


def _bit_generator(obj: Any) -> np.random.BitGenerator:
    return obj.bit_generator if isinstance(obj, np.random.Generator) else obj


def accepts(obj: Any) -> bool:
    return isinstance(obj, (np.random.Generator, np.random.BitGenerator))


def _seed_seq(bit_generator: np.random.BitGenerator) -> Fields | None:
    seq = bit_generator.seed_seq
    if not isinstance(seq, np.random.SeedSequence):
        return None
    entropy = seq.entropy
    if entropy is not None and not isinstance(entropy, int):
        entropy = tuple(int(x) for x in np.asarray(entropy).ravel())
    return {
        "entropy": entropy,
        "spawn_key": seq.spawn_key,
        "pool_size": seq.pool_size,
        "n_children_spawned": seq.n_children_spawned,
    }


# numpy's mt19937_state struct: uint32 key[624], then int pos, in native byte order.
_MT_STRUCT_BYTES = 624 * 4 + 4
_mt_struct_matches: bool | None = None  # None until compared with .state once


def _mt19937_state(bit_generator: np.random.MT19937) -> Fields:
    """MT19937's ``.state`` copies the key one element at a time (~30 µs); the same fields
    read from the state struct through numpy's ctypes interface take ~2 µs. The first read
    in a process is compared with ``.state``; if numpy's layout ever differs, ``.state``
    is used from then on."""
    global _mt_struct_matches
    if _mt_struct_matches is False:
        return dict(bit_generator.state)
    raw = ctypes.string_at(bit_generator.ctypes.state_address, _MT_STRUCT_BYTES)
    key = np.frombuffer(raw, dtype=np.uint32, count=624).copy()
    pos = int.from_bytes(raw[624 * 4 :], sys.byteorder, signed=True)
    fields: Fields = {"bit_generator": "MT19937", "state": {"key": key, "pos": pos}}
    if _mt_struct_matches is None:
        slow = bit_generator.state
        _mt_struct_matches = slow["state"]["pos"] == pos and bool(
            np.array_equal(slow["state"]["key"], key)
        )
        if not _mt_struct_matches:
            return dict(slow)
    return fields


def capture(obj: Any) -> Fields:
    bit_generator = _bit_generator(obj)
    if type(bit_generator) is np.random.MT19937:
        fields = _mt19937_state(bit_generator)
    else:
        fields = dict(bit_generator.state)  # .state is fresh on every call: cheap copy
    fields["seed_seq"] = _seed_seq(bit_generator)
    return fields


# -- validation, per bit generator ------------------------------------------------------


def _buffered(fields: Mapping[str, Any]) -> None:
    f.flag(fields, "has_uint32")
    f.integer(fields, "uinteger", 0, U32)


def _pcg(fields: Mapping[str, Any]) -> None:
    f.check_keys(fields, {"bit_generator", "state", "has_uint32", "uinteger", "seed_seq"})
    inner = f.get(fields, "state")
    f.check_keys(inner, {"state", "inc"}, "state")
    f.integer(inner, "state", 0, U128, "state.")
    f.integer(inner, "inc", 0, U128, "state.")
    _buffered(fields)


def _mt19937(fields: Mapping[str, Any]) -> None:
    f.check_keys(fields, {"bit_generator", "state", "seed_seq"})
    inner = f.get(fields, "state")
    f.check_keys(inner, {"key", "pos"}, "state")
    f.mt_key(f.array(inner, "key", "uint32", 624, "state."), "state.key")
    f.integer(inner, "pos", 0, 624, "state.")


def _philox(fields: Mapping[str, Any]) -> None:
    f.check_keys(
        fields,
        {"bit_generator", "state", "buffer", "buffer_pos", "has_uint32", "uinteger", "seed_seq"},
    )
    inner = f.get(fields, "state")
    f.check_keys(inner, {"counter", "key"}, "state")
    f.array(inner, "counter", "uint64", 4, "state.")
    f.array(inner, "key", "uint64", 2, "state.")
    f.array(fields, "buffer", "uint64", 4)
    f.integer(fields, "buffer_pos", 0, 4)
    _buffered(fields)


def _sfc64(fields: Mapping[str, Any]) -> None:
    f.check_keys(fields, {"bit_generator", "state", "has_uint32", "uinteger", "seed_seq"})
    inner = f.get(fields, "state")
    f.check_keys(inner, {"state"}, "state")
    f.array(inner, "state", "uint64", 4, "state.")
    _buffered(fields)


_VALIDATORS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "PCG64": _pcg,
    "PCG64DXSM": _pcg,
    "MT19937": _mt19937,
    "Philox": _philox,
    "SFC64": _sfc64,
}


def _validate_seed_seq(seq: Any) -> None:
    if seq is None:
        return
    f.check_keys(seq, _SEED_SEQ_KEYS, "seed_seq")
    entropy = f.get(seq, "entropy", "seed_seq.")
    # numpy never keeps entropy=None (it draws OS entropy instead), so None cannot be exact.
    words = entropy if isinstance(entropy, (tuple, list)) else (entropy,)
    if not all(type(w) is int and w >= 0 for w in words):
        raise StateError(
            f"expected a non-negative int or a sequence of them, got {f.show(entropy)}",
            field="seed_seq.entropy",
        )
    spawn_key = f.get(seq, "spawn_key", "seed_seq.")
    if not isinstance(spawn_key, (tuple, list)) or not all(
        type(k) is int and k >= 0 for k in spawn_key
    ):
        raise StateError(
            f"expected a sequence of non-negative ints, got {f.show(spawn_key)}",
            field="seed_seq.spawn_key",
        )
    f.integer(seq, "pool_size", 4, 2**16, "seed_seq.")
    f.integer(seq, "n_children_spawned", 0, U32, "seed_seq.")


def validate(fields: Mapping[str, Any]) -> None:
    name = f.get(fields, "bit_generator")
    check = _VALIDATORS.get(name) if isinstance(name, str) else None
    if check is None:
        raise StateError(
            f"unsupported bit generator {f.show(name)}; supported: {', '.join(_VALIDATORS)}",
            field="bit_generator",
            value=name,
        )
    check(fields)
    _validate_seed_seq(f.get(fields, "seed_seq"))


def check_target(obj: Any, fields: Mapping[str, Any]) -> None:
    if not accepts(obj):
        raise StateError(f"a numpy Generator state cannot be restored into a {type(obj).__name__}")
    actual = type(_bit_generator(obj)).__name__
    if actual != fields["bit_generator"]:
        raise StateError(
            f"the snapshot holds a {fields['bit_generator']} state but the target runs {actual}",
            field="bit_generator",
        )


def restore(obj: Any, fields: Mapping[str, Any]) -> None:
    bit_generator = _bit_generator(obj)
    state = {k: v for k, v in fields.items() if k != "seed_seq"}
    if isinstance(state["state"], Mapping):
        state["state"] = dict(state["state"])
    seq = fields["seed_seq"]
    seed_seq = None
    if seq is not None:
        entropy = seq["entropy"]
        seed_seq = np.random.SeedSequence(
            list(entropy) if isinstance(entropy, (tuple, list)) else entropy,
            spawn_key=tuple(seq["spawn_key"]),
            pool_size=seq["pool_size"],
            n_children_spawned=seq["n_children_spawned"],
        )
    # BitGenerator.__setstate__ is the one public door that sets the seed sequence too. A
    # generator without one (legacy seeding) is restored without one, as numpy's pickle does,
    # rather than keeping the target's.
    bit_generator.__setstate__((state, seed_seq))  # type: ignore[attr-defined]


def describe(fields: Mapping[str, Any]) -> str:
    name = fields["bit_generator"]
    inner = fields["state"]
    if name == "MT19937":
        text = f"MT19937 pos {inner['pos']}/624"
    elif name == "Philox":
        counter = ", ".join(str(int(c)) for c in inner["counter"])
        text = f"Philox counter [{counter}], buffer_pos {fields['buffer_pos']}/4"
    elif name == "SFC64":
        text = f"SFC64 counter {int(inner['state'][3])}"
    else:
        text = f"{name} state 0x{inner['state']:032x}"
    if fields.get("has_uint32"):
        text += ", buffered uint32"
    seq = fields.get("seed_seq")
    if seq and seq["n_children_spawned"]:
        text += f", {seq['n_children_spawned']} children spawned"
    return text


FAMILY = Family(
    name="numpy.bitgen",
    kind="numpy.random.Generator/BitGenerator",
    accepts=accepts,
    capture=capture,
    validate=validate,
    check_target=check_target,
    restore=restore,
    describe=describe,
)
