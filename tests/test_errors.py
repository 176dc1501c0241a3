"""rngvault/_errors.py: one root, a documented tree, messages that name what is wrong."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import rngvault
from rngvault import _errors
from rngvault.families import _torch

ERRORS = [
    getattr(_errors, name)
    for name in _errors.__all__
    if not issubclass(getattr(_errors, name), Warning)
]
PACKAGE = Path(rngvault.__file__).parent


def documented_tree() -> dict[str, str]:
    """Class name -> parent name, read from the tree drawn in the module docstring.

    A line of the drawing is ``    │   └── Name   what it is``: the branch mark's column
    gives the depth (4 columns a level); the root has no mark.
    """
    parents: dict[str, str] = {}
    ancestors: list[str] = []
    for line in (_errors.__doc__ or "").splitlines():
        match = re.match(r"^ +[│ ]*([├└]── )?([A-Z]\w*Error)\b", line)
        if not match:
            continue
        depth = 0 if match.group(1) is None else match.start(1) // 4
        del ancestors[depth:]
        if ancestors:
            parents[match.group(2)] = ancestors[-1]
        ancestors.append(match.group(2))
    return parents


def test_every_error_derives_from_the_root():
    """Everything rngvault raises on purpose is a RngVaultError."""
    for error in ERRORS:
        assert issubclass(error, rngvault.RngVaultError), error


def test_docstring_tree_matches_the_classes():
    """The tree in the module docstring lists every error under its real parent."""
    tree = documented_tree()
    assert tree["DivergenceError"] == "RestoreError"
    assert set(tree) | {"RngVaultError"} == {error.__name__ for error in ERRORS}
    for name, parent in tree.items():
        assert getattr(_errors, name).__bases__[0] is getattr(_errors, parent), name


def test_every_error_is_public():
    """Every error is exported from rngvault."""
    for error in ERRORS:
        assert getattr(rngvault, error.__name__) is error


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (rngvault.DecodeError, ValueError),
        (rngvault.StateError, ValueError),
        (rngvault.InvalidNameError, ValueError),
        (rngvault.NotFoundError, LookupError),
        (rngvault.MissingExtraError, ImportError),
    ],
)
def test_errors_are_also_the_builtin_they_resemble(error, builtin):
    """Code that catches ValueError, LookupError or ImportError still catches these."""
    assert issubclass(error, builtin)


def test_state_error_names_generator_field_and_value():
    """StateError renders generator and field before the reason, and keeps them as attributes."""
    error = rngvault.StateError("700 is out of range 0..624", field="pos", value=700)
    assert str(error) == "field 'pos': 700 is out of range 0..624"
    named = error.for_generator("numpy.global")
    assert str(named) == "generator 'numpy.global', field 'pos': 700 is out of range 0..624"
    assert (named.generator, named.field, named.value) == ("numpy.global", "pos", 700)
    assert str(rngvault.StateError("bad")) == "bad"


def test_missing_extra_says_what_to_install():
    """MissingExtraError names the module, the feature and the pip command for the extra."""
    error = rngvault.MissingExtraError("torch", "torch", "restoring a torch generator")
    assert str(error) == (
        "restoring a torch generator needs 'torch', which is not installed: "
        "pip install 'rngvault[torch]'"
    )
    assert error.extra == "torch"


def test_torch_that_cannot_be_imported_is_a_missing_extra(monkeypatch):
    """When torch is not installed, a feature that needs it raises MissingExtraError."""
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(rngvault.MissingExtraError, match=r"rngvault\[torch\]") as info:
        _torch.require("restoring a torch generator")
    assert info.value.extra == "torch"
    assert isinstance(info.value, ImportError)


def test_divergence_error_is_a_restore_error_with_its_report():
    """DivergenceError carries the report that describes the drift."""
    error = rngvault.DivergenceError("drifted at epoch 3", report={"epoch": 3})
    assert isinstance(error, rngvault.RestoreError)
    assert error.report == {"epoch": 3}


# -- warnings ------------------------------------------------------------------------------


def rngvault_modules() -> list[str]:
    """Every module of the package (the server's too: it may warn as well)."""
    return ["rngvault"] + [
        info.name
        for info in pkgutil.walk_packages([str(PACKAGE)], prefix="rngvault.")
        if not info.name.endswith("__main__")  # running it would run the command
    ]


def test_every_warning_class_derives_from_the_warning_root() -> None:
    """Each Warning class defined in rngvault is a RngVaultWarning (itself a UserWarning),
    so one filter covers them all; and each is exported from rngvault."""
    found = {}
    for name in rngvault_modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Warning)
                and value.__module__.startswith("rngvault")
            ):
                found[value.__name__] = value
    assert {"ReproducibilityWarning", "StoreWarning", "SpoolWarning"} <= set(found)
    assert issubclass(rngvault.RngVaultWarning, UserWarning)
    for name, warning in found.items():
        assert issubclass(warning, rngvault.RngVaultWarning), name
        assert getattr(rngvault, name) is warning, name


