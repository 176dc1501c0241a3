"""Validation time is bounded: any snapshot decode accepts is validated in at most 50 ms.

A snapshot holds at most ``MAX_STATES`` generators, and each family's valid space has a
largest, slowest-to-check shape (the seed sequence at its limits, keys whose only set word
is the last one, so "not all zero" scans them all, DataLoaders with both generators). The
tests build each of those shapes ``MAX_STATES`` times and time every family's validate()
over them, as decode calls it, in CPU time (``time.process_time``, best of 5, so a busy
machine does not fail them). Run with ``-s`` to see the times.
"""

from __future__ import annotations

import gc
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import rngvault
import rngvault._format
from rngvault.families import families
from tests._states import mt_key_is_stuck, torch_state_bytes

MAX_STATES = getattr(rngvault._format, "MAX_STATES", 4096)
BUDGET_S = 0.050
RESTORE_BUDGET_S = 0.020  # "well under" the validation budget

# The key that is slowest to find not all zero (and not stuck): only its last word is set.
LAST_WORD_KEY = np.zeros(624, dtype=np.uint64)
LAST_WORD_KEY[-1] = 2**32 - 1
TORCH_STATE = torch_state_bytes(2**64 - 1, 1, 624, LAST_WORD_KEY, -1.5, 0.25)
MAX_SEED_SEQ_TUPLE = {
    "entropy": (2**128 - 1,) * 64,
    "spawn_key": (2**64 - 1,) * 64,
    "pool_size": 256,
    "n_children_spawned": 2**32 - 1,
}
MAX_SEED_SEQ_INT = {**MAX_SEED_SEQ_TUPLE, "entropy": 2**1024 - 1}
U64S = np.full(4, 2**64 - 1, dtype=np.uint64)


def mt19937(seq: dict[str, Any]) -> dict[str, Any]:
    return {
        "bit_generator": "MT19937",
        "state": {"key": LAST_WORD_KEY.astype(np.uint32), "pos": 624},
        "seed_seq": seq,
    }


def philox(seq: dict[str, Any]) -> dict[str, Any]:
    return {
        "bit_generator": "Philox",
        "state": {"counter": U64S.copy(), "key": U64S[:2].copy()},
        "buffer": U64S.copy(),
        "buffer_pos": 4,
        "has_uint32": 1,
        "uinteger": 2**32 - 1,
        "seed_seq": seq,
    }


def pcg64(seq: dict[str, Any]) -> dict[str, Any]:
    return {
        "bit_generator": "PCG64DXSM",
        "state": {"state": 2**128 - 1, "inc": 2**128 - 1},
        "has_uint32": 1,
        "uinteger": 2**32 - 1,
        "seed_seq": seq,
    }


