"""Adding a family is one module and one registry line: a toy family, defined here alone and
registered at run time, goes through capture, the format, restore, diff, probes, JSON, the
Vault's listing and rank derivation with no other edit to rngvault."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rngvault
from rngvault import _distance, _probes
from rngvault._json import snapshot_to_json
from rngvault.families import Family, Fields, register, unregister
from rngvault.families import _fields as f

MULTIPLIER = 6364136223846793005
INCREMENT = 1442695040888963407
UNIT = "toy outputs"


class Lcg:
    """A 64-bit linear congruential generator: the smallest generator with a state."""

    def __init__(self, seed: int) -> None:
        self.x = seed % 2**64

    def next(self) -> int:
        self.x = (self.x * MULTIPLIER + INCREMENT) % 2**64
        return self.x


def _validate(fields: Mapping[str, Any]) -> None:
    f.check_keys(fields, {"x"})
    f.integer(fields, "x", 0, 2**64 - 1)


def _check_target(obj: Any, fields: Mapping[str, Any]) -> None:
    if not isinstance(obj, Lcg):
        raise rngvault.StateError(f"a toy state cannot be restored into a {type(obj).__name__}")


def _restore(obj: Lcg, fields: Mapping[str, Any]) -> None:
    obj.x = fields["x"]


def _probe(fields: Mapping[str, Any], _device: int | None) -> list[Any]:
    copy = Lcg(0)
    _restore(copy, fields)
    return [copy.next() for _ in range(3)]


def _distance_of(a: Mapping[str, Any], b: Mapping[str, Any], limit: int) -> _distance.Moved:
    steps = _distance.lcg_distance(a["x"], b["x"], MULTIPLIER, INCREMENT, bits=64)
    return _distance.by_sign(_distance.signed(steps, 2**64), UNIT)


def _derive(_fields: Mapping[str, Any], seq: np.random.SeedSequence) -> Fields:
    return {"x": int(seq.generate_state(2, np.uint64)[0])}


TOY = Family(
    name="toy.lcg",
    kind="Lcg",
    accepts=lambda obj: isinstance(obj, Lcg),
    capture=lambda obj: {"x": obj.x},
    validate=_validate,
    check_target=_check_target,
    restore=_restore,
    describe=lambda fields: f"LCG state {fields['x']:#018x}",
    probe=_probe,
    distance=_distance_of,
    unit=lambda fields: UNIT,
    derive=_derive,
)


@pytest.fixture
def toy() -> Iterator[Family]:
    register(TOY)
    try:
        yield TOY
    finally:
        unregister(TOY.name)


def test_capture_encode_decode_and_restore(toy: Family) -> None:
    """A registered family is captured, survives the format, and restores exactly."""
    generator = Lcg(7)
    snapshot = rngvault.capture({"toy": generator}, include_globals=False)
    assert snapshot.states["toy"].family == "toy.lcg"
    expected = [generator.next() for _ in range(5)]
    decoded = rngvault.decode(rngvault.encode(snapshot))
    assert decoded.states == snapshot.states and decoded.digest == snapshot.digest
    report = rngvault.restore(decoded, {"toy": generator}, include_globals=False)
    assert report.restored == ["toy"] and report.ok
    assert [generator.next() for _ in range(5)] == expected


def test_its_validation_guards_decode_and_restore(toy: Family) -> None:
    """A bad toy state is refused by decode and by restore, naming the field."""
    bad = rngvault.Snapshot({"toy": rngvault.State("toy.lcg", {"x": -1})})
    with pytest.raises(rngvault.DecodeError, match="'x'"):
        rngvault.decode(rngvault.encode(bad))
    target = Lcg(3)
    with pytest.raises(rngvault.RestoreError, match="'x'"):
        rngvault.restore(bad, {"toy": target}, include_globals=False)
    assert target.x == 3


def test_diff_gives_its_distance_in_its_unit(toy: Family) -> None:
    """diff() finds how many draws apart two toy states are, in the family's unit."""
    generator = Lcg(11)
    a = rngvault.capture({"toy": generator}, include_globals=False)
    for _ in range(1234):
        generator.next()
    b = rngvault.capture({"toy": generator}, include_globals=False)
    ahead, same = rngvault.diff(a, b)["toy"], rngvault.diff(a, a)["toy"]
    assert (ahead.status, ahead.distance, ahead.unit) == ("advanced", 1234, UNIT)
    assert (same.status, same.unit) == ("unchanged", UNIT)
    assert rngvault.diff(b, a)["toy"].distance == -1234


def test_probes_and_json_rendering(toy: Family) -> None:
    """Probes are its next draws from a copy; the JSON rendering shows its position."""
    generator = Lcg(5)
    states = rngvault.capture({"toy": generator}, include_globals=False).states
    probes = _probes.compute(states)
    twin = copy.deepcopy(generator)
    assert probes["toy"] == [twin.next() for _ in range(3)]
    assert generator.x == 5  # untouched
    assert _probes.check(states, probes)["toy"] == "ok"
    assert _probes.check(states, {"toy": [0, 0, 0]})["toy"].verdict is _probes.ProbeVerdict.DIFFERS
    rendered = snapshot_to_json(rngvault.Snapshot(states))["generators"]["toy"]
    assert rendered == {"family": "toy.lcg", "position": "LCG state 0x0000000000000005",
                        "state": {"x": 5}}  # fmt: skip


def test_vault_lists_restores_and_derives_ranks(toy: Family, tmp_path: Path) -> None:
    """Through a Vault: listed with its family, restored exactly, and derived
    deterministically for a rank the snapshot did not record."""
    generator = Lcg(9)
    with rngvault.Vault(tmp_path, run="team/toy", track_globals=False) as vault:
        vault.track(generator, "toy")
        vault.snapshot("s0", durable=True)
        expected = [generator.next() for _ in range(3)]
        [info] = vault.snapshots()
        assert info.generators == {"toy": "toy.lcg"}
        assert vault.restore("s0").restored == ["toy"]
        assert [generator.next() for _ in range(3)] == expected
    derived = []
    for _ in range(2):
        other = Lcg(0)
        with rngvault.Vault(
            tmp_path, run="team/toy2", rank=1, world_size=2, track_globals=False
        ) as vault:
            vault.track(other, "toy")
            report = vault.restore("s0", run="team/toy", remap="spawn")
        assert report.restored == ["toy"]
        derived.append(other.x)
    assert derived[0] == derived[1] != 9
