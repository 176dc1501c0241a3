"""Hypothesis strategies for generator states: valid ones for every family, and mutants.

``VALID[family]`` draws the fields of a state that family's ``validate`` must accept and
that restores exactly: every value inside the ranges the generator's own implementation
relies on (docs/format.md), not only the ranges of single fields:

- a torch CPU state is seeded, and ``left``/``next`` are a position torch itself can be in:
  ``next == 625 - left`` with ``left`` in 1..624, or ``left == 1, next == 0`` (what
  ``manual_seed`` leaves);
- an MT19937 key is 624 words below 2**32, not all zero, and not stuck at zero either:
  some bit the twist reads is set (see ``mt_key_is_stuck``);
- a numpy seed sequence is None, or has an entropy int below 2**1024 or a tuple of at most
  64 ints below 2**128, a spawn key of at most 64 ints below 2**64, a pool size of 4..256
  and at most 2**32 - 1 children spawned;
- a CUDA state is a u64 seed and a Philox offset that is a multiple of 4.

``MUTATIONS[family]`` draws ``Mutant``s: a valid state corrupted in one or two places
(bits flipped anywhere in torch state bytes, torch's ``left``/``next``/``seeded`` set to
neighbouring, extreme or mismatched values, ints set to their neighbours or to extreme
values, types changed, keys dropped or added, arrays of the wrong dtype or shape, MT19937
keys zeroed or stuck, seed sequences made too large to restore quickly). A mutant may
still be valid; the contract (tests/families/test_contract.py) is that it is either
refused naming a field or restores deterministically.

The snapshot-level strategies (``names``, ``values``, ``metadata``, ``snapshots``...) build
whole snapshots out of these states for the format's property tests.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

import rngvault

DTYPES = ["u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f4", "f8", "b1"]

TORCH_STATE_SIZE = 5056
CUDA_STATE_SIZE = 16
MAX_ENTROPY_BITS = 1024
MAX_ENTROPY_WORDS = 64
MAX_ENTROPY_WORD = 2**128 - 1
MAX_SPAWN_KEY = 64
MAX_POOL_SIZE = 256

# -- scalars and arrays ------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
u128 = st.integers(0, 2**128 - 1)
flags = st.integers(0, 1)
floats = st.floats(allow_nan=True, allow_infinity=True)
seeds = st.integers(0, 2**32 - 1)


def mt_key_is_stuck(key: Any) -> bool:
    """Whether an MT19937 key never leaves zero: the twist reads only the top bit of word 0
    (bits 0..30 are dropped), so a key with nothing else set outputs zeros after its next
    twist, forever (and ``random.normalvariate`` or numpy's ``standard_normal`` never
    return). CPython and numpy seed word 0 as 0x80000000 for this reason."""
    words = np.asarray(key, dtype=np.uint64)
    return not (int(words[0]) >> 31 or words[1:].any())


def one_bit_key(bit: int) -> np.ndarray:
    """A key with only ``bit`` set (bit 32 * w + b is bit b of word w)."""
    key = np.zeros(624, dtype=np.uint64)
    key[bit // 32] = 1 << (bit % 32)
    return key


def mt_keys(dtype):
    """624 32-bit words that are not stuck: random ones, a single set bit that the twist
    reads (the top bit of word 0, or any bit of words 1..623), or all ones."""
    random_words = seeds.map(
        lambda s: np.random.default_rng(s).integers(0, 2**32, 624, dtype=np.uint64)
    )
    one_bit = st.integers(31, 624 * 32 - 1).map(one_bit_key)
    all_ones = st.just(np.full(624, 2**32 - 1, dtype=np.uint64))
    keys = st.one_of(random_words, one_bit, all_ones).filter(lambda k: not mt_key_is_stuck(k))
    if dtype is tuple:
        return keys.map(lambda k: tuple(int(x) for x in k))
    return keys.map(lambda k: k.astype(dtype))


def arrays(dtype, n):
    return seeds.map(
        lambda s: np.random.default_rng(s).integers(0, 2**64, n, dtype=np.uint64).astype(dtype)
    )


# -- valid fields, per family --------------------------------------------------------------

python_fields = st.fixed_dictionaries(
    {"key": mt_keys(tuple), "index": st.integers(0, 624), "gauss_next": st.none() | floats}
)
legacy_fields = st.fixed_dictionaries(
    {"key": mt_keys(np.uint32), "pos": st.integers(0, 624), "has_gauss": flags, "gauss": floats}
)
seed_seqs = st.none() | st.fixed_dictionaries(
    {
        "entropy": st.integers(0, 2**MAX_ENTROPY_BITS - 1)
        | st.lists(u128, max_size=MAX_ENTROPY_WORDS).map(tuple),
        "spawn_key": st.lists(u64, max_size=MAX_SPAWN_KEY).map(tuple),
        "pool_size": st.integers(4, MAX_POOL_SIZE),
        "n_children_spawned": u32,
    }
)
buffered = {"has_uint32": flags, "uinteger": u32, "seed_seq": seed_seqs}
bitgen_fields = st.one_of(
    st.fixed_dictionaries(
        {
            "bit_generator": st.sampled_from(["PCG64", "PCG64DXSM"]),
            "state": st.fixed_dictionaries({"state": u128, "inc": u128}),
            **buffered,
        }
    ),
    st.fixed_dictionaries(
        {
            "bit_generator": st.just("MT19937"),
            "state": st.fixed_dictionaries({"key": mt_keys(np.uint32), "pos": st.integers(0, 624)}),
            "seed_seq": seed_seqs,
        }
    ),
    st.fixed_dictionaries(
        {
            "bit_generator": st.just("Philox"),
            "state": st.fixed_dictionaries(
                {"counter": arrays(np.uint64, 4), "key": arrays(np.uint64, 2)}
            ),
            "buffer": arrays(np.uint64, 4),
            "buffer_pos": st.integers(0, 4),
            **buffered,
        }
    ),
    st.fixed_dictionaries(
        {
            "bit_generator": st.just("SFC64"),
            "state": st.fixed_dictionaries({"state": arrays(np.uint64, 4)}),
            **buffered,
        }
    ),
)

# (left, next) pairs torch's mt19937 engine can be in: after manual_seed (1, 0); after the
# k-th output since a twist (625 - k, k), so ``left`` outputs are read before the next twist
# from words next..623.
torch_positions = st.one_of(
    st.just((1, 0)), st.integers(1, 624).map(lambda left: (left, 625 - left))
)


def torch_state_bytes(
    seed: int,
    left: int,
    next_: int,
    words: np.ndarray,
    normal_y: float | None = None,
    float_normal: float | None = None,
) -> bytes:
    """A 5056-byte CPU generator state with the given fields, laid out as torch writes it;
    a normal cache is valid when its value is given."""
    data = bytearray(TORCH_STATE_SIZE)
    struct.pack_into("<QiiQ", data, 0, seed, left, 1, next_)
    data[24 : 24 + 624 * 8] = np.asarray(words, dtype="<u8").tobytes()
    struct.pack_into(
        "<dddi",
        data,
        5016,
        0.0,
        0.0 if normal_y is None else normal_y,
        0.0,
        int(normal_y is not None),
    )
    struct.pack_into(
        "<fB",
        data,
        5048,
        0.0 if float_normal is None else float_normal,
        int(float_normal is not None),
    )
    return bytes(data)


@st.composite
def torch_cpu_states(draw) -> bytes:
    """A 5056-byte CPU generator state as torch writes it, with every field drawn.

    torch writes normal_x and normal_rho (unused since torch 1.x) as zero, normal_y and the
    float normal only when their flag is set, and zero padding; it ignores those bytes on
    input, so a state with other values there restores exactly but does not read back
    byte for byte.
    """
    left, next_ = draw(torch_positions)
    normal_y = draw(st.none() | floats)
    float_normal = draw(st.none() | st.floats(width=32))
    return torch_state_bytes(
        draw(u64), left, next_, draw(mt_keys(np.uint64)), normal_y, float_normal
    )


cuda_states = st.tuples(u64, st.integers(0, 2**62 - 1)).map(
    lambda so: struct.pack("<QQ", so[0], so[1] * 4)
)
dataloader_fields = st.fixed_dictionaries(
    {
        "generator": st.none() | torch_cpu_states(),
        "sampler_generator": st.none() | torch_cpu_states(),
        "sampler": st.none()
        | st.fixed_dictionaries(
            {"seed": st.integers(-(2**63), 2**64 - 1), "epoch": st.integers(-(2**63), 2**63 - 1)}
        ).filter(lambda s: -(2**63) <= s["seed"] + s["epoch"] <= 2**64 - 1),
    }
)  # DistributedSampler shuffles with manual_seed(seed + epoch), which takes that range


@st.composite
def stateful_dataloader_fields(draw) -> dict[str, Any]:
    """A one-process torchdata StatefulDataLoader state, as its state_dict() has it, of a
    loader of 40 items in shuffled batches of 3 (14 per epoch), in the entries rngvault
    stores."""
    batches = draw(st.integers(0, 14))
    samples = min(3 * batches, 40)
    sampler = (("_sampler_iter_state",), "dict", None)
    entries = [
        ((), "dict", None),
        (("_index_sampler_state",), "none", None),
        sampler,
        (("_sampler_iter_state", "sampler_iter_state"), "dict", None),
        (
            ("_sampler_iter_state", "sampler_iter_state", "generator"),
            "tensor",
            ("uint8", (TORCH_STATE_SIZE,), draw(torch_cpu_states())),
        ),
        (("_sampler_iter_state", "sampler_iter_state", "yielded"), "int", samples),
        (("_sampler_iter_state", "samples_yielded"), "int", samples),
        (("_sampler_iter_yielded",), "int", batches),
        (("_num_yielded",), "int", batches),
        (("_IterableDataset_len_called",), "none", None),
        (("_shared_seed",), "none", None),
        (("fetcher_state",), "none", None),
        (("dataset_state",), "none", None),
        (("_iterator_finished",), "bool", batches == 14 and draw(st.booleans())),
    ]
    return {"entries": tuple(entries)}


VALID: dict[str, SearchStrategy[dict[str, Any]]] = {
    "python": python_fields,
    "numpy.legacy": legacy_fields,
    "numpy.bitgen": bitgen_fields,
    "torch.cpu": torch_cpu_states().map(lambda s: {"state": s}),
    "torch.cuda": cuda_states.map(lambda s: {"state": s}),
    "dataloader": dataloader_fields,
    "torchdata.stateful_dataloader": stateful_dataloader_fields(),
}

states = st.one_of(
    *(fields.map(partial(rngvault.State, family)) for family, fields in VALID.items())
)

# -- mutants -------------------------------------------------------------------------------


class Mutant(NamedTuple):
    """A valid state of ``family`` changed as ``how`` says (``how`` is for messages)."""

    family: str
    fields: dict[str, Any]
    how: tuple[str, ...]


_DROP = object()
INTERESTING_INTS = (
    -1, 0, 1, 2, 3, 4, 5, 7, 255, 256, 257, 623, 624, 625, 2**16, 2**16 + 1, 2**31 - 1,
    2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**128 - 1, 2**128,
    -(2**63), -(2**63) - 1, 2**1024,
)  # fmt: skip
OTHER_VALUES = (
    None, True, False, 0.0, 1.5, float("nan"), float("-inf"), "", "x", b"", b"\x01" * 8,
    (), (1, 2), [0], {}, {"a": 1}, np.uint64(2**64 - 1), np.int64(-1),
    np.zeros(3, np.uint8), np.ones((2, 2), np.uint32),
)  # fmt: skip
# Seed sequence fields that are just outside the valid space, or far enough outside it
# that numpy would take seconds (or forever) to build the SeedSequence.
OVERSIZED: dict[str, tuple[Any, ...]] = {
    "entropy": (
        2**MAX_ENTROPY_BITS,
        2 ** (8 * 4096),
        2 ** (8 * 200_000),
        tuple(range(MAX_ENTROPY_WORDS + 1)),
        (MAX_ENTROPY_WORD + 1,),
        tuple(range(100_000)),
        -1,
        (-1,),
    ),
    "spawn_key": (tuple(range(MAX_SPAWN_KEY + 1)), (2**64,), tuple(range(2**17)), (-1,)),
    "pool_size": (3, MAX_POOL_SIZE + 1, 2**16, 2**20),
    "n_children_spawned": (2**32, -1, 2**64),
}
# Fields of torch's CPUGeneratorImplState: offset and struct format.
TORCH_FIELDS = {
    "seed": (0, "<Q"),
    "left": (8, "<I"),
    "seeded": (12, "<I"),
    "next": (16, "<Q"),
    "normal_x": (5016, "<Q"),
    "normal_y": (5024, "<Q"),
    "normal_rho": (5032, "<Q"),
    "normal_is_valid": (5040, "<I"),
    "padding": (5044, "<I"),
    "float_normal": (5048, "<I"),
    "float_normal_is_valid": (5052, "<B"),
}
TORCH_REGIONS = {"header": (0, 24), "words": (24, 5016), "normals": (5016, TORCH_STATE_SIZE)}
CUDA_FIELDS = {"seed": (0, "<Q"), "offset": (8, "<Q")}
# Word 0 of a stuck MT19937 key: only bits the twist never reads.
STUCK_WORDS = (1, 2**31 - 1, 12345)
BIT_GENERATOR_NAMES = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64", "pcg64", "RandomState")


def _nodes(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every (path, value) in a fields tree; maps are walked, other values are leaves."""
    found = [(path, value)]
    if isinstance(value, dict):
        for key in sorted(value):
            found += _nodes(value[key], (*path, key))
    return found