def stateful_dataloader() -> dict[str, Any]:
    """A multi-worker StatefulDataLoader state, as many whole workers as MAX_ENTRIES allows:
    the sampler generator at both the one-process and the main-process path, and workers
    whose dataset states are lists (their items' keys are checked in order) beside counters
    (each checked)."""
    from rngvault.families import stateful_dataloader as sdl

    main = ("_snapshot", "_main_snapshot")
    sampler = ("_sampler_iter_state", "sampler_iter_state")
    generator = ("uint8", (len(TORCH_STATE),), TORCH_STATE)
    head = [
        ((), "dict", None),
        (("_snapshot",), "dict", None),
        (("_snapshot", "_snapshot_step"), "int", 2**63 - 1),
        (("_snapshot", "_last_yielded_worker_id"), "int", 0),
        (main, "dict", None),
        ((*main, "_num_workers"), "int", 1),  # set below
        ((*main, sampler[0]), "dict", None),
        ((*main, sampler[0], "samples_yielded"), "int", 2**64 - 1),
        ((*main, *sampler), "dict", None),
        ((*main, *sampler, "yielded"), "int", 2**64 - 1),
        ((*main, *sampler, "generator"), "tensor", generator),
        ((*main, "_index_sampler_state"), "none", None),
        ((*main, "_sampler_iter_yielded"), "int", 2**64 - 1),
        ((*main, "_IterableDataset_len_called"), "none", None),
        ((*main, "_shared_seed"), "int", 2**64 - 1),
        ((*main, "_base_seed"), "int", 2**63 - 1),  # the range torch draws it from
        (("_snapshot", "_worker_snapshots"), "dict", None),
    ]
    tail = [
        (("_steps_since_snapshot",), "int", 2**64 - 1),
        (("_iterator_finished",), "bool", False),
        ((sampler[0],), "dict", None),
        (sampler, "dict", None),
        ((*sampler, "generator"), "tensor", generator),
    ]
    workers: list[tuple[Any, ...]] = []
    while True:
        worker = ("_snapshot", "_worker_snapshots", f"worker_{len(workers) // 7}")
        entries = [
            (worker, "dict", None),
            ((*worker, "worker_id"), "int", len(workers) // 7),
            ((*worker, "fetcher_state"), "none", None),
            ((*worker, "yielded"), "int", 2**64 - 1),
            ((*worker, "dataset_state"), "list", None),
            ((*worker, "dataset_state", 0), "int", 2**64 - 1),
            ((*worker, "dataset_state", 1), "int", 2**64 - 1),
        ]
        if len(head) + len(workers) + len(entries) + len(tail) > sdl.MAX_ENTRIES:
            break  # whole workers only: each holds the keys torchdata reads
        workers += entries
    count = sum(len(path) == 3 for path, _kind, _value in workers)
    head[5] = ((*main, "_num_workers"), "int", count)
    return {"entries": tuple(head + workers + tail)}


# The largest valid state of each family (several for numpy.bitgen): (family, fields).
WORST: dict[str, tuple[str, dict[str, Any]]] = {
    "python": (
        "python",
        {"key": tuple(int(w) for w in LAST_WORD_KEY), "index": 624, "gauss_next": -1.5},
    ),
    "numpy.legacy": (
        "numpy.legacy",
        {"key": LAST_WORD_KEY.astype(np.uint32), "pos": 624, "has_gauss": 1, "gauss": -1.5},
    ),
    "numpy.bitgen-MT19937-entropy-words": ("numpy.bitgen", mt19937(MAX_SEED_SEQ_TUPLE)),
    "numpy.bitgen-MT19937-entropy-int": ("numpy.bitgen", mt19937(MAX_SEED_SEQ_INT)),
    "numpy.bitgen-Philox-entropy-words": ("numpy.bitgen", philox(MAX_SEED_SEQ_TUPLE)),
    "numpy.bitgen-PCG64DXSM-entropy-words": ("numpy.bitgen", pcg64(MAX_SEED_SEQ_TUPLE)),
    "torch.cpu": ("torch.cpu", {"state": TORCH_STATE}),
    "torch.cuda": ("torch.cuda", {"state": struct.pack("<QQ", 2**64 - 1, 2**64 - 4)}),
    "dataloader": (
        "dataloader",
        {
            "generator": TORCH_STATE,
            "sampler_generator": TORCH_STATE,
            "sampler": {"seed": 2**63, "epoch": 2**63 - 1},  # seed + epoch = 2**64 - 1
            # mid-epoch: three more CPU states, those the epoch started from
            "epoch": {
                "batches": 2**63 - 1,
                "generator": TORCH_STATE,
                "sampler_generator": TORCH_STATE,
                "global": TORCH_STATE,
                "unsupported": None,
            },
        },
    ),
    "torchdata.stateful_dataloader": ("torchdata.stateful_dataloader", stateful_dataloader()),
}


def best_of_5(run: Callable[[], object]) -> float:
    """The least CPU time of five runs of ``run``, in seconds, with the garbage collector
    off while each runs (as ``timeit`` does: a full collection walks every object of the
    test process, which is not validation's cost)."""
    times = []
    for _ in range(5):
        gc.collect()
        gc.disable()
        try:
            start = time.process_time()
            run()
            times.append(time.process_time() - start)
        finally:
            gc.enable()
    return min(times)


def test_the_worst_shapes_cover_the_registry_and_are_valid():
    """Every family has a worst shape here, and each is valid (so decode accepts it)."""
    assert {family for family, _fields in WORST.values()} == set(families())
    assert not mt_key_is_stuck(LAST_WORD_KEY)
    for family, fields in WORST.values():
        families()[family].validate(fields)


@pytest.mark.parametrize("shape", list(WORST))
def test_a_snapshot_of_max_states_of_the_largest_shape_validates_within_50_ms(shape):
    """A snapshot of as many copies of a family's largest valid state as one may hold
    (MAX_STATES, or the family's own ``max_states``), decoded (so every state is its own
    objects, as from the wire), is validated state by state, as decode does, in at most
    50 ms of CPU time."""
    family_name, fields = WORST[shape]
    count = min(MAX_STATES, families()[family_name].max_states or MAX_STATES)
    states = {f"g{i}": rngvault.State(family_name, fields) for i in range(count)}
    decoded = rngvault.decode(rngvault.encode(rngvault.Snapshot(states, created=0.0)))
    assert len(decoded.states) == count
    validate = families()[family_name].validate
    all_fields = [state.fields for state in decoded.states.values()]

    def validate_all() -> None:
        for each in all_fields:
            validate(each)

    took = best_of_5(validate_all)
    message = (
        f"validating {count} x {shape}: {took * 1000:.1f} ms of CPU "
        f"({took / count * 1e6:.1f} us each; budget {BUDGET_S * 1000:.0f} ms)"
    )
    print(message)
    assert took <= BUDGET_S, message


@pytest.mark.parametrize(
    "family_name", [name for name, family in families().items() if family.max_states]
)
def test_more_states_of_a_family_than_its_max_states_are_refused(family_name):
    """Encode refuses one state over a family's ``max_states``, and decode refuses such a
    body (forged by encoding with the bound lifted) before validating the extra state."""
    family = families()[family_name]
    fields = next(fields for name, fields in WORST.values() if name == family_name)
    states = {f"g{i}": rngvault.State(family_name, fields) for i in range(family.max_states + 1)}
    snapshot = rngvault.Snapshot(states, created=0.0)
    with pytest.raises(rngvault.EncodeError, match=f"at most {family.max_states} {family_name}"):
        rngvault.encode(snapshot)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rngvault._format, "_check_family_counts", lambda states: None)
        data = rngvault.encode(snapshot)
    with pytest.raises(rngvault.DecodeError, match=f"more than {family.max_states}"):
        rngvault.decode(data)


