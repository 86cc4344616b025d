"""Compile-time figures for the README: lowering + ONNX export per ConvTranspose node, and building a
sparse `Fᵀ` with about 10 million nonzeros.

    python docs/bench/compile_time.py

Times are medians of 9 runs in one warm process (interpreter start and imports excluded), per node
of the built-in DCGAN example (5 ConvTranspose, 3 K to 2.1 M weights each); "export" serialises the
ONNX model to bytes, weights included.
"""

from __future__ import annotations

import gc
import statistics
import time

import lowering
from lowering.backends.onnx import to_onnx
from lowering.examples import example
from lowering.layers import parse_layer
from lowering.linop import conv_operator

STRATEGIES = ("zero-insertion", "col2im", "subpixel", "subpixel-fused", "auto")


def median_seconds(fn, runs: int = 9) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        gc.collect()  # a collection of the previous run's graphs would otherwise land in a random timing
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    graph = example("dcgan")
    nodes = len(graph.nodes_of("ConvTranspose"))
    for strategy in STRATEGIES:
        lower = median_seconds(lambda s=strategy: lowering.lower(graph, s))
        both = median_seconds(lambda s=strategy: to_onnx(lowering.lower(graph, s)).SerializeToString())
        per_node = [1e3 * seconds / nodes for seconds in (lower, both)]
        print(f"{strategy:<15} lower {per_node[0]:6.1f} ms/node   lower + export {per_node[1]:6.1f} ms/node")
    layer = parse_layer("N=1 C=32 M=32 in=25x25 k=4 s=2 p=1")  # 32·32·16·625 = 10.2 M entries
    node = layer.nodes_of("ConvTranspose")[0]
    linear = conv_operator(layer, node)
    matrix = linear.to_matrix(sparse=True, dtype="float32")
    seconds = median_seconds(lambda: linear.to_matrix(sparse=True, dtype="float32"), runs=3)
    print(f"sparse F^T: {matrix.shape[0]} x {matrix.shape[1]}, {matrix.nnz:,} nonzeros, built in {seconds:.2f} s")


if __name__ == "__main__":
    main()
