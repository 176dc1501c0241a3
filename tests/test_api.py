"""rngvault/_api.py: capture and restore of a whole process's generators, all or nothing."""

from __future__ import annotations

import copy
import dataclasses
import random
import struct
import sys

import numpy as np
import pytest

import rngvault
from rngvault.families import families, torch_cuda


def draws(targets: dict) -> dict:
    """A few draws from each target (random.Random, RandomState or Generator)."""
    out = {}
    for name, obj in targets.items():
        if isinstance(obj, random.Random):
            out[name] = [obj.random() for _ in range(3)]
        elif isinstance(obj, np.random.RandomState):
            out[name] = obj.random_sample(3).tolist()
        else:
            out[name] = obj.random(3).tolist()
    return out


def moved_targets() -> dict:
    """Three generators of three families, with a snapshot taken before they moved on."""
    return {
        "a": random.Random(1),
        "b": np.random.RandomState(2),
        "c": np.random.default_rng(3),
    }


def capture_then_move(targets: dict) -> rngvault.Snapshot:
    snapshot = rngvault.capture(targets, include_globals=False)
    draws(targets)
    return snapshot


# -- capture ------------------------------------------------------------------------------


def test_capture_includes_python_and_numpy_globals():
    """With include_globals (the default) capture holds python.global and numpy.global."""
    snapshot = rngvault.capture()
    assert {"python.global", "numpy.global"} <= set(snapshot.states)
    assert snapshot.states["python.global"].family == "python"
    assert snapshot.states["numpy.global"].family == "numpy.legacy"


def test_capture_includes_torch_cpu_once_torch_is_imported():
    """torch.cpu is a global once the process has imported torch."""
    pytest.importorskip("torch")
    assert rngvault.capture().states["torch.cpu"].family == "torch.cpu"


def test_capture_without_globals_holds_only_the_named_generators():
    """include_globals=False captures exactly the generators given."""
    snapshot = rngvault.capture({"a": random.Random(1)}, include_globals=False)
    assert list(snapshot.states) == ["a"]


def test_named_generator_replaces_a_global_of_the_same_name():
    """A generator given as 'python.global' is captured instead of the random module's."""
    rng = random.Random(5)
    snapshot = rngvault.capture({"python.global": rng})
    assert list(snapshot.states["python.global"].fields["key"]) == list(rng.getstate()[1][:624])


def test_capture_records_metadata_and_environment():
    """capture takes the metadata and environment to store with the states."""
    metadata = rngvault.Metadata(step=7, epoch=1, tags=("warmup",), metrics={"loss": 0.25})
    snapshot = rngvault.capture(
        {"a": random.Random(1)}, include_globals=False, metadata=metadata, environment={"x": 1}
    )
    assert snapshot.metadata == metadata
    assert snapshot.environment == {"x": 1}


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 129, "é"])
def test_invalid_generator_names_are_refused(name):
    """Names match [A-Za-z0-9._:-]{1,128}, in capture and in restore."""
    with pytest.raises(rngvault.InvalidNameError, match="invalid generator name"):
        rngvault.capture({name: random.Random(1)}, include_globals=False)
    snapshot = rngvault.capture({"a": random.Random(1)}, include_globals=False)
    with pytest.raises(rngvault.InvalidNameError, match="invalid generator name"):
        rngvault.restore(snapshot, {name: random.Random(1)}, include_globals=False)


@pytest.mark.parametrize("obj", [42, "seed", object(), np.zeros(3)])
def test_capturing_an_unsupported_object_names_it_and_the_supported_kinds(obj):
    """An object no family takes is a CaptureError naming the generator and what is supported."""
    with pytest.raises(rngvault.CaptureError) as info:
        rngvault.capture({"thing": obj}, include_globals=False)
    message = str(info.value)
    assert "'thing'" in message and type(obj).__qualname__ in message
    assert "random.Random" in message and "numpy.random.RandomState" in message


# -- restore: the normal path ----------------------------------------------------------------


def test_restore_into_the_globals():
    """restore(snapshot) with no targets puts python.global and numpy.global back."""
    random.seed(1)
    np.random.seed(2)
    snapshot = rngvault.capture()
    expected = (random.random(), np.random.random_sample())
    report = rngvault.restore(snapshot)
    assert (random.random(), np.random.random_sample()) == expected
    assert {"python.global", "numpy.global"} <= set(report.restored)


