"""Schema-driven fuzzing (schemathesis) of the served OpenAPI: valid and invalid requests
built from the schema never get a 5xx, and every answer matches the documented status codes,
content types and bodies. Bounded and deterministic: at most 50 examples per operation and
generation mode, derandomized."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from polytask.predict.predictor import Predictor
from polytask.serve import Limits
from polytask.serve.app import create_app

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


OPERATIONS = [("/predict", "POST"), ("/tasks", "GET"), ("/health", "GET")]
#: (path, method, mode): a GET without parameters or body has nothing to make invalid
CASES = [
    (path, method, mode)
    for path, method in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (mode is GenerationMode.NEGATIVE and method == "GET")
]


@pytest.fixture(scope="module")
def served_api(served_model: Path) -> Any:
    limits = Limits(max_inputs=8, max_chars=200, max_body_bytes=1 << 16)
    app = create_app(Predictor(served_model), limits, max_batch=8, max_wait_ms=1)
    # an invalid body may also be refused for its size (413); schemathesis' list omits it
    rejected = ["400", "404", "405", "413", "415", "422"]
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": rejected}}}
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


# schemathesis' own pytest loader (schema.parametrize) does not run under pytest 9, so each
# operation's case strategy is drawn from with plain hypothesis
@pytest.mark.parametrize(("path", "method", "mode"), CASES)
def test_no_server_errors(served_api: Any, path: str, method: str, mode: GenerationMode) -> None:
    operation = served_api[path][method]
    strategy = operation.as_strategy(generation_mode=mode)
    statuses: list[int] = []

    @given(data=st.data())
    @settings(
        max_examples=50,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(data: st.DataObject) -> None:
        case = data.draw(strategy)
        statuses.append(case.call_and_validate(checks=CHECKS).status_code)

    run()
    assert statuses and max(statuses) < 500
    if path == "/predict":  # both kinds of answer were exercised
        expected = 200 if mode is GenerationMode.POSITIVE else 422
        assert expected in statuses, sorted(set(statuses))
