"""`lowering lower`: rewrite every ConvTranspose of an ONNX model and write the result."""

from __future__ import annotations

import argparse
import sys

from .cli import add_model_argument, command, int_at_least, load_graph, strategy_or_pipeline


def _configure(parser: argparse.ArgumentParser) -> None:
    from .api import strategy_names

    add_model_argument(parser)
    parser.add_argument("-o", "--output", required=True, help="path of the ONNX model to write")
    parser.add_argument("--strategy", choices=strategy_names(), help="lowering strategy (default auto)")
    parser.add_argument("-p", "--pipeline", help="comma-separated pass names, replacing the standard pipeline")
    parser.add_argument("--opset", type=int, help="ONNX opset of the written model (default: the input's, >= 11)")
    parser.add_argument("--backend", default="onnx", help="target backend auto optimises for (default onnx)")
    parser.add_argument(
        "--matrix-budget", type=int_at_least(0), metavar="BYTES", help="memory budget of the matrix strategy"
    )
    parser.add_argument("--form", choices=["auto", "fused", "per-phase"], help="subpixel form")
    parser.add_argument(
        "--fold-bn",
        action="store_true",
        help="fold each BatchNormalization into the Conv / ConvTranspose before it, before lowering (auto always does)",
    )
    parser.add_argument("--tune", action="store_true", help="auto: measure candidates on the backend (cached)")
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="device auto optimises for (--tune measures there)"
    )
    parser.add_argument("--print-after-all", action="store_true", help="print the IR after every pass (stderr)")
    parser.add_argument("--explain", action="store_true", help="print each node's chosen strategy and cost figures")
    parser.add_argument("--no-verify", action="store_true", help="skip verification after each pass")


def lowering_options(args: argparse.Namespace) -> dict:
    """Pass options named on the command line, keyed by the pass field they set."""
    options: dict = {}
    runs = [part.strip() for part in args.pipeline.split(",")] if args.pipeline is not None else [args.strategy]
    if args.matrix_budget is not None:  # the matrix pass's own budget, or the one auto gives its candidate
        options["budget_bytes" if "matrix" in runs else "matrix_budget"] = args.matrix_budget
    if args.form is not None:
        options["form"] = args.form
    if "auto" in runs:
        options.update(backend=args.backend, device=getattr(args, "device", "cpu"))  # the model has GPU rates
        if getattr(args, "opset", None) is not None:
            options["opset"] = args.opset  # what the written model can hold decides what auto may pick
        if getattr(args, "tune", False):
            options["tune"] = True
    return options


@command("lower", "rewrite every ConvTranspose of a model with a lowering strategy", _configure)
def _lower(args: argparse.Namespace) -> int:
    from .api import lower
    from .atomic import check_output_path, write_bytes_atomic
    from .backends.onnx import to_onnx

    output = check_output_path(args.output, args.model)
    args.strategy = strategy_or_pipeline(args)
    if args.tune:  # its measurements need the same environment as `lowering bench` (set at process start)
        from .cli_bench import ensure_bench_environment

        ensure_bench_environment(args)
    graph = load_graph(args)
    before = len(graph.nodes_of("ConvTranspose"))
    lowered = lower(
        graph,
        args.strategy,
        pipeline=args.pipeline,
        verify=not args.no_verify,
        print_after_all=args.print_after_all,
        fold_bn=args.fold_bn,
        **lowering_options(args),
    )
    model = to_onnx(lowered, opset=args.opset)
    write_bytes_atomic(output, model.SerializeToString())
    if args.explain:
        _explain(graph, lowered, args)
    after = len(lowered.nodes_of("ConvTranspose"))
    if before == 0:
        print(f"no ConvTranspose node to lower; wrote {output}", file=sys.stderr)
    else:
        how = f"pipeline '{args.pipeline}'" if args.pipeline is not None else f"'{args.strategy}'"
        print(f"lowered {before} ConvTranspose node(s) with {how} ({after} left); wrote {output}", file=sys.stderr)
    return 0


def _explain(graph, lowered, args: argparse.Namespace) -> None:
    """Per ConvTranspose node: the strategy used and its cost figures."""
    notes = lowered.meta.get("lowering_notes") or []
    if notes:
        print("\n".join(notes))
    if args.strategy == "auto" and any(not note.startswith("fold-batchnorm:") for note in notes):
        return  # auto's notes are its per-node explanations
    from passes import STRATEGIES
    from passes.canonicalize import Canonicalize

    from .geometry import node_geometry

    canonical = graph.copy()
    Canonicalize().run(canonical)
    strategy = STRATEGIES[args.strategy]()
    for node in canonical.nodes_of("ConvTranspose"):
        cost = strategy.cost(canonical, node, node_geometry(node))
        print(
            f"{node.name or node.outputs[0].name}: {cost.strategy}  useful {cost.useful_macs:,} MACs  "
            f"executed {cost.executed_macs:,}  largest intermediate {cost.largest_intermediate_bytes:,} B  "
            f"weights {cost.weight_bytes:,} B  {cost.detail}"
        )
