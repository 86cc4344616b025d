"""Atomic output files: write to a temporary file beside the target, then rename over it.

A refused, crashed or interrupted run therefore never leaves a partial file, and never touches an
existing file of the same name unless it succeeds.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import LoweringError


def check_output_path(output: str | os.PathLike, *inputs: str | os.PathLike | None) -> Path:
    """Refuse, before any work, an output path that cannot be written or would overwrite an input."""
    path = Path(output)
    for source in inputs:
        if source is not None and Path(source).exists() and path.exists() and path.resolve() == Path(source).resolve():
            raise LoweringError(f"output path '{path}' is the input file; choose another name")
    if path.is_dir():
        raise LoweringError(f"output path '{path}' is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise LoweringError(f"cannot write '{path}': directory '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise LoweringError(f"cannot write '{path}': directory '{parent}' is not writable")
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` all at once: a temporary file beside it, renamed over it.

    A symbolic link is followed (its target gets the bytes, the link stays), and a path that is not
    a regular file (`/dev/null`, a named pipe) is written into as it is: renaming over it would
    replace the device or pipe itself. A failure is one LoweringError line naming the path."""
    target = Path(os.path.realpath(path))
    try:
        if target.exists() and not target.is_file():
            with open(target, "wb") as handle:
                handle.write(data)
            return
        _replace_atomically(target, data)
    except OSError as error:
        raise LoweringError(f"cannot write '{path}': {error.strerror or type(error).__name__}") from None


def _replace_atomically(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp makes 0600; a user's output file gets the usual mode
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
