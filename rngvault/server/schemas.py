"""The JSON bodies the API answers with, as pydantic models (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from rngvault._json import to_jsonable
from rngvault.server.storage.base import RunInfo, SnapshotInfo


class ErrorBody(BaseModel):
    error: str = Field(description="a short code, e.g. invalid_snapshot")
    detail: str = Field(description="what is wrong, for people")


class StoredBody(BaseModel):
    namespace: str
    run: str
    name: str
    rank: int
    digest: str = Field(description="SHA-256 of the canonical encoding of the states")
    size: int = Field(description="bytes stored")
    created: bool = Field(description="false when the same bytes were already stored")


class GeneratorBody(BaseModel):
    name: str
    family: str


class SnapshotInfoBody(BaseModel):
    name: str
    stored: float = Field(description="when the server stored it (seconds since the epoch)")
    created: float | str = Field(description="when it was taken, as the snapshot says")
    ranks: list[int]
    digest: str
    size: int
    step: int | str | None = Field(description="integers past 2**53 are strings")
    epoch: int | str | None
    metrics: dict[str, Any]
    generators: list[GeneratorBody]

    @classmethod
    def of(cls, info: SnapshotInfo) -> SnapshotInfoBody:
        return cls(
            name=info.name,
            stored=info.stored,
            created=to_jsonable(info.created),
            ranks=list(info.ranks),
            digest=info.digest,
            size=info.size,
            step=to_jsonable(info.step),
            epoch=to_jsonable(info.epoch),
            metrics=to_jsonable(info.metrics),
            generators=[GeneratorBody(name=n, family=f) for n, f in info.generators],
        )


class SnapshotPage(BaseModel):
    namespace: str
    run: str
    snapshots: list[SnapshotInfoBody]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class RunBody(BaseModel):
    namespace: str
    run: str
    created: float
    updated: float
    snapshots: int

    @classmethod
    def of(cls, info: RunInfo) -> RunBody:
        return cls(
            namespace=info.namespace,
            run=info.run,
            created=info.created,
            updated=info.updated,
            snapshots=info.snapshots,
        )


class RunPage(BaseModel):
    runs: list[RunBody]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class DeletedBody(BaseModel):
    namespace: str
    run: str
    name: str | None = None
    deleted: int = Field(description="ranks (of a snapshot) or snapshots (of a run) removed")


class HealthBody(BaseModel):
    status: str


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses."""
    return {status: {"model": ErrorBody} for status in statuses}
