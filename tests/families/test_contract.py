"""The contract every generator family keeps, checked over the registry (rngvault.families).

For each family, with states drawn from its valid space and mutants of them
(tests/_states.py):

- a valid state validates and survives encode/decode;
- valid states restore, in two fresh interpreters, to the same next 1,000 outputs; a field
  the restore missed would show there as a disagreement, since each process starts from a
  generator seeded differently, and an out-of-bounds read as a crash or a disagreement;
- a mutated state is refused by ``validate`` with a StateError naming the field, or is
  accepted and restores deterministically in the same way;
- known holes (states the generator's own implementation cannot take) stay closed.

The two interpreters each decode one snapshot file per batch with ``rngvault.decode`` (so
validation runs), restore every state with ``rngvault.restore`` into a fresh object of the
family, draw, and print a SHA-256 per state. A state whose restore and draws take longer
than PER_STATE_LIMIT_S kills its process (faulthandler), naming the state.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import rngvault
from rngvault.families import families
from tests._states import MUTATIONS, STUCK_WORDS, VALID, Mutant, torch_state_bytes
from tests.conftest import ROOT, python_env

FAMILIES = sorted(families())
TORCH_FAMILIES = {"torch.cpu", "torch.cuda", "dataloader", "torchdata.stateful_dataloader"}
VALID_BATCH = 40  # valid states per family for the two-process comparison
MUTANTS = 300  # mutants drawn per family
PER_STATE_LIMIT_S = 5  # restore + draws of one state, in a child process
HYPOTHESIS_SEED = 20240607


def family_params(*, cuda_needs_gpu: bool) -> list[Any]:
    """Every registered family; with ``cuda_needs_gpu``, torch.cuda is marked ``cuda``."""
    return [
        pytest.param(name, marks=pytest.mark.cuda)
        if cuda_needs_gpu and name == "torch.cuda"
        else name
        for name in FAMILIES
    ]


def draw_batch(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` values from ``strategy``, the same ones on every run (a fixed seed)."""
    found: list[Any] = []

    @seed(HYPOTHESIS_SEED)
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found


# -- the child process ---------------------------------------------------------------------

