"""The API's browser docs, offline: ``GET /docs`` (Swagger UI) and ``GET /redoc`` (ReDoc).

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so without internet they stay
blank. Here the same pages (:func:`fastapi.openapi.docs.get_swagger_ui_html`) load the
scripts, stylesheet and icon that the ``fastapi-offline`` package installs (Swagger UI 5,
which reads OpenAPI 3.1; ReDoc 2), served from ``/docs-assets``. Nothing on either page
points off the server: no Google fonts, and no validator badge (Swagger UI would ask
validator.swagger.io about the schema).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def assets_folder() -> Path:
    """The folder of Swagger UI's and ReDoc's files, as the ``fastapi-offline`` package
    installs them (``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js``,
    ``favicon.png``)."""
    return Path(fastapi_offline.__file__).parent / "static"


def add_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/redoc`` from the installed assets (the app is built with
    ``docs_url=None, redoc_url=None``, so FastAPI adds no CDN pages of its own)."""
    app.mount(ASSETS, StaticFiles(directory=assets_folder()), name="docs-assets")
    openapi = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi,
            title=f"{app.title} - API reference",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
