"""Probes: the first few outputs of each generator, computed from a copy of its state.

A snapshot carries them so that a restore on another machine can recompute them and tell
"same state, different numbers" (a library version or platform changed the algorithm)
from a state that was not restored. Probes never touch the live generators. Which draws
make a family's probe is that family's ``probe`` (docs/format.md lists them).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from rngvault._snapshot import Snapshot, State, values_equal
from rngvault.families import get_family


def compute(
    states: Mapping[str, State], devices: Mapping[str, int] | None = None
) -> dict[str, list[Any]]:
    """Probe values per generator (generators that cannot be probed here are left out).
    ``devices`` names the CUDA device of generators whose target is on one."""
    devices = devices or {}
    probed = {name: _probe(state, devices.get(name)) for name, state in states.items()}
    return {name: values for name, (values, _why) in probed.items() if values is not None}


def _probe(state: State, device: int | None) -> tuple[list[Any] | None, str]:
    """(the probe values, "") or (None, why this generator cannot be probed here)."""
    family = get_family(state.family)
    if family is None:
        return None, f"rngvault does not know the family {state.family!r}"
    try:
        values = family.probe(state.fields, device)
    except Exception as exc:  # e.g. torch missing here: no probe rather than no snapshot
        return None, str(exc) or type(exc).__name__
    if values is None:
        return None, f"the {state.family} family has no probe"
    return values, ""


class ProbeVerdict(enum.Enum):
    """What checking one generator's recorded probe found."""

    OK = "ok"
    DIFFERS = "differs"
    NOT_RECORDED = "no probe recorded"
    CANNOT_PROBE = "cannot be probed here"


class ProbeCheck(str):
    """The verdict for one generator: a string (``"ok"``, ``"differs: recorded [...], here
    [...]"``, ``"no probe recorded"``, ``"cannot be probed here: <why>"``) that also carries
    the ``ProbeVerdict`` and the values compared, so code tests ``.verdict``, never the text.

    Attributes:
        verdict: the ``ProbeVerdict``.
        recorded: the probe stored with the snapshot, if any.
        here: the probe computed here, if any.
        why: for ``CANNOT_PROBE``, why (torch is not installed...); otherwise "".
    """

    verdict: ProbeVerdict
    recorded: tuple[Any, ...] | None
    here: tuple[Any, ...] | None
    why: str

    def __new__(
        cls,
        verdict: ProbeVerdict,
        recorded: tuple[Any, ...] | None = None,
        here: tuple[Any, ...] | None = None,
        why: str = "",
    ) -> ProbeCheck:
        text = verdict.value
        if verdict is ProbeVerdict.DIFFERS:
            text = f"differs: recorded {list(recorded or ())}, here {list(here or ())}"
        elif why:
            text = f"{text}: {why}"
        found = super().__new__(cls, text)
        found.verdict, found.recorded, found.here, found.why = verdict, recorded, here, why
        return found


def check(
    states: Mapping[str, State],
    recorded: Mapping[str, Any],
    devices: Mapping[str, int] | None = None,
) -> dict[str, ProbeCheck]:
    """Generator -> what recomputing its probe here found."""
    devices = devices or {}
    out = {}
    for name, state in states.items():
        if name not in recorded:
            out[name] = ProbeCheck(ProbeVerdict.NOT_RECORDED)
            continue
        values, why = _probe(state, devices.get(name))
        if values is None:
            out[name] = ProbeCheck(ProbeVerdict.CANNOT_PROBE, tuple(recorded[name]), why=why)
        else:
            mine, theirs = tuple(values), tuple(recorded[name])
            verdict = ProbeVerdict.OK if values_equal(mine, theirs) else ProbeVerdict.DIFFERS
            out[name] = ProbeCheck(verdict, theirs, mine)
    return out


def verify(snapshot: Snapshot, devices: Mapping[str, int] | None = None) -> dict[str, ProbeCheck]:
    """Recompute each generator's first draws from ``snapshot``'s states on this machine and
    compare them with the ones recorded when it was taken.

    Returns generator name -> ``ProbeCheck``, whose ``verdict`` is ``ProbeVerdict.OK``,
    ``DIFFERS`` (same state, other numbers here: another library version or device),
    ``NOT_RECORDED`` or ``CANNOT_PROBE`` (its text and ``why`` say why: e.g. torch is not
    installed here).
    ``devices`` maps CUDA generators to devices."""
    return check(snapshot.states, snapshot.probes, devices)