CHILD = r"""
import faulthandler, hashlib, json, os, struct, sys
import numpy as np
import rngvault

path, family, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
if family in ("torch.cpu", "torch.cuda", "dataloader", "torchdata.stateful_dataloader"):
    import torch
    import torch.utils.data as tud
    torch.set_num_threads(1)


def os_seed():
    return int.from_bytes(os.urandom(8), "little")


def restore(name, target):
    # One state at a time, through the public API: validation, target check, apply, verify.
    single = rngvault.Snapshot({name: snapshot.states[name]})
    rngvault.restore(single, {name: target}, include_globals=False)


def torch_draws(g, device="cpu"):
    # Small randn calls go through the generator's double and float normal caches.
    draws = [
        torch.randn(1, generator=g, dtype=torch.float64, device=device),
        torch.randn(1, generator=g, device=device),
        torch.randint(0, 2**31, (1000,), generator=g, device=device),
        torch.rand(4, generator=g, dtype=torch.float64, device=device),
    ]
    return [d.cpu().numpy().tobytes() for d in draws]


def python(name, fields):
    import random
    r = random.Random(os_seed())
    restore(name, r)
    # gauss() first: it returns the cached gauss_next.
    head = struct.pack("<dd", r.gauss(0.0, 1.0), r.random())
    bits = struct.pack("<1000Q", *(r.getrandbits(32) for _ in range(1000)))
    # normalvariate() loops until two draws pass a test: forever if the key is stuck at 0.
    return [head, bits, struct.pack("<d", r.normalvariate(0.0, 1.0))]


def legacy(name, fields):
    rs = np.random.RandomState(os_seed() % 2**32)
    restore(name, rs)
    # standard_normal() first: it returns the cached gauss.
    normal = np.float64(rs.standard_normal()).tobytes()
    return [normal, rs.randint(0, 2**32, 1000, dtype=np.uint64).tobytes()]


def bitgen(name, fields):
    bg = getattr(np.random, fields["bit_generator"])(os_seed())
    restore(name, bg)
    # 32-bit draws use the buffered half-word; random_raw the raw stream; spawn() the
    # restored seed sequence.
    parts = [np.random.Generator(bg).integers(0, 2**32, 3, dtype=np.uint32).tobytes()]
    parts.append(bg.random_raw(1000).tobytes())
    # The ziggurat's tail loops forever if the stream is stuck at 0.
    parts.append(np.random.Generator(bg).standard_normal(4).tobytes())
    seq = bg.seed_seq
    parts.append(repr(seq is None).encode())
    if seq is not None:
        parts += [child.generate_state(8).tobytes() for child in seq.spawn(2)]
    return parts


def fresh_torch(device="cpu"):
    g = torch.Generator(device)
    g.manual_seed(os_seed())
    return g


def torch_cpu(name, fields):
    g = fresh_torch()
    restore(name, g)
    return torch_draws(g)


def torch_cuda(name, fields):
    g = fresh_torch("cuda")
    restore(name, g)
    return torch_draws(g, "cuda")


def dataloader(name, fields):
    data = list(range(10))
    generator = None if fields["generator"] is None else fresh_torch()
    if fields["sampler"] is not None:
        sampler = tud.DistributedSampler(data, num_replicas=2, rank=0, seed=os_seed() % 2**32)
        if fields["sampler_generator"] is not None:
            sampler.generator = fresh_torch()
    elif fields["sampler_generator"] is not None:
        sampler = tud.RandomSampler(data, generator=fresh_torch())
    else:
        sampler = tud.RandomSampler(data, generator=generator)
    loader = tud.DataLoader(data, batch_size=4, sampler=sampler, generator=generator)
    restore(name, loader)
    # A loader without a generator of its own draws from the global one, which is not
    # part of its state: fix it, as a restore of the globals would.
    torch.manual_seed(0)
    try:
        order = repr([int(i) for batch in loader for i in batch])
    except Exception as exc:  # e.g. a DistributedSampler whose seed + epoch overflows
        order = f"iter() raised {type(exc).__name__}: {exc}"
    parts = [order.encode()]
    drawn = []
    for g in (loader.generator, getattr(sampler, "generator", None)):
        if g is not None and not any(g is d for d in drawn):
            parts += torch_draws(g)
            drawn.append(g)
    return parts


def stateful_dataloader(name, fields):
    import warnings
    warnings.filterwarnings("ignore")
    from torchdata.stateful_dataloader import StatefulDataLoader
    data = list(range(40))
    loader = StatefulDataLoader(data, batch_size=3, shuffle=True, generator=fresh_torch())
    restore(name, loader)
    try:  # the rest of the epoch, and the next one
        order = repr([[int(i) for batch in loader for i in batch] for _ in range(2)])
    except Exception as exc:
        order = f"iter() raised {type(exc).__name__}: {exc}"
    return [order.encode(), *torch_draws(loader.generator)]


OUTPUTS = {
    "python": python,
    "numpy.legacy": legacy,
    "numpy.bitgen": bitgen,
    "torch.cpu": torch_cpu,
    "torch.cuda": torch_cuda,
    "dataloader": dataloader,
    "torchdata.stateful_dataloader": stateful_dataloader,
}

snapshot = rngvault.decode(open(path, "rb").read())
results = {}
for name, state in snapshot.states.items():
    print(name, file=sys.stderr, flush=True)  # the last name printed is the one running
    faulthandler.dump_traceback_later(limit, exit=True)
    try:
        parts = OUTPUTS[family](name, state.fields)
        results[name] = hashlib.sha256(b"".join(parts)).hexdigest()
    except Exception as exc:
        results[name] = f"error: {type(exc).__name__}: {exc}"[:400]
    faulthandler.cancel_dump_traceback_later()
print(json.dumps(results))
"""

DRAWN_IN_CHILD = {
    "python",
    "numpy.legacy",
    "numpy.bitgen",
    "torch.cpu",
    "torch.cuda",
    "dataloader",
    "torchdata.stateful_dataloader",
}


