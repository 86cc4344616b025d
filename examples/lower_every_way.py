"""One ConvTranspose, lowered every way, each result checked against the float64 reference.

    python examples/lower_every_way.py

Prints, per strategy, the ops the lowered graph uses and its largest error on each backend.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

import lowering
from lowering.api import strategy_names


def main() -> None:
    rng = np.random.default_rng(0)
    graph = lowering.Graph("superres")
    x = graph.add_input("x", (2, 8, 12, 12))
    w = graph.const((rng.standard_normal((8, 4, 3, 3)) / 8).astype(np.float32), "w")
    b = graph.const(rng.standard_normal(4).astype(np.float32), "b")
    y = graph.op("ConvTranspose", x, w, b, strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1], name="up")
    graph.outputs.append(y)
    print(graph)

    feeds = {"x": rng.standard_normal((2, 8, 12, 12)).astype(np.float32)}
    reference = lowering.evaluate(graph, feeds)["up"]
    print(f"{'strategy':<16}{'ops':<58}{'numpy':>10}{'torch':>10}{'onnx':>10}")
    for strategy in strategy_names():
        lowered = lowering.lower(graph, strategy)
        ops = ", ".join(f"{op}x{n}" if n > 1 else op for op, n in sorted(Counter(n.op for n in lowered.nodes).items()))
        errors = []
        for backend in ("numpy", "torch", "onnx"):
            out = lowering.compile(lowered, backend)(feeds)["up"]
            errors.append(np.abs(out - reference).max() / np.abs(reference).max())
        print(f"{strategy:<16}{ops:<58}" + "".join(f"{e:>10.1e}" for e in errors))


if __name__ == "__main__":
    main()
