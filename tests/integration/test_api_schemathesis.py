"""schemathesis against the real `serve`'s /openapi.json, with valid admin and greffe keys.

Every operation gets generated requests, valid ones and invalid ones; the
answers must never be 5xx, and every status, content type, header and body
must be the one the schema documents.  Both databases: what PostgreSQL
refuses (a NUL in text, say) must be a 4xx before it reaches the database.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.apiclient import api, base_url, file_request, new_key
from tests.fixtures.gatewayserver import COURT, MEASURE, World

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 12
NOTHING_TO_NEGATE = {
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /api/v1/courts",
    "GET /api/v1/audit/verify",
    "GET /.well-known/openpgpkey/{path}",
}


@schemathesis.serializer("text/csv")
def _csv(ctx: Any, value: Any) -> bytes:
    return str(value).encode("utf-8", "surrogatepass")


def _fuzz(world: World, key: str) -> int:
    base = base_url(world)
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    headers = {"Authorization": f"Bearer {key}"}
    calls = 0
    skipped: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
            )  # fmt: skip
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                nonlocal calls
                calls += 1
                case.call_and_validate(base_url=base, headers=headers, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                # Some operations have no invalid request to make (no input, or a path
                # parameter that takes any string): only then may negative cases run out.
                if mode is GenerationMode.POSITIVE:
                    raise
                skipped.append(operation.label)
    assert set(skipped) <= NOTHING_TO_NEGATE, skipped
    return calls


@pytest.fixture
def filed(world: World) -> World:
    """One request with a submission, so real references exist for the generator to miss."""
    with api(world, new_key(world, "admin")) as admin:
        file_request(world, admin, COURT, MEASURE)
    return world


def test_schemathesis_admin_key_no_5xx_and_responses_match_schema(filed: World) -> None:
    assert _fuzz(filed, new_key(filed, "admin")) > 200


def test_schemathesis_greffe_key_no_5xx_and_responses_match_schema(filed: World) -> None:
    assert _fuzz(filed, new_key(filed, "greffe", [COURT])) > 200