def _exit_reason(code: int) -> str:
    if code < 0:
        import signal

        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


def outputs_in_two_processes(
    tmp_path: Path, family: str, batch: Mapping[str, Mapping[str, Any]], what: Mapping[str, str]
) -> None:
    """Write ``batch`` (name -> fields) as one snapshot; in two fresh interpreters, decode,
    restore and draw; assert both exit 0, no restore or draw fails, and every state's
    outputs agree. ``what`` says, per name, what the state is (for messages)."""
    assert family in DRAWN_IN_CHILD, f"no draws for family {family!r} in the child process"
    if family in TORCH_FAMILIES:
        pytest.importorskip("torch")
    path = tmp_path / f"{family}.msgpack"
    states = {name: rngvault.State(family, dict(fields)) for name, fields in batch.items()}
    path.write_bytes(rngvault.encode(rngvault.Snapshot(states, created=0.0)))
    command = [sys.executable, "-c", CHILD, str(path), family, str(PER_STATE_LIMIT_S)]
    children = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env=python_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    finished = []
    try:
        for child in children:
            out, err = child.communicate(timeout=120 + PER_STATE_LIMIT_S * len(batch))
            finished.append((child.returncode, out, err))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    results = []
    for code, out, err in finished:
        started = [line for line in err.splitlines() if line in batch]
        running = started[-1] if started else None
        said = "\n".join(line for line in err.splitlines() if line not in batch)
        assert code == 0, (
            f"a child process {_exit_reason(code)} while restoring or drawing from "
            f"{running!r} ({what.get(running or '', '?')}):\n{said[-3000:]}"
        )
        results.append(json.loads(out.strip().splitlines()[-1]))
    first, second = results
    assert set(first) == set(second) == set(batch)
    failed = {n: first[n] for n in batch if first[n].startswith("error")}
    assert not failed, "accepted states failed to restore or draw:\n" + "\n".join(
        f"  {n} ({what[n]}): {message}" for n, message in failed.items()
    )
    differ = [n for n in batch if first[n] != second[n]]
    assert not differ, (
        f"{len(differ)} of {len(batch)} states gave different outputs in two processes:\n"
        + "\n".join(f"  {n}: {what[n]}" for n in differ[:20])
    )


def describe(family: str, fields: Mapping[str, Any]) -> str:
    try:
        return families()[family].describe(fields)
    except Exception as exc:
        return f"(describe failed: {type(exc).__name__})"


# -- the registry --------------------------------------------------------------------------


def test_every_registered_family_has_valid_and_mutation_strategies():
    """A family cannot be added without strategies for its valid states and its mutants, and
    the strategies name no family the registry lacks."""
    assert set(VALID) == set(families()), "tests/_states.py VALID and the registry differ"
    assert set(MUTATIONS) == set(families()), "tests/_states.py MUTATIONS and the registry differ"
    assert set(DRAWN_IN_CHILD) == set(families()), "the contract's child process lacks a family"


# -- a) valid states -----------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_states_validate_and_survive_encode_decode(name, data):
    """Every state drawn from a family's valid space passes its validate() and comes back
    from encode/decode (which validates again) equal, with a describe() line."""
    fields = data.draw(VALID[name], label="fields")
    families()[name].validate(fields)
    snapshot = rngvault.Snapshot({"s": rngvault.State(name, fields)}, created=0.0)
    decoded = rngvault.decode(rngvault.encode(snapshot))
    assert decoded.states["s"] == snapshot.states["s"]
    assert isinstance(decoded.states["s"].describe(), str)


# -- b) determinism across processes -------------------------------------------------------


@functools.cache
def valid_batch(name: str) -> list[dict[str, Any]]:
    return draw_batch(VALID[name], VALID_BATCH)


@pytest.mark.parametrize("name", family_params(cuda_needs_gpu=True))
def test_valid_states_give_the_same_1000_outputs_in_two_fresh_processes(name, tmp_path):
    """A batch of valid states, decoded and restored in two new interpreters into generators
    seeded differently, gives the same next 1,000 outputs (plus cached normals, buffered
    half-words and seed-sequence children) in both, and neither process crashes."""
    batch = {f"s{i}": fields for i, fields in enumerate(valid_batch(name))}
    what = {n: describe(name, fields) for n, fields in batch.items()}
    outputs_in_two_processes(tmp_path, name, batch, what)


