"""A new ConvTranspose lowering in a page: im2col over the zero-inserted input.

    python examples/custom_lowering.py [--layers N] [--quick]

The rewrite, per spatial axis j (DESIGN.md 3.1 with the convolution done as im2col + GEMM):

    Z    = InteriorPad(X, s_j − 1 zeros)             # zero insertion
    Z'   = pad Z by K_j − 1 − p_begin_j in front, K_j − 1 − p_end_j + a_j behind (negative: crop)
    cols = Im2Col(Z', block k, dilation δ, stride 1)  # (N, C·Πk, Πo): one column per output position
    Y    = reshape(flip(swap(W)) · cols) + B          # one batched MatMul per group

The strategy registers with one decorator, after which `lowering.lower(g, "im2col")`, `auto`,
`lowering compare` and `lowering lower --plugin examples/custom_lowering.py --strategy im2col`
all know it. The script checks it against the float64 reference on random layers (1-D to 3-D,
groups, strides, dilations, asymmetric pads, output padding) and prints it beside the built-ins.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

import lowering
from lowering.api import strategy_names
from lowering.errors import LoweringError, VerificationError
from lowering.geometry import ConvTransposeGeometry
from lowering.ir import Graph, Node, Value
from passes import STRATEGIES, Cost, LoweringStrategy, register_strategy
from passes.strategy import add_bias, batch_of, ints, itemsize, pad_spatial, swap_group_channels, total


@register_strategy
@dataclass
class Im2ColZeroInsertion(LoweringStrategy):
    """ConvTranspose as im2col over the zero-inserted, padded input, then one MatMul per group."""

    name = "im2col"
    summary = "zero insertion + pad/crop + Im2Col + one MatMul per group + bias"

    def cost(self, graph: Graph, node: Node, g: ConvTransposeGeometry) -> Cost:
        n = batch_of(g)
        cols = n * g.in_channels * total(g.kernel) * total(g.out_spatial)  # every tap at every output position
        return Cost(
            self.name,
            useful_macs=g.useful_macs(n),
            executed_macs=cols * g.out_channels_per_group,
            largest_intermediate_bytes=cols * itemsize(node),
            weight_bytes=g.in_channels * g.out_channels_per_group * total(g.kernel) * itemsize(node),
            ops=6,
            detail=f"column buffer {cols:,} elements",
        )

    def rewrite(self, graph: Graph, node: Node, g: ConvTransposeGeometry) -> Value:
        x, w, b = node.inputs[0], node.inputs[1], node.input(2)
        grp, cg, mg = g.group, g.in_channels_per_group, g.out_channels_per_group
        if any(s > 1 for s in g.strides):
            x = graph.op("InteriorPad", x, interior=[0, 0, *(s - 1 for s in g.strides)], before=node)
        begin = [K - 1 - pb for K, pb in zip(g.effective_kernel, g.pads_begin, strict=True)]
        end = [K - 1 - pe + a for K, pe, a in zip(g.effective_kernel, g.pads_end, g.output_padding, strict=True)]
        x = pad_spatial(graph, x, begin, end, node)
        cols = graph.op(
            "Im2Col",
            x,
            graph.const(ints(g.kernel), "block_shape"),
            dilations=list(g.dilations),
            pads=[0] * (2 * g.rank),
            strides=[1] * g.rank,
            before=node,
        )
        cols = graph.op("Reshape", cols, graph.const(ints([0, grp, cg * total(g.kernel), -1]), "cols"), before=node)
        # W (C, M/g, k...) -> Conv layout (M, C/g, k...), kernel flipped -> per group (M/g, C/g·Πk)
        kernel = swap_group_channels(graph, w, grp, cg, mg, g.kernel, node)
        kernel = graph.op("Flip", kernel, axes=list(range(2, 2 + g.rank)), before=node)
        kernel = graph.op("Reshape", kernel, graph.const(ints([grp, mg, cg * total(g.kernel)]), "w_mat"), before=node)
        y = graph.op("MatMul", kernel, cols, before=node)  # (N, g, M/g, Πo)
        y = graph.op("Reshape", y, graph.const(ints([0, g.out_channels, *g.out_spatial]), "y_shape"), before=node)
        return add_bias(graph, y, b, g.rank, node)


# ----------------------------------------------------------------- checking against the reference


def random_layer(rng: np.random.Generator) -> Graph | None:
    """One random ConvTranspose (None when the draw has no valid output size)."""
    rank = int(rng.integers(1, 4))
    group = int(rng.choice([1, 1, 2]))
    c, m = group * int(rng.integers(1, 4)), group * int(rng.integers(1, 4))
    spatial = [int(v) for v in rng.integers(1, 7 if rank < 3 else 4, rank)]
    kernel, strides, dilations = ([int(v) for v in rng.integers(1, hi, rank)] for hi in (4, 4, 3))
    effective = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    pads = [int(rng.integers(0, K)) for K in effective * 2]
    output_padding = [int(rng.integers(0, max(s, d))) for s, d in zip(strides, dilations, strict=True)]
    graph = Graph("random")
    x = graph.add_input("x", (int(rng.integers(1, 3)), c, *spatial))
    w = graph.const(rng.standard_normal((c, m // group, *kernel)).astype(np.float32), "w")
    b = graph.const(rng.standard_normal(m).astype(np.float32), "b") if rng.random() < 0.5 else None
    try:
        y = graph.op(
            "ConvTranspose", x, w, b, group=group, strides=strides, dilations=dilations,
            pads=pads, output_padding=output_padding, name="y",
        )  # fmt: skip
    except VerificationError:
        return None
    graph.outputs.append(y)
    return graph


def check_random_layers(count: int, seed: int = 0) -> int:
    """Lower `count` random layers with im2col; each must match the float64 reference. Returns the count."""
    rng = np.random.default_rng(seed)
    checked = 0
    while checked < count:
        graph = random_layer(rng)
        if graph is None:
            continue
        lowered = lowering.lower(graph, "im2col")
        assert not lowered.nodes_of("ConvTranspose")
        x = graph.inputs[0]
        feeds = {"x": rng.standard_normal(x.shape).astype(np.float32)}
        want, got = lowering.evaluate(graph, feeds)["y"], lowering.evaluate(lowered, feeds)["y"]
        if not np.allclose(got, want, rtol=1e-9, atol=1e-9):
            raise AssertionError(f"im2col differs from the reference on {graph.nodes[0].attrs}")
        checked += 1
    return checked


# ----------------------------------------------------------------- comparing with the built-ins


def compare(graph: Graph, backends: tuple[str, ...] = ("numpy", "torch"), repeats: int = 5) -> list[str]:
    """One row per strategy: ops emitted, executed multiply-adds, error against the reference, time."""
    rng = np.random.default_rng(1)
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in graph.inputs}
    reference = lowering.evaluate(graph, feeds)["y"]
    node = graph.nodes_of("ConvTranspose")[0]
    geometry = lowering.node_geometry(node)
    head = f"{'strategy':<16}{'executed MACs':>15}{'waste':>7}  {'max rel err':>11}"
    rows = [head + "".join(f"{b + ' ms':>11}" for b in backends) + "  ops", "-" * (len(head) + 11 * len(backends) + 40)]
    for name in strategy_names():
        try:
            lowered = lowering.lower(graph, name)
        except LoweringError as error:
            rows.append(f"{name:<16}declined: {str(error)[:90]}")
            continue
        cost = None if name == "auto" else STRATEGIES[name]().cost(graph, node, geometry)
        macs = f"{cost.executed_macs:>15,}{cost.waste:>6.1f}x" if cost else f"{'':>15}{'':>7}"
        error = np.abs(lowering.evaluate(lowered, feeds)["y"] - reference).max() / np.abs(reference).max()
        times = []
        for backend in backends:
            run = lowering.compile(lowered, backend)
            run(feeds)  # warm-up
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                run(feeds)
                samples.append(time.perf_counter() - start)
            times.append(statistics.median(samples) * 1e3)
        ops = ", ".join(f"{op}x{k}" if k > 1 else op for op, k in sorted(Counter(n.op for n in lowered.nodes).items()))
        rows.append(f"{name:<16}{macs}  {error:>11.1e}" + "".join(f"{t:>11.3f}" for t in times) + f"  {ops}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=50, help="random layers to check (default 50)")
    parser.add_argument("--quick", action="store_true", help="a smaller comparison layer and fewer timings")
    args = parser.parse_args(argv)

    print(f"im2col matches the float64 reference on {check_random_layers(args.layers)} random layers")
    spec = "N=1 C=16 M=8 in=8x8 k=4 s=2 p=1" if args.quick else "N=1 C=64 M=32 in=16x16 k=4 s=2 p=1"
    from lowering.layers import parse_layer

    graph = parse_layer(spec)
    graph.rename(graph.outputs[0], "y")
    print(f"\n{spec}: {lowering.node_geometry(graph.nodes[0]).useful_macs():,} useful multiply-adds")
    print("\n".join(compare(graph, repeats=3 if args.quick else 7)))
    notes = lowering.lower(graph, "auto").meta["lowering_notes"]
    print("\nauto weighs im2col with the built-ins:\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
