"""Pass infrastructure: `Pass`, `PassResult`, the registry and the `PassManager`.

A pass is a dataclass whose fields are its options (so the CLI and `get_pass(name, **options)`
get them for free), with a short kebab-case `name`. `run(graph)` rewrites the graph in place and
says whether it changed anything; a rewrite that declines leaves the node as it was and records
why in `PassResult.notes`. The manager verifies the graph after every pass, so a broken invariant
is reported by the pass that broke it.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TextIO

from lowering.errors import LoweringError, VerificationError
from lowering.ir import Graph


@dataclass
class PassResult:
    """What a pass returns: the graph, whether the pass changed it, and notes (e.g. why a rewrite declined)."""

    graph: Graph
    modified: bool
    notes: list[str] = field(default_factory=list)


class Pass:
    """Base class of every pass. Subclasses are dataclasses; their fields are the pass options."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def run(self, graph: Graph) -> PassResult:
        """Rewrite `graph` in place and report whether anything changed."""
        raise NotImplementedError

    @classmethod
    def options(cls) -> dict[str, dataclasses.Field]:
        """The pass's options: its dataclass fields that are constructor arguments, by name."""
        # fields that are not constructor arguments are the pass's own state, not options
        return {f.name: f for f in dataclasses.fields(cls) if f.init} if dataclasses.is_dataclass(cls) else {}

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.options())
        return f"{self.name}({opts})" if opts else self.name


PASSES: dict[str, type[Pass]] = {}
KEBAB_CASE = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a pass available by its name (to `get_pass`, pipelines and the CLI)."""
    if not KEBAB_CASE.fullmatch(cls.name or ""):
        raise ValueError(f"pass {cls.__name__} needs a short kebab-case name, got {cls.name!r}")
    if cls.name in PASSES and PASSES[cls.name] is not cls:
        raise ValueError(f"a pass named {cls.name!r} is already registered ({PASSES[cls.name].__name__})")
    PASSES[cls.name] = cls
    return cls


def get_pass(name: str, **options: Any) -> Pass:
    """An instance of the registered pass `name`; options it does not have are refused by name."""
    if name not in PASSES:
        raise LoweringError(f"unknown pass '{name}' (known: {', '.join(sorted(PASSES))})")
    cls = PASSES[name]
    fields = cls.options()
    unknown = sorted(set(options) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise LoweringError(f"pass '{name}' has no option {', '.join(unknown)} (options: {known})")
    hints = typing.get_type_hints(cls)
    for option, value in options.items():
        _check_option_type(name, option, value, hints.get(option))
    return cls(**options)


# an option's annotation -> whether a value fits it (bool is not taken for a number, a number is a float)
OPTION_TYPES: dict[Any, Callable[[Any], bool]] = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
    float: lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def _check_option_type(pass_name: str, option: str, value: Any, annotation: Any) -> None:
    """Refuse an option value of the wrong type by name, before it fails deep inside the pass."""
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    checks = [OPTION_TYPES.get(t) for t in allowed if t is not type(None)]
    if any(check is None for check in checks) or (value is None and type(None) in allowed):
        return  # a type this table does not cover, or an allowed None
    if not any(check(value) for check in checks):  # type: ignore[misc]
        wanted = " or ".join(t.__name__ for t in allowed)
        raise LoweringError(
            f"pass '{pass_name}': option {option} must be {wanted}, got {type(value).__name__} {value!r}"
        )


def parse_pipeline(text: str, options: dict[str, Any] | None = None) -> list[Pass]:
    """`"canonicalize,zero-insertion,dce"` -> passes; `options` go to every pass that has them."""
    options = options or {}
    passes = []
    names = [part.strip() for part in text.split(",")]
    if len(names) > 1 and not names[-1]:
        names.pop()  # a trailing comma names nothing more
    for position, name in enumerate(names, start=1):
        if not name:
            where = "is empty" if len(names) == 1 else f"has no pass name at position {position} of {len(names)}"
            raise LoweringError(f"pipeline '{text}' {where}")
        if name not in PASSES:
            raise LoweringError(f"unknown pass '{name}' (known: {', '.join(sorted(PASSES))})")
        fields = PASSES[name].options()
        passes.append(get_pass(name, **{k: v for k, v in options.items() if k in fields}))
    return passes


class PassManager:
    """Runs passes in order, verifying after each one (unless `verify=False`).

    With `print_after_all`, the IR after each pass is written to `stream`; `on_pass` is called with
    each pass and its result (progress reporting, timing).
    """

    def __init__(
        self,
        passes: Iterable[Pass],
        *,
        verify: bool = True,
        print_after_all: bool = False,
        stream: TextIO | None = None,
        on_pass: Callable[[Pass, PassResult], None] | None = None,
    ) -> None:
        self.passes = list(passes)
        self.verify = verify
        self.print_after_all = print_after_all
        self.stream = stream
        self.on_pass = on_pass

    def run(self, graph: Graph) -> PassResult:
        """Run every pass on `graph` in order; the result's `modified` and `notes` gather all of them."""
        modified = False
        notes: list[str] = []
        for p in self.passes:
            result = p.run(graph)
            if not isinstance(result, PassResult):  # a plugin pass's slip, named rather than an AttributeError
                raise LoweringError(f"pass '{p.name}' returned {type(result).__name__}, not a PassResult(graph, ...)")
            graph = result.graph
            modified |= result.modified
            notes.extend(result.notes)
            if self.verify:
                try:
                    graph.verify()
                except VerificationError as error:
                    raise VerificationError(f"after pass '{p.name}': {error}") from None
            if self.print_after_all:
                stream = self.stream or sys.stderr
                print(f"// ----- IR after {p}{'' if result.modified else ' (unchanged)'}", file=stream)
                print(graph.format(), file=stream, end="")
            if self.on_pass is not None:
                self.on_pass(p, result)
        return PassResult(graph, modified, notes)