# -- c) mutated states ---------------------------------------------------------------------


@functools.cache
def mutant_verdicts(name: str) -> tuple[list[Mutant], list[tuple[Mutant, BaseException]]]:
    """The family's mutants, split into those validate() accepts and the (mutant, exception)
    pairs it refuses (validate's exceptions of any type)."""
    accepted, refused = [], []
    validate = families()[name].validate
    for mutant in draw_batch(MUTATIONS[name], MUTANTS):
        try:
            validate(mutant.fields)
        except Exception as exc:
            refused.append((mutant, exc))
        else:
            accepted.append(mutant)
    return accepted, refused


@pytest.mark.parametrize("name", FAMILIES)
def test_mutated_states_are_refused_with_a_state_error_naming_the_field(name):
    """validate() refuses a corrupted state only with a StateError whose ``field`` names
    what is wrong: never a TypeError or other exception, never without a field."""
    _accepted, refused = mutant_verdicts(name)
    assert refused, "no mutant was refused: the mutations do not reach the checks"
    bad = [
        f"  {' + '.join(m.how)}: {type(exc).__name__}: {exc}"
        for m, exc in refused
        if not isinstance(exc, rngvault.StateError) or exc.field is None
    ]
    assert not bad, (
        f"{len(bad)} of {len(refused)} refusals are not a StateError naming a field:\n"
        + "\n".join(sorted(set(bad))[:25])
    )


@pytest.mark.parametrize("name", family_params(cuda_needs_gpu=True))
def test_accepted_mutants_give_the_same_outputs_in_two_fresh_processes(name, tmp_path):
    """Every mutant validate() accepts restores deterministically: the same outputs in two
    new interpreters, no crash, no hang, no failed restore."""
    accepted, _refused = mutant_verdicts(name)
    if not accepted:
        pytest.skip("no mutant was accepted")
    batch = {f"m{i}": m.fields for i, m in enumerate(accepted)}
    what = {f"m{i}": " + ".join(m.how) for i, m in enumerate(accepted)}
    outputs_in_two_processes(tmp_path, name, batch, what)


# -- d) holes that must stay closed ----------------------------------------------------------


def seeded_torch_state(left: int = 1, next_: int = 0) -> bytes:
    """A seeded torch CPU state with a random key and the given ``left`` and ``next``."""
    words = np.random.default_rng(7).integers(1, 2**32, 624, dtype=np.uint64)
    return torch_state_bytes(7, left, next_, words)


# (left, next) pairs torch's engine is never in: (624, 624) and (300, 624) read up to 623
# words past the key (other memory, different in each process); the others are positions
# no sequence of draws leads to.
IMPOSSIBLE_POSITIONS = [(624, 624), (2, 0), (1, 7), (300, 624), (624, 0), (1, 623)]


@pytest.mark.parametrize(("left", "next_"), IMPOSSIBLE_POSITIONS)
def test_torch_cpu_state_whose_left_and_next_disagree_is_refused(left, next_):
    """``next`` must be 625 - ``left`` (or 0 with left 1, just seeded): other pairs make
    torch read words it should not, so validate refuses them naming ``left`` or ``next``."""
    with pytest.raises(rngvault.StateError) as refused:
        families()["torch.cpu"].validate({"state": seeded_torch_state(left, next_)})
    field = refused.value.field or ""
    assert field.startswith("state.") and ("next" in field or "left" in field), field


@pytest.mark.parametrize("key", ["generator", "sampler_generator"])
@pytest.mark.parametrize(("left", "next_"), IMPOSSIBLE_POSITIONS[:3])
def test_dataloader_generator_whose_left_and_next_disagree_is_refused(key, left, next_):
    """The same torch state inside a DataLoader state is refused, naming the generator."""
    fields = {"generator": None, "sampler_generator": None, "sampler": None}
    fields[key] = seeded_torch_state(left, next_)
    with pytest.raises(rngvault.StateError) as refused:
        families()["dataloader"].validate(fields)
    field = refused.value.field or ""
    assert field.startswith(key + ".") and ("next" in field or "left" in field), field