def test_a_snapshot_of_more_than_max_states_is_refused():
    """The 50 ms bound holds only if decode refuses more than MAX_STATES generators (and
    encode will not write them)."""
    from tests.test_format import over_max_states

    with pytest.raises(rngvault.DecodeError, match="at most"):
        rngvault.decode(over_max_states())


BITGEN_SHAPES = [shape for shape, (family, _fields) in WORST.items() if family == "numpy.bitgen"]


@pytest.mark.parametrize("shape", BITGEN_SHAPES)
def test_restoring_the_largest_seed_sequence_takes_well_under_50_ms(shape):
    """The slowest valid state to restore, a bit generator whose seed sequence is at every
    limit (numpy mixes it into a pool on construction), is restored in under 20 ms of CPU."""
    _family, fields = WORST[shape]
    family = families()["numpy.bitgen"]
    # A fresh generator for each restore (its seed sequence differs from the state's, so
    # the restore has to build the state's one), made outside the timed part.
    targets = [getattr(np.random, fields["bit_generator"])() for _ in range(6)]
    family.restore(targets.pop(), fields)  # once first: numpy's lazy set-up is not the state's
    fresh = iter(targets)
    took = best_of_5(lambda: family.restore(next(fresh), fields))
    message = (
        f"restoring {shape}: {took * 1000:.2f} ms of CPU (budget {RESTORE_BUDGET_S * 1000:.0f} ms)"
    )
    print(message)
    assert took <= RESTORE_BUDGET_S, message
    for target in targets:
        assert target.seed_seq.pool_size == 256
        assert target.seed_seq.spawn_key == fields["seed_seq"]["spawn_key"]