def test_every_warning_rngvault_gives_is_of_a_rngvault_category() -> None:
    """No warnings.warn/warn call in the package passes a bare UserWarning (or any category
    outside the tree): read from the source, so a rare path cannot hide one."""
    calls = 0
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__main__.py":
            continue
        module_name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = importlib.import_module(module_name.removesuffix(".__init__"))
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called != "warn" or len(node.args) < 2:
                continue
            category = node.args[1]
            if module is _errors and getattr(category, "id", "") == "category":
                continue  # warn() itself, passing its argument on
            calls += 1
            assert isinstance(category, ast.Name), f"{path}:{node.lineno}"
            value = getattr(module, category.id)
            assert issubclass(value, rngvault.RngVaultWarning), f"{path}:{node.lineno}"
    assert calls >= 10


def test_the_warning_tree_in_the_docstring_lists_every_warning() -> None:
    """The warning tree drawn in the module docstring names each warning class."""
    drawn = set(re.findall(r"[├└]── (\w+Warning)\b", _errors.__doc__ or ""))
    public = {n for n in rngvault.__all__ if n.endswith("Warning") and n != "RngVaultWarning"}
    assert drawn == public


def test_warn_points_at_the_first_line_outside_rngvault() -> None:
    """However deep in rngvault a warning is given, it names the user's line: here, a
    Vault that cannot reach its server warns at the line that made it."""
    from tests._live import free_port

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        rngvault.Vault(f"http://127.0.0.1:{free_port()}", run="alice/exp")
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, line)]


def test_a_refused_token_warns_once_not_once_per_snapshot(
    server_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server with tokens refuses a wrong one: the start check warns, then the first
    refused put warns; the next snapshots, refused for the same reason, add no warning. All
    are kept in the spool's refused/ folder."""
    import numpy as np

    from rngvault.cli import main

    tokens = tmp_path / "tokens.json"
    assert main(["token", "--tokens", str(tokens), "create", "--grant", "write:alice"]) == 0
    server = server_factory("--tokens", str(tokens))
    monkeypatch.setenv("RNGVAULT_HOME", str(tmp_path / "client"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vault = rngvault.Vault(server.url, run="alice/exp", token="garbage")
        vault.track(np.random.default_rng(0), "g")
        for epoch in range(4):
            vault.snapshot(f"epoch{epoch}")
        assert vault.flush() is False  # four wait for a token that works
    refused = [str(w.message) for w in caught if " -> 401 " in str(w.message)]
    assert len(refused) == 2, refused
    assert "GET" in refused[0] and "/v1/runs/alice/exp/snapshots -> 401" in refused[1]
    assert len(list((tmp_path / "client").rglob("refused/*.snap"))) == 4
    assert rngvault.spool_drop(server.url, bucket="refused") == 4  # left alone, exit warns
    vault.close()