@pytest.mark.parametrize(("left", "next_"), [(1, 0), (624, 1), (1, 624), (300, 325)])
def test_torch_cpu_positions_torch_can_be_in_are_accepted(left, next_):
    """The positions manual_seed and the draws leave are accepted (the other side of the
    left/next rule)."""
    families()["torch.cpu"].validate({"state": seeded_torch_state(left, next_)})


VALID_EXAMPLES = {
    "python": {"key": (2**31,) + (0,) * 623, "index": 624, "gauss_next": None},
    "numpy.legacy": {"key": np.arange(624, dtype=np.uint32), "pos": 3, "has_gauss": 0, "gauss": 0},
    "numpy.bitgen": {
        "bit_generator": "PCG64",
        "state": {"state": 1, "inc": 3},
        "has_uint32": 0,
        "uinteger": 0,
        "seed_seq": {"entropy": 1, "spawn_key": (), "pool_size": 4, "n_children_spawned": 0},
    },
    "torch.cpu": {"state": seeded_torch_state()},
    "torch.cuda": {"state": bytes(16)},
    "dataloader": {"generator": None, "sampler_generator": None, "sampler": None},
    "torchdata.stateful_dataloader": {"entries": (((), "dict", None),)},
}
# A value that is not a map where a map belongs: (family, field, value).
NOT_MAPS = [
    ("numpy.bitgen", "state", None),
    ("numpy.bitgen", "state", 1.5),
    ("numpy.bitgen", "seed_seq", True),
    ("numpy.bitgen", "seed_seq", np.zeros((2, 2), np.uint32)),
    ("dataloader", "sampler", True),
    ("dataloader", "sampler", np.int64(-1)),
    ("dataloader", "sampler", np.zeros(3, np.uint8)),
]


def test_valid_examples_cover_the_registry():
    """The hand-written examples below exist for every family, and are valid."""
    assert set(VALID_EXAMPLES) == set(families())
    for name, fields in VALID_EXAMPLES.items():
        families()[name].validate(fields)


@pytest.mark.parametrize(("family", "key", "value"), NOT_MAPS)
def test_a_non_map_where_a_map_belongs_is_a_state_error_naming_it(family, key, value):
    """validate() names the field (a TypeError here would escape decode as a TypeError, not
    a DecodeError), and decode refuses the snapshot with a DecodeError."""
    fields = {**VALID_EXAMPLES[family], key: value}
    with pytest.raises(rngvault.StateError) as refused:
        families()[family].validate(fields)
    assert (refused.value.field or "").startswith(key), refused.value.field
    snapshot = rngvault.Snapshot({"g": rngvault.State(family, fields)}, created=0.0)
    with pytest.raises(rngvault.DecodeError):
        rngvault.decode(rngvault.encode(snapshot))


@pytest.mark.parametrize("family", FAMILIES)
def test_an_unknown_top_level_field_is_refused_naming_a_field(family):
    """A state with a field no version wrote is refused with a StateError that names a field,
    like every other refusal."""
    with pytest.raises(rngvault.StateError) as refused:
        families()[family].validate({**VALID_EXAMPLES[family], "extra": 0})
    assert refused.value.field is not None, str(refused.value)


def mt_fields(family: str, word0: int) -> tuple[dict[str, Any], str]:
    """A state of an MT19937 family whose key is ``word0`` followed by 623 zero words, and
    the field that holds the key."""
    key = np.zeros(624, dtype=np.uint64)
    key[0] = word0
    torch_state = torch_state_bytes(1, 624, 1, key)
    return {
        "python": ({"key": tuple(int(w) for w in key), "index": 624, "gauss_next": None}, "key"),
        "numpy.legacy": (
            {"key": key.astype(np.uint32), "pos": 624, "has_gauss": 0, "gauss": 0.0},
            "key",
        ),
        "numpy.bitgen": (
            {
                "bit_generator": "MT19937",
                "state": {"key": key.astype(np.uint32), "pos": 624},
                "seed_seq": None,
            },
            "state.key",
        ),
        "torch.cpu": ({"state": torch_state}, "state"),
        "dataloader": (
            {"generator": torch_state, "sampler_generator": None, "sampler": None},
            "generator",
        ),
    }[family]


