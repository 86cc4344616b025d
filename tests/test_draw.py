"""Graph analyses and pictures: `Graph.to_networkx`, per-node FLOPs, and `lowering draw`.

FLOPs are held to numbers worked out by hand (a multiply-add is 2; ConvTranspose's useful
multiply-adds are N·C·(M/g)·Πk·Πi). The pictures are checked as files: `lowering draw` in a
subprocess writes a non-empty PNG (its header and size read back), and an SVG whose text names the
ops before and after lowering.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
import pytest

import lowering
from lowering.draw import format_flops, graph_flops, layered_positions, node_flops, op_graph, render
from lowering.ir import Graph

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def small_graph() -> Graph:
    """x (2, 3, 5, 4) -> ConvTranspose (W 3x4x3x3, bias, stride 2, pads [1,1,0,1], output_padding [1,0])
    -> Relu -> y (2, 4, 11, 7)."""
    rng = np.random.default_rng(0)
    graph = Graph("small")
    x = graph.add_input("x", (2, 3, 5, 4))
    w = graph.add_initializer("w", rng.standard_normal((3, 4, 3, 3)).astype(np.float32))
    b = graph.add_initializer("b", rng.standard_normal(4).astype(np.float32))
    up = graph.op("ConvTranspose", x, w, b, name="up", strides=[2, 2], pads=[1, 1, 0, 1], output_padding=[1, 0])
    y = graph.op("Relu", up, name="act")
    graph.rename(y, "y")
    graph.outputs.append(y)
    return graph


# useful multiply-adds 2·3·4·(3·3)·(5·4) = 4320; output 2·4·11·7 = 616 elements (o_h = 2·4 + 1 + 3 − 1 − 0,
# o_w = 2·3 + 0 + 3 − 1 − 1)
CONV_T_FLOPS = 2 * 4320 + 616
RELU_FLOPS = 616


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lowering", *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "small.onnx"
    onnx.save(lowering.to_onnx(small_graph()), path)
    return path


# ----------------------------------------------------------------- analyses


def test_to_networkx_has_a_vertex_per_node_and_value_and_edges_along_data_flow():
    graph = small_graph()
    dg = graph.to_networkx()
    assert isinstance(dg, nx.DiGraph) and nx.is_directed_acyclic_graph(dg)
    values = {name for kind, name in dg.nodes if kind == "value"}
    assert values == {"x", "w", "b", "up", "y"}
    assert [dg.nodes[("node", i)]["op"] for i in range(2)] == ["ConvTranspose", "Relu"]
    assert dg.nodes[("value", "y")]["shape"] == (2, 4, 11, 7)
    assert set(dg.predecessors(("node", 0))) == {("value", "x"), ("value", "w"), ("value", "b")}
    assert list(dg.successors(("node", 0))) == [("value", "up")]
    assert nx.shortest_path(dg, ("value", "x"), ("value", "y")) == [
        ("value", "x"), ("node", 0), ("value", "up"), ("node", 1), ("value", "y"),
    ]  # fmt: skip


def test_node_flops_by_hand():
    graph = small_graph()
    assert [node_flops(n) for n in graph.nodes] == [CONV_T_FLOPS, RELU_FLOPS]
    assert graph_flops(graph) == CONV_T_FLOPS + RELU_FLOPS

    g = Graph("linear")
    a = g.add_input("a", (2, 3, 4))
    m = g.op("MatMul", a, g.const(np.ones((4, 5), np.float32), "b"))  # (2, 3, 5): 30 outputs x 4 terms
    p = g.add_input("p", (3, 4))
    gemm = g.op("Gemm", p, g.const(np.ones((4, 5), np.float32), "q"), g.const(np.ones(5, np.float32), "c"))
    moved = g.op("Transpose", m, perm=[0, 2, 1])
    assert [node_flops(n) for n in g.nodes] == [2 * 30 * 4, 2 * 15 * 4 + 15, 0]
    assert gemm.shape == (3, 5) and moved.shape == (2, 5, 3)
    assert format_flops(0) == "0 FLOP" and format_flops(9256) == "9.26 kFLOP" and format_flops(3 * 10**9) == "3 GFLOP"


def test_flops_after_lowering_show_what_the_lowering_does():
    graph = small_graph()
    useful = 4320
    col2im = lowering.lower(graph, "col2im")
    assert sum(node_flops(n) for n in col2im.nodes_of("MatMul")) == 2 * useful  # exactly the useful work
    zero = lowering.lower(graph, "zero-insertion")
    (conv,) = zero.nodes_of("Conv")
    # a stride-1 Conv over the zero-inserted input: every tap at every output position, N·M·C·Πk·Πo
    assert node_flops(conv) == 2 * 2 * 4 * 3 * 9 * 11 * 7 + 616
    assert node_flops(conv) > CONV_T_FLOPS


def test_op_graph_contracts_values_and_layers_flow_downwards():
    graph = small_graph()
    dg = op_graph(graph)
    assert set(dg.nodes) == {("input", "x"), ("node", 0), ("node", 1), ("output", "y")}
    assert set(dg.edges) == {
        (("input", "x"), ("node", 0)), (("node", 0), ("node", 1)), (("node", 1), ("output", "y")),
    }  # fmt: skip
    assert dg.nodes[("node", 0)]["label"].splitlines() == ["ConvTranspose", "up", "2x4x11x7", "9.26 kFLOP"]
    with_constants = op_graph(graph, constants=True)
    assert {("constant", "w"), ("constant", "b")} <= set(with_constants)
    for dg in (op_graph(lowering.lower(graph, "subpixel"), constants=True), with_constants):
        pos = layered_positions(dg)
        assert all(pos[tail][1] > pos[head][1] for tail, head in dg.edges)
        assert len(set(pos.values())) == len(pos)  # no two boxes on the same spot


def test_render_png_svg_and_pdf():
    graph = small_graph()
    width, height = png_size(render([("before", graph)]))
    wide, _ = png_size(render([("before", graph), ("after", lowering.lower(graph, "col2im"))]))
    assert width > 100 and height > 100 and wide > width
    svg = render([("after", lowering.lower(graph, "col2im"))], fmt="svg").decode()
    assert "Col2Im" in svg and "MatMul" in svg and "ConvTranspose" not in svg
    assert render([("g", graph)], fmt="pdf").startswith(b"%PDF")


# ----------------------------------------------------------------- lowering draw


def test_draw_writes_a_png_before_and_after_lowering(model, tmp_path):
    done = run_cli("draw", str(model), "-o", "graph.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    before = (tmp_path / "graph.png").read_bytes()
    assert len(before) > 1000 and min(png_size(before)) > 100

    done = run_cli("draw", str(model), "--strategy", "zero-insertion", "--before-after", "-o", "both.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    both = (tmp_path / "both.png").read_bytes()
    assert png_size(both)[0] > png_size(before)[0]


def test_draw_svg_names_the_ops_before_and_after(model, tmp_path):
    assert run_cli("draw", str(model), "-o", "before.svg", cwd=tmp_path).returncode == 0
    assert run_cli("draw", str(model), "--strategy", "col2im", "-o", "after.svg", cwd=tmp_path).returncode == 0
    before, after = (tmp_path / "before.svg").read_text(), (tmp_path / "after.svg").read_text()
    assert "ConvTranspose" in before and "Col2Im" not in before and "9.26 kFLOP" in before
    assert "ConvTranspose" not in after and "Col2Im" in after and "MatMul" in after


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--before-after"], "--before-after needs --strategy S or -p PIPELINE"),
        (["-o", "graph.jpg"], "unknown image format '.jpg'"),
        (["--strategy", "no-such"], "invalid choice: 'no-such'"),
    ],
)
def test_draw_user_errors_are_one_line(model, tmp_path, args, message):
    argv = ["draw", str(model), *args]
    if "-o" not in args:
        argv += ["-o", "graph.png"]
    done = run_cli(*argv, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("graph.*"))
