"""Run the server: check the options, load the run, bind the address, hand over to uvicorn.

The socket is bound here, before uvicorn starts, so that a busy port or a bad host is one
clear error line (and ``port=0`` picks a free port, announced on stdout).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from polytask.errors import PolytaskError
from polytask.serve.limits import Limits

MAX_WAIT_MS = 1000.0  # a larger wait would only add latency


def _check_options(port: int, max_batch: int, max_wait_ms: float, threads: int | None) -> None:
    if not 0 <= port <= 65535:
        raise PolytaskError(f"--port must be between 0 (any free port) and 65535, got {port}")
    if max_batch < 1:
        raise PolytaskError(f"--max-batch must be >= 1 (1 turns batching off), got {max_batch}")
    if threads is not None and threads < 1:
        raise PolytaskError(f"--threads must be >= 1, got {threads}")
    if not 0 <= max_wait_ms <= MAX_WAIT_MS:
        raise PolytaskError(
            f"--max-wait-ms must be between 0 and {MAX_WAIT_MS:g}, got {max_wait_ms}"
        )


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening), or a one-line error."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError) as exc:
        raise PolytaskError(f"--host: cannot resolve '{host}' ({exc})") from None
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so, and without
    # it every keep-alive response waits ~40 ms for the client's delayed ACK (Nagle)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PolytaskError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    limits: Limits | None = None,
    device: str = "cpu",
    access_log: bool = False,
    threads: int | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve every non-auxiliary task of the run in ``run_dir`` until interrupted; an
    interrupt (Ctrl-C, SIGINT) ends it with ``KeyboardInterrupt``."""
    _check_options(port, max_batch, max_wait_ms, threads)
    try:
        import uvicorn

        from polytask.serve.app import create_app
    except ImportError as exc:
        raise PolytaskError(
            f"serving needs FastAPI, uvicorn and fastapi-offline ({exc}); "
            "pip install fastapi uvicorn fastapi-offline"
        ) from None
    import torch

    from polytask.predict.predictor import Predictor

    if threads is not None:  # more threads than free cores makes torch spin, not compute
        torch.set_num_threads(threads)
    try:
        predictor = Predictor(run_dir, device)
    except RuntimeError as exc:  # e.g. a device torch does not have
        raise PolytaskError(f"--device {device}: {str(exc).splitlines()[0]}") from None
    app = create_app(predictor, limits or Limits(), max_batch, max_wait_ms)
    sock = bind(host, port)
    address = sock.getsockname()
    shown = f"[{address[0]}]" if sock.family == socket.AF_INET6 else address[0]
    batching = (
        f"batching up to {max_batch} inputs, {max_wait_ms:g} ms"
        if max_batch > 1
        else "batching off"
    )
    (announce or _print)(
        f"polytask: serving {', '.join(predictor.tasks)} ({predictor.architecture}) "
        f"on http://{shown}:{address[1]} ({batching}; API docs at /docs)"
    )
    config = uvicorn.Config(
        app,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[sock])
    # uvicorn returns only when a signal stopped it (a failed startup exits), and re-raises
    # that signal; a SIGINT re-raised inside asyncio's runner can be absorbed by the runner's
    # own handler (measured once in a full test run: exit 0 instead of 130), so say it here
    raise KeyboardInterrupt


def _print(line: str) -> None:
    print(line, flush=True)
