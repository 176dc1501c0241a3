"""One router per resource: snapshots, runs, and operations (health, metrics)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from rngvault._names import NAME_RULE, check_name

MAX_RANK = 2**31 - 1
_SCHEMA = {"pattern": f"^{NAME_RULE}$"}


def _name(what: str) -> object:
    return Path(description=f"the {what} name, matching {NAME_RULE}", json_schema_extra=_SCHEMA)


Namespace = Annotated[str, _name("namespace")]
Run = Annotated[str, _name("run")]
Name = Annotated[str, _name("snapshot")]
Cursor = Annotated[
    str | None, Query(max_length=1024, description="the next_cursor of the previous page")
]
Limit = Annotated[int, Query(ge=1, le=1000, description="items per page")]


def check_names(namespace: str, run: str, name: str | None = None) -> None:
    """InvalidNameError (400) naming the rule, for the first bad name."""
    check_name(namespace, "namespace")
    check_name(run, "run")
    if name is not None:
        check_name(name, "snapshot")
