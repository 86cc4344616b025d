"""Output files: written whole or not at all, and never by replacing what the path names."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from lowering.atomic import write_bytes_atomic
from lowering.errors import LoweringError


def test_a_new_file_gets_the_bytes_and_no_temporary_is_left(tmp_path: Path):
    write_bytes_atomic(tmp_path / "out.bin", b"abc")
    assert (tmp_path / "out.bin").read_bytes() == b"abc"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_symbolic_link_is_followed_and_kept(tmp_path: Path):
    target = tmp_path / "target.bin"
    target.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    write_bytes_atomic(link, b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"


def test_a_named_pipe_is_written_into_not_replaced(tmp_path: Path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()))
    reader.start()
    write_bytes_atomic(pipe, b"through the pipe")
    reader.join(timeout=10)
    assert received == [b"through the pipe"]
    assert stat.S_ISFIFO(pipe.stat().st_mode)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_dev_null_stays_a_device():
    write_bytes_atomic("/dev/null", b"discarded")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_failed_write_is_one_line_naming_the_path(tmp_path: Path):
    (tmp_path / "out.npz").mkdir()  # a directory where the file should go
    with pytest.raises(LoweringError, match=r"cannot write '.*out\.npz': ") as info:
        write_bytes_atomic(tmp_path / "out.npz", b"x")
    assert "\n" not in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]
