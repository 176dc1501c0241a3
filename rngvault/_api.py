"""``capture`` and ``restore``: the whole process's generators in one call."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Mapping
from typing import Any

from rngvault._errors import CaptureError, RestoreError, StateError
from rngvault._names import check_generator_name
from rngvault._report import GeneratorOutcome, RestoreReport
from rngvault._snapshot import Metadata, Snapshot, State, values_equal
from rngvault.families import Family, families, family_of, get_family

Targets = Mapping[str, Any]


def global_targets() -> dict[str, Any]:
    """The process-wide generators to capture: python, numpy legacy, and torch when imported.

    CUDA devices are included only when CUDA is already initialized: capturing never
    initializes CUDA itself.
    """
    return {name: obj for name, _family, obj in global_resolved()}


def global_resolved() -> list[tuple[str, Family, Any]]:
    """``global_targets()`` with their families, which are known without looking."""
    return [
        (name, family, obj)
        for family in families().values()
        for name, obj in family.process_globals()
    ]


def _global_restore_target(name: str) -> tuple[Any, str]:
    """The object a global state restores into, or (None, why there is none)."""
    for family in families().values():
        found = family.global_target(name)
        if found is not None:
            return found
    return None, _UNTRACKED


_UNTRACKED = "no generator of that name is tracked in this process"
_NOT_GIVEN = "no target given (include_globals=False)"


# The family of objects whose type alone decides it (``Family.type_decides``; not a
# torch.Generator, whose device does), so that capture() looks each type up once.
_FAMILY_OF_TYPE: dict[type, Family] = {}


@functools.lru_cache(maxsize=4096)
def _checked_name(name: str) -> str:
    return check_generator_name(name)


def resolve(generators: Targets | None) -> list[tuple[str, Family, Any]]:
    """Check names and find each object's family once (the capture loop reuses the result)."""
    resolved = []
    for name, obj in (generators or {}).items():
        _checked_name(name)
        family = _FAMILY_OF_TYPE.get(type(obj))
        if family is None:
            try:
                family = family_of(obj)
            except CaptureError as exc:
                raise CaptureError(f"generator {name!r}: {exc}") from None
            if family.type_decides:
                _FAMILY_OF_TYPE[type(obj)] = family
        resolved.append((name, family, obj))
    return resolved


def capture_resolved(resolved: list[tuple[str, Family, Any]]) -> dict[str, State]:
    """The hot path: one getstate call per generator, nothing else."""
    states = {}
    for name, family, obj in resolved:
        try:
            states[name] = State(family.name, family.capture(obj))
        except CaptureError as exc:
            raise CaptureError(f"generator {name!r}: {exc}") from None
    return states


def capture(
    generators: Targets | None = None,
    *,
    include_globals: bool = True,
    metadata: Metadata | None = None,
    environment: Mapping[str, Any] | None = None,
) -> Snapshot:
    """Capture the complete state of ``generators`` (name -> object) and the globals.

    ``generators`` may hold ``random.Random``, ``numpy.random.RandomState``,
    ``numpy.random.Generator`` or ``BitGenerator``, ``torch.Generator`` and
    ``torch.utils.data.DataLoader`` objects. ``include_globals`` adds ``python.global``,
    ``numpy.global``, ``torch.cpu`` and ``torch.cuda:N`` (for each device, once CUDA is
    initialized) when those libraries are imported.
    """
    resolved = resolve(generators)
    if include_globals:
        given = {name for name, _family, _obj in resolved}
        resolved = [g for g in global_resolved() if g[0] not in given] + resolved
    return Snapshot(
        states=capture_resolved(resolved),
        metadata=metadata or Metadata(),
        environment=dict(environment or {}),
    )


