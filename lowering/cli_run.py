"""`lowering run`, `lowering check` and `lowering emit`: lowered graphs on the backends."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from . import dtypes
from .cli import add_model_argument, command, load_graph
from .errors import InputError, LoweringError, UnsupportedError, first_line
from .ir import Graph

BACKEND_NAMES = ("numpy", "torch", "onnx")
NATIVE = "none"  # run the graph as it is, ConvTranspose included (the runtime's own kernel)

# max |out − ref| / max |ref| allowed, by the element type the backend computed in


def read_inputs(path: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz by name; every failure is one InputError line naming the file."""
    import zipfile

    where = f"cannot read inputs '{path}'"
    if Path(path).is_dir():
        raise InputError(f"{where}: it is a directory")
    if not Path(path).exists():
        raise InputError(f"{where}: no such file")
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and say so
        raise InputError(f"{where}: not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as error:  # arrays of Python objects, which are never unpickled
        first = first_line(error)
        raise InputError(f"{where}: {first}") from None
    except Exception as error:
        raise InputError(f"{where}: not an .npz archive ({type(error).__name__})") from None


def random_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded standard-normal inputs; symbolic dimensions take size 1."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for value in graph.inputs:
        shape = [d if isinstance(d, int) else 1 for d in (value.shape or ())]
        inputs[value.name] = rng.standard_normal(shape).astype(value.dtype or "float32")
    return inputs


def lowered(graph: Graph, strategy: str, **options) -> Graph:
    from .api import lower

    return graph if strategy == NATIVE else lower(graph, strategy, **options)


def _strategy_choices() -> list[str]:
    from .api import strategy_names

    return [*strategy_names(), NATIVE]


# ----------------------------------------------------------------- run


def _configure_run(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("--inputs", help=".npz of inputs keyed by graph input names (default: seeded random)")
    parser.add_argument("-o", "--output", required=True, help=".npz to write, keyed by graph output names")
    parser.add_argument("--strategy", default="auto", choices=_strategy_choices(), help="lowering strategy, or none")
    parser.add_argument("--backend", default="onnx", choices=BACKEND_NAMES)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])