def test_named_target_replaces_a_global_of_the_same_name():
    """A target given as 'python.global' receives that state; the random module is untouched."""
    random.seed(1)
    snapshot = rngvault.capture(include_globals=True)
    expected = random.random()
    random.seed(9)
    untouched = random.getstate()
    target = random.Random(0)
    rngvault.restore(snapshot, {"python.global": target})
    assert target.random() == expected
    assert random.getstate() == untouched


def test_report_lists_restored_generators_verified():
    """Each restored generator is listed, verified by capturing it again, and the report
    prints as a table."""
    targets = moved_targets()
    snapshot = capture_then_move(targets)
    report = rngvault.restore(snapshot, targets, include_globals=False)
    assert report.restored == ["a", "b", "c"]
    assert all(report[name].verified for name in "abc")
    assert report.ok and report.digest == snapshot.digest
    text = str(report)
    assert text.splitlines()[0] == f"restore of snapshot {snapshot.digest[:12]}"
    assert "generator" in text and "numpy.bitgen" in text and "restored" in text


def test_target_without_a_state_is_listed_as_missing():
    """A target the snapshot has no state for is reported as missing and left alone."""
    snapshot = rngvault.capture({"a": random.Random(1)}, include_globals=False)
    extra = random.Random(2)
    before = extra.getstate()
    report = rngvault.restore(snapshot, {"a": random.Random(3), "extra": extra})
    assert report.missing == ["extra"]
    assert report["extra"].family == "python"
    assert extra.getstate() == before


def test_state_without_a_target_is_listed_as_skipped():
    """A state with no target in this process is skipped and listed with the reason."""
    snapshot = rngvault.capture({"a": random.Random(1), "b": random.Random(2)})
    report = rngvault.restore(snapshot, {"a": random.Random(3)})
    assert report.skipped == ["b"]
    assert "no generator of that name" in report["b"].detail
    report = rngvault.restore(snapshot, {"a": random.Random(3)}, include_globals=False)
    assert set(report.skipped) == {"b", "python.global", "numpy.global"} | (
        {"torch.cpu"} if sys.modules.get("torch") is not None else set()
    )
    assert "include_globals=False" in report["python.global"].detail


def cuda_only_elsewhere(monkeypatch) -> rngvault.Snapshot:
    """A snapshot with a python state and a hand-built torch.cuda:0 state, restored in a
    process that has no CUDA (device_count patched to 0 where torch could see one)."""
    monkeypatch.setattr(torch_cuda, "device_count", lambda: 0)
    states = rngvault.capture({"a": random.Random(1)}, include_globals=False).states
    cuda = rngvault.State("torch.cuda", {"state": struct.pack("<QQ", 42, 8)})
    return rngvault.Snapshot({**states, "torch.cuda:0": cuda})


def test_cuda_state_without_cuda_is_skipped(monkeypatch):
    """Without strict, a torch.cuda:0 state in a CPU-only process is skipped and listed."""
    snapshot = cuda_only_elsewhere(monkeypatch)
    report = rngvault.restore(snapshot, {"a": random.Random(5)})
    assert report.skipped == ["torch.cuda:0"]
    assert "a" in report.restored


def test_strict_refuses_skipped_states_before_touching_anything(monkeypatch):
    """With strict=True a state that would be skipped is an error, and nothing is restored."""
    snapshot = cuda_only_elsewhere(monkeypatch)
    target = random.Random(5)
    before = target.getstate()
    with pytest.raises(rngvault.RestoreError) as info:
        rngvault.restore(snapshot, {"a": target}, strict=True)
    assert "strict" in str(info.value) and "torch.cuda:0: skipped" in str(info.value)
    assert target.getstate() == before


def test_strict_refuses_missing_states():
    """With strict=True a target the snapshot has no state for is an error too."""
    snapshot = rngvault.capture({"a": random.Random(1)}, include_globals=False)
    target = random.Random(5)
    before = target.getstate()
    with pytest.raises(rngvault.RestoreError, match="extra: missing"):
        rngvault.restore(
            snapshot, {"a": target, "extra": random.Random(2)}, include_globals=False, strict=True
        )
    assert target.getstate() == before


