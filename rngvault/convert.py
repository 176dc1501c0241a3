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

from typing import Any

import numpy as np

from rngvault._errors import StateError
from rngvault._snapshot import State
from rngvault.families import Family, _torch, family_of, get_family

__all__ = ["apply", "to_numpy_legacy", "to_numpy_mt19937", "to_python", "to_torch_cpu"]


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


def mt_words(source: Any) -> tuple[np.ndarray, int]:
    """The MT19937 key (a fresh uint32[624] array) and index (0..624) of an MT19937 state.

    Index 624 means "twist before the next output", as in Python and NumPy.
    """
    state = _as_state(source)
    family = get_family(state.family)
    assert family is not None  # _as_state checked it
    if family.to_mt is None:
        hint = ""
        if state.family == "dataloader":
            hint = (
                "; convert its generator instead: State('torch.cpu', {'state': "
                "fields['generator']})"
            )
        raise StateError(
            f"a {state.family} state is not an MT19937 state{hint}",
            field="family",
            value=state.family,
        )
    return family.to_mt(state.fields)


def _convert(source: Any, target: str) -> State:
    """``source`` as a state of family ``target`` with the same raw 32-bit stream."""
    state = _as_state(source)
    if state.family == target:
        return state
    family = get_family(target)
    assert family is not None and family.from_mt is not None
    return State(target, family.from_mt(*mt_words(state)))


def to_python(source: Any) -> State:
    """A ``python`` state (for ``random.Random``) with the same raw 32-bit stream."""
    return _convert(source, "python")


def to_numpy_legacy(source: Any) -> State:
    """A ``numpy.legacy`` state (for ``RandomState``) with the same raw 32-bit stream."""
    return _convert(source, "numpy.legacy")


def to_numpy_mt19937(source: Any) -> State:
    """A ``numpy.bitgen`` MT19937 state (for ``np.random.MT19937`` or a Generator over one).

    The result carries no seed sequence, so a bit generator it is applied to keeps its own.
    """
    state = _as_state(source)
    if state.family == "numpy.bitgen" and state.fields["bit_generator"] == "MT19937":
        return state
    family = get_family("numpy.bitgen")
    assert family is not None and family.from_mt is not None
    return State("numpy.bitgen", family.from_mt(*mt_words(state)))


def to_torch_cpu(source: Any, *, seed: int = 0) -> State:
    """A ``torch.cpu`` state (for a CPU ``torch.Generator``) with the same raw 32-bit stream.

    ``seed`` is what the generator reports as ``initial_seed()`` (torch keeps it beside the
    MT19937 state; it does not affect the stream). MT index 0 (all 624 words unread) has no
    torch equivalent and is refused.
    """
    if type(seed) is not int or not 0 <= seed < 2**64:
        raise StateError(f"seed {seed!r} is not an integer in 0..2**64-1", field="seed", value=seed)
    state = _as_state(source)
    if state.family == "torch.cpu":
        return state
    return State("torch.cpu", {"state": _torch.cpu_from_mt(*mt_words(state), seed=seed)})


def apply(state: State, target: Any) -> None:
    """Set ``target`` (a live generator) to ``state``, after checking both.

    Raises ``StateError`` when the state is invalid or ``target`` cannot take it.
    """
    family = _checked_family(state)
    family.check_target(target, state.fields)
    family.restore(target, state.fields)
