"""The HTTP API in process (FastAPI's TestClient): every endpoint, every bad request, and
answers equal to ``Predictor.predict``'s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polytask.predict.predictor import Predictor
from polytask.serve import Limits
from polytask.serve.app import create_app
from tests.unit.test_serve_predict import PAIRS, TEXTS

LIMITS = Limits(max_inputs=4, max_chars=40, max_body_bytes=4000)


@pytest.fixture(scope="module")
def predictor(served_model: Path) -> Predictor:
    return Predictor(served_model)


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> Iterator[TestClient]:
    with TestClient(create_app(predictor, LIMITS, max_batch=8, max_wait_ms=2)) as client:
        yield client


def test_health(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["architecture"] == "hard" and body["tasks"] == 5
    assert body["batching"] == {"enabled": True, "max_batch": 8, "max_wait_ms": 2.0}
    assert {"requests", "inputs", "batches", "forwards", "mean_batch_inputs"} <= set(body["stats"])


def test_tasks(client: TestClient) -> None:
    body = client.get("/tasks").json()
    assert [t["name"] for t in body["tasks"]] == ["sent", "tags", "reg", "nli", "topics"]
    assert body["star"] == {"texts": ["sent", "tags", "reg", "topics"], "pairs": ["nli"]}
    by_name = {t["name"]: t for t in body["tasks"]}
    assert by_name["sent"] == {
        "name": "sent",
        "type": "classification",
        "input": "text",
        "labels": ["neg", "neu", "pos"],
        "multi_label": False,
        "threshold": None,
        "metric": "accuracy",
        "validation": None,
    }
    assert by_name["tags"]["input"] == "words" and by_name["tags"]["metric"] == "f1"
    assert by_name["reg"]["metric"] == "pearson" and by_name["nli"]["input"] == "pair"
    assert by_name["topics"]["multi_label"] and by_name["topics"]["threshold"] == 0.5


def test_openapi_documents_inputs_and_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/health", "/tasks", "/predict"}
    post = spec["paths"]["/predict"]["post"]
    assert set(post["responses"]) == {"200", "400", "404", "413", "415", "422"}
    variants = post["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    enums = {tuple(v["properties"]["task"]["enum"]) for v in variants}
    assert enums == {("sent", "reg", "topics", "*"), ("tags",), ("nli", "*")}
    assert all(v["properties"]["inputs"]["maxItems"] == 4 for v in variants)


@pytest.mark.parametrize(
    ("task", "inputs"),
    [("sent", TEXTS[:2]), ("tags", [TEXTS[0], ["bob", "likes", "london"]]), ("reg", TEXTS[:3]),
     ("nli", PAIRS), ("topics", TEXTS[:1]), ("*", TEXTS[:2]), ("*", PAIRS)],
)  # fmt: skip
def test_predictions_equal_predictor(
    client: TestClient, predictor: Predictor, task: str, inputs: list[Any]
) -> None:
    response = client.post("/predict", json={"task": task, "inputs": inputs})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = predictor.predict(task, inputs)
    assert body["predictions"] == json.loads(json.dumps(expected))  # one request: same batch
    assert body["task"] == task
    assert body["tasks"] == (list(expected[0]) if task == "*" else [task])


JSON = {"content-type": "application/json"}
BAD: list[tuple[str, Any, int, str]] = [
    ("unknown task", {"task": "sentt", "inputs": ["a"]}, 404,
     "unknown task 'sentt' (did you mean 'sent'?); tasks: sent, tags, reg, nli, topics"),
    ("auxiliary task", {"task": "mlm", "inputs": ["a"]}, 404, "unknown task 'mlm'"),
    ("empty inputs", {"task": "sent", "inputs": []}, 422, "inputs: empty list"),
    ("non-string input", {"task": "sent", "inputs": ["a", 7]}, 422,
     "inputs[1]: expected a text (a JSON string), got a number"),
    ("blank input", {"task": "sent", "inputs": ["   "]}, 422, "inputs[0]: empty text"),
    ("too many inputs", {"task": "sent", "inputs": ["a"] * 5}, 422,
     "inputs: 5 inputs; the limit is 4 per request"),
    ("too many characters", {"task": "sent", "inputs": ["x" * 41]}, 422,
     "inputs[0]: 41 characters; the limit is 40"),
    ("text for a pair task", {"task": "nli", "inputs": ["a"]}, 422,
     "inputs[0]: expected a sentence pair"),
    ("texts and pairs for '*'", {"task": "*", "inputs": ["a", ["a", "b"]]}, 422,
     "inputs[1]: task '*' takes all texts or all sentence pairs"),
    ("missing inputs", {"task": "sent"}, 422, "inputs: missing"),
    ("task not a string", {"task": 3, "inputs": ["a"]}, 422, "task: expected a task name"),
    ("inputs not a list", {"task": "sent", "inputs": "a"}, 422,
     "inputs: expected a list of inputs, got a string"),
    ("extra field", {"task": "sent", "inputs": ["a"], "top_k": 2}, 422, "unknown field 'top_k'"),
    ("body not an object", ["sent", ["a"]], 422, "the body must be a JSON object"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "status", "detail"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests(client: TestClient, case: str, body: Any, status: int, detail: str) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(detail), response.json()
    assert client.post("/predict", json={"task": "sent", "inputs": ["a"]}).status_code == 200


RAW: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("malformed JSON", b'{"task": "sent", "inputs": [', JSON, 400, "malformed JSON: Expecting"),
    ("not UTF-8", b'{"task": "\xff"}', JSON, 400, "malformed JSON: the body is not UTF-8"),
    ("empty body", b"", JSON, 400, "empty body"),
    ("not JSON", b"task=sent", {"content-type": "text/plain"}, 415,
     "send the body as application/json"),
    ("declared too large", b"x" * 4001, JSON, 413, "request body larger than 4000 bytes"),
    ("lone surrogate", b'{"task": "sent", "inputs": ["\\ud800"]}', JSON, 422,
     "inputs[0]: not valid Unicode"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "raw", "headers", "status", "detail"), RAW, ids=[r[0] for r in RAW]
)
def test_bad_bodies(
    client: TestClient, case: str, raw: bytes, headers: dict[str, str], status: int, detail: str
) -> None:
    response = client.post("/predict", content=raw, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(detail), response.json()
    assert client.post("/predict", json={"task": "sent", "inputs": ["a"]}).status_code == 200


def test_streamed_body_over_the_limit(client: TestClient) -> None:
    """No Content-Length (chunked): the body is counted as it arrives."""

    def chunks() -> Iterator[bytes]:
        yield b'{"task": "sent", "inputs": ["'
        for _ in range(10):
            yield b"x" * 500

    response = client.post("/predict", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 4000 bytes"}


def test_other_errors_are_one_message(client: TestClient) -> None:
    assert client.get("/nope").json() == {"detail": "Not Found"}
    assert client.get("/predict").status_code == 405
    assert client.get("/predict").json() == {"detail": "Method Not Allowed"}
