"""`fold-batchnorm`: Conv / ConvTranspose + inference-mode BatchNormalization -> one convolution.

The oracle is `lowering.evaluate` (float64, from the op definitions) of the *unfolded* graph, and
onnxruntime running the unfolded model for the CLI; never the pass's own arithmetic.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from lowering import Graph, evaluate, examples, lower, to_onnx
from lowering.api import pipeline_for
from lowering.cli import main
from passes import PassManager, get_pass

RNG = np.random.default_rng(20240611)


def conv_bn_graph(
    op: str,
    rank: int,
    group: int,
    *,
    bias: bool = True,
    dtype: str = "float64",
    channels: tuple[int, int] = (4, 6),
    epsilon: float | None = None,
) -> Graph:
    """x -> op(W, B?) -> BatchNormalization -> y, with random weights and statistics."""
    c_in, c_out = channels
    kernel = [3, 2, 2][:rank]
    spatial = [5, 4, 3][:rank]
    graph = Graph(f"{op}_{rank}d_g{group}")
    x = graph.add_input("x", (2, c_in, *spatial), dtype)
    w_shape = (c_out, c_in // group, *kernel) if op == "Conv" else (c_in, c_out // group, *kernel)
    w = graph.add_initializer("w", RNG.standard_normal(w_shape).astype(dtype))
    inputs = [x, w]
    if bias:
        inputs.append(graph.add_initializer("b", RNG.standard_normal(c_out).astype(dtype)))
    attrs = {"group": group, "strides": [2] * rank, "pads": [1] * rank + [0] * rank}
    if op == "ConvTranspose":
        attrs["output_padding"] = [1] * rank
    conv = graph.add_node(op, inputs, attrs, name="conv").outputs[0]
    gamma = graph.add_initializer("gamma", (1 + 0.5 * RNG.standard_normal(c_out)).astype(dtype))
    beta = graph.add_initializer("beta", RNG.standard_normal(c_out).astype(dtype))
    mean = graph.add_initializer("mean", RNG.standard_normal(c_out).astype(dtype))
    var = graph.add_initializer("var", (0.2 + RNG.random(c_out)).astype(dtype))
    bn_attrs = {} if epsilon is None else {"epsilon": epsilon}
    y = graph.add_node("BatchNormalization", [conv, gamma, beta, mean, var], bn_attrs, outputs=["y"], name="bn")
    graph.outputs.append(y.outputs[0])
    return graph


def feeds_for(graph: Graph) -> dict[str, np.ndarray]:
    return {v.name: RNG.standard_normal(v.shape).astype(v.dtype) for v in graph.inputs}


def fold(graph: Graph):
    folded = graph.copy()
    result = PassManager([get_pass("fold-batchnorm")]).run(folded)
    return result


GRID = [
    (op, rank, group, bias)
    for op, rank, (group, bias) in itertools.product(("Conv", "ConvTranspose"), (1, 2, 3), ((1, True), (2, False)))
]


@pytest.mark.parametrize(("op", "rank", "group", "bias"), GRID, ids=lambda v: str(v))
def test_folded_convolution_equals_the_unfolded_graph(op, rank, group, bias):
    graph = conv_bn_graph(op, rank, group, bias=bias)
    result = fold(graph)
    folded = result.graph
    assert result.modified
    assert [n.op for n in folded.nodes] == [op]
    assert folded.nodes[0].input(2) is not None  # the BatchNormalization shift became a bias
    assert [v.name for v in folded.outputs] == ["y"]  # the graph keeps its output name
    assert not {"gamma", "beta", "mean", "var", "w"} & set(folded.initializers)
    feeds = feeds_for(graph)
    np.testing.assert_allclose(evaluate(folded, feeds)["y"], evaluate(graph, feeds)["y"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_depthwise_float32_with_custom_epsilon(op):
    graph = conv_bn_graph(op, 2, 6, dtype="float32", channels=(6, 6), epsilon=1e-2)
    folded = fold(graph).graph
    assert [n.op for n in folded.nodes] == [op]
    assert folded.nodes[0].inputs[1].dtype == "float32" and folded.nodes[0].inputs[2].dtype == "float32"
    feeds = feeds_for(graph)
    want = evaluate(graph, feeds)["y"]
    np.testing.assert_allclose(evaluate(folded, feeds)["y"], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_grouped_conv_transpose_with_several_channels_per_group():
    """M/g > 1 and C/g > 1: the case where a per-group scaling error would show."""
    graph = conv_bn_graph("ConvTranspose", 2, 3, channels=(6, 9))
    folded = fold(graph).graph
    feeds = feeds_for(graph)
    np.testing.assert_allclose(evaluate(folded, feeds)["y"], evaluate(graph, feeds)["y"], rtol=1e-12, atol=1e-12)


def test_two_batchnorms_in_a_row_fold_into_one_convolution():
    graph = conv_bn_graph("ConvTranspose", 1, 1)
    y = graph.outputs[0]
    c = y.shape[1]
    stats = [graph.const(RNG.random(c) + 0.5, f"s{i}") for i in range(4)]
    z = graph.add_node("BatchNormalization", [y, *stats], outputs=["z"], name="bn2").outputs[0]
    graph.outputs = [z]
    folded = fold(graph).graph
    assert [n.op for n in folded.nodes] == ["ConvTranspose"]
    feeds = feeds_for(graph)
    np.testing.assert_allclose(evaluate(folded, feeds)["z"], evaluate(graph, feeds)["z"], rtol=1e-12, atol=1e-12)


def test_shared_weight_is_not_modified_for_the_other_reader():
    graph = conv_bn_graph("Conv", 2, 1)
    x, w = graph.inputs[0], graph.initializers["w"]
    other = graph.op("Conv", x, w, name="other", strides=[2, 2], pads=[1, 1, 0, 0])
    graph.outputs.append(other)
    folded = fold(graph).graph
    assert [n.op for n in folded.nodes] == ["Conv", "Conv"]
    assert "w" in folded.initializers
    feeds = feeds_for(graph)
    want, got = evaluate(graph, feeds), evaluate(folded, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-12)


def _declined(graph: Graph, fragment: str) -> None:
    before = str(graph)
    result = fold(graph)
    assert not result.modified
    assert str(result.graph) == before
    assert len(result.notes) == 1 and "bn" in result.notes[0] and fragment in result.notes[0]


def test_declines_when_the_convolution_output_is_read_elsewhere():
    graph = conv_bn_graph("ConvTranspose", 2, 1)
    graph.outputs.append(graph.value("conv"))
    _declined(graph, "read elsewhere")


def test_declines_when_the_weight_is_a_graph_input():
    graph = Graph("dynamic_weight")
    x = graph.add_input("x", (1, 2, 4, 4))
    w = graph.add_input("w", (2, 3, 3, 3))
    stats = [graph.const(np.ones(3, np.float32), f"s{i}") for i in range(4)]
    y = graph.op("ConvTranspose", x, w, name="conv")
    graph.outputs.append(graph.op("BatchNormalization", y, *stats, name="bn"))
    _declined(graph, "weight is not constant")


def test_declines_when_the_statistics_are_inputs():
    graph = Graph("dynamic_stats")
    x = graph.add_input("x", (1, 2, 4))
    mean = graph.add_input("mean", (3,))
    w = graph.const(np.ones((3, 2, 3), np.float32), "w")
    ones = graph.const(np.ones(3, np.float32), "ones")
    y = graph.op("Conv", x, w, name="conv")
    graph.outputs.append(graph.op("BatchNormalization", y, ones, ones, mean, ones, name="bn"))
    _declined(graph, "input_mean is not constant")


def test_batchnorm_after_another_op_is_left_alone_silently():
    graph = Graph("relu_bn")
    x = graph.add_input("x", (1, 3, 4, 4))
    stats = [graph.const(np.ones(3, np.float32), f"s{i}") for i in range(4)]
    graph.outputs.append(graph.op("BatchNormalization", graph.op("Relu", x), *stats, name="bn"))
    result = fold(graph)
    assert not result.modified and not result.notes


# ----------------------------------------------------------------- pipelines, lower() and the CLI


def test_auto_always_folds_and_other_strategies_fold_on_request():
    assert pipeline_for("auto") == "canonicalize,fold-batchnorm,auto,fold-constants,dce"
    assert "fold-batchnorm" not in pipeline_for("subpixel")
    assert pipeline_for("subpixel", fold_bn=True) == "canonicalize,fold-batchnorm,subpixel,fold-constants,dce"


@pytest.mark.parametrize(("strategy", "fold_bn"), [("auto", False), ("zero-insertion", True), ("col2im", False)])
def test_lower_with_batchnorm_folding(strategy, fold_bn):
    graph = examples.dcgan()
    lowered = lower(graph, strategy, fold_bn=fold_bn)
    expect_bn = 0 if fold_bn or strategy == "auto" else len(graph.nodes_of("BatchNormalization"))
    assert len(lowered.nodes_of("BatchNormalization")) == expect_bn
    assert not lowered.nodes_of("ConvTranspose")
    feeds = feeds_for(graph)
    want = evaluate(graph, feeds)["image"]
    np.testing.assert_allclose(evaluate(lowered, feeds)["image"], want, rtol=1e-4, atol=1e-5)


def test_fold_bn_goes_in_front_of_a_given_pipeline():
    graph = conv_bn_graph("ConvTranspose", 2, 1, dtype="float32")
    lowered = lower(graph, pipeline="canonicalize,subpixel,dce", fold_bn=True)
    assert not lowered.nodes_of("BatchNormalization") and not lowered.nodes_of("ConvTranspose")


def test_cli_fold_bn(tmp_path: Path, capsys):
    source = tmp_path / "dcgan.onnx"
    onnx.save(to_onnx(examples.dcgan()), source)
    out = tmp_path / "folded.onnx"
    assert main(["lower", str(source), "-o", str(out), "--strategy", "subpixel", "--fold-bn"]) == 0
    written = onnx.load(out)
    assert not [n for n in written.graph.node if n.op_type in ("BatchNormalization", "ConvTranspose")]
    feeds = {"z": RNG.standard_normal((1, 100, 1, 1)).astype(np.float32)}
    want = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # without the flag the BatchNormalization nodes stay
    kept = tmp_path / "kept.onnx"
    assert main(["lower", str(source), "-o", str(kept), "--strategy", "subpixel"]) == 0
    assert len([n for n in onnx.load(kept).graph.node if n.op_type == "BatchNormalization"]) == 4
