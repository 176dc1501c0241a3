"""rngvault/__init__.py: one sorted ``__all__``, every name importable and documented."""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
from pathlib import Path

import rngvault

ROOT = Path(__file__).resolve().parent.parent


def isort_key(name: str) -> tuple[int, str]:
    """CONSTANTS, then Classes, then functions and the rest (ruff's RUF022 order)."""
    if name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name


def test_all_is_sorted_without_duplicates():
    """__all__ is sorted (constants, classes, then the rest) and lists each name once."""
    assert rngvault.__all__ == sorted(rngvault.__all__, key=isort_key)
    assert len(set(rngvault.__all__)) == len(rngvault.__all__)


def test_every_name_in_all_is_importable():
    """``from rngvault import *`` gives exactly the names of __all__."""
    namespace: dict[str, object] = {}
    exec("from rngvault import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(rngvault.__all__)


def test_every_public_attribute_is_in_all():
    """Nothing public is left out of __all__ (subpackages aside)."""
    public = {
        name
        for name, value in vars(rngvault).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(rngvault.__all__)


def test_every_class_and_function_has_its_own_docstring():
    """Each public class, function and module has a docstring of its own."""
    for name in rngvault.__all__:
        obj = getattr(rngvault, name)
        if inspect.isclass(obj):
            assert (vars(obj).get("__doc__") or "").strip(), name
            assert obj.__module__.startswith("rngvault"), name
        elif inspect.isfunction(obj) or inspect.ismodule(obj):
            assert (obj.__doc__ or "").strip(), name


def test_every_constant_is_documented():
    """Public constants are explained in the docs."""
    docs = "\n".join(p.read_text() for p in [ROOT / "README.md", *ROOT.glob("docs/*.md")])
    for name in rngvault.__all__:
        obj = getattr(rngvault, name)
        if not (inspect.isclass(obj) or callable(obj) or inspect.ismodule(obj)):
            if name == "__version__":
                continue
            assert name in docs, f"{name} is not mentioned in README.md or docs/"


def test_version_matches_the_project():
    """rngvault.__version__ is the version in pyproject.toml."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert match is not None
    assert rngvault.__version__ == match.group(1)


def test_the_functions_the_command_uses_are_public(tmp_path: Path) -> None:
    """verify and the spool functions are part of the library, not private to the CLI:
    verify recomputes the probes a Vault recorded (all ok here) and spots one that is not."""
    import numpy as np

    vault = rngvault.Vault(tmp_path, run="alice/exp")
    vault.track(np.random.default_rng(0), "g")
    snapshot = vault.snapshot("s", durable=True)
    checks = rngvault.verify(snapshot)
    assert set(checks) == set(snapshot.states) and checks["g"].verdict is rngvault.ProbeVerdict.OK
    forged = dataclasses.replace(snapshot, probes={**snapshot.probes, "g": [0, 1]})
    assert rngvault.verify(forged)["g"].verdict is rngvault.ProbeVerdict.DIFFERS
    for name in ("verify", "spool_list", "spool_retry", "spool_drop"):
        assert name in rngvault.__all__ and inspect.isfunction(getattr(rngvault, name))


def test_every_public_warning_is_a_rngvault_warning() -> None:
    """One filter covers every warning: each public ``*Warning`` derives from
    RngVaultWarning, and the spool's warning is the one the HTTP store gives."""
    from rngvault.stores import http

    warning_names = [name for name in rngvault.__all__ if name.endswith("Warning")]
    assert {"RngVaultWarning", "SpoolWarning", "StoreWarning"} <= set(warning_names)
    for name in warning_names:
        assert issubclass(getattr(rngvault, name), rngvault.RngVaultWarning), name
    assert rngvault.SpoolWarning is http.SpoolWarning


def test_the_rest_api_doc_makes_every_token_and_file_it_uses_first(tmp_path: Path) -> None:
    """docs/rest-api.md can be followed from an empty directory: its opening commands, run
    here (all but the server), make ``$TOKEN``, ``$READ`` (``token create --grant``: the
    token alone on stdout) and the snapshot files; every later command uses only those."""
    import os
    import subprocess
    import sys

    text = (ROOT / "docs" / "rest-api.md").read_text()
    commands = re.findall(r"^\$ (.*(?:\n(?!\$ |```).*)*)", text, re.MULTILINE)
    opening = [c for c in commands[:4] if not c.rstrip().endswith("&")]
    made = [re.sub(r"\n(token [0-9a-f]{12}: .*)?$", "", c.rstrip()) for c in opening]
    script = "\n".join(made) + "\necho TOKEN=$TOKEN READ=$READ\n"
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    env.update(RNGVAULT_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    tokens = dict(re.findall(r"(TOKEN|READ)=(rv_\S+)", done.stdout))
    assert set(tokens) == {"TOKEN", "READ"}
    assert "grants admin:alice" in done.stderr and "grants read:*" in done.stderr
    for name in ("epoch3", "epoch4"):
        snapshot = rngvault.decode((tmp_path / f"{name}.msgpack").read_bytes())
        assert set(snapshot.states) == {"augment", "python"}
    for command in commands[4:]:
        for variable in re.findall(r"\$([A-Z][A-Z0-9_]*)", command.splitlines()[0]):
            assert variable in tokens, f"${variable} is not made by the opening commands"
        for file in re.findall(r"@([\w.-]+)", command.splitlines()[0]):
            assert (tmp_path / file).exists(), f"{file} is not made by the opening commands"


def test_the_readme_installs_from_a_checkout_with_extras_that_exist() -> None:
    """The README shows ``pip install -e '.[server,torch]'``, and those extras are the
    project's."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"pip install -e '\.\[([a-z,]+)\]'", readme)
    assert match is not None
    pyproject = (ROOT / "pyproject.toml").read_text()
    extras = set(
        re.findall(
            r"^([a-z]+) = \[", pyproject.split("[project.optional-dependencies]")[1], re.MULTILINE
        )
    )
    assert {"server", "torch"} <= set(match.group(1).split(",")) <= extras
