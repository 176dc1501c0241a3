"""A schemathesis run over /openapi.json against a real server with tokens (bounded)."""

from __future__ import annotations

import msgpack
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.specs.openapi import checks  # noqa: E402

EXAMPLES = 25  # per operation: keeps the run to seconds


@schemathesis.serializer("application/msgpack")
def _msgpack(ctx: object, value: object) -> bytes:
    return value if isinstance(value, bytes) else msgpack.packb(value)


def test_every_operation_conforms_to_its_openapi_description(token_server) -> None:
    """No 5xx; statuses, content types and bodies as documented; auth enforced.

    Excluded: positive_data_acceptance (a schema-valid string is not always a valid
    snapshot or cursor: those get a documented 4xx) and allow_header_conformance (Starlette's
    405 lists the methods of the first route that matched the path)."""
    server, token = token_server
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {token}"},
                excluded_checks=[checks.positive_data_acceptance, checks.allow_header_conformance],
            )

        check()
        tested.append(operation.label)
    assert len(tested) == 14, tested
