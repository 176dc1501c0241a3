"""rngvault/_checkpoint.py: a snapshot's reference kept in a plain PyTorch checkpoint."""

from __future__ import annotations

import pytest

import rngvault
from rngvault._snapshot import SnapshotRef

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))


def train_epoch(model, optimizer, loader, augment) -> list[float]:
    losses = []
    for x, y in loader:
        x = x + torch.from_numpy(augment.normal(0, 0.1, x.shape).astype("float32"))
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def setup(vault: rngvault.Vault, seed: int):
    torch.manual_seed(seed)
    data = TensorDataset(torch.arange(64.0).reshape(16, 4) / 64, torch.ones(16, 1))
    loader = vault.track(
        DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(seed)),
        "loader",
    )
    augment = vault.track(np.random.default_rng(seed), "augment")
    model = make_model()
    return model, torch.optim.SGD(model.parameters(), lr=0.1), loader, augment


def test_a_plain_loop_resumes_from_its_own_checkpoint_bit_identically(tmp_path):
    """The loop docs/vault.md shows: save_ref into the checkpoint dict, torch.save; later
    torch.load(weights_only=True), load the weights, restore load_ref's snapshot: the
    resumed epochs' losses equal the uninterrupted run's, to the bit."""
    with rngvault.Vault(tmp_path / "a", run="t/full") as vault:
        model, optimizer, loader, augment = setup(vault, 0)
        full = [train_epoch(model, optimizer, loader, augment) for _ in range(3)]

    with rngvault.Vault(tmp_path / "b", run="t/ckpt") as vault:
        model, optimizer, loader, augment = setup(vault, 0)
        first = train_epoch(model, optimizer, loader, augment)
        checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        ref = rngvault.save_ref(checkpoint, vault.snapshot("epoch0", epoch=0))
        torch.save(checkpoint, tmp_path / "ckpt.pt")
    assert first == full[0]

    with rngvault.Vault(tmp_path / "b", run="t/ckpt") as vault:
        model, optimizer, loader, augment = setup(vault, 12345)  # other seeds: all replaced
        checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        assert rngvault.load_ref(checkpoint) == ref
        report = vault.restore(rngvault.load_ref(checkpoint))
        assert {"loader", "augment", "torch.cpu"} <= set(report.restored)
        resumed = [train_epoch(model, optimizer, loader, augment) for _ in range(2)]
    assert resumed == full[1:]


def test_save_ref_stores_a_plain_string_that_parses_back(tmp_path):
    with rngvault.Vault(tmp_path, run="t/ref") as vault:
        taken = vault.snapshot("s")
        checkpoint: dict = {}
        ref = rngvault.save_ref(checkpoint, taken)
    assert checkpoint == {"rngvault": str(ref)}
    assert ref == taken.ref and ref.digest == taken.digest
    assert rngvault.load_ref(checkpoint) == ref
    assert rngvault.save_ref({}, ref, key="rng") == ref  # a SnapshotRef, another key
    assert rngvault.load_ref({"rng": str(ref)}, key="rng") == ref


def test_a_checkpoint_without_a_ref_gives_none():
    assert rngvault.load_ref({"model": {}}) is None


def test_a_snapshot_that_is_stored_nowhere_has_no_ref():
    with pytest.raises(rngvault.RngVaultError, match="not stored anywhere"):
        rngvault.save_ref({}, rngvault.capture())


@pytest.mark.parametrize(
    ("checkpoint", "error", "needle"),
    [
        ({"rngvault": 42}, rngvault.InvalidNameError, "should be a snapshot reference string"),
        ({"rngvault": "not a ref"}, rngvault.InvalidNameError, "invalid snapshot reference"),
        ({"rngvault": "a/b/c@" + "0" * 64 + "#²"}, rngvault.InvalidNameError, "invalid snapshot"),
        ({"rngvault": "a/b/c@" + "g" * 64}, rngvault.InvalidNameError, "64 hex digits"),
        ({"rngvault": "a/b/c@" + "0" * 64 + "#"}, rngvault.InvalidNameError, "#<rank>"),
        ({"rngvault": "a/b/c@" + "0" * 64 + "#" + "9" * 30}, rngvault.InvalidNameError, "rank"),
        ([1, 2], TypeError, "reads a dict"),
    ],
)
def test_a_bad_entry_is_a_clear_error(checkpoint, error, needle):
    with pytest.raises(error, match=needle):
        rngvault.load_ref(checkpoint)


def test_save_ref_refuses_what_is_not_a_snapshot():
    ref = SnapshotRef("a/b", "c", "0" * 64)
    with pytest.raises(TypeError, match="Snapshot or a SnapshotRef"):
        rngvault.save_ref({}, "a/b/c")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dict to write into"):
        rngvault.save_ref([], ref)  # type: ignore[arg-type]