def _replace(root: Any, path: tuple[str, ...], new: Any) -> Any:
    """A copy of ``root`` with the value at ``path`` replaced (``_DROP`` removes it)."""
    if not path:
        return new
    copy = dict(root)
    if len(path) > 1:
        copy[path[0]] = _replace(root[path[0]], path[1:], new)
    elif new is _DROP:
        del copy[path[0]]
    else:
        copy[path[0]] = new
    return copy


def _put(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value % 2 ** (8 * struct.calcsize(fmt)))
    return bytes(out)


def _int_value(rnd: random.Random, value: int) -> int:
    """A neighbour of ``value`` or an extreme value."""
    return rnd.choice([value - 1, value + 1, *INTERESTING_INTS])


def _mutated_bytes(rnd: random.Random, data: bytes) -> tuple[Any, str]:
    torch = len(data) == TORCH_STATE_SIZE
    fields = TORCH_FIELDS if torch else CUDA_FIELDS if len(data) == CUDA_STATE_SIZE else {}
    regions = TORCH_REGIONS if torch else {"all": (0, len(data))}
    kinds = ["flip", "splice"] * bool(data) + ["field", "field"] * bool(fields)
    kind = rnd.choice([*kinds, *["position", "word", "zero_words", "stuck"] * torch, "resize"])
    if kind == "position":
        # left and next each in the range torch checks, but not necessarily a pair the
        # engine can be in: next + left - 1 > 624 reads past the key.
        left, next_ = rnd.randint(1, 624), rnd.randint(0, 624)
        out = _put(_put(data, 8, "<I", left), 16, "<Q", next_)
        return out, f"left={left}, next={next_}"
    if kind == "field":
        # The fields the engine indexes with, three times as often as the others.
        name = rnd.choice(sorted(fields) + ["left", "next", "seeded"] * 2 * torch)
        offset, fmt = fields[name]
        value = _int_value(rnd, struct.unpack_from(fmt, data, offset)[0])
        size = 8 * struct.calcsize(fmt)
        wrapped = "" if 0 <= value < 2**size else f" (mod 2**{size})"
        return _put(data, offset, fmt, value), f"{name}={value}{wrapped}"
    if kind == "flip":
        region = rnd.choice(sorted(regions))
        start, end = regions[region]
        bit = rnd.randrange(start * 8, end * 8)
        out = bytearray(data)
        out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out), f"bit {bit} ({region}) flipped"
    if kind == "word":
        index = rnd.randrange(624)
        value = rnd.choice([0, 1, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1])
        return _put(data, 24 + 8 * index, "<Q", value), f"word {index}={value}"
    if kind == "zero_words":
        return data[:24] + bytes(624 * 8) + data[24 + 624 * 8 :], "all words zero"
    if kind == "stuck":
        low = rnd.choice(STUCK_WORDS)
        words = struct.pack("<Q", low) + bytes(623 * 8)
        return data[:24] + words + data[24 + 624 * 8 :], f"stuck words (word 0={low})"
    if kind == "splice":
        start = rnd.randrange(len(data))
        chunk = rnd.randbytes(rnd.randint(1, 16))[: len(data) - start]
        return data[:start] + chunk + data[start + len(chunk) :], f"bytes {start}.. overwritten"
    sizes = {0, 1, len(data) - 1, len(data) + 1, 16, 816, TORCH_STATE_SIZE} - {-1, len(data)}
    size = rnd.choice(sorted(sizes))
    return (data + bytes(size))[:size], f"resized to {size} bytes"