MT_FAMILIES = ["python", "numpy.legacy", "numpy.bitgen", "torch.cpu", "dataloader"]


@pytest.mark.parametrize("word0", STUCK_WORDS)
@pytest.mark.parametrize("family", MT_FAMILIES)
def test_mt19937_key_stuck_at_zero_is_refused(family, word0):
    """The twist reads only the top bit of word 0: a key with nothing else set outputs zeros
    after its next twist, forever (random.normalvariate and numpy's standard_normal then
    never return), so it is refused like an all-zero key, naming the key's field."""
    fields, field = mt_fields(family, word0)
    with pytest.raises(rngvault.StateError) as refused:
        families()[family].validate(fields)
    assert (refused.value.field or "").startswith(field), refused.value.field


@pytest.mark.parametrize("family", MT_FAMILIES)
def test_mt19937_key_with_only_the_top_bit_of_word_0_is_accepted(family):
    """The key CPython and numpy seed with (word 0 = 0x80000000) is not stuck, and valid."""
    fields, _field = mt_fields(family, 2**31)
    families()[family].validate(fields)


def bitgen_with_seed_seq(**seq: Any) -> dict[str, Any]:
    base = {"entropy": 1, "spawn_key": (), "pool_size": 4, "n_children_spawned": 0}
    return {
        "bit_generator": "PCG64",
        "state": {"state": 1, "inc": 3},
        "has_uint32": 0,
        "uinteger": 0,
        "seed_seq": {**base, **seq},
    }


HUGE_SEED_SEQS = {
    "entropy-200KB-int": ("entropy", 2 ** (8 * 200_000)),
    "entropy-100000-tuple": ("entropy", tuple(range(100_000))),
    "spawn_key-1MiB": ("spawn_key", (2**64 - 1,) * 2**17),
    "pool_size-65536": ("pool_size", 2**16),
    "entropy-2**1024": ("entropy", 2**1024),
    "entropy-65-words": ("entropy", (1,) * 65),
    "entropy-word-2**128": ("entropy", (2**128,)),
    "spawn_key-65": ("spawn_key", (1,) * 65),
    "spawn_key-2**64": ("spawn_key", (2**64,)),
    "pool_size-257": ("pool_size", 257),
}


@pytest.mark.parametrize(("key", "value"), list(HUGE_SEED_SEQS.values()), ids=list(HUGE_SEED_SEQS))
def test_seed_sequence_too_large_to_restore_quickly_is_refused_quickly(key, value):
    """numpy builds a SeedSequence in time growing with its entropy and spawn key and with
    the square of its pool size (seconds to minutes for these); validate refuses each one
    past the limits (entropy < 2**1024 or at most 64 words < 2**128, a spawn key of at most
    64 u64, pool size 4..256) within 50 ms of CPU, naming the field."""
    fields = bitgen_with_seed_seq(**{key: value})
    start = time.process_time()
    with pytest.raises(rngvault.StateError) as refused:
        families()["numpy.bitgen"].validate(fields)
    took = time.process_time() - start
    assert (refused.value.field or "").startswith(f"seed_seq.{key}"), refused.value.field
    assert took < 0.05, f"refusing took {took * 1000:.1f} ms"


def test_seed_sequence_at_its_limits_is_accepted():
    """The largest seed sequences inside the limits are valid."""
    validate = families()["numpy.bitgen"].validate
    validate(bitgen_with_seed_seq(entropy=2**1024 - 1, spawn_key=(2**64 - 1,) * 64, pool_size=256))
    validate(bitgen_with_seed_seq(entropy=(2**128 - 1,) * 64, n_children_spawned=2**32 - 1))
