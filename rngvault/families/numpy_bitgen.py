"""NumPy ``Generator`` and ``BitGenerator``: PCG64, PCG64DXSM, MT19937, Philox and SFC64.

State: every field of the bit generator's ``.state`` (128-bit ints for the PCG family, the
buffered half-word ``has_uint32``/``uinteger``, Philox's ``buffer`` and ``buffer_pos``) plus
its ``SeedSequence`` (entropy, spawn_key, pool_size, n_children_spawned). The seed sequence
is not part of ``.state``, but ``spawn()`` depends on it: restoring it makes the children
spawned after a restore the same as in the original process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rngvault import _distance
from rngvault._errors import StateError
from rngvault._snapshot import values_equal
from rngvault.families import Family, Fields, _numpy
from rngvault.families import _fields as f

U32 = 2**32 - 1
U128 = 2**128 - 1
_SEED_SEQ_KEYS = frozenset({"entropy", "spawn_key", "pool_size", "n_children_spawned"})
# Bounds on a seed sequence, far above what real seeds give (an OS-drawn entropy is one
# 128-bit int, a spawn key one int per level of spawning, pool_size 4) and low enough that
# NumPy's mixing stays cheap: it converts a big entropy int in time quadratic in its length
# (200 KB: ~38 s) and mixes the pool in time quadratic in pool_size.
MAX_ENTROPY_BITS = 1024  # an int entropy is below 2**1024
MAX_SEED_WORDS = 64  # entries of an entropy sequence or a spawn key
MAX_ENTROPY_WORD_BITS = 128  # each entry of an entropy sequence is below 2**128
MAX_SPAWN_KEY_BITS = 64  # each entry of a spawn key is below 2**64
MAX_POOL_SIZE = 256


def _bit_generator(obj: Any) -> np.random.BitGenerator:
    return obj.bit_generator if isinstance(obj, np.random.Generator) else obj


def accepts(obj: Any) -> bool:
    return isinstance(obj, (np.random.Generator, np.random.BitGenerator))


def _seed_seq(bit_generator: np.random.BitGenerator) -> Fields | None:
    seq = bit_generator.seed_seq
    if not isinstance(seq, np.random.SeedSequence):
        return None
    entropy = seq.entropy
    if isinstance(entropy, np.ndarray):
        entropy = tuple(int(x) for x in entropy.ravel())
    elif isinstance(entropy, (list, tuple)):
        # Element by element, as NumPy mixes them: np.asarray would make [1, 2**63 + 1] a
        # float64 array and lose the big one's low bits.
        entropy = tuple(int(x) for x in entropy)
    elif isinstance(entropy, np.integer):
        entropy = int(entropy)
    return {
        "entropy": entropy,
        "spawn_key": seq.spawn_key,
        "pool_size": seq.pool_size,
        "n_children_spawned": seq.n_children_spawned,
    }


def capture(obj: Any) -> Fields:
    bit_generator = _bit_generator(obj)
    fields: Fields
    if type(bit_generator) is np.random.MT19937:
        key, pos = _numpy.read_mt(bit_generator)
        fields = {"bit_generator": "MT19937", "state": {"key": key, "pos": pos}}
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


def _seed_words(value: Any, field: str, bits: int) -> None:
    """A sequence of at most MAX_SEED_WORDS ints in 0..2**bits-1."""
    if not isinstance(value, (tuple, list)):
        raise StateError(
            f"expected a sequence of non-negative ints, got {type(value).__name__} {f.show(value)}",
            field=field,
        )
    if len(value) > MAX_SEED_WORDS:
        raise StateError(
            f"{len(value)} entries; at most {MAX_SEED_WORDS} are allowed",
            field=field,
            value=len(value),
        )
    # Three passes at C speed; the loop only runs to name the bad entry.
    if value and set(map(type, value)) == {int} and min(value) >= 0 and max(value) >> bits == 0:
        return
    for i, word in enumerate(value):
        if type(word) is not int or word < 0 or word.bit_length() > bits:
            shown = f"a {word.bit_length()}-bit int" if type(word) is int else f.show(word)
            raise StateError(
                f"entry {i} is {shown}, not an int in 0..2**{bits}-1", field=field, value=i
            )


def _validate_seed_seq(seq: Any) -> None:
    if seq is None:
        return
    f.check_keys(seq, _SEED_SEQ_KEYS, "seed_seq")
    entropy = f.get(seq, "entropy", "seed_seq.")
    # numpy never keeps entropy=None (it draws OS entropy instead), so None cannot be exact.
    if type(entropy) is int:
        if entropy < 0 or entropy.bit_length() > MAX_ENTROPY_BITS:
            raise StateError(
                f"entropy is {f.show(entropy)}; it must be in 0..2**{MAX_ENTROPY_BITS}-1",
                field="seed_seq.entropy",
            )
    else:
        _seed_words(entropy, "seed_seq.entropy", MAX_ENTROPY_WORD_BITS)
    _seed_words(f.get(seq, "spawn_key", "seed_seq."), "seed_seq.spawn_key", MAX_SPAWN_KEY_BITS)
    f.integer(seq, "pool_size", 4, MAX_POOL_SIZE, "seed_seq.")
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


def _seed_sequence(seq: Mapping[str, Any] | None) -> np.random.SeedSequence | None:
    if seq is None:
        return None
    entropy = seq["entropy"]
    return np.random.SeedSequence(
        list(entropy) if isinstance(entropy, (tuple, list)) else entropy,
        spawn_key=tuple(seq["spawn_key"]),
        pool_size=seq["pool_size"],
        n_children_spawned=seq["n_children_spawned"],
    )


def _same_seed_seq(bit_generator: np.random.BitGenerator, seq: Mapping[str, Any] | None) -> bool:
    """Whether the target's seed sequence already is ``seq`` (then it need not be rebuilt:
    NumPy mixes the entropy again on every construction)."""
    mine = _seed_seq(bit_generator)
    if mine is None or seq is None:
        return mine is seq
    return all(
        _as_tuple(mine[key]) == _as_tuple(seq[key]) and type(mine[key]) is type(seq[key])
        for key in ("entropy", "spawn_key")
    ) and all(mine[key] == seq[key] for key in ("pool_size", "n_children_spawned"))


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (tuple, list)) else value


def restore(obj: Any, fields: Mapping[str, Any]) -> None:
    bit_generator = _bit_generator(obj)
    state = {k: v for k, v in fields.items() if k != "seed_seq"}
    if isinstance(state["state"], Mapping):
        state["state"] = dict(state["state"])
    seq = fields["seed_seq"]
    if not _same_seed_seq(bit_generator, seq):
        # BitGenerator.__setstate__ is the one public door that sets the seed sequence too.
        # A generator without one (legacy seeding) is restored without one, as numpy's
        # pickle does, rather than keeping the target's.
        bit_generator.__setstate__((state, _seed_sequence(seq)))  # type: ignore[attr-defined]
    elif isinstance(bit_generator, np.random.MT19937):
        _numpy.write_mt(bit_generator, state["state"]["key"], state["state"]["pos"])
    else:
        bit_generator.state = state


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


_PROBING = threading.local()


def _probe_target(name: str) -> Any:
    """This thread's bit generator of that kind to probe states in (making one seeds it
    from the OS, which costs more than the probe itself)."""
    kept: dict[str, Any] = _PROBING.__dict__.setdefault("kept", {})
    if name not in kept:
        kept[name] = getattr(np.random, name)(0)
    return kept[name]


def probe(fields: Mapping[str, Any], _device: int | None) -> list[Any]:
    bit_generator = _probe_target(fields["bit_generator"])
    restore(bit_generator, fields)
    rng = np.random.Generator(bit_generator)
    return [
        *rng.random(2).tolist(),
        float(rng.standard_normal()),
        int(rng.integers(0, 2**32, dtype=np.uint32)),
    ]


def derive(fields: Mapping[str, Any], seq: np.random.SeedSequence) -> Fields:
    return capture(getattr(np.random, fields["bit_generator"])(seq))


def to_mt(fields: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    if fields["bit_generator"] != "MT19937":
        raise StateError(
            f"a {fields['bit_generator']} bit generator is not MT19937 and has no "
            "equivalent in Python or torch",
            field="bit_generator",
            value=fields["bit_generator"],
        )
    return np.array(fields["state"]["key"], dtype=np.uint32), int(fields["state"]["pos"])


def from_mt(key: np.ndarray, index: int) -> Fields:
    """An MT19937 state with no seed sequence (a bit generator it is applied to has none)."""
    return {"bit_generator": "MT19937", "state": {"key": key, "pos": index}, "seed_seq": None}


# -- distances, per bit generator ----------------------------------------------------------

PCG64_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645
PCG64_CHEAP_MULTIPLIER = 0xDA942042E4DD58B5  # PCG64DXSM steps its state with this one


def _half_word(fields: Mapping[str, Any]) -> int | None:
    return int(fields["uinteger"]) if fields["has_uint32"] else None


def _buffer_cache(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[str, Any, Any]:
    return (_distance.HALF_WORD, _half_word(a), _half_word(b))


def _pcg_distance(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _distance.Moved:
    name = a["bit_generator"]
    inc_a, inc_b = a["state"]["inc"], b["state"]["inc"]
    if inc_a != inc_b:
        return _distance.Moved("reseeded", detail=f"{name} increment (stream) differs")
    multiplier = PCG64_MULTIPLIER if name == "PCG64" else PCG64_CHEAP_MULTIPLIER
    try:
        steps = _distance.lcg_distance(a["state"]["state"], b["state"]["state"], multiplier, inc_a)
    except ValueError:
        return _distance.Moved("unknown", detail=f"{name} states not on one cycle (even increment)")
    return _distance.moved(
        _distance.signed(steps, 2**128), _distance.RAW64, [name], _buffer_cache(a, b)
    )


def _philox_position(fields: Mapping[str, Any]) -> int:
    counter = sum(int(word) << (64 * i) for i, word in enumerate(fields["state"]["counter"]))
    # Each counter value yields 4 outputs; buffer_pos of them are already used.
    return 4 * counter + int(fields["buffer_pos"])


def _next_outputs(fields: Mapping[str, Any], count: int) -> np.ndarray:
    """The next ``count`` raw outputs of a bit generator state."""
    generator = getattr(np.random, fields["bit_generator"])(0)
    generator.state = {k: v for k, v in fields.items() if k != "seed_seq"}
    return generator.random_raw(count)


def _philox_distance(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _distance.Moved:
    if not np.array_equal(a["state"]["key"], b["state"]["key"]):
        return _distance.Moved("reseeded", detail="Philox key differs")
    steps = _distance.signed((_philox_position(b) - _philox_position(a)) % 2**258, 2**258)
    if steps == 0 and not np.array_equal(_next_outputs(a, 8), _next_outputs(b, 8)):
        # Same position, yet other buffered outputs: only a state set by hand does that.
        return _distance.Moved(
            "unknown", detail="Philox at the same position with other buffered outputs"
        )
    return _distance.moved(steps, _distance.RAW64, ["Philox"], _buffer_cache(a, b))


def _sfc64_distance(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _distance.Moved:
    words_a, words_b = a["state"]["state"], b["state"]["state"]
    steps = _distance.signed((int(words_b[3]) - int(words_a[3])) % 2**64, 2**64)
    notes = ["SFC64"]
    if abs(steps) > limit:
        notes.append(f"from the counter; not checked by stepping, over {limit} outputs")
    else:
        early, late = (words_a, words_b) if steps >= 0 else (words_b, words_a)
        stepped = np.random.SFC64(0)
        stepped.state = {"bit_generator": "SFC64", "state": {"state": early}, "has_uint32": 0,
                         "uinteger": 0}  # fmt: skip
        for done in range(0, abs(steps), 2**20):
            stepped.random_raw(min(2**20, abs(steps) - done))
        if not np.array_equal(stepped.state["state"]["state"], late):
            return _distance.Moved(
                "unknown",
                detail=f"SFC64 counter moved {steps} but the other state words do not follow",
            )
    return _distance.moved(steps, _distance.RAW64, notes, _buffer_cache(a, b))


def _mt19937_distance(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _distance.Moved:
    return _distance.mt_moved(
        to_mt(a), to_mt(b), limit, (_distance.HALF_WORD, None, None), ["MT19937"]
    )


_DISTANCES: dict[str, _distance.Distance] = {
    "PCG64": _pcg_distance,
    "PCG64DXSM": _pcg_distance,
    "Philox": _philox_distance,
    "SFC64": _sfc64_distance,
    "MT19937": _mt19937_distance,
}


def _seed_seq_key(seq: Mapping[str, Any] | None) -> Any:
    """What identifies a seed sequence's stream (children spawned do not change it)."""
    if seq is None:
        return None
    entropy = seq["entropy"]
    entropy = tuple(entropy) if isinstance(entropy, (tuple, list)) else entropy
    return entropy, tuple(seq["spawn_key"]), seq["pool_size"]


