"""The HTTP API: ``GET /health``, ``GET /tasks``, ``POST /predict`` (and ``/openapi.json``,
its browser docs ``/docs`` and ``/redoc``, offline: :mod:`polytask.serve.docs`).

Thin: requests are parsed and checked here, predictions come from
:meth:`polytask.predict.Predictor.run` through the :class:`~polytask.serve.batcher.Batcher`.
Every error answer is ``{"detail": "<one message>"}``: 400 malformed JSON, 404 unknown task,
413 body too large, 415 not JSON, 422 wrong or oversized inputs, 500 a bug (logged).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from polytask import __version__
from polytask.errors import PolytaskError, UnknownTaskError
from polytask.predict.predictor import Job, Predictor
from polytask.serve.batcher import Batcher
from polytask.serve.docs import add_docs
from polytask.serve.limits import Limits
from polytask.serve.schemas import (
    Error,
    HealthResponse,
    PredictResponse,
    TasksResponse,
    parse_request,
    request_schema,
)
from polytask.tasks import task_type

log = logging.getLogger("polytask.serve")
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "malformed JSON"},
    404: {"model": Error, "description": "unknown task (the message lists the tasks)"},
    413: {"model": Error, "description": "request body too large"},
    415: {"model": Error, "description": "body not sent as application/json"},
    422: {"model": Error, "description": "missing, malformed or oversized inputs"},
}


def create_app(
    predictor: Predictor,
    limits: Limits | None = None,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
) -> FastAPI:
    """The server's ASGI app for ``predictor``; ``max_batch=1`` turns batching off.

    >>> app = create_app(Predictor("runs/demo"))          # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)     # doctest: +SKIP
    """
    limits = limits or Limits()
    batcher = Batcher(predictor.run, max_batch, max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(
        title="polytask",
        version=__version__,
        summary=f"Every served task of a '{predictor.architecture}' multi-task model.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load from a CDN: add_docs serves installed files
        redoc_url=None,
    )
    add_docs(app)
    app.state.predictor, app.state.batcher, app.state.limits = predictor, batcher, limits
    _info_routes(app, predictor, batcher, limits)
    _predict_route(app, predictor, batcher, limits)
    return app


def _info_routes(app: FastAPI, predictor: Predictor, batcher: Batcher, limits: Limits) -> None:
    """``GET /health`` and ``GET /tasks``."""
    tasks = tasks_info(predictor)

    @app.get("/health", response_model=HealthResponse)
    async def health() -> dict[str, Any]:
        """Liveness, the batching settings and counters since start."""
        return {
            "status": "ok",
            "architecture": predictor.architecture,
            "tasks": len(predictor.tasks),
            "device": str(predictor.device),
            "batching": {
                "enabled": batcher.batching,
                "max_batch": batcher.max_batch,
                "max_wait_ms": batcher.max_wait * 1000,
            },
            "stats": {**batcher.stats.as_dict(), "forwards": predictor.forwards},
        }

    @app.get("/tasks", response_model=TasksResponse)
    async def list_tasks() -> dict[str, Any]:
        """Each served task: type, input form, labels, metric; and what '*' answers."""
        return tasks


def _predict_route(app: FastAPI, predictor: Predictor, batcher: Batcher, limits: Limits) -> None:
    """``POST /predict``: parse, check, queue for the batcher, answer."""

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses=ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request_schema(predictor, limits)}},
            }
        },
    )
    async def predict(request: Request) -> Any:
        """Predictions for every input: label + scores, labels + scores (multi-label), value
        (regression), or word tags + entity spans (tagging); ``"task": "*"`` answers every
        task that takes the inputs' form, from one batch."""
        data = await _json_body(request, limits.max_body_bytes)
        if isinstance(data, JSONResponse):
            return data
        try:
            task, inputs = parse_request(data)
            answered = predictor.check(task, inputs, limits.max_inputs, limits.max_chars)
            predictions = await batcher.submit(Job(task, inputs))
        except UnknownTaskError as exc:
            return _error(404, str(exc))
        except PolytaskError as exc:
            return _error(422, str(exc))
        except Exception:
            log.exception("prediction failed")
            return _error(500, "internal error while predicting (logged on the server)")
        return {"task": task, "tasks": answered, "predictions": predictions}


async def _json_body(request: Request, max_bytes: int) -> Any:
    """The decoded JSON body, or the error answer (413 too large, 415 not JSON, 400
    malformed). The body is read as it arrives and dropped past ``max_bytes``."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        return _error(415, f"send the body as application/json, not '{kind}'")
    too_large = _error(413, f"request body larger than {max_bytes} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            return too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return _error(400, "empty body: send a JSON object with 'task' and 'inputs'")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        return _error(400, "malformed JSON: the body is not UTF-8 text")
    except json.JSONDecodeError as exc:
        return _error(400, f"malformed JSON: {exc}")
    except RecursionError:
        return _error(400, "malformed JSON: nested too deeply")


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def tasks_info(predictor: Predictor) -> dict[str, Any]:
    """``GET /tasks``: each served task, with its validation metric when the run has one."""
    final: dict[str, Any] = {}
    path = predictor.folder.parent / "final_metrics.json"
    if path.is_file():
        try:
            final = json.loads(path.read_text("utf-8")).get("tasks", {})
        except (ValueError, OSError, AttributeError):
            final = {}
    rows = []
    for name in predictor.tasks:
        spec = predictor.specs[name]
        metric = task_type(spec.type).primary(spec)
        value = final.get(name, {}).get("validation", {}).get(metric)
        rows.append(
            {
                "name": name,
                "type": spec.type,
                "input": predictor.form(name),
                "labels": list(spec.labels),
                "multi_label": spec.multi_label,
                "threshold": 0.5 if spec.multi_label else None,
                "metric": metric,
                "validation": value if isinstance(value, int | float) else None,
            }
        )
    star = {f"{form}s": predictor.star_tasks(form) for form in ("text", "pair")}
    return {"architecture": predictor.architecture, "star": star, "tasks": rows}
