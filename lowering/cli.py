"""The `lowering` command line: subcommands over the same public API a Python user calls.

Errors the user can fix print one line on stderr and exit 2; a bug in this project exits 1 with one
line that points at `--debug`, which prints the traceback. Subcommands register themselves in
`COMMANDS` with the `command` decorator. `--plugin MODULE` (before or after the subcommand) imports a
user module first, so the passes, strategies and commands it registers are there when the parser is built.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from .errors import LoweringError
from .ir import Graph

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (and exit 2), like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


@dataclass
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    def register(run: Callable[[argparse.Namespace], int | None]):
        COMMANDS[name] = Command(name, help, configure, run)
        return run

    return register


# ----------------------------------------------------------------- shared argument helpers


def strategy_or_pipeline(args: argparse.Namespace) -> str:
    """The strategy to lower with (`auto` when neither it nor `-p` is given). A `--strategy` that the
    `-p` pipeline does not run is refused: the pipeline names every pass, so it would be ignored."""
    pipeline = args.pipeline
    if args.strategy is not None and pipeline is not None and args.strategy not in map(str.strip, pipeline.split(",")):
        raise LoweringError(f"--strategy {args.strategy} is not in -p '{args.pipeline}', which names every pass to run")
    return args.strategy or "auto"


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `low` (argparse then reports a bad value in one line)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def seconds(text: str) -> float:
    """An argparse type: a duration in seconds, >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text}")
    return value


def int_list(low: int) -> Callable[[str], list[int]]:
    """An argparse type: comma-separated integers, each >= `low`."""
    one = int_at_least(low)

    def parse(text: str) -> list[int]:
        return [one(part.strip()) for part in text.split(",")]

    return parse


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="path of an ONNX model")
    parser.add_argument("--example", metavar="NAME", help="use a built-in example model instead (dcgan, ...)")
    parser.add_argument(
        "--batch", type=int_at_least(1), default=1, help="batch size of the built-in example (default 1)"
    )


def load_graph(args: argparse.Namespace) -> Graph:
    """The model named on the command line: an ONNX file or a built-in example."""
    from .examples import example
    from .frontends.onnx import from_onnx

    if args.example and args.model:
        raise LoweringError("give either a model path or --example, not both")
    if args.example:
        return example(args.example, args.batch)
    if not args.model:
        raise LoweringError("no model given: pass an ONNX file or --example NAME")
    return from_onnx(args.model)


# ----------------------------------------------------------------- inspect


def _configure_inspect(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("--full", action="store_true", help="print every constant's data")


@command("inspect", "print the IR with inferred shapes and each convolution's multiply-adds", _configure_inspect)
def _inspect(args: argparse.Namespace) -> int:
    from .geometry import node_geometry

    graph = load_graph(args)
    graph.verify()
    print(graph.format(elide_above=None if args.full else 16), end="")
    convs = [n for n in graph.nodes if n.op in ("Conv", "ConvTranspose")]
    if convs:
        print()
        header = f"{'node':<24} {'op':<14} {'input':<22} {'output':<22} {'multiply-adds':>15}"
        print(header)
        print("-" * len(header))
        total = 0
        for node in convs:
            macs = node_geometry(node).useful_macs()
            total += macs
            shape_in = "x".join(map(str, node.inputs[0].shape))
            shape_out = "x".join(map(str, node.outputs[0].shape))
            print(f"{node.name or node.outputs[0].name:<24} {node.op:<14} {shape_in:<22} {shape_out:<22} {macs:>15,}")
        print(f"{'total':<24} {'':<14} {'':<22} {'':<22} {total:>15,}")
    return 0


# ----------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lowering", description="Lower ONNX ConvTranspose to other operators, and compare the results."
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    _add_plugin_argument(parser, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in COMMANDS.values():
        sub_parser = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(sub_parser)
        _add_plugin_argument(sub_parser, argparse.SUPPRESS)
        # accepted after the subcommand too, where the internal-error hint sends users
        sub_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


DEBUG_HELP = "print the traceback of internal errors"
PLUGIN_HELP = "import a Python module (name or .py path) that registers passes, strategies or commands; repeatable"


def _add_plugin_argument(parser: argparse.ArgumentParser, default: object) -> None:
    # Accepted before and after the subcommand; the values were already acted on by `_preload_plugins`.
    parser.add_argument("--plugin", action="append", metavar="MODULE", default=default, help=PLUGIN_HELP)


class _QuietParser(argparse.ArgumentParser):
    """A parser that raises on a usage mistake instead of printing it and exiting."""

    class Mistake(Exception):
        pass

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise self.Mistake(message)


def _preload_plugins(argv: list[str]) -> int | None:
    """Import the `--plugin` modules named anywhere in argv, before the real parser is built, so
    that their passes, strategies (`--strategy` choices) and commands exist when it is.
    Returns an exit status when a plugin cannot be loaded, else None."""
    from .plugins import load_plugins

    pre = _QuietParser(add_help=False, allow_abbrev=False)
    _add_plugin_argument(pre, [])
    pre.add_argument("--debug", action="store_true")
    try:
        known, _ = pre.parse_known_args(argv)
    except _QuietParser.Mistake:  # e.g. `--plugin` without a value: the real parser reports it
        return None
    try:
        load_plugins(known.plugin)
    except LoweringError as error:
        if known.debug and error.__cause__ is not None:
            traceback.print_exception(error.__cause__)
        print(f"lowering: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    status = _preload_plugins(argv)
    if status is not None:
        return status
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return COMMANDS[args.command].run(args) or 0
    except LoweringError as error:
        print(f"lowering {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"lowering {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as error:  # a bug in this project, not the user's mistake
        if args.debug:
            traceback.print_exc()
        detail = f"{type(error).__name__}: {error}".splitlines()[0]
        hint = "" if args.debug else " (run with --debug for the traceback)"
        print(f"lowering {args.command}: internal error: {detail}{hint}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


# Subcommands defined in their own modules register on import; a module not present is skipped.
_COMMAND_MODULES = ("cli_lower", "cli_run", "cli_bench", "cli_adjoint", "cli_draw", "cli_fuzz")


def _load_commands() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__package__}.{name}":
                raise


_load_commands()
