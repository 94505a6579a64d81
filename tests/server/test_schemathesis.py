"""Schema-driven fuzzing from /openapi.json with schemathesis (in the test extras).

Every operation gets generated valid and invalid requests: no 5xx, responses as documented. Positive-data
acceptance is left out on purpose: a schema-valid workflow can still be refused by validation (no output node,
unknown class) and a mask needs an original that exists. Examples per operation are bounded (about 10 s in
all here); SDGRAPH_SCHEMATHESIS_EXAMPLES scales them.
"""
from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from tests.server.live import LiveServer
from tests.server.nodes import make_executor

EXAMPLES = int(os.environ.get("SDGRAPH_SCHEMATHESIS_EXAMPLES", "30"))


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    server = LiveServer(make_executor(tmp_path_factory.mktemp("st") / "base"))
    yield schemathesis.openapi.from_url(f"http://127.0.0.1:{server.port}/openapi.json")
    server.stop()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms(case) -> None:
    response = case.call()
    assert response.status_code < 500, response.text[:300]
    excluded = [positive_data_acceptance]
    if case.operation.path.startswith("/upload"):
        excluded.append(negative_data_rejection)  # multipart fields are all text: "{}" is a valid subfolder
    case.validate_response(response, excluded_checks=excluded)
