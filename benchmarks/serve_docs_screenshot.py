"""The screenshot of ``polytask serve``'s ``/docs`` rendered offline (docs/serve.md).

Starts ``polytask serve RUN --port 0`` on 127.0.0.1 (its own process), opens ``/docs`` in
Debian's headless chromium with the network off (``--proxy-server=127.0.0.1:9``: every
request that does not go to loopback is sent to a closed port and fails), waits for the
page to settle (``--virtual-time-budget``) and saves the screenshot, then stops the server.
A page that needed a CDN would be blank here. ``tests/unit/test_serve_docs.py`` checks the
same page in chromium (every endpoint rendered, no request off 127.0.0.1).

The run is ``--run`` or, by default, the tests' tiny saved model (a random 2-layer BERT with
five served task kinds, ``tests/unit/serve_model.py``, built in a temporary folder in a
second): what the page shows depends on the served tasks, not on training.

    python benchmarks/serve_docs_screenshot.py [--run RUN_DIR] [-o docs/serve-docs-offline.png]
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "serve-docs-offline.png"
OFFLINE = ["--proxy-server=127.0.0.1:9"]  # loopback bypasses a proxy; nothing else gets out
CHROME = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]


def tiny_run(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import make_tiny_encoder
    from tests.unit.serve_model import make_model_folder

    return make_model_folder(make_tiny_encoder(folder / "encoder"), folder / "run" / "model")


def start_server(run: Path) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "polytask.cli.main", "serve", str(run), "--port", "0"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([*cmd, "--threads", "1"], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 300)
    line = proc.stdout.readline() if ready else ""
    if "http://127.0.0.1:" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, "http://127.0.0.1:" + line.split("http://127.0.0.1:")[1].split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="run directory (default: the tiny model)")
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    parser.add_argument("--size", default="1200,1250", help="window WIDTH,HEIGHT")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or tiny_run(Path(tmp))
        server, url = start_server(run)
        try:
            shot = [chromium, *CHROME, *OFFLINE, f"--window-size={args.size}"]
            shot += ["--virtual-time-budget=20000", f"--screenshot={args.output.resolve()}"]
            subprocess.run([*shot, f"{url}/docs"], check=True, capture_output=True, timeout=120)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)
    print(f"{args.output}: {url}/docs, network off")


if __name__ == "__main__":
    main()
