"""MT19937 conversions between Python ``random``, NumPy and PyTorch's CPU generator.

Python's ``random``, NumPy's ``RandomState`` and ``MT19937`` bit generator, and torch's CPU
generator all run MT19937: 624 32-bit words and an index into them. Copying the words and
the index from one to another makes the raw 32-bit streams identical::

    import random, numpy as np
    from rngvault import convert

    rs = np.random.RandomState()
    convert.apply(convert.to_numpy_legacy(random.Random(42)), rs)
    random.Random(42).getrandbits(32) == rs.randint(0, 2**32, dtype=np.uint32)   # True

Each ``to_*`` function takes a ``State`` (of family ``python``, ``numpy.legacy``,
``numpy.bitgen`` with an MT19937 bit generator, or ``torch.cpu``) or a live generator of one
of those kinds, and returns a ``State`` of the target family. A state already in the target
family is returned as it is. Cached normals (Python's ``gauss_next``, NumPy's ``gauss``,
torch's normal caches) are dropped: each library computes normals its own way, so they
would not match anyway. docs/seeding.md lists which draws match across libraries.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from rngvault._errors import StateError
from rngvault._snapshot import State
from rngvault.families import Family, family_of, get_family, torch_cpu

__all__ = ["apply", "to_numpy_legacy", "to_numpy_mt19937", "to_python", "to_torch_cpu"]

N = 624


def _checked_family(state: State) -> Family:
    """The family of ``state``, after validating its fields (StateError if invalid)."""
    family = get_family(state.family)
    if family is None:
        raise StateError(f"unknown generator family {state.family!r}", field="family")
    family.validate(state.fields)
    return family


def _as_state(source: Any) -> State:
    """``source`` if it is a State (validated), else the captured state of a live generator."""
    if isinstance(source, State):
        _checked_family(source)
        return source
    family = family_of(source)
    return State(family.name, family.capture(source))


def torch_index(state: bytes) -> int:
    """The MT index (0..624) of a torch CPU state, in Python's and NumPy's convention.

    torch counts down: ``left`` outputs remain before the next twist and ``next`` is the
    word to read. ``left == 1`` means "twist before the next output" (index 624, whatever
    ``next`` holds); otherwise ``next`` must be ``625 - left``, which is what drawing and
    seeding produce. A state set by hand with another ``next`` has no equivalent index.
    """
    p = torch_cpu.parse(state)
    left, next_ = p["left"], p["next"]
    index = 625 - left
    if left != 1 and next_ != index:
        raise StateError(
            f"next is {next_} but left is {left}: torch would read word {next_} and twist "
            f"after {left - 1} more outputs, which no MT19937 index describes (expected "
            f"next = {index})",
            field="state.next",
            value=next_,
        )
    return index


def mt_words(source: Any) -> tuple[np.ndarray, int]:
    """The MT19937 key (a fresh uint32[624] array) and index (0..624) of an MT19937 state.

    Index 624 means "twist before the next output", as in Python and NumPy.
    """
    state = _as_state(source)
    fields = state.fields
    if state.family == "python":
        return np.array(fields["key"], dtype=np.uint32), int(fields["index"])
    if state.family == "numpy.legacy":
        return np.array(fields["key"], dtype=np.uint32), int(fields["pos"])
    if state.family == "numpy.bitgen":
        if fields["bit_generator"] != "MT19937":
            raise StateError(
                f"a {fields['bit_generator']} bit generator is not MT19937 and has no "
                "equivalent in Python or torch",
                field="bit_generator",
                value=fields["bit_generator"],
            )
        return np.array(fields["state"]["key"], dtype=np.uint32), int(fields["state"]["pos"])
    if state.family == "torch.cpu":
        raw = fields["state"]
        words = torch_cpu.parse(raw)["words"].astype(np.uint32)
        return words, torch_index(raw)
    hint = ""
    if state.family == "dataloader":
        hint = "; convert its generator instead: State('torch.cpu', {'state': fields['generator']})"
    raise StateError(
        f"a {state.family} state is not an MT19937 state{hint}", field="family", value=state.family
    )


def to_python(source: Any) -> State:
    """A ``python`` state (for ``random.Random``) with the same raw 32-bit stream."""
    state = _as_state(source)
    if state.family == "python":
        return state
    key, index = mt_words(state)
    return State("python", {"key": tuple(key.tolist()), "index": index, "gauss_next": None})


def to_numpy_legacy(source: Any) -> State:
    """A ``numpy.legacy`` state (for ``RandomState``) with the same raw 32-bit stream."""
    state = _as_state(source)
    if state.family == "numpy.legacy":
        return state
    key, index = mt_words(state)
    return State("numpy.legacy", {"key": key, "pos": index, "has_gauss": 0, "gauss": 0.0})


def to_numpy_mt19937(source: Any) -> State:
    """A ``numpy.bitgen`` MT19937 state (for ``np.random.MT19937`` or a Generator over one).

    The result carries no seed sequence, so a bit generator it is applied to keeps its own.
    """
    state = _as_state(source)
    if state.family == "numpy.bitgen" and state.fields["bit_generator"] == "MT19937":
        return state
    key, index = mt_words(state)
    return State(
        "numpy.bitgen",
        {"bit_generator": "MT19937", "state": {"key": key, "pos": index}, "seed_seq": None},
    )


def to_torch_cpu(source: Any, *, seed: int = 0) -> State:
    """A ``torch.cpu`` state (for a CPU ``torch.Generator``) with the same raw 32-bit stream.

    ``seed`` is what the generator reports as ``initial_seed()`` (torch keeps it beside the
    MT19937 state; it does not affect the stream).
    """
    if type(seed) is not int or not 0 <= seed < 2**64:
        raise StateError(f"seed {seed!r} is not an integer in 0..2**64-1", field="seed", value=seed)
    state = _as_state(source)
    if state.family == "torch.cpu":
        return state
    key, index = mt_words(state)
    if index == 0:
        # torch keeps at most 624 outputs before a twist (left <= 624); index 0 would need 625.
        # Drawing never leaves index 0 behind: only a state set by hand has it.
        raise StateError(
            "MT index 0 (all 624 words unread) has no torch equivalent: torch allows at most "
            "623 unread words before the next twist, so no torch state gives the same stream",
            field="index",
            value=0,
        )
    raw = bytearray(torch_cpu.STATE_SIZE)  # normal caches stay zero: not valid
    # Index 624 is written the way manual_seed leaves it: left 1, next 0.
    struct.pack_into("<QiiQ", raw, 0, seed, N + 1 - index, 1, index % N)
    np.frombuffer(raw, dtype="<u8", count=N, offset=24)[:] = key
    return State("torch.cpu", {"state": bytes(raw)})


def apply(state: State, target: Any) -> None:
    """Set ``target`` (a live generator) to ``state``, after checking both.

    Raises ``StateError`` when the state is invalid or ``target`` cannot take it.
    """
    family = _checked_family(state)
    family.check_target(target, state.fields)
    family.restore(target, state.fields)
