"""Fuzz the API from its own OpenAPI schema (schemathesis): whatever a client sends, never a 5xx,
and every response matches the schema the server publishes (status codes, bodies, auth). 40
examples per route in `make test`, 400 in `make test-slow`."""

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from smalto.apps.serve import ServeConfig

from conftest import running_server
from test_sound_serve import wav_bytes

NAME, KEY = "fuzz", "fuzz-key"
SPEECH = wav_bytes(np.zeros(8000, np.float32))  # half a second of silence: a readable file
OPERATIONS = ["POST /v1/chat/completions", "POST /v1/images/generations", "POST /v1/audio/speech",
              "POST /v1/audio/transcriptions", "GET /v1/models", "GET /v1/models/{model}", "GET /health"]


@pytest.fixture(scope="module")
def api(shipped):
    with running_server(shipped, ServeConfig(model_name=NAME, api_key=KEY, max_queue=64, timeout=120)) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        yield url, {op.label: op for op in (r.ok() for r in schema.get_all_operations())}


def test_the_schema_lists_every_route(api):
    assert sorted(api[1]) == sorted(OPERATIONS)


@pytest.mark.parametrize("examples", [40, pytest.param(400, marks=pytest.mark.slow)])
@pytest.mark.parametrize("label", OPERATIONS)
def test_no_server_errors_and_responses_match_the_schema(api, label, examples):
    url, operations = api
    statuses = set()

    @given(operations[label].as_strategy())
    # The brief run draws the same examples every time (CI must not be flaky); the long one explores.
    # (a valid /v1/audio/speech request makes a sound: half a second each, so a third as many)
    @settings(max_examples=examples // 3 if "speech" in label else examples, deadline=None,
              suppress_health_check=list(HealthCheck), database=None, derandomize=examples == 40)
    def fuzz(case):
        # An unknown model is a 404 (tested on its own); naming the served one lets the fuzzer go deeper.
        if isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = "smalto-recogniser" if "transcriptions" in label else NAME
        if "transcriptions" in label and isinstance(case.body, dict) and len(statuses) % 2:
            case.body["file"] = SPEECH  # (random bytes are never a sound: half the time, a real one)
        if case.path_parameters and len(statuses) % 2:  # half the time, once a status was seen
            case.path_parameters["model"] = NAME
        # (a slow answer is not a server error: the server's own --timeout, 120 s, gives the 504)
        response = case.call(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=150)
        statuses.add(response.status_code)
        # All of schemathesis' checks (no 5xx, status codes and bodies as declared, invalid data and
        # bad auth refused) but one: a schema-valid request may still be refused with a 400 for what
        # a schema can't say (an unreadable image, a conversation longer than the context).
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    fuzz()
    assert all(s < 500 for s in statuses) and 200 in statuses, statuses  # it got past validation too