def restore(
    snapshot: Snapshot,
    generators: Targets | None = None,
    *,
    include_globals: bool = True,
    strict: bool = False,
) -> RestoreReport:
    """Restore ``snapshot`` into ``generators`` (name -> object) and the globals.

    All or nothing: every state is validated and matched with its target before any
    generator is touched; an invalid state or a target of the wrong kind raises
    ``RestoreError`` naming the generator, field and value. A state with no target here is
    skipped and listed in the report (an error with ``strict=True``); so is a given target
    the snapshot has no state for. If applying fails midway, the generators already set are
    put back.
    """
    if not isinstance(snapshot, Snapshot):
        raise RestoreError(f"expected a Snapshot, got {type(snapshot).__name__}")
    explicit = dict(generators or {})
    for name in explicit:
        check_generator_name(name)

    plan: list[tuple[str, Family, Any, State]] = []
    outcomes: dict[str, GeneratorOutcome] = {}
    errors: list[str] = []
    for name, state in snapshot.states.items():
        family = get_family(state.family)
        if family is None:
            errors.append(f"generator {name!r}: unknown family {state.family!r}")
            continue
        try:
            # Decoded states too: their fields are plain maps and arrays, which may have
            # been changed since decode checked them.
            family.validate(state.fields)
        except StateError as exc:
            errors.append(str(exc.for_generator(name)))
            continue
        if name in explicit:
            obj, why = explicit[name], ""
        elif include_globals:
            obj, why = _global_restore_target(name)
        else:
            obj, why = None, _NOT_GIVEN
        if obj is None:
            outcomes[name] = GeneratorOutcome(name, state.family, "skipped", why)
            continue
        try:
            family.check_target(obj, state.fields)
        except StateError as exc:
            errors.append(str(exc.for_generator(name)))
            continue
        plan.append((name, family, obj, state))
    for name in explicit:
        if name not in snapshot.states:
            family_name = _family_name(explicit[name])
            outcomes[name] = GeneratorOutcome(
                name, family_name, "missing", "the snapshot has no state for this generator"
            )

    if errors:
        raise RestoreError("restore refused, nothing was changed:\n  " + "\n  ".join(errors))
    if strict:
        unmatched = [o for o in outcomes.values() if o.status in ("skipped", "missing")]
        if unmatched:
            lines = [f"{o.name}: {o.status} ({o.detail})" for o in unmatched]
            raise RestoreError(
                "strict restore refused, nothing was changed:\n  " + "\n  ".join(lines)
            )

    _apply(plan)

    for name, family, obj, state in plan:
        # Validated fields against the library's own: the types match by construction.
        verified = values_equal(family.capture(obj), state.fields, exact_types=False)
        outcomes[name] = GeneratorOutcome(
            name, family.name, "restored", family.describe(state.fields), verified
        )
    order = list(snapshot.states) + [n for n in outcomes if n not in snapshot.states]
    return RestoreReport(
        outcomes=tuple(outcomes[n] for n in order),
        digest=snapshot.digest,
        notes=_skipped_globals(outcomes.values()),
    )


def _skipped_globals(outcomes: Iterable[GeneratorOutcome]) -> tuple[str, ...]:
    """One note per reason process-wide generators could not be restored here (no torch,
    no CUDA): their streams will differ from the snapshot's."""
    by_reason: dict[str, list[str]] = {}
    for o in outcomes:
        if o.status == "skipped" and o.detail not in (_UNTRACKED, _NOT_GIVEN):
            by_reason.setdefault(o.detail, []).append(o.name)
    return tuple(f"{', '.join(sorted(names))} skipped: {why}" for why, names in by_reason.items())


def _family_name(obj: Any) -> str:
    try:
        return family_of(obj).name
    except Exception:
        return type(obj).__name__


def _apply(plan: list[tuple[str, Family, Any, State]]) -> None:
    """Apply every state; on failure put back the ones already applied."""
    saved = [(family, obj, family.capture(obj)) for _name, family, obj, _state in plan]
    done = 0
    try:
        for name, family, obj, state in plan:
            try:
                family.restore(obj, state.fields)
            except Exception as exc:
                raise RestoreError(
                    f"generator {name!r}: {type(exc).__name__}: {exc}; the generators already "
                    "restored were put back"
                ) from exc
            done += 1
    finally:
        if done < len(plan):
            # The failing generator first: its restore may have set part of its state. Best
            # effort, since it may fail again for the same reason.
            family, obj, fields = saved[done]
            with contextlib.suppress(Exception):
                family.restore(obj, fields)
            for family, obj, fields in reversed(saved[:done]):
                family.restore(obj, fields)
