"""Pictures of graphs: each node as a box with its op, name, output shape and FLOPs.

A lowering is easiest to judge by looking at it: one ConvTranspose box becomes a handful of
data-movement boxes (grey) around one big compute box (blue). `draw` places the nodes in layers
by longest path from the graph inputs (data flows top to bottom), using the networkx view of the
graph (`Graph.to_networkx`) with value vertices contracted into edges; `render` writes one or more
such panels (e.g. before and after lowering) as PNG, SVG or PDF bytes.

FLOPs per node (`node_flops`) count a multiply-add as 2: convolutions from their resolved
geometry (useful multiply-adds, N·C·(M/g)·Πk·Πi for ConvTranspose), matrix products from their
shapes (a sparse product from its nonzeros), one per output element for elementwise ops, one
addition per input element for Col2Im, and 0 for pure data movement (Reshape, Pad, Im2Col, ...).
A symbolic dimension (a dynamic batch) counts as 1.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from .errors import LoweringError
from .ir import Graph, Node, Shape

COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "SparseMatMul"})
ELEMENTWISE_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip"})

_COLOURS = {
    "ConvTranspose": "#f4a6a6",
    "compute": "#a9c8ec",
    "elementwise": "#b9e2b0",
    "data": "#e3e3e3",
    "input": "#fff2b3",
    "output": "#fff2b3",
    "constant": "#f7f7f7",
}


def _numel(shape: Shape | None) -> int:
    if shape is None:
        return 0
    return math.prod(d if isinstance(d, int) else 1 for d in shape)


def node_flops(node: Node) -> int:
    """Floating-point operations of one node (a multiply-add is 2), from its op and shapes.

    Data movement counts 0; see the module docstring for each op's rule.
    """
    out = node.outputs[0].shape if node.outputs else None
    if node.op in ("Conv", "ConvTranspose"):
        from .geometry import node_geometry

        geometry = node_geometry(node)
        batch = geometry.batch if isinstance(geometry.batch, int) else 1
        bias = _numel(out) if node.input(2) is not None else 0
        return 2 * geometry.useful_macs(batch) + bias
    if node.op == "MatMul":
        a = node.inputs[0].shape  # type: ignore[union-attr]
        if a is None or out is None or not isinstance(a[-1], int):
            return 0
        return 2 * _numel(out) * a[-1]
    if node.op == "Gemm":
        a = node.inputs[0].shape  # type: ignore[union-attr]
        if a is None or out is None:
            return 0
        k = a[0] if node.attr("transA") else a[-1]
        bias = _numel(out) if node.input(2) is not None else 0
        return 2 * _numel(out) * (k if isinstance(k, int) else 1) + bias
    if node.op == "SparseMatMul":
        a, values = node.inputs[0].shape, node.inputs[1].shape  # type: ignore[union-attr]
        if a is None or values is None:
            return 0
        return 2 * _numel(values) * _numel(a[:-1])
    if node.op == "Col2Im":
        return _numel(node.inputs[0].shape)  # type: ignore[union-attr]
    if node.op == "BatchNormalization":
        return 2 * _numel(out)
    if node.op in ELEMENTWISE_OPS:
        return _numel(out)
    return 0


def graph_flops(graph: Graph) -> int:
    """The sum of `node_flops` over the graph's nodes."""
    return sum(node_flops(node) for node in graph.nodes)


