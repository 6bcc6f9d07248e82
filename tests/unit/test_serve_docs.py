"""``polytask serve``'s API docs offline (issue 22 item 6): ``/docs`` and ``/redoc`` load
their scripts and styles from the server itself (the ``fastapi-offline`` package's files),
never from a CDN. In process with TestClient (the pages and every asset they name), then a
real server opened in headless chromium with the network off: Swagger UI renders every
endpoint, and no request leaves 127.0.0.1.

Under ``CI=true`` a missing chromium or playwright fails the browser test (conftest turns
its skip into a failure); ``.ci/run`` installs Debian's chromium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from polytask.predict.predictor import Predictor
from polytask.serve.app import create_app
from polytask.serve.docs import ASSETS
from tests.unit.test_report_html import ARGS, CHROMIUM
from tests.unit.test_serve_live import live

#: every request chromium sends off loopback goes to a closed port: the network is off
OFFLINE = ["--proxy-server=127.0.0.1:9"]  # loopback itself bypasses a proxy
LOCAL = ("127.0.0.1",)
#: what each page loads: (src or href, content type)
PAGES = {
    "/docs": {
        f"{ASSETS}/swagger-ui.css": "text/css",
        f"{ASSETS}/swagger-ui-bundle.js": "javascript",
        f"{ASSETS}/favicon.png": "image/png",
    },
    "/redoc": {
        f"{ASSETS}/redoc.standalone.js": "javascript",
        f"{ASSETS}/favicon.png": "image/png",
    },
}


@pytest.fixture(scope="module")
def predictor(served_model: Path) -> Predictor:
    return Predictor(served_model)


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> Iterator[TestClient]:
    with TestClient(create_app(predictor)) as client:
        yield client


@pytest.mark.parametrize("page", list(PAGES))
def test_docs_pages_and_their_assets_are_served_locally(client: TestClient, page: str) -> None:
    answer = client.get(page)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    html = answer.text
    assert "://" not in html, "the page names an external URL"  # FastAPI's own: a CDN
    linked = set(re.findall(r'(?:src|href)="([^"]+)"', html))
    assert linked == set(PAGES[page]), linked
    for url, kind in PAGES[page].items():
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > (100_000 if kind != "image/png" else 100), url
    assert "/openapi.json" in html
    if page == "/docs":
        assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io


def test_the_schema_is_openapi_3_1_and_swagger_ui_is_5(client: TestClient) -> None:
    """Swagger UI 4 cannot render OpenAPI 3.1 (what FastAPI writes): the assets must be 5."""
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    bundle = client.get(f"{ASSETS}/swagger-ui-bundle.js").text
    assert re.search(r'"5\.\d+\.\d+"', bundle), "the bundled Swagger UI is not version 5"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')"
    )
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (Debian: apt-get install chromium): not checked")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, *OFFLINE])
        yield launched
        launched.close()


def test_docs_render_in_chromium_with_the_network_off(browser: Any, predictor: Predictor) -> None:
    with live(predictor, max_batch=1, max_wait_ms=0) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        requests: list[str] = []
        errors: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/docs", wait_until="load")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        title = page.inner_text(".swagger-ui .info .title")
        paths = page.eval_on_selector_all(
            ".opblock-summary-path", "els => els.map(e => e.innerText.trim())"
        )
        text = page.inner_text("body")
        page.close()
    assert title.startswith("polytask"), title
    assert sorted(paths) == ["/health", "/predict", "/tasks"], paths
    assert "Unable to render this definition" not in text
    hosts = {urlsplit(u).hostname for u in requests if not u.startswith("data:")}
    assert hosts == set(LOCAL), requests
    assert errors == [], errors
