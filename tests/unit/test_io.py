"""The temporary files and folders of atomic writes follow the umask (issue 22 item 7)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from polytask.checkpoint import write_folder, write_json
from polytask.io import follow_umask, temp_dir, temp_file, umask


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o027, 0o077], ids=["022", "027", "077"])
def mask(request: pytest.FixtureRequest) -> Iterator[int]:
    before = os.umask(request.param)
    yield int(request.param)
    os.umask(before)


def test_umask_reads_without_changing_it(mask: int) -> None:
    assert umask() == mask
    assert umask() == mask


def test_temp_file_and_dir_get_the_modes_open_and_mkdir_give(mask: int, tmp_path: Path) -> None:
    fd, file = temp_file(tmp_path, prefix=".x.")
    os.close(fd)
    folder = temp_dir(tmp_path, prefix=".y.")
    (tmp_path / "plain").write_text("")
    (tmp_path / "plain-dir").mkdir()
    assert mode(file) == mode(tmp_path / "plain") == 0o666 & ~mask
    assert mode(folder) == mode(tmp_path / "plain-dir") == 0o777 & ~mask


def test_written_json_and_folders_follow_the_umask(mask: int, tmp_path: Path) -> None:
    """write_json (mkstemp) and write_folder (mkdtemp, with a safetensors file inside:
    safetensors itself writes 0600) leave the umask's modes, nested folders included."""
    write_json(tmp_path / "a.json", {"x": 1})

    def fill(tmp: Path) -> None:
        save_file({"w": torch.zeros(2)}, str(tmp / "w.safetensors"))
        (tmp / "sub").mkdir()
        save_file({"w": torch.zeros(2)}, str(tmp / "sub" / "v.safetensors"))

    write_folder(tmp_path / "model", fill)
    files = [tmp_path / "a.json", *(p for p in (tmp_path / "model").rglob("*") if p.is_file())]
    folders = [tmp_path / "model", tmp_path / "model" / "sub"]
    assert {mode(p) for p in files} == {0o666 & ~mask}
    assert {mode(p) for p in folders} == {0o777 & ~mask}
    assert len(files) == 4  # a.json, w, v, COMPLETE


def test_follow_umask_on_a_single_file(mask: int, tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    follow_umask(path)
    assert mode(path) == 0o666 & ~mask
