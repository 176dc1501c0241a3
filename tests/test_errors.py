"""rngvault/_errors.py: one root, a documented tree, messages that name what is wrong."""

from __future__ import annotations

import re
import sys

import pytest

import rngvault
from rngvault import _errors
from rngvault.families import _torch

ERRORS = [getattr(_errors, name) for name in _errors.__all__]


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
    assert set(tree) | {"RngVaultError"} == set(_errors.__all__)
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