def test_restore_refuses_something_that_is_not_a_snapshot():
    """restore takes a Snapshot; bytes are refused with a message saying so."""
    with pytest.raises(rngvault.RestoreError, match="expected a Snapshot, got bytes"):
        rngvault.restore(b"data")  # type: ignore[arg-type]


# -- restore: all or nothing ---------------------------------------------------------------


def test_one_invalid_state_leaves_every_generator_untouched():
    """A restore with one bad state (pos=700) raises RestoreError naming it; the other
    generators keep drawing exactly what they would have drawn."""
    targets = moved_targets()
    snapshot = capture_then_move(targets)
    bad_fields = {**snapshot.states["b"].fields, "pos": 700}
    bad = rngvault.Snapshot({**snapshot.states, "b": rngvault.State("numpy.legacy", bad_fields)})
    twins = copy.deepcopy(targets)
    with pytest.raises(rngvault.RestoreError) as info:
        rngvault.restore(bad, targets, include_globals=False)
    message = str(info.value)
    assert "nothing was changed" in message
    assert "'b'" in message and "'pos'" in message and "700" in message
    assert draws(targets) == draws(twins)


def test_one_target_of_the_wrong_kind_leaves_every_generator_untouched():
    """A target of the wrong family is found before anything is applied."""
    targets = moved_targets()
    snapshot = capture_then_move(targets)
    wrong = {**targets, "b": np.random.default_rng(0)}
    twins = copy.deepcopy(wrong)
    with pytest.raises(rngvault.RestoreError, match=r"'b'.*RandomState.*Generator"):
        rngvault.restore(snapshot, wrong, include_globals=False)
    assert draws(wrong) == draws(twins)


def test_every_invalid_state_is_named_at_once():
    """All problems are reported together, one line per generator."""
    targets = moved_targets()
    snapshot = capture_then_move(targets)
    states = dict(snapshot.states)
    states["a"] = rngvault.State("python", {**states["a"].fields, "index": 999})
    states["c"] = rngvault.State("numpy.quantum", {})
    with pytest.raises(rngvault.RestoreError) as info:
        rngvault.restore(rngvault.Snapshot(states), targets, include_globals=False)
    lines = str(info.value).splitlines()
    assert any("'a'" in line and "'index'" in line and "999" in line for line in lines)
    assert any("'c'" in line and "unknown family 'numpy.quantum'" in line for line in lines)


def failing(monkeypatch, family_name: str, *, after_applying: bool, times: int = 1) -> None:
    """Make ``family_name``'s restore raise ``times`` times, before or after it has applied
    the state; later calls (putting generators back) work."""
    family = families()[family_name]
    calls = []

    def restore(obj, fields):
        calls.append(1)
        if len(calls) > times:
            return family.restore(obj, fields)
        if after_applying:
            family.restore(obj, fields)
        raise RuntimeError("device lost")

    monkeypatch.setitem(families(), family_name, dataclasses.replace(family, restore=restore))


@pytest.mark.parametrize("after_applying", [False, True], ids=["before", "after-applying"])
def test_failure_midway_puts_back_the_generators_already_restored(monkeypatch, after_applying):
    """If applying fails at the third generator, the first two are put back, the failing one
    is as it was (even if it had been half set), and the rest were never touched."""
    targets = {**moved_targets(), "d": random.Random(4)}
    snapshot = capture_then_move(targets)
    failing(monkeypatch, "numpy.bitgen", after_applying=after_applying)
    twins = copy.deepcopy(targets)
    with pytest.raises(rngvault.RestoreError) as info:
        rngvault.restore(snapshot, targets, include_globals=False)
    message = str(info.value)
    assert "'c'" in message and "RuntimeError: device lost" in message and "put back" in message
    assert isinstance(info.value.__cause__, RuntimeError)
    assert draws(targets) == draws(twins)


def test_failure_that_repeats_still_puts_back_the_others(monkeypatch):
    """When the failing generator cannot be put back either, the generators restored before
    it are still put back and the original error is raised."""
    targets = {**moved_targets(), "d": random.Random(4)}
    snapshot = capture_then_move(targets)
    failing(monkeypatch, "numpy.bitgen", after_applying=False, times=2)
    twins = copy.deepcopy(targets)
    with pytest.raises(rngvault.RestoreError, match="RuntimeError: device lost"):
        rngvault.restore(snapshot, targets, include_globals=False)
    assert draws(targets) == draws(twins)
