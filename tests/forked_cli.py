"""``python -m polytask.cli.main ARGS`` as a user runs it, without paying its imports each time.

A subprocess CLI test spends most of its ~10 s importing torch and transformers. Here one
interpreter per set of startup variables (the *zygote*, this file run as a script) imports
them once; each command is then a fork of it that runs ``polytask.cli.main`` as
``__main__``, in its own process, with its own argv, working directory, environment and
stdin, and with stdout and stderr in files: exit code, output and files written are the
command's own, as in a fresh interpreter. ``polytask.cli`` itself is not preloaded (it runs
fresh in every fork), and anything the preload prints refuses to start the zygote, since a
fresh interpreter would print it into every command's stderr.

``run(args, cwd=..., env=..., stdin=..., timeout=...)`` has ``subprocess.run``'s meaning
and result; a command still running after ``timeout`` seconds raises ``TimeoutExpired``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

#: read once, when an interpreter starts: commands that differ in these get their own zygote
STARTUP_VARS = ("PYTHONPATH", "PYTHONWARNINGS", "PYTHONHASHSEED", "OMP_NUM_THREADS")
#: what almost every command imports; polytask.cli stays out (it must run fresh)
PRELOAD = ("torch", "transformers", "typer", "rich.console", "polytask.config.run")
PRELOAD += ("polytask.train",)


class Zygote:
    """One preloaded interpreter; ``run`` forks it once per command (thread-safe)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="polytask-zygote-"))
        self.proc = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=dict(env),
            cwd=self.folder,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if ready.strip() != "ready":
            rest = self.proc.stdout.read()
            raise RuntimeError(f"the CLI zygote did not start: {ready}{rest}")
        self.lock = threading.Lock()
        self.pending: dict[int, Future[int | None]] = {}
        self.count = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            done = json.loads(line)
            with self.lock:
                future = self.pending.pop(done["id"])
            future.set_result(done["returncode"])
        with self.lock:  # the zygote died: no command still waiting hangs
            for future in self.pending.values():
                future.set_exception(RuntimeError("the CLI zygote exited"))
            self.pending.clear()

    def run(
        self,
        args: list[str],
        *,
        cwd: Path | str | None,
        env: Mapping[str, str],
        stdin: str | None,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        with self.lock:
            self.count += 1
            n = self.count
            future: Future[int | None] = Future()
            self.pending[n] = future
        files = {k: self.folder / f"{n}.{k}" for k in ("stdin", "stdout", "stderr")}
        files["stdin"].write_text(stdin or "")
        request = {
            "id": n,
            "argv": list(args),
            "cwd": str(cwd or os.getcwd()),
            "env": dict(env),
            "stdin": str(files["stdin"]) if stdin is not None else os.devnull,
            "stdout": str(files["stdout"]),
            "stderr": str(files["stderr"]),
            "timeout": max(1, int(timeout)),
        }
        assert self.proc.stdin is not None
        with self.lock:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        code = future.result()
        out, err = (files[k].read_text(errors="replace") for k in ("stdout", "stderr"))
        for path in files.values():
            path.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "polytask.cli.main", *args]
        if code is None:  # the alarm went off: the command outlived its timeout
            raise subprocess.TimeoutExpired(argv, timeout, out, err)
        return subprocess.CompletedProcess(argv, code, out, err)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


_zygotes: dict[tuple[str | None, ...], Zygote] = {}
_zygotes_lock = threading.Lock()


def run(
    args: list[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([python, -m, polytask.cli.main, *args], capture_output=True,
    text=True, ...)``, in a fork of the zygote for ``env``'s startup variables."""
    env = dict(os.environ if env is None else env)
    key = tuple(env.get(k) for k in STARTUP_VARS)
    with _zygotes_lock:
        if key not in _zygotes:
            _zygotes[key] = Zygote(env)
        zygote = _zygotes[key]
    return zygote.run(args, cwd=cwd, env=env, stdin=stdin, timeout=timeout)


def close_all() -> None:
    with _zygotes_lock:
        for zygote in _zygotes.values():
            zygote.close()
        _zygotes.clear()


atexit.register(close_all)


# ---------------------------------------------------------------- the zygote itself


def _child(request: dict[str, Any]) -> None:
    """In the fork: become ``python -m polytask.cli.main ARGV`` and exit with its code."""
    import io
    import runpy
    import signal
    import traceback

    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, name, mode in ((0, "stdin", os.O_RDONLY), (1, "stdout", 0), (2, "stderr", 0)):
            flags = mode if fd == 0 else os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            target = os.open(request[name], flags, 0o644)
            os.dup2(target, fd)
            os.close(target)
        encoding = sys.stdout.encoding
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding=encoding)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding=encoding)
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), encoding=encoding, line_buffering=True
        )
        sys.path[0] = os.getcwd()  # what `python -m` puts first
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.alarm(request["timeout"])
        sys.argv = ["-m", *request["argv"]]
        try:
            runpy.run_module("polytask.cli.main", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:  # the interpreter's own handling of SystemExit
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        threading._shutdown()  # type: ignore[attr-defined]  # join threads as at exit
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream: nothing left to say
                stream.flush()
        os._exit(code & 0xFF)


def _serve() -> None:
    """Preload, say ready, then fork one child per request line and report its exit."""
    import importlib
    import select

    real_stderr = os.dup(2)
    with tempfile.TemporaryFile() as said:
        os.dup2(said.fileno(), 2)
        try:
            for name in PRELOAD:
                importlib.import_module(name)
        finally:
            sys.stderr.flush()
            os.dup2(real_stderr, 2)
            os.close(real_stderr)
        said.seek(0)
        printed = said.read().decode(errors="replace")
    if printed.strip():
        print(f"the preload printed to stderr (a fresh CLI would too):\n{printed}", flush=True)
        return
    print("ready", flush=True)

    children: dict[int, int] = {}
    buffer, open_ = b"", True
    while open_ or children:
        if open_:
            readable, _, _ = select.select([0], [], [], 0.02)
            if readable:
                chunk = os.read(0, 65536)
                open_ = bool(chunk)
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    request = json.loads(line)
                    sys.stdout.flush()
                    pid = os.fork()
                    if pid == 0:
                        _child(request)
                    children[pid] = request["id"]
        else:
            select.select([], [], [], 0.02)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            n = children.pop(pid)
            alarm = os.WIFSIGNALED(status) and os.WTERMSIG(status) == 14  # SIGALRM
            code = None if alarm else os.waitstatus_to_exitcode(status)
            print(json.dumps({"id": n, "returncode": code}), flush=True)


if __name__ == "__main__":
    sys.path[0] = os.getcwd()  # not this folder: `python -m` puts the working directory first
    _serve()
