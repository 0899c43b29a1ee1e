"""Schemathesis against the OpenAPI document the service serves, over HTTP through Ray's
proxy: at least 1000 generated requests (the documented examples, schema-valid and
schema-violating data), zero 5xx, every response of a documented status, content type and
schema, and schema-violating requests rejected with a 4xx.

(Schemathesis' pytest plugin does not run under pytest 9 here, hence its Python API.)
"""

from __future__ import annotations

from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from bench.harness import LocalCluster
from tests.integration.serving import deploy

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Per operation and mode (positive, negative), plus the documented examples: ten operations
# take inputs, so > 1000 requests (300 sent ~6000 and took ~4 of CI's 20 minutes).
EXAMPLES = 60


def no_server_error(ctx, response, case) -> bool:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    return True


CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def test_generated_requests_against_the_served_schema(service: LocalCluster):
    deploy(service, 2)
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {
        "/sam3/embed_image",
        "/sam3/visual_segment",
        "/sam3/concept_segment",
        "/sam3/embedding",
        "/sam3/decoder.onnx",
        "/sam3/model",
        *(
            f"/sam3/video/{name}"
            for name in (
                "start_session",
                "add_prompt",
                "propagate_in_video",
                "remove_object",
                "reset_session",
                "close_session",
            )
        ),
        "/healthz",
        "/readyz",
    }
    session = requests.Session()
    statuses: Counter[int] = Counter()

    def send(case) -> None:
        response = case.call(session=session, timeout=60)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    for operation in operations:
        for example in schema.get_strategies_from_examples(operation):
            run_examples = settings(max_examples=10, deadline=None, database=None)(
                given(case=example)(send)
            )
            run_examples()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)
            run = settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )(given(case=strategy)(send))
            try:
                run()
            except Unsatisfiable:
                # No schema-violating request exists for an operation without inputs
                # (GET /healthz, GET /readyz, GET /sam3/decoder.onnx, GET /sam3/model).
                without_inputs = ("/healthz", "/readyz", "/sam3/decoder.onnx", "/sam3/model")
                assert mode is GenerationMode.NEGATIVE and operation.path in without_inputs

    assert sum(statuses.values()) >= 1000, statuses
    assert not [status for status in statuses if status >= 500], statuses
    assert statuses[200] > 0 and any(400 <= s < 500 for s in statuses), statuses
