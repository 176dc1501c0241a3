"""rngvault inside accelerate's ``save_state`` / ``load_state``.

::

    accelerator = Accelerator()
    vault = rngvault.Vault(store, run="alice/exp")
    augment = vault.track(np.random.default_rng(0), "augment")
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    tracker = rngvault.integrations.accelerate.track(accelerator, vault)
    ...
    accelerator.save_state("ckpt")   # also takes snapshot save{N}; ckpt holds its reference
    ...
    accelerator.load_state("ckpt")   # accelerate's own states, then rngvault's restore

``track`` registers a ``VaultState`` with ``accelerator.register_for_checkpointing``. Inside
``save_state`` its ``state_dict()`` takes snapshot ``save{N}`` of every generator the Vault
tracks and waits until it is stored; the checkpoint's ``custom_checkpoint_{i}.pkl`` then holds
``{"rngvault": "<the snapshot's reference>"}`` and nothing else. Inside ``load_state`` its
``load_state_dict()`` restores that snapshot. accelerate (1.15) restores its own
``random_states_{i}.pkl`` (python, NumPy, torch CPU and CUDA) before it loads the registered
objects, so rngvault's restore comes last and wins.

The generators that decide a prepared DataLoader's order are tracked too, by the names
``accelerate.loader{i}`` (the DataLoader's ``generator``), ``accelerate.loader{i}.sampler``
(its sampler's) and ``accelerate.loader{i}.synchronized`` (the one accelerate keeps in step
across processes), unless the Vault already tracks them under another name. With several
processes and no generator of your own, accelerate makes the sampler's generator itself at
``prepare()``; its state is in no file accelerate writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from rngvault._checkpoint import load_ref, save_ref
from rngvault._errors import MissingExtraError, RestoreError, RngVaultError, warn
from rngvault._names import check_name
from rngvault._report import RestoreReport
from rngvault._seeding import ReproducibilityWarning
from rngvault._snapshot import SnapshotRef
from rngvault._vault import Vault

try:
    import torch
    from accelerate.data_loader import SeedableRandomSampler, get_sampler
except ImportError as exc:  # pragma: no cover - exercised with accelerate hidden
    raise MissingExtraError(
        exc.name or "accelerate", "accelerate", "rngvault.integrations.accelerate"
    ) from exc

__all__ = ["VaultState", "track"]


class VaultState:
    """The object ``track`` registers for accelerate's checkpointing.

    Attributes:
        accelerator: the ``accelerate.Accelerator`` it is registered with.
        vault: the Vault that takes and restores the snapshots.
        prefix: snapshots are named ``{prefix}{N}``.
        strict: passed to ``Vault.restore``: a generator the snapshot and this process do not
            share, or an environment difference that can break bit-exactness, is an error.
        loaders: whether the generators of prepared DataLoaders are tracked.
        saved: the reference of the last snapshot ``save_state`` took, or None.
        report: the report of the last restore ``load_state`` made, or None.
    """

    def __init__(
        self, accelerator: Any, vault: Vault, *, prefix: str, strict: bool, loaders: bool
    ) -> None:
        self.accelerator = accelerator
        self.vault = vault
        self.prefix = prefix
        self.strict = strict
        self.loaders = loaders
        self.saved: SnapshotRef | None = None
        self.report: RestoreReport | None = None
        self._next = 0

    def __repr__(self) -> str:
        return f"<VaultState run={self.vault.run!r} next={self.prefix}{self._next_index()}>"

    def _next_index(self) -> int:
        # accelerate's save iteration is the N of checkpoint_N (automatic checkpoint naming);
        # after a load_state, numbering goes on after the loaded snapshot, so a resumed run
        # never gives an existing name to other states.
        return max(int(getattr(self.accelerator, "save_iteration", 0) or 0), self._next)

    def state_dict(self) -> dict[str, str]:
        """Take snapshot ``{prefix}{N}`` now, wait until it is stored, and return
        ``{"rngvault": "<its reference>"}`` (accelerate pickles this dict)."""
        _check_ranks(self.accelerator, self.vault)
        if self.loaders:
            _track_loaders(self.accelerator, self.vault)
        index = self._next_index()
        snapshot = self.vault.snapshot(f"{self.prefix}{index}", durable=True)
        self._next = index + 1
        checkpoint: dict[str, str] = {}
        self.saved = save_ref(checkpoint, snapshot)
        return checkpoint

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the snapshot whose reference ``state_dict`` holds (all or nothing)."""
        if not isinstance(state_dict, Mapping):
            raise RestoreError(
                "the accelerate checkpoint entry for rngvault is not a dict but a "
                f"{type(state_dict).__name__}: was the checkpoint saved with other objects "
                "registered for checkpointing, or in another order?"
            )
        ref = load_ref(state_dict)
        if ref is None:
            raise RestoreError(
                "the accelerate checkpoint entry for rngvault holds no snapshot reference "
                f"(keys: {sorted(map(str, state_dict))}): was the checkpoint saved with other "
                "objects registered for checkpointing, or in another order?"
            )
        _check_ranks(self.accelerator, self.vault)
        if self.loaders:
            _track_loaders(self.accelerator, self.vault)
        self.report = _restore(self.vault, ref, self.strict)
        found = re.fullmatch(re.escape(self.prefix) + r"(\d+)", ref.name)
        if found and ref.run == self.vault.run:
            self._next = max(self._next, int(found.group(1)) + 1)
        unmatched = self.report.missing + self.report.skipped
        if unmatched or not self.report.ok:
            warn(
                f"rngvault: load_state restored {ref} only in part; a resumed run can differ "
                f"from the uninterrupted one:\n{self.report}",
                ReproducibilityWarning,
            )


