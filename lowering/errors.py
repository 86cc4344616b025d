"""Exceptions that separate the user's mistakes from the project's own.

Every `LoweringError` is something the user can fix (a bad model, a bad attribute, a missing
input): the CLI prints its one-line message and exits 2. Anything else that escapes is a bug in
this project: the CLI exits 1 and points at `--debug` for the traceback.
"""

from __future__ import annotations


class LoweringError(Exception):
    """A user-facing error with a one-line message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class VerificationError(LoweringError):
    """A node or graph breaks the rules of its op or of the IR."""


class UnsupportedError(LoweringError):
    """The input is well-formed but uses something this project does not handle."""


class ModelLoadError(LoweringError):
    """A model file could not be read or is not a valid model."""


class InputError(LoweringError):
    """Run-time inputs do not match the graph (missing, extra, wrong shape or dtype)."""


class ParseError(LoweringError):
    """The textual IR could not be parsed."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none: what a one-line
    refusal quotes from a library's (often multi-line) error."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
