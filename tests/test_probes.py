"""Probes: the first draws of each generator, computed from a copy of its state."""

from __future__ import annotations

import random

import numpy as np
import pytest

import rngvault
from rngvault import _probes

torch = pytest.importorskip("torch", reason="torch is not installed")


def _states() -> dict[str, rngvault.State]:
    generators = {
        "py": random.Random(1),
        "legacy": np.random.RandomState(2),
        "pcg": np.random.default_rng(3),
        "philox": np.random.Generator(np.random.Philox(4)),
        "torch": torch.Generator().manual_seed(5),
    }
    return dict(rngvault.capture(generators, include_globals=False).states)


def test_probes_are_the_generators_next_draws_and_touch_nothing() -> None:
    """A probe equals what the live generator draws next; computing it does not move it."""
    rng = random.Random(1)
    states = rngvault.capture({"py": rng}, include_globals=False).states
    probe = _probes.compute(states)["py"]
    assert probe[:2] == [rng.random(), rng.random()]


def test_probes_cover_every_family_here() -> None:
    """Each family present gets a probe, and probes differ between generators."""
    probes = _probes.compute(_states())
    assert set(probes) == {"py", "legacy", "pcg", "philox", "torch"}
    assert len({tuple(p) for p in probes.values()}) == 5


def test_check_tells_ok_from_differs() -> None:
    """check() is "ok" for faithful probes and "differs" (with both values) otherwise."""
    states = _states()
    probes = _probes.compute(states)
    assert set(_probes.check(states, probes).values()) == {"ok"}
    wrong = dict(probes, pcg=[0.0, 0.0, 0.0, 0])
    verdicts = _probes.check(states, wrong)
    assert verdicts["pcg"].startswith("differs: recorded [0.0, 0.0, 0.0, 0]")
    assert _probes.check(states, {})["py"] == "no probe recorded"
