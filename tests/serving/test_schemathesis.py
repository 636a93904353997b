"""Property-based fuzzing of the OpenAPI contract: whatever schemathesis sends, no 5xx.

Drives each operation's hypothesis strategy directly (schemathesis' pytest plugin does not run on
this pytest version); a few hundred examples in all keeps it bounded.
"""

from __future__ import annotations

import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.checks import not_a_server_error

from tests.serving.conftest import admin_headers

pytestmark = pytest.mark.slow
EXAMPLES_PER_OPERATION = 30
SHED_RETRIES = 10


def _shed(response) -> bool:
    """A 503 of queue-age load shedding (serving.max_queue_age_ms) with its Retry-After: documented behaviour
    on a busy box, which a client retries; any other 5xx, or shedding that never clears, still fails."""
    return (response.status_code == 503 and "retry-after" in response.headers
            and b"requests are waiting too long" in response.content)


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
            for _ in range(SHED_RETRIES):
                response = case.call(headers=headers)
                if not _shed(response):
                    break
                time.sleep(0.2)
            case.validate_response(response, checks=[not_a_server_error], headers=headers)

        fuzz()
    sent = sum(
        s.value
        for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
        for s in family.samples
        if s.name == "freshrec_requests_total"
    )
    assert sent >= 5 * EXAMPLES_PER_OPERATION
