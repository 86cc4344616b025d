"""`lowering draw`: a picture of a model's graph, before or after lowering (op, shapes, FLOPs per node)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import add_model_argument, command, load_graph, strategy_or_pipeline
from .errors import LoweringError

FORMATS = ("png", "svg", "pdf")
DPI_RANGE = (10, 1200)


def _configure(parser: argparse.ArgumentParser) -> None:
    from .api import strategy_names

    add_model_argument(parser)
    parser.add_argument("-o", "--output", required=True, help="image to write: .png (default), .svg or .pdf")
    parser.add_argument("--strategy", choices=strategy_names(), help="draw the graph after lowering with S")
    parser.add_argument("-p", "--pipeline", help="draw the graph after these comma-separated passes")
    parser.add_argument(
        "--before-after", action="store_true", help="draw the original and the lowered graph side by side"
    )
    parser.add_argument("--constants", action="store_true", help="draw constant initializers as boxes too")
    parser.add_argument("--dpi", type=int, default=100, help="resolution of a PNG (default 100)")


@command("draw", "draw a model's graph, before or after lowering (op, shapes, FLOPs per node)", _configure)
def _draw(args: argparse.Namespace) -> int:
    from .api import lower
    from .atomic import check_output_path, write_bytes_atomic
    from .draw import render

    output = check_output_path(args.output, args.model)
    fmt = output.suffix.lower().lstrip(".") or "png"
    if fmt not in FORMATS:
        raise LoweringError(f"output '{output}': unknown image format '.{fmt}' (use {', '.join(FORMATS)})")
    if not DPI_RANGE[0] <= args.dpi <= DPI_RANGE[1]:  # above it the image buffer alone runs to gigabytes
        raise LoweringError(f"--dpi must be between {DPI_RANGE[0]} and {DPI_RANGE[1]}, got {args.dpi}")
    lowering_asked = args.strategy is not None or args.pipeline is not None
    strategy = strategy_or_pipeline(args)
    if args.before_after and not lowering_asked:
        raise LoweringError("--before-after needs --strategy S or -p PIPELINE")
    graph = load_graph(args)
    graph.verify()
    name = Path(args.model).name if args.model else graph.name
    panels = [(name, graph)]
    if lowering_asked:
        how = f"-p {args.pipeline}" if args.pipeline else f"--strategy {strategy}"
        lowered = (f"{name} after {how}", lower(graph, strategy, pipeline=args.pipeline))
        panels = [*panels, lowered] if args.before_after else [lowered]
    write_bytes_atomic(output, render(panels, fmt=fmt, dpi=args.dpi, constants=args.constants))
    print(f"drew {', '.join(f'{len(g.nodes)} nodes' for _, g in panels)}; wrote {output}", file=sys.stderr)
    return 0
