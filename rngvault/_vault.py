"""``Vault``: named snapshots inside a training loop, kept in a store, restored anywhere."""

from __future__ import annotations

import dataclasses
import inspect
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

import numpy as np

from rngvault import _environment, _probes, _ranks, _record
from rngvault._api import global_resolved
from rngvault._api import restore as restore_states
from rngvault._config import client_config
from rngvault._diff import DiffReport
from rngvault._divergence import DivergenceReport, compare_snapshots
from rngvault._errors import (
    AuthError,
    ConflictError,
    DivergenceError,
    EncodeError,
    NotFoundError,
    RestoreError,
    RngVaultError,
    RngVaultWarning,
    StoreError,
    TransportError,
    warn,
)
from rngvault._format import decode, encode_with_digest
from rngvault._names import check_generator_name, check_name, split_run
from rngvault._record import check_config
from rngvault._report import EnvironmentDifference, RestoreReport
from rngvault._snapshot import Metadata, Snapshot, SnapshotRef, State, _TakenSnapshot, values_equal
from rngvault._writer import OnError, Outcome, StoreWarning, Writer
from rngvault.families import Family, family_of
from rngvault.stores import SnapshotInfo, Store, open_store

T = TypeVar("T")


RECORD_RETRY = 30.0  # seconds between tries of a run's record the store could not be reached for

Payload = tuple[str, Snapshot, Mapping[str, int], bool]
"""A writer job: the name, the taken snapshot, its CUDA targets' devices, durable."""


def _takes_durable(method: Callable[..., Any]) -> bool:
    """Whether a store method takes ``durable=`` (LocalStore's do; the protocol's not)."""
    try:
        return "durable" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def _linger(store: Store) -> float:
    """How long the writer waits for more snapshots to send together: the store's
    ``batch_linger`` (the HTTP store's: one request for several snapshots), at most 5 s."""
    value = getattr(store, "batch_linger", 0.0)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 5:
        return float(value)
    return 0.0


class DivergenceWarning(RngVaultWarning):
    """A reproduction's generators drifted from its reference run."""


def _check_run(run: str) -> str:
    return "/".join(split_run(run))


def _int_or_none(what: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, np.integer):
        return int(value)
    if type(value) is not int:
        raise EncodeError(f"{what} must be an int or None, not {type(value).__name__} {value!r}")
    return value


