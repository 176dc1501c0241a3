"""/v1/seeds: how much the seed alone moves a metric across runs that differ only in it.

The numbers are ``rngvault.seed_sensitivity``'s (rngvault/_seeds.py), computed here from the
runs' records and listings (rngvault/server/seeds.py); docs/seeds.md explains them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from rngvault._names import NAME_RULE, check_name
from rngvault.server.auth import Principal, Require
from rngvault.server.deps import get_store
from rngvault.server.schemas import errors
from rngvault.server.seeds import MAX_RUNS, seed_report
from rngvault.server.storage.base import Store

router = APIRouter(prefix="/v1/seeds", tags=["seeds"])
StoreDep = Annotated[Store, Depends(get_store)]


class OutlierBody(BaseModel):
    seed: int
    run: str
    value: float
    z: float = Field(description="robust z-score: 0.6745 (value - median) / MAD")


class SeedValue(BaseModel):
    seed: int
    value: float


class MetricBody(BaseModel):
    metric: str
    count: int
    mean: float
    std: float = Field(description="sample standard deviation (0 for one seed)")
    median: float
    min: float
    min_seed: int
    max: float
    max_seed: int
    spread: float = Field(description="max - min")
    spread_in_std: float | None = Field(description="spread / std; null when std is 0")
    outliers: list[OutlierBody] = Field(description="robust |z| > 3.5, farthest first")
    values: list[SeedValue]
    verdict: str


class SeedRun(BaseModel):
    seed: int
    run: str


class GroupBody(BaseModel):
    config: dict[str, Any] = Field(description="the config the group's runs share, less 'seed'")
    runs: list[SeedRun]
    metrics: list[MetricBody]


class SkippedBody(BaseModel):
    run: str
    why: str


class SeedReportBody(BaseModel):
    pattern: str
    metric: str | None
    at: str
    groups: list[GroupBody] = Field(description="runs with equal configs but for the seed")
    split_by: list[str] = Field(description="config keys whose values differ between groups")
    skipped: list[SkippedBody]


@router.get(
    "",
    response_model=SeedReportBody,
    summary="Seed sensitivity of the runs matching a pattern (only namespaces the token reads)",
    responses=errors(400, 401, 403, 404, 422, 503),
)
async def seeds(
    store: StoreDep,
    principal: Annotated[Principal, Depends(Require("read"))],
    pattern: Annotated[
        str,
        Query(
            max_length=260,
            description=f"NAMESPACE/RUN with wildcards (* ? [...]), e.g. alice/resnet-*; "
            f"at most {MAX_RUNS} runs",
        ),
    ],
    metric: Annotated[
        str | None,
        Query(max_length=256, description="the metric; every numeric metric when absent"),
    ] = None,
    at: Annotated[
        str,
        Query(description=f'"final" (each run\'s latest value) or a snapshot name ({NAME_RULE})'),
    ] = "final",
) -> dict[str, Any]:
    if at != "final":
        check_name(at)
    report = await seed_report(
        store, pattern, metric=metric or None, at=at, readable=principal.patterns("read")
    )
    return report.to_dict()
