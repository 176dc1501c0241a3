"""Name rules shared by the client, the stores and the server."""

from __future__ import annotations

import re

from rngvault._errors import InvalidNameError

GENERATOR_NAME_RULE = "[A-Za-z0-9._:-]{1,128}"
NAME_RULE = "[A-Za-z0-9][A-Za-z0-9._-]{0,127}"

_GENERATOR_NAME = re.compile(GENERATOR_NAME_RULE)
_NAME = re.compile(NAME_RULE)


def check_generator_name(name: object) -> str:
    """Return ``name`` if it is a valid generator name, else raise InvalidNameError."""
    if not isinstance(name, str) or not _GENERATOR_NAME.fullmatch(name):
        raise InvalidNameError(
            f"invalid generator name {name!r}: names must match {GENERATOR_NAME_RULE}"
        )
    return name


def check_name(name: object, what: str = "snapshot") -> str:
    """Return ``name`` if it is a valid namespace, run or snapshot name."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidNameError(f"invalid {what} name {name!r}: names must match {NAME_RULE}")
    return name


def split_run(run: object) -> tuple[str, str]:
    """Split ``"namespace/run"`` into its two checked parts."""
    if not isinstance(run, str) or run.count("/") != 1:
        raise InvalidNameError(
            f"invalid run {run!r}: runs are written 'namespace/run', each part matching {NAME_RULE}"
        )
    namespace, name = run.split("/")
    return check_name(namespace, "namespace"), check_name(name, "run")