def _show_seed_seq(seq: Mapping[str, Any] | None) -> str:
    if seq is None:
        return "none"
    text = f"entropy {f.show(seq['entropy'])}"
    return text + (f" spawn_key {f.show(tuple(seq['spawn_key']))}" if seq["spawn_key"] else "")


def distance(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _distance.Moved:
    name = a["bit_generator"]
    if name != b["bit_generator"]:
        return _distance.Moved("reseeded", detail=f"bit generator {name} -> {b['bit_generator']}")
    seq_a, seq_b = a["seed_seq"], b["seed_seq"]
    if _seed_seq_key(seq_a) != _seed_seq_key(seq_b):
        seeds = f"{_show_seed_seq(seq_a)} -> {_show_seed_seq(seq_b)}"
        return _distance.Moved("reseeded", detail=f"{name} seed sequence {seeds}")
    if values_equal({**a, "seed_seq": None}, {**b, "seed_seq": None}):
        moved = _distance.Moved("unchanged", 0, unit(a))
    else:
        moved = _DISTANCES[name](a, b, limit)
    if seq_a and seq_b and seq_a["n_children_spawned"] != seq_b["n_children_spawned"]:
        spawned = f"children spawned {seq_a['n_children_spawned']} -> {seq_b['n_children_spawned']}"
        status: _distance.Status = "advanced" if moved.status == "unchanged" else moved.status
        detail = f"{moved.detail}; {spawned}" if moved.detail else spawned
        return _distance.Moved(status, moved.distance, moved.unit, detail)
    return moved


def unit(fields: Mapping[str, Any]) -> str:
    return _distance.MT32 if fields["bit_generator"] == "MT19937" else _distance.RAW64


FAMILY = Family(
    name="numpy.bitgen",
    kind="numpy.random.Generator/BitGenerator",
    accepts=accepts,
    capture=capture,
    validate=validate,
    check_target=check_target,
    restore=restore,
    describe=describe,
    probe=probe,
    distance=distance,
    unit=unit,
    derive=derive,
    environment=frozenset({"numpy"}),
    to_mt=to_mt,
    from_mt=from_mt,
)