def track(
    accelerator: Any,
    vault: Vault,
    *,
    prefix: str = "save",
    strict: bool = False,
    loaders: bool = True,
) -> VaultState:
    """Make ``accelerator.save_state`` snapshot ``vault``'s generators and
    ``accelerator.load_state`` restore them exactly; returns the registered object.

    Each ``save_state`` takes snapshot ``{prefix}{N}``: N is the accelerator's save
    iteration (the N of ``checkpoint_N`` with automatic checkpoint naming), and after a
    ``load_state`` at least one more than the loaded snapshot's. With ``loaders=True`` the
    generators that decide the order of the DataLoaders ``accelerator.prepare`` returned are
    tracked as ``accelerate.loader{i}[.sampler|.synchronized]`` when a snapshot is taken or
    restored. ``strict`` is passed to ``Vault.restore``.

    The Vault's rank and world size must be the accelerator's ``process_index`` and
    ``num_processes``. ``accelerator.load_state`` refuses a folder saved before ``track``
    was called (accelerate counts the registered objects); call ``load_state`` first, then
    ``track``, to resume from one.
    """
    if not callable(getattr(accelerator, "register_for_checkpointing", None)):
        raise TypeError(
            "track needs an accelerate.Accelerator (something with register_for_checkpointing), "
            f"not {type(accelerator).__name__}"
        )
    if not isinstance(vault, Vault):
        raise TypeError(f"track needs a rngvault.Vault, not {type(vault).__name__}")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
    check_name(prefix + "0")
    _check_ranks(accelerator, vault)
    state = VaultState(accelerator, vault, prefix=prefix, strict=bool(strict), loaders=loaders)
    accelerator.register_for_checkpointing(state)
    return state


def _check_ranks(accelerator: Any, vault: Vault) -> None:
    """The Vault stores each rank's states under the rank it was given: it must be the
    accelerator's, or ranks would overwrite or restore each other's states."""
    rank, size = accelerator.process_index, accelerator.num_processes
    if (vault.rank, vault.world_size) != (rank, size):
        raise RngVaultError(
            f"the Vault has rank {vault.rank} of {vault.world_size} but the accelerator is "
            f"process {rank} of {size}: create the Vault with rank=accelerator.process_index, "
            "world_size=accelerator.num_processes"
        )


def _restore(vault: Vault, ref: SnapshotRef, strict: bool) -> RestoreReport:
    """Restore ``ref`` for this process's rank. accelerate writes the checkpoint entry on the
    main process only (on each node's main process with ``save_on_each_node``), so every
    rank reads that process's reference: rank 0's is checked by the Vault itself; another
    rank's is checked here before this rank's snapshot of the same name is restored."""
    if ref.rank in (0, vault.rank):
        return vault.restore(ref, strict=strict)
    named = vault.get(ref.name, ref.run, rank=ref.rank, digest=ref.digest)
    if named.digest != ref.digest:
        raise RestoreError(
            f"snapshot {ref.run}/{ref.name} of rank {ref.rank} has digest {named.digest[:16]}..., "
            f"the checkpoint names {ref.digest[:16]}...: it is not the snapshot the checkpoint "
            "was saved with; nothing was restored"
        )
    return vault.restore(ref.name, run=ref.run, strict=strict)


def _order_generators(loader: Any) -> Iterator[tuple[str, torch.Generator]]:
    """(role, generator) for each generator that decides a prepared loader's order: the
    DataLoader's own (its base seed, and the default sampler's permutation), its sampler's,
    and the one accelerate synchronizes across processes. A SeedableRandomSampler's is
    reseeded from its seed and epoch each epoch, so its state decides nothing."""
    sampler = get_sampler(loader) if hasattr(loader, "batch_sampler") else None
    candidates = [
        ("", getattr(loader, "generator", None)),
        (
            ".sampler",
            None
            if isinstance(sampler, SeedableRandomSampler)
            else getattr(sampler, "generator", None),
        ),
        (".synchronized", getattr(loader, "synchronized_generator", None)),
    ]
    seen: set[int] = set()
    for role, generator in candidates:
        if isinstance(generator, torch.Generator) and id(generator) not in seen:
            seen.add(id(generator))
            yield role, generator


def _track_loaders(accelerator: Any, vault: Vault) -> None:
    """Track the order generators of the accelerator's prepared DataLoaders that the Vault
    does not track yet (under any name)."""
    tracked = vault.tracked
    known = {id(obj) for obj in tracked.values()}
    for index, loader in enumerate(getattr(accelerator, "_dataloaders", ())):
        for role, generator in _order_generators(loader):
            if id(generator) in known:
                continue
            name = f"accelerate.loader{index}{role}"
            if name in tracked:
                raise RngVaultError(
                    f"the Vault tracks another object as {name!r}, the name rngvault gives "
                    f"the generator of the accelerator's DataLoader {index}: track yours under "
                    "another name, or pass loaders=False to track()"
                )
            vault.track(generator, name)
            known.add(id(generator))