def _mutated_array(rnd: random.Random, array: np.ndarray) -> tuple[Any, str]:
    kind = rnd.choice(["flip", "dtype", "shape", "zeros", "ones", "stuck"])
    if kind == "flip" and array.size:
        out = array.copy()
        raw = out.view(np.uint8).reshape(-1)
        bit = rnd.randrange(raw.size * 8)
        raw[bit // 8] ^= 1 << (bit % 8)
        return out, f"bit {bit} flipped"
    if kind == "dtype":
        dtype = rnd.choice([d for d in DTYPES if np.dtype(d) != array.dtype])
        return array.astype(dtype), f"as {dtype}"
    if kind == "shape":
        shapes: list[Callable[[np.ndarray], np.ndarray]] = [
            lambda a: np.append(a, a[-1:] if a.size else 0).astype(a.dtype),
            lambda a: a[:-1],
            lambda a: a[:0],
            lambda a: a.reshape(1, -1),
        ]
        if array.size % 2 == 0:
            shapes.append(lambda a: a.reshape(2, -1))
        out = rnd.choice(shapes)(array)
        return out, f"shape {list(out.shape)}"
    unsigned = array.dtype.kind == "u" and array.dtype.itemsize >= 4
    if kind == "stuck" and array.size and unsigned:
        out = np.zeros_like(array)
        low = rnd.choice(STUCK_WORDS)
        out[0] = low
        return out, f"stuck (element 0={low})"
    if kind == "ones" and array.dtype.kind in "ui":
        return np.full_like(array, np.iinfo(array.dtype).max), "all ones"
    return np.zeros_like(array), "all zeros"


def _mutated_sequence(rnd: random.Random, seq: tuple) -> tuple[Any, str]:
    kind = rnd.choice(["drop", "append", "set", "set", "zeros", "stuck", "list", "array"])
    if kind == "drop" and seq:
        index = rnd.randrange(len(seq))
        return (*seq[:index], *seq[index + 1 :]), f"element {index} dropped"
    if kind == "set" and seq:
        index = rnd.randrange(len(seq))
        value = rnd.choice(rnd.choice([INTERESTING_INTS, OTHER_VALUES]))
        return (*seq[:index], value, *seq[index + 1 :]), f"element {index}={value!r:.40}"
    if kind == "zeros":
        return (0,) * len(seq), "all zeros"
    if kind == "stuck" and seq:
        low = rnd.choice(STUCK_WORDS)
        return (low,) + (0,) * (len(seq) - 1), f"stuck (element 0={low})"
    if kind == "list":
        return list(seq), "as a list"
    if kind == "array":
        words = [x % 2**32 if type(x) is int else 0 for x in seq]
        return np.array(words, dtype=np.uint32), "as a uint32 array"
    value = rnd.choice([0, 1, 2**32, 2**64, 2**128, -1])
    return (*seq, value), f"{value} appended"


def _mutation(rnd: random.Random, fields: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """One change somewhere in ``fields``, and what it was."""
    nodes = _nodes(fields)
    # The root (where only keys can be added or dropped) one time in eight.
    path, node = rnd.choice(nodes[1:] * 7 + nodes[:1])
    where = ".".join(path) or "<fields>"
    choices = ["replace"] if path else []
    if isinstance(node, dict):
        choices += ["add_key"] + (["drop_key"] if node else [])
    if path and path[-1] in OVERSIZED:
        choices += ["oversize"] * 2
    kind = rnd.choice(choices)
    if kind == "add_key":
        key = rnd.choice(["extra", "", "Key", "state", "seed"])
        key = key if key not in node else key + "_"
        return _replace(fields, (*path, key), 0), f"{where}: key {key!r} added"
    if kind == "drop_key":
        key = rnd.choice(sorted(node))
        return _replace(fields, (*path, key), _DROP), f"{where}: key {key!r} dropped"
    if kind == "oversize":
        value = rnd.choice(OVERSIZED[path[-1]])
        if isinstance(value, tuple):
            text = f"a tuple of {len(value)}, up to {max(value, default=0)}"
        else:
            text = f"{value}" if value.bit_length() <= 64 else f"2**{value.bit_length() - 1}"
        return _replace(fields, path, value), f"{where}={text}"
    # Three times in four a change that keeps the type, else a value of another type.
    text = None
    keep_type = rnd.random() < 0.75
    if keep_type and type(node) is int:
        new = _int_value(rnd, node)
    elif keep_type and isinstance(node, bytes):
        new, text = _mutated_bytes(rnd, node)
    elif keep_type and isinstance(node, np.ndarray):
        new, text = _mutated_array(rnd, node)
    elif keep_type and isinstance(node, tuple):
        new, text = _mutated_sequence(rnd, node)
    elif keep_type and isinstance(node, str):
        new = rnd.choice(BIT_GENERATOR_NAMES)
    else:
        new = rnd.choice(OTHER_VALUES)
    return _replace(fields, path, new), f"{where}: {text or f'{new!r:.40}'}"


def _fingerprint(value: Any) -> str:
    """A digest of a fields tree that is the same in every process."""
    digest = hashlib.sha256()

    def feed(v: Any) -> None:
        if isinstance(v, dict):
            for key in sorted(v):
                digest.update(repr(key).encode())
                feed(v[key])
        elif isinstance(v, np.ndarray):
            digest.update(v.dtype.str.encode() + repr(v.shape).encode() + v.tobytes())
        else:
            digest.update(repr(v).encode())

    feed(value)
    return digest.hexdigest()


@st.composite
def mutants(draw, family: str) -> Mutant:
    """A valid state of ``family`` with one or two changes (see the module docstring).

    Hypothesis draws the valid state and a seed; the changes are then chosen uniformly with
    that seed, rather than with Hypothesis's bias towards the first choices, so a batch of
    mutants covers the kinds of change evenly."""
    fields = draw(VALID[family])
    # Hypothesis often repeats a drawn int next to a new state: seed with both.
    rnd = random.Random(f"{draw(st.integers(0, 2**64 - 1))}:{_fingerprint(fields)}")
    how = []
    for _ in range(rnd.choice([1, 1, 2])):
        fields, text = _mutation(rnd, fields)
        how.append(text)
    return Mutant(family, fields, tuple(how))


MUTATIONS: dict[str, SearchStrategy[Mutant]] = {family: mutants(family) for family in VALID}

# -- whole snapshots -----------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True)

shapes = st.lists(st.integers(0, 4), max_size=3).map(tuple)
ndarrays = st.builds(
    lambda dtype, shape, seed: np.frombuffer(
        np.random.default_rng(seed).bytes(int(np.prod(shape)) * np.dtype(dtype).itemsize),
        dtype=dtype,
    ).reshape(shape),
    st.sampled_from(DTYPES),
    shapes,
    seeds,
)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # any size: BIGINT beyond 64 bits
    | floats
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | ndarrays,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
metadata = st.builds(
    lambda step, epoch, tags, metrics, world: rngvault.Metadata(
        step=step,
        epoch=epoch,
        tags=tuple(tags),
        metrics=metrics,
        rank=world[0],
        world_size=world[1],
    ),
    st.none() | st.integers(),
    st.none() | st.integers(),
    st.lists(st.text(max_size=10), max_size=3),
    st.dictionaries(
        st.text(max_size=8),
        st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False)
        | st.text(max_size=8)
        | st.booleans(),
        max_size=3,
    ),
    st.integers(1, 1024).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))),
)
snapshots = st.builds(
    lambda states, metadata, environment, probes, created: rngvault.Snapshot(
        states=states, metadata=metadata, environment=environment, probes=probes, created=created
    ),
    st.dictionaries(names, states, max_size=4),
    metadata,
    st.dictionaries(st.text(max_size=10), values, max_size=4),
    st.dictionaries(names, values, max_size=2),
    st.floats(0, 2**40),
)
properties = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
