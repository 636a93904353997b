"""Property-based fuzzing of the OpenAPI contract: whatever schemathesis sends, no 5xx.

Drives each operation's hypothesis strategy directly (schemathesis' pytest plugin does not run on
this pytest version); a few hundred examples in all keeps it bounded.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.checks import not_a_server_error

from tests.serving.conftest import admin_headers

pytestmark = pytest.mark.slow
EXAMPLES_PER_OPERATION = 30


def test_no_server_errors(server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/recommend", "/v1/score", "/v1/feedback", "/admin/promote"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def fuzz(case) -> None:
            # Admin routes are fuzzed with the token too, so registry refusals are exercised (4xx, not 5xx).
            headers = admin_headers() if operation.path.startswith("/admin/") else None  # noqa: B023 - runs now
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        fuzz()
    sent = sum(
        s.value
        for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
        for s in family.samples
        if s.name == "freshrec_requests_total"
    )
    assert sent >= 5 * EXAMPLES_PER_OPERATION