def format_flops(flops: int) -> str:
    """`1234567` -> `'1.23 MFLOP'`: three significant digits and an SI prefix."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if flops >= scale:
            return f"{flops / scale:.3g} {prefix}FLOP"
    return f"{flops} FLOP"


def _shape_text(shape: Shape | None) -> str:
    return "?" if shape is None else "x".join(str(d) for d in shape) or "scalar"


def _category(op: str) -> str:
    if op == "ConvTranspose":
        return "ConvTranspose"
    if op in COMPUTE_OPS:
        return "compute"
    if op in ELEMENTWISE_OPS or op == "BatchNormalization":
        return "elementwise"
    return "data"


def _short(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def op_graph(graph: Graph, *, constants: bool = False) -> Any:
    """The graph as a `networkx.DiGraph` of operations: one vertex per node, per graph input and per
    graph output (and per constant with `constants=True`), an edge wherever a value flows.

    It is `graph.to_networkx()` with each value vertex contracted into the edges from its producer to
    its users. Every vertex carries `kind`, `label` (the text drawn in its box), `flops`, and for
    nodes `op`.
    """
    import networkx as nx

    full = graph.to_networkx()
    dg = nx.DiGraph()
    source: dict[str, Any] = {}  # value name -> the vertex its data comes from
    for value in graph.inputs:
        key = ("input", value.name)
        dg.add_node(key, kind="input", label=f"input {_short(value.name)}\n{_shape_text(value.shape)}", flops=0)
        source[value.name] = key
    if constants:
        for name, value in graph.initializers.items():
            key = ("constant", name)
            dg.add_node(key, kind="constant", label=f"{_short(name)}\n{_shape_text(value.shape)}", flops=0)
            source[name] = key
    for index, node in enumerate(graph.nodes):
        key = ("node", index)
        try:
            flops = node_flops(node)
        except LoweringError:  # a node whose geometry cannot be resolved still gets its box
            flops = 0
        lines = [node.op]
        if node.name:
            lines.append(_short(node.name))
        lines.append(", ".join(_shape_text(v.shape) for v in node.outputs))
        if flops:
            lines.append(format_flops(flops))
        dg.add_node(key, kind="node", op=node.op, label="\n".join(lines), flops=flops)
        for value in node.outputs:
            source[value.name] = key
    for key, data in full.nodes(data=True):
        if data["kind"] != "node":
            continue
        for value_key in full.predecessors(key):
            origin = source.get(value_key[1])
            if origin is not None:
                dg.add_edge(origin, key)
    for value in graph.outputs:
        key = ("output", value.name)
        dg.add_node(key, kind="output", label=f"output {_short(value.name)}\n{_shape_text(value.shape)}", flops=0)
        if value.name in source:
            dg.add_edge(source[value.name], key)
    return dg


def layered_positions(dg: Any) -> dict[Any, tuple[float, float]]:
    """Positions for a DAG drawn top to bottom: the layer is the longest path from a source (a constant
    sits just above its first user), and within a layer vertices are ordered by the mean position of
    their predecessors (fewer crossings)."""
    import networkx as nx

    constants = [v for v, kind in dg.nodes(data="kind") if kind == "constant"]
    layer: dict[Any, int] = {}
    for index, generation in enumerate(nx.topological_generations(dg.subgraph(set(dg) - set(constants)))):
        for vertex in generation:
            layer[vertex] = index + 1
    for vertex in constants:  # just above its first user, not all in the top row
        layer[vertex] = min((layer[s] for s in dg.successors(vertex) if s in layer), default=1) - 1
    rows: dict[int, list[Any]] = {}
    for vertex in dg.nodes:  # graph order: inputs, nodes in program order, outputs
        rows.setdefault(layer[vertex], []).append(vertex)
    pos: dict[Any, tuple[float, float]] = {}
    for depth in sorted(rows):
        row = rows[depth]
        keys = {}
        for index, vertex in enumerate(row):
            xs = [pos[p][0] for p in dg.predecessors(vertex) if p in pos]
            keys[vertex] = sum(xs) / len(xs) if xs else index - (len(row) - 1) / 2
        row.sort(key=keys.__getitem__)
        for index, vertex in enumerate(row):
            pos[vertex] = (index - (len(row) - 1) / 2, -float(depth - min(rows)))
    return pos


def draw(graph: Graph, ax: Any = None, *, title: str | None = None, constants: bool = False) -> Any:
    """Draw `graph` on a matplotlib Axes (a new figure when `ax` is None) and return the Axes."""
    import matplotlib.pyplot as plt

    dg = op_graph(graph, constants=constants)
    pos = layered_positions(dg)
    if ax is None:
        _, ax = plt.subplots(figsize=_panel_size(pos))
    ax.set_axis_off()
    boxes = {}
    font = 7 if len(dg) < 80 else 5
    for vertex, data in dg.nodes(data=True):
        colour = _COLOURS[data["kind"]] if data["kind"] != "node" else _COLOURS[_category(data["op"])]
        x, y = pos[vertex]
        boxes[vertex] = ax.text(
            x,
            y,
            data["label"],
            ha="center",
            va="center",
            fontsize=font,
            zorder=3,
            bbox={"boxstyle": "round,pad=0.35", "facecolor": colour, "edgecolor": "#555555", "linewidth": 0.6},
        )
    for tail, head in dg.edges:
        ax.annotate(
            "",
            xy=pos[head],
            xytext=pos[tail],
            zorder=2,
            arrowprops={
                "arrowstyle": "-|>",
                "color": "#444444",
                "linewidth": 0.7,
                "shrinkA": 0,
                "shrinkB": 0,
                "patchA": boxes[tail].get_bbox_patch(),
                "patchB": boxes[head].get_bbox_patch(),
                "connectionstyle": "arc3,rad=0.0",
            },
        )
    xs = [p[0] for p in pos.values()] or [0.0]
    ys = [p[1] for p in pos.values()] or [0.0]
    ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    nodes = len(graph.nodes)
    heading = title or graph.name
    ax.set_title(f"{heading}\n{nodes} nodes, {format_flops(graph_flops(graph))}", fontsize=9)
    return ax


def _panel_size(pos: dict[Any, tuple[float, float]]) -> tuple[float, float]:
    width = max((sum(1 for p in pos.values() if p[1] == y) for y in {p[1] for p in pos.values()}), default=1)
    depth = len({p[1] for p in pos.values()}) or 1
    return min(2.0 + 1.9 * width, 40.0), min(1.2 + 0.95 * depth, 80.0)


def render(panels: Sequence[tuple[str, Graph]], *, fmt: str = "png", dpi: int = 100, constants: bool = False) -> bytes:
    """Draw each `(title, graph)` side by side in one figure and return it as `fmt` bytes (png, svg, pdf)."""
    import matplotlib
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("render needs at least one (title, graph) panel")
    sizes = [_panel_size(layered_positions(op_graph(g, constants=constants))) for _, g in panels]
    width = sum(w for w, _ in sizes)
    height = max(h for _, h in sizes)
    # A bare Figure (no pyplot): no global backend switch, nothing left open. SVG keeps labels as text.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig = Figure(figsize=(width, height))
        axes = fig.subplots(1, len(panels), squeeze=False, gridspec_kw={"width_ratios": [w for w, _ in sizes]})
        for ax, (title, graph) in zip(axes[0], panels, strict=True):
            draw(graph, ax, title=title, constants=constants)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=dpi)
    return buffer.getvalue()


__all__ = ["draw", "format_flops", "graph_flops", "layered_positions", "node_flops", "op_graph", "render"]