def _tags(tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise EncodeError(f"tags must be a list of strings, not the string {tags!r}")
    out = tuple(tags)
    for tag in out:
        if not isinstance(tag, str):
            raise EncodeError(f"tags must be strings; got {type(tag).__name__} {tag!r}")
    return out


def _metrics(metrics: Mapping[str, Any] | None) -> dict[str, int | float | str | bool]:
    """Small scalar metrics; numpy and torch scalars become plain Python values."""
    out: dict[str, int | float | str | bool] = {}
    for key, value in (metrics or {}).items():
        if not isinstance(key, str):
            raise EncodeError(f"metric names must be strings; got {key!r}")
        if not isinstance(value, (int, float, str, bool)) and hasattr(value, "item"):
            value = value.item()  # numpy scalars, one-element tensors
        if not isinstance(value, (int, float, str, bool)):
            raise EncodeError(
                f"metric {key!r} must be an int, float, str or bool, not {type(value).__name__}"
            )
        out[key] = value
    return out


class Vault:
    """Take named snapshots of a run's generators and restore them later, anywhere.

    ``store`` is a directory, a ``file://`` or ``http(s)://`` URL, or a Store; by default
    ``$RNGVAULT_URL``, else ``$RNGVAULT_STORE``, else a per-user data directory.
    ``snapshot()`` copies the states on the calling thread and leaves encoding and storage
    to a background writer. Storage errors follow ``on_error``: ``"warn"`` warns once per
    problem, ``"raise"`` raises from the next ``snapshot()`` or ``flush()``.

    With ``reference="alice/exp"``, each snapshot is compared off the training thread with
    the reference run's snapshot of the same name; the first divergence is reported by a
    warning and to ``on_divergence(report)``, and with ``strict=True`` also raised as
    DivergenceError from the next ``snapshot()`` or ``flush()``.

    ``probes=False`` records no probes: the writer then draws nothing from copies of the
    generators (CUDA ones included) and a restore cannot tell "same state, different
    numbers".

    ``config`` (any JSON-compatible mapping, up to 32 KiB as JSON) goes into the run's
    record, which rank 0 writes with its first snapshot: the seed given to
    ``seed_everything``, the config, the git commit and whether the tree was dirty, the
    command line, the host and the first snapshot's environment (``record()`` reads it;
    a run keeps its first record). A store given as an object is the caller's: ``close()``
    leaves it open.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | Store | None = None,
        *,
        run: str,
        reference: str | None = None,
        on_divergence: Callable[[DivergenceReport], Any] | None = None,
        strict: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        on_error: OnError = "warn",
        token: str | None = None,
        track_globals: bool = True,
        probes: bool = True,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.run = _check_run(run)
        self.config = check_config(config) if config is not None else None
        self.reference = _check_run(reference) if reference is not None else None
        self.rank, self.world_size, self.local_rank = _ranks.detect(rank, world_size)
        client_config()  # a bad RNGVAULT_* variable fails here, not in the writer or at exit
        self.store: Store = open_store(store, token=token)
        self._owns_store = self.store is not store
        self._recorded = self.rank != 0  # rank 0 writes the run's record, once
        self._record: dict[str, Any] | None = None  # gathered once, sent until kept
        self._record_retry_at = 0.0
        self._record_warned = False
        self.on_divergence = on_divergence
        self.strict = strict
        self.track_globals = track_globals
        self.probes = probes
        self.on_error = on_error
        self._tracked: dict[str, tuple[Family, Any]] = {}
        self._version = 0
        self._plan_key: tuple[tuple[tuple[str, int], ...], int] | None = None
        self._plan_cache: tuple[
            list[tuple[str, str, Callable[[Any], Any], Any]], dict[str, int]
        ] = ([], {})
        self._metadata = Metadata(rank=self.rank, world_size=self.world_size)
        self._divergence: DivergenceReport | None = None
        self._divergence_raised = False
        self._reference_warned = False
        # Names whose put this Vault saw refused: name -> the store's words.
        self._refused: dict[str, RngVaultError] = {}
        self._put_kind: tuple[bool, bool] | None = None  # (has put_many, takes durable=)
        # Generator name -> (its state at the last snapshot, its probe or None).
        self._probe_cache: dict[str, tuple[State, Any]] = {}
        self._writer = Writer(
            self._write,
            on_error,
            self.run,
            at_exit=self._at_exit,
            handle_many=self._write_many,
            linger=_linger(self.store),
            urgent=lambda payload: bool(payload[3]),  # durable: stored without waiting
        )
        self._check_store()

    def _check_store(self) -> None:
        """A store that can check its access (the HTTP store: one read the token must be
        allowed) does so once: a refused token or a server that does not answer is a
        warning saying what to do, never an error."""
        check = getattr(self.store, "check_access", None)
        if callable(check):
            problem = check(self.run.split("/", 1)[0])
            if problem:
                warn(f"rngvault: {problem}", StoreWarning)

    def __repr__(self) -> str:
        return f"<Vault run={self.run!r} store={self.store.location!r} rank={self.rank}>"

    # -- tracking -------------------------------------------------------------------------

    def track(self, obj: T, name: str) -> T:
        """Register a generator (Random, RandomState, Generator, BitGenerator,
        torch.Generator or DataLoader) under ``name``; returns ``obj``."""
        check_generator_name(name)
        family = family_of(obj)
        family.watch(obj)
        self._tracked[name] = (family, obj)
        self._version += 1
        return obj

    def untrack(self, name: str) -> None:
        """Stop capturing the generator called ``name``."""
        self._tracked.pop(name, None)
        self._version += 1

    @property
    def tracked(self) -> dict[str, Any]:
        """Name -> object for everything a snapshot captures now (globals included)."""
        return {name: obj for name, _family, obj in self._targets()}

    def _targets(self) -> list[tuple[str, Family, Any]]:
        targets = global_resolved() if self.track_globals else []
        targets += [(name, family, obj) for name, (family, obj) in self._tracked.items()]
        return targets

    def _plan(self) -> tuple[list[tuple[str, str, Callable[[Any], Any], Any]], dict[str, int]]:
        """(name, family, capture function, object) for each target, and the CUDA targets'
        devices (for probes), rebuilt only when the targets can have changed: torch
        imported, CUDA initialized, track()/untrack(). One tuple, so the two always match."""
        found = global_resolved() if self.track_globals else []
        key = (tuple((name, id(obj)) for name, _family, obj in found), self._version)
        if key != self._plan_key:
            targets = found + [(n, family, obj) for n, (family, obj) in self._tracked.items()]
            plan = [(n, f.name, f.capture, obj) for n, f, obj in targets]
            self._plan_cache = (plan, _cuda_devices(targets))
            self._plan_key = key
        return self._plan_cache

    # -- taking snapshots -----------------------------------------------------------------

    def snapshot(
        self,
        name: str,
        *,
        step: int | None = None,
        epoch: int | None = None,
        metrics: Mapping[str, int | float | str | bool] | None = None,
        tags: Iterable[str] = (),
        durable: bool = False,
    ) -> Snapshot:
        """Capture every tracked generator as snapshot ``name`` of this run.

        Costs the calling thread about the generators' own getstate calls; encoding,
        probes and storage happen on the background writer. ``snapshot.ref`` is known at
        once (its digest is computed on first use, off this call). ``durable=True`` waits
        until the snapshot is on disk, in the store or, for a server that is away, in the
        spool (``flush()`` says when it reached the server), and raises if it could not
        be kept.
        """
        self._raise_pending()
        check_name(name)
        # The hot path: one getstate call per generator and as little else as possible;
        # the environment, probes and encoding are the writer's work.
        plan, devices = self._plan()
        states = {n: State(family, capture(obj)) for n, family, capture, obj in plan}
        if step is None and epoch is None and not metrics and not tags:
            metadata = self._metadata
        else:
            metadata = Metadata(
                step=_int_or_none("step", step),
                epoch=_int_or_none("epoch", epoch),
                tags=_tags(tags),
                metrics=_metrics(metrics),
                rank=self.rank,
                world_size=self.world_size,
            )
        snapshot = _TakenSnapshot._for(states, metadata, self.run, name)
        job = self._writer.submit((name, snapshot, devices, durable))
        if durable:
            self._writer.wait_for(job)
            if job.error is not None:
                raise job.error
            return job.result
        return snapshot

    def _write(self, payload: Payload) -> Snapshot:
        """On the writer thread: environment, probes, encode, store, divergence check."""
        [(result, error)] = self._write_many([payload])
        if error is not None:
            raise error
        return result

    def _write_many(self, payloads: list[Payload]) -> list[Outcome]:
        """On the writer thread, for one snapshot or several that queued up: each one
        prepared (environment, probes, encoding), then stored together where the store
        can (one request to a server, one sync of a local store's pack); each snapshot's
        outcome is its own. Durable on return if any of them was asked to be."""
        outcomes: list[Outcome] = []
        ready: list[tuple[int, str, Snapshot, bytes]] = []
        durable = False
        for payload in payloads:
            durable = durable or payload[3]
            try:
                name, complete, data = self._prepare(payload)
            except Exception as exc:
                outcomes.append((None, exc))
                continue
            ready.append((len(outcomes), name, complete, data))
            outcomes.append((None, None))
        if ready and not self._recorded:
            self._record_run(ready[0][2].environment)
        results = self._put_all([(name, snap, data) for _i, name, snap, data in ready], durable)
        for (index, name, complete, _data), result in zip(ready, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, (ConflictError, AuthError)):
                    self._refused[name] = result
                outcomes[index] = (None, result)
                continue
            try:
                outcomes[index] = (self._stored(name, complete), None)
            except Exception as exc:
                outcomes[index] = (None, exc)
        return outcomes

    def _record_run(self, environment: Mapping[str, Any]) -> None:
        """On the writer thread, before a snapshot is stored: the run's record, until it is
        kept. A store without records is skipped. A record the store refuses (invalid, a
        token without write, a server without records) is warned about once and given up;
        one the store could not be reached for is tried again with a later snapshot, at
        most every ``RECORD_RETRY`` seconds. A run that already has a record keeps it (a
        different seed or config this process set is warned about)."""
        put = getattr(self.store, "put_record", None)
        if not callable(put):
            self._recorded = True
            return
        now = time.monotonic()
        if now < self._record_retry_at:
            return
        try:
            if self._record is None:
                self._record = _record.gather(config=self.config, environment=environment)
            kept = put(self.run, self._record)
        except Exception as exc:  # a record must never cost the snapshots
            transient = isinstance(exc, TransportError)
            if transient:
                self._record_retry_at = now + RECORD_RETRY
            else:
                self._recorded = True
            # a refused token: the snapshots' own warning says so, once
            if not self._record_warned and not isinstance(exc, AuthError):
                self._record_warned = True
                then = (
                    f"it is tried again with a later snapshot (every {RECORD_RETRY:g} s at most)"
                    if transient
                    else "the run has no record"
                )
                warn(
                    f"rngvault: the record of run {self.run} could not be stored ({exc}); {then}",
                    StoreWarning,
                )
            return
        self._recorded = True
        mine = self._record
        # only what this process set: a resumed process that restores its states rather
        # than seeding, or that gives no config, is no different run
        asked = (["config"] if self.config is not None else []) + (
            ["seed"] if mine.get("seed") is not None else []
        )
        differ = [k for k in sorted(asked, reverse=True) if kept.get(k) != mine.get(k)]
        if kept.get("created") != mine["created"] and differ:
            warn(
                f"run {self.run} was recorded by an earlier process with another "
                f"{' and '.join(differ)} ({', '.join(f'{k}={kept.get(k)!r:.80}' for k in differ)}"
                f"; this one has {', '.join(f'{k}={mine.get(k)!r:.80}' for k in differ)}); "
                "the first record is kept: use a new run name for a new configuration",
                RngVaultWarning,
            )

    def record(self, run: str | None = None) -> dict[str, Any]:
        """The record of ``run`` (this run by default): seed, config, git commit, command
        line, host, environment; ``{}`` for a run stored without one."""
        self._read_own_writes()
        read = getattr(self.store, "record", None)
        if not callable(read):
            raise StoreError(f"{type(self.store).__name__} keeps no run records")
        return dict(read(_check_run(run) if run is not None else self.run))

    def _put_all(
        self, items: list[tuple[str, Snapshot, bytes]], durable: bool
    ) -> list[bool | BaseException]:
        """Store prepared snapshots: through the store's ``put_many`` where it has one,
        else one ``put`` each; ``durable`` is passed to stores that take it."""
        if not items:
            return []
        if self._put_kind is None:  # looked up once: what this store's methods take
            many = getattr(self.store, "put_many", None)
            method = many if callable(many) else self.store.put
            self._put_kind = (callable(many), _takes_durable(method))
        batched, takes_durable = self._put_kind
        extra = {"durable": durable} if takes_durable else {}
        if batched:
            batch = [(self.run, name, data, snap) for name, snap, data in items]
            return list(self.store.put_many(batch, **extra))  # type: ignore[attr-defined]
        results: list[bool | BaseException] = []
        for name, snap, data in items:
            try:
                results.append(self.store.put(self.run, name, data, snap, **extra))
            except Exception as exc:
                results.append(exc)
        return results

    def _prepare(self, payload: Payload) -> tuple[str, Snapshot, bytes]:
        """The environment and probes added to a taken snapshot, and its encoding."""
        name, snapshot, devices, _durable = payload
        environment = _environment.collect(
            rank=self.rank, world_size=self.world_size, local_rank=self.local_rank
        )
        complete = snapshot._with(
            environment=environment,
            probes=self._probes_of(snapshot.states, devices) if self.probes else {},
        )
        data, digest = encode_with_digest(complete)  # the states are encoded once
        snapshot.__dict__.setdefault("digest", digest)  # the returned one's ref needs it
        complete = complete._with(ref=SnapshotRef(self.run, name, digest, self.rank), digest=digest)
        return name, complete, data

    def _probes_of(self, states: Mapping[str, State], devices: Mapping[str, int]) -> dict[str, Any]:
        """Each generator's probe, computed again only for states that changed since this
        Vault's previous snapshot (a probe depends on the state alone)."""
        cache = self._probe_cache
        probes: dict[str, Any] = {}
        todo: dict[str, State] = {}
        for generator, state in states.items():
            known = cache.get(generator)
            if (
                known is not None
                and known[0].family == state.family
                and values_equal(known[0].fields, state.fields)
            ):
                if known[1] is not None:
                    probes[generator] = known[1]
            else:
                todo[generator] = state
        if todo:
            computed = _probes.compute(todo, devices)
            for generator, state in todo.items():
                cache[generator] = (state, computed.get(generator))
                if generator in computed:
                    probes[generator] = computed[generator]
        return {generator: probes[generator] for generator in states if generator in probes}

    def _stored(self, name: str, complete: Snapshot) -> Snapshot:
        """After a put: forget an earlier refusal of ``name``; compare with the reference."""
        self._refused.pop(name, None)
        if self.reference is not None and self._divergence is None:
            self._check_divergence(name, complete)
        return complete

    def _check_divergence(self, name: str, snapshot: Snapshot) -> None:
        assert self.reference is not None
        try:
            reference = self.get(name, run=self.reference, rank=self.rank)
        except NotFoundError:
            return  # the reference run has no snapshot of that name: nothing to compare
        except RngVaultError as exc:  # the snapshot itself is safe: only the check is lost
            if not self._reference_warned:
                self._reference_warned = True
                warn(
                    f"rngvault: cannot compare {self.run} with the reference run "
                    f"{self.reference}: {exc}",
                    DivergenceWarning,
                )
            return
        report = compare_snapshots(name, self.run, snapshot, self.reference, reference)
        if report is None:
            return
        self._divergence = report
        warn(str(report), DivergenceWarning)
        if self.on_divergence is not None:
            self.on_divergence(report)

    def _raise_pending(self) -> None:
        self._writer.raise_pending()
        if self.strict and self._divergence is not None and not self._divergence_raised:
            self._divergence_raised = True
            raise DivergenceError(str(self._divergence), self._divergence)

    @property
    def divergence(self) -> DivergenceReport | None:
        """The first divergence from the reference run, once one was found."""
        return self._divergence

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every snapshot taken so far is stored, and send what a server that
        was away left in the spool. False if ``timeout`` passed or snapshots still wait in
        the spool (they are safe on disk and will be sent later)."""
        done = self._writer.flush(timeout)
        self._raise_pending()
        return done and self.store.flush() == 0

    def _at_exit(self) -> None:
        """After the exit flush: say what is left in a spool, and where."""
        left = self.store.flush()
        if left:
            spool = getattr(self.store, "spool", None)
            where = getattr(spool, "directory", "the spool")
            count = getattr(spool, "count", None)
            refused = count("refused") if callable(count) else 0
            url = self.store.location
            said = (
                f"the next process using {url}, or `rngvault --url {url} spool flush`, "
                "sends the waiting ones"
            )
            if refused:
                said += (
                    f"; {refused} were refused for the token: set RNGVAULT_TOKEN or pass "
                    f"--token, then `rngvault --url {url} spool retry`"
                )
            warnings.warn(
                f"rngvault: {left} snapshot(s) for {url} are left in the spool at {where}; {said}",
                StoreWarning,
                stacklevel=1,
            )

    def close(self, timeout: float | None = None) -> None:
        """Flush and release the store."""
        try:
            self._writer.close(timeout)
        finally:
            if self._owns_store:
                self.store.close()
            else:
                self.store.flush()  # the caller's store stays open; what was put is kept

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------

    def _read_own_writes(self) -> None:
        """Reads see this vault's own snapshots: wait for the writer if it is busy (but not
        on the writer thread itself, which reads the reference run)."""
        if self._writer.pending and not self._writer.on_writer_thread():
            self._writer.flush()

    def get(
        self,
        name: str,
        run: str | None = None,
        *,
        rank: int | None = None,
        digest: str | None = None,
    ) -> Snapshot:
        """The stored snapshot ``name`` of ``run`` (this run by default) for ``rank``
        (this process's rank by default)."""
        run = _check_run(run) if run is not None else self.run
        check_name(name)
        rank = self.rank if rank is None else rank
        self._read_own_writes()
        snapshot = decode(self.store.get(run, name, rank, digest=digest))
        return snapshot._with(ref=SnapshotRef(run, name, snapshot.digest, rank))

    def snapshots(self, run: str | None = None) -> list[SnapshotInfo]:
        """Every snapshot of ``run`` (this run by default) with its metadata, oldest first."""
        self._read_own_writes()
        return self.store.snapshots(_check_run(run) if run is not None else self.run)

    def runs(self) -> list[str]:
        """Every run in the store."""
        self._read_own_writes()
        return self.store.runs()

    def diff(self, a: str, b: str, run: str | None = None) -> DiffReport:
        """Per generator: unchanged / advanced (by how many draws) / reseeded / missing."""
        from rngvault._diff import diff

        return diff(self.get(a, run), self.get(b, run))

    # -- restoring ------------------------------------------------------------------------

    def _resolve_ref(
        self, name: str | SnapshotRef, run: str | None
    ) -> tuple[str, str, str | None, int]:
        """(run, name, digest or None, the rank the digest belongs to)."""
        if isinstance(name, str) and "@" in name:
            name = SnapshotRef.parse(name)
        if isinstance(name, SnapshotRef):
            return name.run, name.name, name.digest, name.rank
        return (_check_run(run) if run is not None else self.run), check_name(name), None, 0

    def restore(
        self,
        name: str | SnapshotRef | None = None,
        *,
        step: int | None = None,
        run: str | None = None,
        strict: bool = False,
        apply_flags: bool = False,
        remap: Literal["spawn"] | None = None,
    ) -> RestoreReport:
        """Restore every tracked generator to snapshot ``name`` of ``run`` (this run by
        default), for this process's rank. ``name`` may also be a SnapshotRef or its string.

        ``step=N`` instead of ``name`` restores the snapshot taken at training step N
        (NotFoundError names the nearest steps when there is none; several snapshots at
        that step with different states are an error asking for the name).

        All or nothing; the report lists each generator and every environment difference
        graded by what it can break. ``strict=True`` makes a skipped generator or a
        difference that can break bit-exactness an error before anything is touched.
        A different world size is an error unless ``remap="spawn"``: then ranks that were
        not recorded get states derived deterministically from the snapshot's digest.
        Everything that can refuse runs before the first generator is touched; a recorded
        flag that cannot be applied becomes a note in the report.
        """
        if remap not in (None, "spawn"):
            raise RestoreError(f"remap must be None or 'spawn', not {remap!r}")
        if name is not None and step is not None:
            raise RestoreError(f"restore takes a name or a step, not both ({name!r}, step={step})")
        if step is not None:
            from rngvault._bisect import name_at_step

            self._read_own_writes()
            where = _check_run(run) if run is not None else self.run
            # a rank that was not recorded (remap="spawn") finds the name among rank 0's
            name = name_at_step(self.store, where, step, rank=0 if remap else self.rank)
        if name is None:
            raise RestoreError("restore needs a snapshot name or step=N")
        snapshot, notes = self._snapshot_for_rank(name, run, remap)
        self._environment_differences(snapshot, strict, apply_flags, remap)  # strict refuses
        notes += self._probe_notes(snapshot)
        targets = {n: obj for n, (_family, obj) in self._tracked.items()}
        report = restore_states(
            snapshot, targets, include_globals=self.track_globals, strict=strict
        )
        if apply_flags:
            notes += _environment.apply_flags(snapshot.environment)
        # The report describes this process as the restore leaves it: the probes may have
        # imported torch, and the flags applied are no longer differences.
        differences = self._environment_differences(snapshot, False, False, remap)
        return dataclasses.replace(
            report, differences=tuple(differences), notes=report.notes + tuple(notes)
        )

    def _snapshot_for_rank(
        self, name: str | SnapshotRef, run: str | None, remap: str | None
    ) -> tuple[Snapshot, list[str]]:
        """The snapshot this rank restores (its own, or states derived for a rank that was
        not recorded), checked against the digest a reference names; and notes on ranks."""
        run, name, digest, ref_rank = self._resolve_ref(name, run)
        if digest is None and run == self.run:
            self._refuse_if_not_ours(name)
        rank0 = self.get(name, run, rank=0, digest=digest if ref_rank == 0 else None)
        recorded = rank0.metadata.world_size
        notes: list[str] = []
        if recorded != self.world_size:
            if remap != "spawn":
                raise RestoreError(
                    f"snapshot {run}/{name} was taken with world size {recorded}; this process "
                    f"runs with world size {self.world_size}: pass remap='spawn' to derive "
                    "states for the ranks that were not recorded"
                )
            if self.world_size < recorded:
                dropped = ", ".join(str(r) for r in range(self.world_size, recorded))
                notes.append(
                    f"ranks {dropped} of the snapshot were dropped (world size "
                    f"{recorded} -> {self.world_size})"
                )
        if self.rank == 0:
            snapshot = rank0
        elif self.rank < recorded:
            own_digest = digest if ref_rank == self.rank else None
            snapshot = self.get(name, run, rank=self.rank, digest=own_digest)
        else:
            states = _ranks.derive_states(rank0, self.rank)
            snapshot = dataclasses.replace(rank0, states=states, probes={})
            notes.append(
                f"rank {self.rank} was not recorded: its states were derived from "
                f"the snapshot digest (SeedSequence spawn)"
            )
        if digest is not None and rank0.digest != digest and snapshot.digest != digest:
            raise RestoreError(
                f"snapshot {run}/{name} has digest {snapshot.digest[:16]}..., the reference "
                f"names {digest[:16]}...: it is not the snapshot the reference was made for"
            )
        return snapshot, notes

    def _refuse_if_not_ours(self, name: str) -> None:
        """Restoring a name right after this Vault's own snapshot of it was refused would
        restore states this Vault did not take: an error saying what to do instead."""
        self._read_own_writes()
        refused = self._refused.get(name)
        if isinstance(refused, ConflictError):
            raise ConflictError(
                f"snapshot {self.run}/{name} holds other content than the snapshot this Vault "
                f"just took under that name (its put was refused: {refused}); nothing was "
                "restored. Take snapshots under a new name (or a new run), or, to restore "
                f"the stored one anyway, pass its reference: vault.restore(vault.get({name!r})"
                ".ref)"
            )
        if refused is not None:
            raise RestoreError(
                f"snapshot {self.run}/{name} taken by this Vault was not stored ({refused}); "
                "nothing was restored: the store's snapshot of that name, if any, is not "
                "the one this Vault took"
            )

    def _environment_differences(
        self, snapshot: Snapshot, strict: bool, apply_flags: bool, remap: str | None
    ) -> list[EnvironmentDifference]:
        """How this process differs from where the snapshot was taken; with ``strict``, a
        difference that can break bit-exactness (and that apply_flags will not mend) is an
        error."""
        here = _environment.collect(
            rank=self.rank, world_size=self.world_size, local_rank=self.local_rank
        )
        families = {state.family for state in snapshot.states.values()}
        differences = _environment.compare(snapshot.environment, here, families)
        if remap == "spawn":
            differences = [d for d in differences if d.key != "world_size"]
        fixable = _environment.APPLIED_FLAGS if apply_flags else frozenset()
        blocking = [d for d in differences if d.severity != "info" and d.key not in fixable]
        if strict and blocking:
            lines = [
                f"{d.key}: recorded {d.recorded!r}, here {d.current!r} ({d.affects})"
                for d in blocking
            ]
            raise RestoreError(
                "strict restore refused, nothing was changed; the environment differs in ways "
                "that can break bit-exactness:\n  " + "\n  ".join(lines)
            )
        return differences

    def _probe_notes(self, snapshot: Snapshot) -> list[str]:
        """A note for each generator whose recorded first draws this machine does not give
        from the same state (computed on copies: nothing is touched)."""
        checks = _probes.check(snapshot.states, snapshot.probes, self._devices())
        return [
            f"{generator}: same state, different numbers ({found}): a library version or "
            "platform changed the algorithm"
            for generator, found in checks.items()
            if found.verdict is _probes.ProbeVerdict.DIFFERS
        ]

    def verify(self, name: str, run: str | None = None) -> dict[str, _probes.ProbeCheck]:
        """Check snapshot ``name`` here without touching any generator: each generator's
        first draws recomputed from its stored state and compared with the recorded ones.
        Generator -> a ``ProbeCheck``: ``str()`` of it is "ok", "differs: ...", or why it
        cannot be checked here."""
        snapshot = self.get(name, run)
        return _probes.check(snapshot.states, snapshot.probes, self._devices())

    def _devices(self) -> dict[str, int]:
        """The CUDA device of each target on one (globals and tracked generators)."""
        return _cuda_devices(self._targets())


def _cuda_devices(targets: Iterable[tuple[str, Family, Any]]) -> dict[str, int]:
    """Generator name -> CUDA device index, for the targets among (name, family, obj) that
    are on a CUDA device."""
    found = {}
    for name, family, obj in targets:
        index = family.device(obj)
        if index is not None:
            found[name] = index
    return found


_FETCH_STORES: dict[tuple[str, str | None], Store] = {}


def fetch(
    run: str,
    name: str,
    *,
    url: str | None = None,
    rank: int | None = None,
    token: str | None = None,
) -> Snapshot:
    """Snapshot ``name`` of ``run`` from a server (``url`` or ``$RNGVAULT_URL``), or from any
    store location; fetched snapshots are cached locally by digest."""
    location = url or client_config().url
    if not location:
        raise StoreError("fetch needs a server: pass url= or set RNGVAULT_URL")
    run = _check_run(run)
    check_name(name)
    key = (str(location), token)
    store = _FETCH_STORES.get(key)
    if store is None:  # one client per server: connection reuse across fetches
        store = _FETCH_STORES[key] = open_store(location, token=token)
    snapshot = decode(store.get(run, name, rank or 0))
    return snapshot._with(ref=SnapshotRef(run, name, snapshot.digest, rank or 0))
