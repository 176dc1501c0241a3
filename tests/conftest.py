"""Shared fixtures. Tests mirror the package: tests/families/test_python.py tests
rngvault/families/python.py, tests/server/... the server, and so on.

Draws are written as Python expressions (strings) so that the same expression can be
evaluated here and in a new interpreter: ``restore_elsewhere`` runs it there after restoring
a snapshot read back from a file, and the two results must be equal.

Tests marked ``cuda`` are skipped, with the reason, where CUDA is not available;
``scripts/gpu-check`` runs them on a CUDA machine.

This module imports neither torch, hypothesis nor the server's dependencies, so the CUDA
subset runs where only torch, numpy and msgpack are installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import rngvault

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def _cuda_skip_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "needs torch with CUDA: torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return f"needs CUDA: torch {torch.__version__} sees no CUDA device here"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``cuda`` tests, saying why, where CUDA is not available."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_items:
        return
    reason = _cuda_skip_reason()
    if reason is not None:
        for item in cuda_items:
            item.add_marker(pytest.mark.skip(reason=reason))


def jsonable(value: Any) -> Any:
    """``value`` as it comes back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value))


def python_env(**extra: str) -> dict[str, str]:
    """The environment for a child interpreter that imports this checkout of rngvault."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _run_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=python_env(),
        timeout=timeout,
    )


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run code in a new interpreter; returns the completed process (stdout, stderr, rc)."""
    return _run_python


RESTORE_ELSEWHERE = """
import json, random, sys
import numpy as np
import rngvault
{imports}
{setup}
snapshot = rngvault.decode(open(sys.argv[1], "rb").read())
report = rngvault.restore(snapshot, targets, include_globals={include_globals})
results = {{}}
for label, expr in json.loads(sys.argv[2]).items():
    rngvault.restore(snapshot, targets, include_globals={include_globals})
    results[label] = eval(expr)
print(json.dumps({{"restored": report.restored, "results": results}}))
"""


@pytest.fixture
def restore_elsewhere(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Encode a snapshot to a file, then in a new interpreter decode it, restore, and draw.

    ``setup`` is code that defines ``targets`` (name -> fresh generator, differently seeded);
    ``draws`` maps a label to an expression, evaluated after a fresh restore each. Returns
    ``{"restored": [names], "results": {label: value}}`` from the other process.
    """

    def run(
        snapshot: rngvault.Snapshot,
        setup: str,
        draws: Mapping[str, str],
        *,
        imports: str = "",
        include_globals: bool = False,
    ) -> dict[str, Any]:
        path = tmp_path / "snapshot.msgpack"
        path.write_bytes(rngvault.encode(snapshot))
        code = RESTORE_ELSEWHERE.format(
            imports=imports, setup=textwrap.dedent(setup), include_globals=include_globals
        )
        done = _run_python(code, str(path), json.dumps(dict(draws)))
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    return run


Replayed = tuple[rngvault.Snapshot, dict[str, Any], dict[str, Any], dict[str, Any]]


def _replay(
    generators: Mapping[str, Any],
    draws: Mapping[str, str],
    namespace: Mapping[str, Any],
    *,
    include_globals: bool = False,
) -> Replayed:
    """Capture; then for each draw: draw, restore, draw again, draw once more, restore.

    Returns the snapshot and three dicts of JSON values: ``first`` (what followed the
    captured state), ``again`` (the same draw after a restore into the objects, which had
    moved on) and ``moved`` (the draw after that, without a restore). A bit-exact restore
    makes ``again == first``; ``moved != first`` shows the draw really moves the generator.
    """
    targets = dict(generators)
    snapshot = rngvault.capture(targets, include_globals=include_globals)
    first, again, moved = {}, {}, {}
    for label, expr in draws.items():
        first[label] = jsonable(eval(expr, dict(namespace)))
        rngvault.restore(snapshot, targets, include_globals=include_globals)
        again[label] = jsonable(eval(expr, dict(namespace)))
        moved[label] = jsonable(eval(expr, dict(namespace)))
        rngvault.restore(snapshot, targets, include_globals=include_globals)
    return snapshot, first, again, moved


@pytest.fixture
def replay() -> Callable[..., Replayed]:
    """Capture, draw, restore and draw again, for each of a table of draws (see ``_replay``)."""
    return _replay


def _assert_refused(
    state: rngvault.State, target: Any, *needles: str, name: str = "gen"
) -> tuple[str, str]:
    """A bad state is refused by both ``restore`` and ``decode``, leaving the target as it was.

    Each message must name the generator and contain every needle (the field, the value).
    Returns the two messages.
    """
    from rngvault._snapshot import values_equal
    from rngvault.families import family_of

    family = family_of(target)
    before = family.capture(target)
    snapshot = rngvault.Snapshot({name: state}, created=0.0)
    with pytest.raises(rngvault.RestoreError) as restore_error:
        rngvault.restore(snapshot, {name: target}, include_globals=False)
    assert values_equal(family.capture(target), before), "a refused restore touched the target"
    with pytest.raises(rngvault.DecodeError) as decode_error:
        rngvault.decode(rngvault.encode(snapshot))
    messages = str(restore_error.value), str(decode_error.value)
    for message in messages:
        for needle in (repr(name), *needles):
            assert needle in message, f"{needle!r} not in {message!r}"
    return messages


@pytest.fixture
def assert_refused() -> Callable[..., tuple[str, str]]:
    """Check that restore and decode both refuse a state (see ``_assert_refused``)."""
    return _assert_refused


def _with_fields(state: rngvault.State, path: str, value: Any) -> rngvault.State:
    """A copy of ``state`` with the (dotted) field ``path`` set to ``value``."""
    fields = dict(state.fields)
    head, _, rest = path.partition(".")
    if rest:
        inner = dict(fields[head])
        inner[rest] = value
        fields[head] = inner
    else:
        fields[head] = value
    return rngvault.State(state.family, fields)


def _without_field(state: rngvault.State, key: str) -> rngvault.State:
    return rngvault.State(state.family, {k: v for k, v in state.fields.items() if k != key})


@pytest.fixture
def with_fields() -> Callable[[rngvault.State, str, Any], rngvault.State]:
    """Copy a state with one (dotted) field replaced: ``with_fields(state, "state.pos", 700)``."""
    return _with_fields


@pytest.fixture
def without_field() -> Callable[[rngvault.State, str], rngvault.State]:
    """Copy a state with one top-level field left out."""
    return _without_field


def state_of(obj: Any) -> rngvault.State:
    """The captured state of one generator."""
    return rngvault.capture({"gen": obj}, include_globals=False).states["gen"]


@pytest.fixture
def capture_state() -> Callable[[Any], rngvault.State]:
    """Capture one generator's state: ``capture_state(rng)``."""
    return state_of


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Makes started ``rngvault serve`` processes on loopback (tests/_live.py; the database
    defaults to tmp_path/live.db); stops them all after the test."""
    from tests._live import ServerProcess

    started: list[ServerProcess] = []
    home = tmp_path / "server-home"
    home.mkdir()

    def make(*extra: str, db: Path | None = None) -> ServerProcess:
        server = ServerProcess(home, db or tmp_path / "live.db", *extra)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def live_server(server_factory: Callable[..., Any]) -> Any:
    """A real uvicorn server, open on loopback, on a fresh database."""
    return server_factory()
