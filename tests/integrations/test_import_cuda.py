"""rngvault/integrations/_import.py on a CUDA machine: the CUDA states a checkpoint holds,
imported and restored, draw what the checkpoint's own states draw.

Needs only torch, numpy and msgpack (no framework): the files are written in the layouts
the frameworks use, with this machine's real CUDA generator states. ``scripts/gpu-check``
runs these; elsewhere they are skipped, saying why.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

import rngvault

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.cuda


def _disturb() -> None:
    torch.manual_seed(12345)
    torch.cuda.manual_seed_all(12345)
    random.seed(12345)
    np.random.seed(12345)


def _cuda_draws() -> list[float]:
    return [
        torch.rand(4, device=f"cuda:{d}").sum().item() for d in range(torch.cuda.device_count())
    ]


def _restore(kind: str, path: Path) -> rngvault.RestoreReport:
    from rngvault.integrations import import_checkpoint

    (snapshot,) = import_checkpoint(kind, path)
    names = {f"torch.cuda:{d}" for d in range(torch.cuda.device_count())}
    assert names <= set(snapshot.states)
    return rngvault.restore(snapshot)


def test_a_transformers_layout_with_every_device_restores_their_draws(tmp_path: Path) -> None:
    """``rng_state.pth`` as the Trainer writes it in distributed runs (``cuda``: every
    device's state): after importing and restoring, each device draws what it drew right
    after the states were saved."""
    torch.cuda.manual_seed_all(7)
    torch.rand(3, device="cuda")  # move off the seed
    folder = tmp_path / "checkpoint-10"
    folder.mkdir()
    torch.save(
        {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "cpu": torch.random.get_rng_state(),
            "cuda": torch.cuda.random.get_rng_state_all(),
        },
        folder / "rng_state.pth",
    )
    expected = _cuda_draws()
    _disturb()
    assert _cuda_draws() != expected
    report = _restore("transformers", folder)
    assert report.ok, str(report)
    assert _cuda_draws() == expected


def test_an_accelerate_layout_restores_the_cuda_draws(tmp_path: Path) -> None:
    """``random_states_0.pkl`` as accelerate's ``save_state`` writes it
    (``torch_cuda_manual_seed``: every device's state)."""
    torch.cuda.manual_seed_all(8)
    torch.rand(5, device="cuda")
    torch.save(
        {
            "step": 0,
            "random_state": random.getstate(),
            "numpy_random_seed": np.random.get_state(),
            "torch_manual_seed": torch.get_rng_state(),
            "torch_cuda_manual_seed": torch.cuda.get_rng_state_all(),
        },
        tmp_path / "random_states_0.pkl",
    )
    expected = _cuda_draws()
    _disturb()
    report = _restore("accelerate", tmp_path)
    assert report.ok, str(report)
    assert _cuda_draws() == expected
