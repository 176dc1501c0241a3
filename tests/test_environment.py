"""Environment records and the grading of differences by what they can break."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rngvault import _environment

torch = pytest.importorskip("torch", reason="torch is not installed")


def test_collect_records_versions_platform_and_flags() -> None:
    """collect() holds the library versions, the platform and the determinism flags."""
    env = _environment.collect(rank=1, world_size=2, local_rank=0)
    assert env["numpy"] == np.__version__
    assert env["torch"] == torch.__version__.split("+")[0]
    assert env["rank"] == 1 and env["world_size"] == 2 and env["local_rank"] == 0
    assert env["flags"]["cudnn.deterministic"] == torch.backends.cudnn.deterministic
    assert env["flags"]["PYTHONHASHSEED"] == os.environ.get("PYTHONHASHSEED")
    assert env["devices"] is None  # CUDA is not initialized here: unknown, and no init


def test_differences_only_count_for_the_families_present() -> None:
    """A NumPy version change matters for Generators, not for Python's random alone."""
    here = _environment.collect()
    old = dict(here, numpy="1.0.0", python="3.0.0")
    keys = {d.key for d in _environment.compare(old, here, ["numpy.bitgen"])}
    assert keys == {"numpy"}
    keys = {d.key for d in _environment.compare(old, here, ["python"])}
    assert keys == {"python"}
    [numpy_diff] = _environment.compare(old, here, ["numpy.bitgen"])
    assert (numpy_diff.recorded, numpy_diff.current) == ("1.0.0", np.__version__)
    assert numpy_diff.severity == "may-break"


def test_flag_and_world_size_differences_are_graded() -> None:
    """Determinism flags may break bit-exactness; a world size change breaks it."""
    here = _environment.collect()
    flags = dict(here["flags"], **{"cudnn.benchmark": not here["flags"]["cudnn.benchmark"]})
    old = dict(here, flags=flags, world_size=4)
    graded = {d.key: d.severity for d in _environment.compare(old, here, ["python"])}
    assert graded == {"flags.cudnn.benchmark": "may-break", "world_size": "breaks"}


def test_identical_environments_have_no_differences() -> None:
    """Comparing an environment with itself reports nothing."""
    here = _environment.collect()
    assert _environment.compare(here, here, ["python", "numpy.bitgen", "torch.cpu"]) == []


def test_apply_flags_explains_what_cannot_be_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    """PYTHONHASHSEED cannot change in a running process: apply_flags says how to set it."""
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    recorded = _environment.collect()
    recorded["flags"] = dict(
        recorded["flags"], PYTHONHASHSEED="7", CUBLAS_WORKSPACE_CONFIG=":4096:8"
    )
    notes = _environment.apply_flags(recorded)
    assert any("start Python with PYTHONHASHSEED=7" in n for n in notes)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_flags_one_side_did_not_record_are_not_differences() -> None:
    """A snapshot taken without torch imported has no torch flags: not a difference."""
    here = _environment.collect()
    recorded = dict(here, flags={k: here["flags"][k] for k in _environment.ENV_FLAGS})
    keys = {d.key for d in _environment.compare(recorded, here, ["numpy.bitgen"])}
    assert not any(key.startswith("flags.") for key in keys)


def test_unknown_devices_are_not_a_difference() -> None:
    """A process that has not initialized CUDA does not know its GPUs: no difference."""
    here = _environment.collect()
    recorded = dict(here, devices=["NVIDIA H100 80GB HBM3"])
    assert [d.key for d in _environment.compare(recorded, here, ["torch.cuda"])] == []
    elsewhere = dict(here, devices=["NVIDIA A100-SXM4-80GB"])
    [diff] = _environment.compare(recorded, elsewhere, ["torch.cuda"])
    assert diff.key == "devices" and diff.severity == "may-break"


def test_a_restore_with_apply_flags_reports_the_process_as_it_leaves_it(
    tmp_path: Path, run_python: Any
) -> None:
    """In a process that has not imported torch, restore(apply_flags=True) of a snapshot
    taken with torch and deterministic flags: the report agrees with itself. torch is
    imported by then, so no line says it is not, and it is not listed as missing; the
    CUBLAS_WORKSPACE_CONFIG the note says was set is not listed as different."""
    take = """
        import sys, torch, rngvault
        rngvault.seed_everything(0, deterministic=True)
        rngvault.Vault(sys.argv[1], run="alice/exp").snapshot("epoch0", durable=True)
    """
    taken = run_python(take, str(tmp_path))
    assert taken.returncode == 0, taken.stderr
    restore = """
        import json, os, sys, rngvault
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        assert "torch" not in sys.modules
        report = rngvault.Vault(sys.argv[1], run="alice/exp").restore("epoch0", apply_flags=True)
        print(json.dumps({
            "torch": "torch" in sys.modules,
            "generators": {o.name: [o.status, o.detail] for o in report.outcomes},
            "differences": [d.key for d in report.differences],
            "notes": list(report.notes),
            "text": str(report),
        }))
    """
    done = run_python(restore, str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["torch"] is True
    assert report["generators"]["torch.cpu"][0] == "restored"
    assert "not imported" not in report["text"]
    assert "torch" not in report["differences"]
    assert "set CUBLAS_WORKSPACE_CONFIG=:4096:8" in report["notes"]
    assert "flags.CUBLAS_WORKSPACE_CONFIG" not in report["differences"]
