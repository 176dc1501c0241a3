"""The JSON bodies the API answers with, as pydantic models (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rngvault._json import to_jsonable
from rngvault.server.storage.base import Collected, RunInfo, SnapshotInfo
from rngvault.server.tokens import MAX_DURATION, parse_duration

RUN_PATTERN_RULE = "[A-Za-z0-9._*?-]{1,128}(/[A-Za-z0-9._*?-]{1,128})?"


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
    created: bool = Field(description="false when the same snapshot was already stored")


class BatchItemBody(BaseModel):
    name: str | None = Field(description="the item's name (null when the item has none)")
    rank: int | None = Field(description="its metadata.rank (null when it did not decode)")
    status: int = Field(description="what a PUT of it alone would answer: 201, 200, 409, ...")
    digest: str | None = Field(description="the states digest, when stored (201 or 200)")
    size: int | None = Field(description="bytes stored, when stored (201 or 200)")
    error: str | None = Field(description="the error code a PUT would answer, when refused")
    detail: str | None = Field(description="what is wrong, when refused")


class BatchBody(BaseModel):
    namespace: str
    run: str
    results: list[BatchItemBody] = Field(description="one per item, in item order")


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
    tags: list[str]
    world_size: int = Field(description="how many ranks the run had when it was taken")

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
            tags=list(info.tags),
            world_size=info.world_size,
        )


class SnapshotPage(BaseModel):
    namespace: str
    run: str
    snapshots: list[SnapshotInfoBody]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class StepBody(BaseModel):
    step: int | str = Field(description="the snapshot's step (integers past 2**53 are strings)")
    name: str = Field(description="the snapshot's name")
    digest: str = Field(description="its states digest: equal digests, equal states")
    state: str | None = Field(
        description="with ?generator=: SHA-256 hex of that generator's state entry (null "
        "where the snapshot has no such generator); null without ?generator="
    )


class StepPage(BaseModel):
    steps: list[StepBody] = Field(description="by step; one step's snapshots as stored")
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


class RunDetailBody(RunBody):
    record: dict[str, Any] = Field(
        description="the run's record (what produced it: seed, config, git, command, host, "
        "environment); {} for a run without one"
    )


class RecordBody(BaseModel):
    created: bool = Field(description="false when the run already had a record (kept)")
    record: dict[str, Any] = Field(description="the record the run keeps")


class RunPage(BaseModel):
    runs: list[RunBody]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class DeletedBody(BaseModel):
    namespace: str
    run: str
    name: str | None = None
    deleted: int = Field(description="ranks (of a snapshot) or snapshots (of a run) removed")


class GcRequest(BaseModel):
    """A retention pass: which runs, which snapshots of them go."""

    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(
        pattern=f"^{RUN_PATTERN_RULE}$",
        description="runs as 'namespace/run', with the wildcards * and ? (alice/resnet-*)",
    )
    keep_last: int | None = Field(
        default=None, ge=0, le=2**31 - 1, description="keep this many newest snapshots per run"
    )
    older_than: int | str | None = Field(
        default=None,
        description="delete snapshots stored longer ago than this: seconds, or 30d, 12h, 2w",
    )
    dry_run: bool = Field(default=False, description="count what would go; delete nothing")

    @field_validator("older_than")
    @classmethod
    def _age(cls, value: int | str | None) -> int | None:
        if isinstance(value, str):
            return parse_duration(value)
        if value is not None and not 0 <= value <= MAX_DURATION:
            raise ValueError(
                f"older_than must be 0 to {MAX_DURATION} seconds, not {str(value)[:40]}"
            )
        return value

    @property
    def age(self) -> int | None:
        """``older_than`` in seconds (the validator turned a duration into them)."""
        return None if self.older_than is None else int(self.older_than)

    @model_validator(mode="after")
    def _a_rule(self) -> GcRequest:
        if self.keep_last is None and self.older_than is None:
            raise ValueError(
                "give keep_last, older_than or both: without a rule gc deletes nothing"
            )
        return self


class SnapshotRef(BaseModel):
    namespace: str
    run: str
    name: str


class GcBody(BaseModel):
    runs: int = Field(description="runs the pattern matched (within the token's namespaces)")
    snapshots: int = Field(description="snapshots deleted, or that would be in a dry run")
    ranks: int = Field(description="rank entries those snapshots held")
    blobs: int = Field(description="state blobs freed (0 in a dry run)")
    objects: int = Field(
        default=0,
        description="objects the sweep of the blob store removed after the deletes (0 without "
        "--blobs, and in a dry run)",
    )
    dry_run: bool
    stored_before: float | None = Field(description="the age cut used (seconds since the epoch)")
    sample: list[SnapshotRef] = Field(description="up to 100 of the snapshots, oldest first")

    @classmethod
    def of(cls, collected: Collected, stored_before: float | None) -> GcBody:
        return cls(
            runs=collected.runs,
            snapshots=collected.snapshots,
            ranks=collected.ranks,
            blobs=collected.blobs,
            objects=collected.objects,
            dry_run=collected.dry_run,
            stored_before=stored_before,
            sample=[SnapshotRef(namespace=n, run=r, name=s) for n, r, s in collected.sample],
        )


class HealthBody(BaseModel):
    status: str


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses."""
    return {status: {"model": ErrorBody} for status in statuses}