@command("run", "lower a model and run it on a backend", _configure_run)
def _run(args: argparse.Namespace) -> int:
    from .atomic import check_output_path, write_bytes_atomic
    from .compile import compile

    output = check_output_path(args.output, args.model, args.inputs)
    graph = load_graph(args)
    inputs = read_inputs(args.inputs) if args.inputs else random_inputs(graph)
    options = {"backend": args.backend, "device": args.device} if args.strategy == "auto" else {}
    fn = compile(lowered(graph, args.strategy, **options), args.backend, args.device)
    results = fn(inputs)
    buffer = io.BytesIO()
    np.savez(buffer, **results)
    write_bytes_atomic(output, buffer.getvalue())
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in results.items())
    print(f"wrote {output}: {shapes}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------- check


def _configure_check(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("--inputs", help=".npz of inputs (default: seeded random)")
    parser.add_argument("--strategies", help="comma-separated subset of strategies (default: all, and none)")
    parser.add_argument("--backends", help="comma-separated subset of numpy,torch,onnx (default: all)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])


def relative_error(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max absolute error, max absolute error / max |ref|), NaN and Inf compared positionally."""
    out64, ref64 = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if out64.shape != ref64.shape:
        return float("inf"), float("inf")
    same_special = (np.isnan(out64) & np.isnan(ref64)) | (np.isinf(ref64) & (out64 == ref64))
    if np.any(~np.isfinite(ref64) & ~same_special) or np.any(~np.isfinite(out64) & ~same_special):
        return float("inf"), float("inf")
    diff = np.where(same_special, 0.0, np.abs(out64 - ref64))
    finite = np.where(np.isfinite(ref64), np.abs(ref64), 0.0)
    scale = max(float(finite.max(initial=0.0)), 1e-30)
    worst = float(diff.max(initial=0.0))
    return worst, worst / scale


@command("check", "run every strategy on every backend and compare with the float64 reference", _configure_check)
def _check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .compile import compile
    from .reference import evaluate

    graph = load_graph(args)
    inputs = read_inputs(args.inputs) if args.inputs else random_inputs(graph)
    reference = evaluate(graph, inputs)
    strategies = args.strategies.split(",") if args.strategies else _strategy_choices()
    backends = args.backends.split(",") if args.backends else list(BACKEND_NAMES)
    for name in strategies:
        if name not in _strategy_choices():
            raise LoweringError(f"unknown strategy '{name}' (known: {', '.join(_strategy_choices())})")
    for name in backends:
        if name not in BACKEND_NAMES:
            raise LoweringError(f"unknown backend '{name}' (known: {', '.join(BACKEND_NAMES)})")
    dtype = next((v.dtype for v in graph.outputs if v.dtype), "float32")
    tolerance = dtypes.TOLERANCE.get(dtype, 1e-4)
    table = Table(title=f"{graph.name}: max error against the float64 reference (tolerance {tolerance:g} relative)")
    for column in ("strategy", "backend", "max abs error", "max rel error", "result"):
        table.add_column(column, justify="right" if "error" in column else "left")
    failures = 0
    for strategy in strategies:
        try:
            candidate = lowered(graph, strategy)
        except LoweringError as error:
            table.add_row(strategy, "-", "-", "-", f"declined: {error}")
            continue
        for backend in backends:
            try:
                outputs = compile(candidate, backend, args.device)(inputs)
            except UnsupportedError as error:  # what this backend cannot express or run; not wrong
                table.add_row(strategy, backend, "-", "-", f"[yellow]unsupported[/yellow]: {error}")
                continue
            except LoweringError as error:
                if strategy == "none":  # the model as given, refused by the runtime's own kernels (their rules)
                    table.add_row(strategy, backend, "-", "-", f"[yellow]unsupported[/yellow]: {error}")
                    continue
                failures += 1
                table.add_row(strategy, backend, "-", "-", f"[red]FAILED[/red]: {error}")
                continue
            except Exception as error:  # a bug: reported in its row, and the other rows still run
                failures += 1
                table.add_row(strategy, backend, "-", "-", f"[red]ERROR[/red]: {type(error).__name__}: {error}")
                continue
            worst_abs, worst_rel = 0.0, 0.0
            for name, ref in reference.items():
                abs_err, rel_err = relative_error(outputs[name], ref)
                worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
            ok = worst_rel <= tolerance
            failures += not ok
            table.add_row(
                strategy, backend, f"{worst_abs:.3g}", f"{worst_rel:.3g}", "ok" if ok else "[red]ABOVE TOLERANCE[/red]"
            )
    Console(width=160).print(table)
    if failures:
        print(f"lowering check: {failures} result(s) failed or exceeded the tolerance", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------- emit


EMIT_SUFFIX = {"numpy": ".py", "torch": ".py", "onnx": ".onnx"}


def _configure_emit(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("--backend", required=True, choices=["numpy", "torch", "onnx"])
    parser.add_argument("--strategy", default="auto", choices=_strategy_choices())
    parser.add_argument("--opset", type=int, help="ONNX opset (onnx backend)")
    parser.add_argument("-o", "--output", required=True, help="file to write (.py for numpy/torch, .onnx for onnx)")


@command("emit", "write a lowered model as NumPy source, PyTorch source or ONNX", _configure_emit)
def _emit(args: argparse.Namespace) -> int:
    from .atomic import check_output_path

    output = check_output_path(args.output, args.model)
    suffix = EMIT_SUFFIX[args.backend]
    if output.suffix.lower() != suffix:  # the constants go beside it with their own suffix (.npz / .pt)
        raise LoweringError(f"output '{output}': --backend {args.backend} writes a {suffix} file, name it {suffix}")
    if args.opset is not None and args.backend != "onnx":
        raise LoweringError(f"--opset applies to --backend onnx only, not '{args.backend}'")
    graph = load_graph(args)
    options = {"backend": args.backend} if args.strategy == "auto" else {}
    candidate = lowered(graph, args.strategy, **options)
    if args.backend == "numpy":
        from .backends.numpy_backend import write_numpy_module

        written = write_numpy_module(candidate, output)
    elif args.backend == "torch":
        from .backends.torch_backend import write_torch_module

        written = write_torch_module(candidate, output)
    else:
        from .atomic import write_bytes_atomic
        from .backends.onnx import to_onnx

        write_bytes_atomic(output, to_onnx(candidate, opset=args.opset).SerializeToString())
        written = [output]
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0
