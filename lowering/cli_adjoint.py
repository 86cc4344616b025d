"""`lowering adjoint`: write the transpose of a linear ONNX model (see `lowering.adjoint`)."""

from __future__ import annotations

import argparse
import sys

from .cli import add_model_argument, command, load_graph


def _configure(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("-o", "--output", required=True, help="path of the ONNX model to write")
    parser.add_argument(
        "--strip-bias",
        action="store_true",
        help="drop biases (Conv/ConvTranspose/Gemm bias, added constants, BatchNormalization shift) first",
    )
    parser.add_argument("--opset", type=int, help="ONNX opset of the written model (default: the input's, >= 11)")


@command("adjoint", "write the transpose (adjoint) of a model that is linear in its inputs", _configure)
def _adjoint(args: argparse.Namespace) -> int:
    from .atomic import check_output_path, write_bytes_atomic
    from .backends.onnx import to_onnx
    from .transposition import adjoint

    output = check_output_path(args.output, args.model)
    graph = load_graph(args)
    transposed = adjoint(graph, strip_bias=args.strip_bias)
    model = to_onnx(transposed, opset=args.opset)
    write_bytes_atomic(output, model.SerializeToString())
    for note in transposed.meta.get("adjoint_notes", []):
        print(note, file=sys.stderr)
    inputs = ", ".join(v.name for v in transposed.inputs)
    outputs = ", ".join(v.name for v in transposed.outputs)
    print(f"wrote the adjoint of '{graph.name}' ({inputs} -> {outputs}) to {output}", file=sys.stderr)
    return 0
