"""ONNX in and out: `from_onnx`, `to_onnx` and the legalization of this project's own ops.

The oracles are independent of the code under test: the expected outputs ONNX records for its own
ConvTranspose and Conv node tests, onnxruntime running the original model, and NumPy one-liners
for the legacy layouts of Pad, Slice, Clip, Split and BatchNormalization.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import make_model, one_line, onnx_node_cases, ort_run, tensor_info
from onnx import TensorProto, helper, numpy_helper

import lowering
from lowering import Graph, ModelLoadError, UnsupportedError, evaluate, examples, from_onnx, to_onnx

RNG_SEED = 20240611

CONV_TRANSPOSE_CASES = onnx_node_cases("convtranspose")
CONV_CASES = onnx_node_cases("conv")


def _feeds(case) -> dict[str, np.ndarray]:
    (inputs, _), *_ = case.data_sets
    return {proto.name: array for proto, array in zip(case.model.graph.input, inputs, strict=True)}


def _expected(case) -> dict[str, np.ndarray]:
    (_, outputs), *_ = case.data_sets
    return {proto.name: array for proto, array in zip(case.model.graph.output, outputs, strict=True)}


def _signature(values) -> list[tuple[str, int, list[int | str]]]:
    """(name, element type, dims) of ValueInfoProtos; a dim is its value or its dim_param."""
    out = []
    for value in values:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim]
        out.append((value.name, tensor.elem_type, dims))
    return out


def _default_opset(model: onnx.ModelProto) -> int:
    return next(e.version for e in model.opset_import if e.domain in ("", "ai.onnx"))


def _assert_outputs_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], rtol: float, atol: float) -> None:
    assert sorted(got) == sorted(want)
    for name, expected in want.items():
        assert got[name].shape == expected.shape, name
        np.testing.assert_allclose(got[name], expected, rtol=rtol, atol=atol, err_msg=name)


# ----------------------------------------------------------------- ONNX's own node test cases


def test_onnx_cases_were_collected():
    names = {c.name for c in CONV_TRANSPOSE_CASES}
    assert {"test_convtranspose", "test_convtranspose_1d", "test_convtranspose_3d", "test_convtranspose_pads"} <= names
    assert {"test_convtranspose_group_2", "test_convtranspose_dilations", "test_convtranspose_autopad_same"} <= names
    assert all(c.model.graph.node[0].op_type == "ConvTranspose" for c in CONV_TRANSPOSE_CASES)
    assert len(CONV_CASES) >= 5 and all(c.model.graph.node[0].op_type == "Conv" for c in CONV_CASES)


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES + CONV_CASES, ids=lambda c: c.name)
def test_onnx_node_case_evaluates_to_recorded_output(case):
    graph = from_onnx(case.model)
    expected = _expected(case)
    for name, array in expected.items():
        assert graph.value(name).shape == array.shape  # shape inference agrees with ONNX's recorded output
    got = evaluate(graph, _feeds(case))
    _assert_outputs_close({k: v.astype(np.float32) for k, v in got.items()}, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES, ids=lambda c: c.name)
def test_onnx_node_case_with_weights_as_initializers(case):
    """The same cases as exporters write them: W a constant initializer, not a graph input."""
    feeds = _feeds(case)
    weight = case.model.graph.node[0].input[1]
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    kept = [v for v in model.graph.input if v.name != weight]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.graph.initializer.append(numpy_helper.from_array(feeds.pop(weight), weight))

    graph = from_onnx(model)
    assert [v.name for v in graph.inputs] == [v.name for v in kept]
    assert graph.value(weight).is_initializer
    got = evaluate(graph, feeds)
    _assert_outputs_close({k: v.astype(np.float32) for k, v in got.items()}, _expected(case), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES, ids=lambda c: c.name)
def test_onnx_node_case_round_trips_through_onnxruntime(case):
    written = to_onnx(from_onnx(case.model))
    onnx.checker.check_model(written, full_check=True)
    assert _default_opset(written) == _default_opset(case.model)
    assert _signature(written.graph.input) == _signature(case.model.graph.input)
    assert _signature(written.graph.output) == _signature(case.model.graph.output)
    _assert_outputs_close(ort_run(written, _feeds(case)), _expected(case), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------- round trips of hand-built models

METADATA = {
    "producer_name": "hand-built",
    "producer_version": "3.1.4",
    "doc_string": "a decoder stage, written by onnx.helper",
    "domain": "org.example.models",
    "model_version": 7,
}


def decoder_model(opset: int) -> onnx.ModelProto:
    """x -> ConvTranspose(+bias) -> BatchNormalization -> Relu -> Concat(skip); symbolic batch 'N'."""
    rng = np.random.default_rng(RNG_SEED)
    c, m = 4, 6
    weights = {
        "/model/up/weight": rng.standard_normal((c, m, 3, 3)).astype(np.float32),
        "/model/up/bias": rng.standard_normal(m).astype(np.float32),
        "bn.scale": (rng.random(m) + 0.5).astype(np.float32),
        "bn.shift": rng.standard_normal(m).astype(np.float32),
        "bn.mean": rng.standard_normal(m).astype(np.float32),
        "bn.var": (rng.random(m) + 0.5).astype(np.float32),
    }
    nodes = [
        helper.make_node(
            "ConvTranspose",
            ["x", "/model/up/weight", "/model/up/bias"],
            ["/model/up/ConvTranspose_output_0"],
            name="/model/up/ConvTranspose",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            output_padding=[1, 1],
        ),
        helper.make_node(
            "BatchNormalization",
            ["/model/up/ConvTranspose_output_0", "bn.scale", "bn.shift", "bn.mean", "bn.var"],
            ["bn_out"],
            name="/model/bn/BatchNormalization",
            epsilon=1e-3,
        ),
        helper.make_node("Relu", ["bn_out"], ["relu_out"], name="/model/act/Relu"),
        helper.make_node("Concat", ["relu_out", "skip"], ["y"], name="/model/cat/Concat", axis=1),
    ]
    model = make_model(
        nodes,
        [tensor_info("x", ["N", c, 5, 5]), tensor_info("skip", ["N", 2, 10, 10])],
        [tensor_info("y", ["N", m + 2, 10, 10])],
        opset=opset,
        initializers=weights,
        name="decoder",
        **METADATA,
    )
    model.graph.doc_string = "graph documentation"
    helper.set_model_props(model, {"author": "tests", "license": "Apache-2.0"})
    return model


def _split_node(opset: int, outputs: list[str], sizes: list[int]) -> tuple[onnx.NodeProto, dict[str, np.ndarray]]:
    """Split into `sizes` along axis 1 in the encoding of `opset`."""
    if opset < 13:
        return helper.make_node("Split", ["clipped"], outputs, name="split", axis=1, split=sizes), {}
    if opset >= 18 and len(set(sizes)) == 1:
        return helper.make_node("Split", ["clipped"], outputs, name="split", axis=1, num_outputs=len(sizes)), {}
    return helper.make_node("Split", ["clipped", "sizes"], outputs, name="split", axis=1), {
        "sizes": np.array(sizes, np.int64)
    }


def data_movement_model(opset: int, sizes: list[int]) -> onnx.ModelProto:
    """Pad -> Slice -> Constant/Mul -> Clip -> Split into several outputs, LeakyRelu on one of them."""
    split, extra = _split_node(opset, ["part0", "part1", "part2"], sizes)
    initializers = {
        "pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64),
        "pad_value": np.array(0.25, np.float32),
        "starts": np.array([1, -9], np.int64),
        "ends": np.array([-1, 1000], np.int64),
        "axes": np.array([2, 3], np.int64),
        "steps": np.array([1, 2], np.int64),
        "lo": np.array(-0.5, np.float32),
        "hi": np.array(0.75, np.float32),
        **extra,
    }
    scale = numpy_helper.from_array(np.linspace(-2, 2, 6, dtype=np.float32).reshape(1, 6, 1, 1), "scale_value")
    nodes = [
        helper.make_node("Pad", ["x", "pads", "pad_value"], ["padded"], name="pad", mode="constant"),
        helper.make_node("Slice", ["padded", "starts", "ends", "axes", "steps"], ["sliced"], name="slice"),
        helper.make_node("Constant", [], ["scale"], name="scale_const", value=scale),
        helper.make_node("Mul", ["sliced", "scale"], ["scaled"], name="mul"),
        helper.make_node("Clip", ["scaled", "lo", "hi"], ["clipped"], name="clip"),
        split,
        helper.make_node("LeakyRelu", ["part1"], ["part1_act"], name="act", alpha=0.3),
    ]
    # x: (N, 6, 4, 5); padded (N, 6, 7, 8); sliced (N, 6, 5, 5) (W: -9 -> index 0, step 2 -> 0,2,4,6)
    outputs = [tensor_info(n, ["N", s, 5, 4]) for n, s in zip(["part0", "part1_act", "part2"], sizes, strict=True)]
    return make_model(nodes, [tensor_info("x", ["N", 6, 4, 5])], outputs, opset=opset, initializers=initializers)


def _check_round_trip(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> onnx.ModelProto:
    onnx.checker.check_model(model, full_check=True)  # the source itself is valid
    graph = from_onnx(model)
    written = to_onnx(graph)
    onnx.checker.check_model(written, full_check=True)
    assert _default_opset(written) == _default_opset(model)
    assert _signature(written.graph.input) == _signature(model.graph.input)
    assert _signature(written.graph.output) == _signature(model.graph.output)
    original = ort_run(model, feeds)
    _assert_outputs_close(ort_run(written, feeds), original, rtol=1e-6, atol=1e-6)
    # and the IR's own semantics agree with onnxruntime on the source model
    got = evaluate(graph, feeds)
    _assert_outputs_close(got, {k: v.astype(np.float64) for k, v in original.items()}, rtol=1e-4, atol=1e-5)
    return written


@pytest.mark.parametrize("opset", range(11, onnx.defs.onnx_opset_version() + 1))
def test_decoder_round_trip(opset):
    rng = np.random.default_rng(1)
    feeds = {
        "x": rng.standard_normal((3, 4, 5, 5)).astype(np.float32),
        "skip": rng.standard_normal((3, 2, 10, 10)).astype(np.float32),
    }
    model = decoder_model(opset)
    written = _check_round_trip(model, feeds)
    assert _signature(written.graph.input)[0] == ("x", TensorProto.FLOAT, ["N", 4, 5, 5])
    for field in ("producer_name", "producer_version", "doc_string", "domain", "model_version"):
        assert getattr(written, field) == getattr(model, field), field
    assert written.graph.doc_string == "graph documentation"
    assert {p.key: p.value for p in written.metadata_props} == {"author": "tests", "license": "Apache-2.0"}
    assert [n.name for n in written.graph.node] == [n.name for n in model.graph.node]


@pytest.mark.parametrize(
    ("opset", "sizes"), [(11, [1, 2, 3]), (13, [1, 2, 3]), (17, [2, 2, 2]), (18, [2, 2, 2]), (18, [3, 1, 2])]
)
def test_data_movement_round_trip(opset, sizes):
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((2, 6, 4, 5)).astype(np.float32)}
    model = data_movement_model(opset, sizes)
    written = _check_round_trip(model, feeds)
    # every initializer a written node needs is there, and no written initializer is left unread
    read = {name for node in written.graph.node for name in node.input}
    assert {t.name for t in written.graph.initializer} == read & {t.name for t in written.graph.initializer}


def test_data_movement_against_numpy():
    """The data-movement model's meaning, worked out with NumPy alone."""
    x = np.random.default_rng(3).standard_normal((2, 6, 4, 5)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 2), (2, 1)), constant_values=0.25)
    sliced = padded[:, :, 1:-1, -9:1000:2]
    clipped = np.clip(sliced * np.linspace(-2, 2, 6).reshape(1, 6, 1, 1), -0.5, 0.75)
    part1 = clipped[:, 1:3]
    want = {"part0": clipped[:, :1], "part1_act": np.where(part1 >= 0, part1, 0.3 * part1), "part2": clipped[:, 3:]}
    got = evaluate(from_onnx(data_movement_model(13, [1, 2, 3])), {"x": x})
    _assert_outputs_close(got, want, rtol=1e-6, atol=1e-7)


def test_dcgan_written_by_to_onnx_round_trips():
    graph = examples.dcgan(batch=2)
    model = to_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    assert {n.op_type for n in model.graph.node} == {"ConvTranspose", "BatchNormalization", "Relu", "Tanh"}
    assert _signature(model.graph.input) == [("z", TensorProto.FLOAT, [2, 100, 1, 1])]
    assert _signature(model.graph.output) == [("image", TensorProto.FLOAT, [2, 3, 64, 64])]
    feeds = {"z": np.random.default_rng(4).standard_normal((2, 100, 1, 1)).astype(np.float32)}
    runtime = ort_run(model, feeds)
    reference = evaluate(graph, feeds)
    np.testing.assert_allclose(runtime["image"], reference["image"], rtol=1e-4, atol=1e-4)
    again = to_onnx(from_onnx(model))
    onnx.checker.check_model(again, full_check=True)
    assert _signature(again.graph.input) == _signature(model.graph.input)
    np.testing.assert_array_equal(ort_run(again, feeds)["image"], runtime["image"])


def test_model_file_path_and_path_object(tmp_path):
    model = decoder_model(17)
    path = tmp_path / "decoder.onnx"
    onnx.save(model, path)
    for source in (path, str(path)):
        graph = from_onnx(source)
        assert [v.name for v in graph.inputs] == ["x", "skip"]
        assert graph.value("y").shape == ("N", 8, 10, 10)


def test_unnamed_dims_are_independent():
    """Two inputs with unknown (unnamed) batch sizes must not be bound to the same size."""
    model = make_model(
        [helper.make_node("Relu", ["a"], ["y"]), helper.make_node("Relu", ["b"], ["z"])],
        [tensor_info("a", [None, 3]), tensor_info("b", [None, 5])],
        [tensor_info("y", [None, 3]), tensor_info("z", [None, 5])],
    )
    graph = from_onnx(model)
    a, b = (np.full(shape, -1.0, np.float32) for shape in ((2, 3), (4, 5)))
    got = evaluate(graph, {"a": a, "b": b})
    np.testing.assert_array_equal(got["y"], np.zeros((2, 3)))
    np.testing.assert_array_equal(got["z"], np.zeros((4, 5)))
    written = to_onnx(graph)
    onnx.checker.check_model(written, full_check=True)
    assert ort_run(written, {"a": a, "b": b})["z"].shape == (4, 5)


# ----------------------------------------------------------------- old opsets


def test_opset9_initializers_listed_as_inputs():
    """ir_version 3 exporters list every weight as a graph input too."""
    rng = np.random.default_rng(5)
    weights = {
        "w": rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
        "b": rng.standard_normal(2).astype(np.float32),
        "scale": (rng.random(2) + 0.5).astype(np.float32),
        "shift": rng.standard_normal(2).astype(np.float32),
        "mean": rng.standard_normal(2).astype(np.float32),
        "var": (rng.random(2) + 0.5).astype(np.float32),
    }
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["t", "scale", "shift", "mean", "var"], ["u"]),
        helper.make_node("Sigmoid", ["u"], ["y"]),
    ]
    listed = [tensor_info(k, list(v.shape)) for k, v in weights.items()]
    model = make_model(
        nodes,
        [tensor_info("x", [1, 3, 4, 4]), *listed],
        [tensor_info("y", [1, 2, 7, 7])],
        opset=9,
        ir_version=3,
        initializers=weights,
    )
    onnx.checker.check_model(model)
    graph = from_onnx(model)
    assert [v.name for v in graph.inputs] == ["x"]
    assert all(graph.value(k).is_initializer for k in weights)
    feeds = {"x": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)}
    original = ort_run(model, feeds)
    np.testing.assert_allclose(evaluate(graph, feeds)["y"], original["y"], rtol=1e-5, atol=1e-6)
    written = to_onnx(graph)
    onnx.checker.check_model(written, full_check=True)
    assert [v.name for v in written.graph.input] == ["x", *weights]  # still listed, as the source had them
    np.testing.assert_allclose(ort_run(written, feeds)["y"], original["y"], rtol=1e-6, atol=1e-6)


def _x(shape=(2, 3, 4, 5)) -> np.ndarray:
    return np.random.default_rng(6).standard_normal(shape).astype(np.float32)


# (id, opset, node, NumPy meaning as a function of x returning the list of outputs)
LEGACY = [
    (
        "pad2-constant-opset7",
        7,
        helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 2, 0, 0, 2, 1], value=1.5),
        lambda x: [np.pad(x, ((0, 0), (0, 0), (1, 2), (2, 1)), constant_values=1.5)],
    ),
    (
        "pad2-constant-default-value-opset10",
        10,
        helper.make_node("Pad", ["x"], ["y"], pads=[1, 0, 0, 1, 0, 2, 3, 0]),
        lambda x: [np.pad(x, ((1, 0), (0, 2), (0, 3), (1, 0)))],
    ),
    (
        "pad2-reflect-opset10",
        10,
        helper.make_node("Pad", ["x"], ["y"], mode="reflect", pads=[0, 0, 2, 1, 0, 0, 1, 3]),
        lambda x: [np.pad(x, ((0, 0), (0, 0), (2, 1), (1, 3)), mode="reflect")],
    ),
    (
        "pad2-edge-opset9",
        9,
        helper.make_node("Pad", ["x"], ["y"], mode="edge", pads=[0, 0, 3, 0, 0, 0, 0, 2]),
        lambda x: [np.pad(x, ((0, 0), (0, 0), (3, 0), (0, 2)), mode="edge")],
    ),
    (
        "slice1-axes-opset9",
        9,
        helper.make_node("Slice", ["x"], ["y"], starts=[1, -3], ends=[-1, 100], axes=[2, 3]),
        lambda x: [x[:, :, 1:-1, -3:100]],
    ),
    (
        "slice1-no-axes-opset7",
        7,
        helper.make_node("Slice", ["x"], ["y"], starts=[1, 0, 2], ends=[2, -1, 1000]),
        lambda x: [x[1:2, 0:-1, 2:1000]],
    ),
    (
        "clip6-min-max-opset10",
        10,
        helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.7),
        lambda x: [np.clip(x, -0.5, 0.7)],
    ),
    ("clip6-min-only-opset7", 7, helper.make_node("Clip", ["x"], ["y"], min=0.1), lambda x: [np.maximum(x, 0.1)]),
    ("clip6-max-only-opset9", 9, helper.make_node("Clip", ["x"], ["y"], max=-0.2), lambda x: [np.minimum(x, -0.2)]),
    (
        "split2-sizes-opset10",
        10,
        helper.make_node("Split", ["x"], ["y", "z"], axis=1, split=[1, 2]),
        lambda x: [x[:, :1], x[:, 1:]],
    ),
    (
        "split11-sizes-negative-axis-opset12",
        12,
        helper.make_node("Split", ["x"], ["y", "z", "w"], axis=-1, split=[2, 1, 2]),
        lambda x: [x[..., :2], x[..., 2:3], x[..., 3:]],
    ),
    (
        "split2-equal-opset7",
        7,
        helper.make_node("Split", ["x"], ["y", "z"], axis=2),
        lambda x: [x[:, :, :2], x[:, :, 2:]],
    ),
    (
        "batchnorm7-spatial-opset7",
        7,
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], spatial=1, epsilon=1e-2),
        lambda x: [
            (x - np.array([0.1, -0.2, 0.3]).reshape(1, 3, 1, 1))
            / np.sqrt(np.array([1.0, 2.0, 0.5]).reshape(1, 3, 1, 1) + 1e-2)
            * np.array([1.5, 0.5, -1.0]).reshape(1, 3, 1, 1)
            + np.array([0.0, 1.0, -1.0]).reshape(1, 3, 1, 1)
        ],
    ),
]

BN_PARAMS = {
    "s": np.array([1.5, 0.5, -1.0], np.float32),
    "b": np.array([0.0, 1.0, -1.0], np.float32),
    "m": np.array([0.1, -0.2, 0.3], np.float32),
    "v": np.array([1.0, 2.0, 0.5], np.float32),
}


@pytest.mark.parametrize(("opset", "node", "meaning"), [c[1:] for c in LEGACY], ids=[c[0] for c in LEGACY])
def test_legacy_layout(opset, node, meaning):
    x = _x()
    want = meaning(x.astype(np.float64))
    initializers = BN_PARAMS if node.op_type == "BatchNormalization" else {}
    model = make_model(
        [node],
        [tensor_info("x", list(x.shape))],
        [tensor_info(name, list(w.shape)) for name, w in zip(node.output, want, strict=True)],
        opset=opset,
        initializers=initializers,
    )
    onnx.checker.check_model(model, full_check=True)
    graph = from_onnx(model)
    assert [v.shape for v in graph.outputs] == [w.shape for w in want]
    got = evaluate(graph, {"x": x})
    runtime = ort_run(model, {"x": x})
    for name, expected in zip(node.output, want, strict=True):
        np.testing.assert_allclose(got[name], expected, rtol=1e-6, atol=1e-6)  # NumPy by hand
        np.testing.assert_allclose(got[name], runtime[name], rtol=1e-5, atol=1e-6)  # onnxruntime
    written = to_onnx(graph)  # written in the current layout, at the lowest opset the exporter writes
    onnx.checker.check_model(written, full_check=True)
    assert _default_opset(written) == max(opset, 11)
    for name, value in ort_run(written, {"x": x}).items():
        np.testing.assert_allclose(value, runtime[name], rtol=1e-6, atol=1e-6)


def test_legacy_batchnorm_spatial_0_is_refused():
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn", spatial=0)
    model = make_model(
        [node], [tensor_info("x", [2, 3, 4, 5])], [tensor_info("y", [2, 3, 4, 5])], opset=7, initializers=BN_PARAMS
    )
    with pytest.raises(UnsupportedError, match="spatial=0") as info:
        from_onnx(model)
    assert one_line(str(info.value))


def test_batchnorm_training_outputs_are_refused():
    node = helper.make_node(
        "BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], name="bn_train", training_mode=1
    )
    model = make_model(
        [node],
        [tensor_info("x", [2, 3, 4, 5])],
        [tensor_info("y", [2, 3, 4, 5]), tensor_info("rm", [3]), tensor_info("rv", [3])],
        opset=15,
        initializers=BN_PARAMS,
    )
    with pytest.raises(UnsupportedError, match="bn_train") as info:
        from_onnx(model)
    assert one_line(str(info.value))


# ----------------------------------------------------------------- refusals


def _relu_model(opset: int = 17) -> onnx.ModelProto:
    return make_model(
        [helper.make_node("Relu", ["x"], ["y"], name="r")],
        [tensor_info("x", [1, 3])],
        [tensor_info("y", [1, 3])],
        opset=opset,
    )


def test_unknown_op_names_op_and_node():
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["h"], name="first"),
            helper.make_node("Softmax", ["h"], ["y"], name="/head/Softmax", axis=1),
        ],
        [tensor_info("x", [1, 3])],
        [tensor_info("y", [1, 3])],
    )
    graph = from_onnx(model)  # carried through as an opaque node; backends without it refuse it by name
    with pytest.raises(UnsupportedError) as info:
        lowering.compile(graph, "numpy")
    message = str(info.value)
    assert one_line(message) and "Softmax" in message and "/head/Softmax" in message


def test_unknown_op_without_name_names_its_position():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Softmax", ["h"], ["y"])],
        [tensor_info("x", [1, 3])],
        [tensor_info("y", [1, 3])],
    )
    graph = from_onnx(model)
    with pytest.raises(UnsupportedError, match=r"Softmax") as info:
        lowering.compile(graph, "numpy")
    assert one_line(str(info.value))


def test_custom_domain_op_is_refused():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"], name="custom_relu", domain="com.example")],
        [tensor_info("x", [1, 3])],
        [tensor_info("y", [1, 3])],
    )
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedError) as info:
        from_onnx(model)
    message = str(info.value)
    assert one_line(message) and "com.example" in message and "custom_relu" in message and "Relu" in message


def test_project_ops_are_not_accepted_from_onnx():
    """Flip is this project's op, not an ONNX one: a model may not smuggle it in the default domain."""
    model = make_model(
        [helper.make_node("Flip", ["x"], ["y"], name="flip", axes=[1])],
        [tensor_info("x", [1, 3])],
        [tensor_info("y", [1, 3])],
    )
    # the ONNX checker refuses an unknown default-domain op before we see it; either way one line
    with pytest.raises(lowering.LoweringError) as info:
        from_onnx(model)
    assert one_line(str(info.value)) and "Flip" in str(info.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(tmp_path: Path) -> Path:
    data = to_onnx(examples.unet_decoder()).SerializeToString()
    return _write(tmp_path / "truncated.onnx", data[: len(data) // 3])


BAD_FILES = {
    "missing": (lambda tmp: tmp / "no_such_model.onnx", "no such file"),
    "directory": (lambda tmp: tmp, "directory"),
    "empty": (lambda tmp: _write(tmp / "empty.onnx", b""), "empty"),
    "random-bytes": (
        lambda tmp: _write(tmp / "random.onnx", np.random.default_rng(7).bytes(4096)),
        "not a valid ONNX protobuf",
    ),
    "text": (lambda tmp: _write(tmp / "model.onnx", b"graph @g() {\n}\n"), "not a valid ONNX protobuf"),
    "truncated": (_truncated, "not a valid ONNX protobuf"),
    "tensor-proto": (
        lambda tmp: _write(
            tmp / "tensor.onnx", numpy_helper.from_array(np.ones((3, 3), np.float32), "t").SerializeToString()
        ),
        "ONNX",
    ),
    "graph-proto": (
        lambda tmp: _write(tmp / "graph.onnx", _relu_model().graph.SerializeToString()),
        "not an ONNX model",
    ),
    "checker-failure": (
        lambda tmp: _write(
            tmp / "bad.onnx",
            make_model(
                [helper.make_node("Relu", ["x", "x"], ["y"], name="r")],
                [tensor_info("x", [1, 3])],
                [tensor_info("y", [1, 3])],
            ).SerializeToString(),
        ),
        "checker",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_model_file_is_one_line_model_load_error(tmp_path, kind):
    make, fragment = BAD_FILES[kind]
    path = make(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        from_onnx(path)
    message = str(info.value)
    assert one_line(message)
    assert fragment in message
    assert str(path) in message  # says which file


def test_every_truncation_of_a_model_is_refused_cleanly(tmp_path):
    data = _relu_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    for cut in range(1, len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(ModelLoadError):
            from_onnx(path)


def test_checker_failure_in_memory_model():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"], name="r")], [tensor_info("x", [1, 3])], [tensor_info("y", [1, 3])]
    )
    model.graph.node[0].input[0] = "undefined_value"
    with pytest.raises(ModelLoadError, match="checker") as info:
        from_onnx(model)
    assert one_line(str(info.value))


@pytest.mark.parametrize("opset", [1, 6, onnx.defs.onnx_opset_version() + 1])
def test_unsupported_opset(opset):
    model = _relu_model()
    model.opset_import[0].version = opset
    with pytest.raises(UnsupportedError, match=f"opset {opset} is not supported") as info:
        from_onnx(model)
    assert one_line(str(info.value))


def test_unsupported_element_type_is_one_line():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"], name="r")],
        [tensor_info("x", [1, 3], TensorProto.BFLOAT16)],
        [tensor_info("y", [1, 3], TensorProto.BFLOAT16)],
    )
    with pytest.raises(UnsupportedError, match="BFLOAT16") as info:
        from_onnx(model)
    assert one_line(str(info.value))


# ----------------------------------------------------------------- this project's ops, written as ONNX


def _flip_graph() -> Graph:
    g = Graph("flip")
    x = g.add_input("x", ("N", 3, 4, 5))
    g.outputs.append(g.op("Flip", x, axes=[2], name="flip_h"))
    return g


def _interior_pad_graph() -> Graph:
    g = Graph("interior_pad")
    x = g.add_input("x", ("N", 3, 4, 5))
    g.outputs.append(g.op("InteriorPad", x, interior=[0, 0, 1, 2], name="zeros"))
    return g


def _im2col_graph() -> Graph:
    g = Graph("im2col")
    x = g.add_input("x", ("N", 3, 6, 7))
    block = g.const(np.array([2, 3], np.int64), "block")
    g.outputs.append(g.op("Im2Col", x, block, strides=[2, 1], pads=[1, 0, 0, 2], dilations=[1, 2], name="cols"))
    return g


def _zero_insertion_graph() -> Graph:
    """The zero-insertion lowering spelled with the project's ops: InteriorPad, Flip, then Conv."""
    g = Graph("zero_insertion")
    x = g.add_input("x", (2, 3, 4, 4))
    w = g.const(np.random.default_rng(8).standard_normal((2, 3, 3, 3)).astype(np.float32), "w")
    spread = g.op("InteriorPad", x, interior=[0, 0, 1, 1])
    flipped = g.op("Flip", w, axes=[2, 3])
    cols = g.op("Im2Col", spread, g.const(np.array([3, 3], np.int64), "block"), pads=[2, 2, 2, 2])
    g.outputs += [g.op("Conv", spread, flipped, pads=[2, 2, 2, 2]), cols]
    return g


def _interleave_graph() -> Graph:
    """Per-phase results of a 3-D layer with unequal strides, cropped (below opset 18: Concat +
    Reshape/Transpose + Slice)."""
    g = Graph("interleave")
    x = g.add_input("x", ("N", 3, 4, 5, 3))
    phases = [g.op("Mul", x, g.const(np.float32(k + 1), "scale")) for k in range(2 * 3 * 1)]
    g.outputs.append(g.op("Interleave", *phases, strides=[2, 3, 1], sizes=[7, 15, 2], name="woven"))
    return g


def _depth_to_space_nd_graph() -> Graph:
    """The fused sub-pixel tail in 3-D with a block of 3 (CRD, cropped; below opset 18 Reshape/Transpose +
    Slice) and in 2-D (DCR uncropped: Split + Concat tree)."""
    g = Graph("depth_to_space_nd")
    x = g.add_input("x", ("N", 12, 4, 5, 3))
    g.outputs.append(g.op("DepthToSpaceND", x, blocks=[2, 3, 2], mode="CRD", begins=[1, 2, 0], sizes=[6, 12, 5]))
    flat = g.op("Reshape", x, g.const(np.asarray([0, 12, 20, 3], np.int64), "flat"))
    g.outputs.append(g.op("DepthToSpaceND", flat, blocks=[2, 2], mode="DCR", name="flat_shuffled"))
    return g


def _interleave_tree_graph() -> Graph:
    """Strides <= 2 (3-D with a unit stride, and 1-D), cropped and not (below opset 18: the Concat-per-axis
    tree)."""
    g = Graph("interleave_tree")
    x = g.add_input("x", ("N", 3, 4, 5, 3))
    phases = [g.op("Mul", x, g.const(np.float32(k + 1), "scale")) for k in range(4)]
    g.outputs.append(g.op("Interleave", *phases, strides=[2, 1, 2], sizes=[7, 5, 6], name="woven"))
    flat = g.op("Reshape", x, g.const(np.asarray([0, 3, 60], np.int64), "flat"))
    g.outputs.append(g.op("Interleave", flat, g.op("Add", flat, flat), strides=[2], name="woven_1d"))
    return g


def _depth_to_space_nd_tree_graph() -> Graph:
    """Blocks <= 2 (below opset 18: Split into phases + the Concat-per-axis tree): 3-D CRD cropped, 3-D DCR
    with a unit block."""
    g = Graph("depth_to_space_nd_tree")
    x = g.add_input("x", ("N", 8, 4, 5, 3))
    g.outputs.append(g.op("DepthToSpaceND", x, blocks=[2, 2, 2], mode="CRD", begins=[1, 0, 1], sizes=[6, 10, 4]))
    g.outputs.append(g.op("DepthToSpaceND", x, blocks=[2, 1, 2], mode="DCR", name="dcr"))
    return g


OWN_GRAPHS = {
    "depth-to-space-nd": (_depth_to_space_nd_graph, (2, 12, 4, 5, 3)),
    "depth-to-space-nd-tree": (_depth_to_space_nd_tree_graph, (2, 8, 4, 5, 3)),
    "interleave": (_interleave_graph, (2, 3, 4, 5, 3)),
    "interleave-tree": (_interleave_tree_graph, (2, 3, 4, 5, 3)),
    "flip": (_flip_graph, (2, 3, 4, 5)),
    "interior-pad": (_interior_pad_graph, (2, 3, 4, 5)),
    "im2col": (_im2col_graph, (2, 3, 6, 7)),
    "chain": (_zero_insertion_graph, (2, 3, 4, 4)),
}


@pytest.mark.parametrize("opset", [11, 18])
@pytest.mark.parametrize("kind", list(OWN_GRAPHS))
def test_project_ops_written_as_standard_onnx(kind, opset):
    build, shape = OWN_GRAPHS[kind]
    graph = build()
    before = str(graph)
    model = to_onnx(graph, opset=opset)
    assert str(graph) == before  # the caller's graph is not rewritten
    onnx.checker.check_model(model, full_check=True)
    assert {e.domain for e in model.opset_import} == {""}
    assert all(n.domain == "" for n in model.graph.node)
    assert not {"Flip", "InteriorPad", "Im2Col", "Interleave", "DepthToSpaceND"} & {n.op_type for n in model.graph.node}
    read = {name for node in model.graph.node for name in node.input}
    assert {t.name for t in model.graph.initializer} <= read  # nothing left behind unread
    x = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
    runtime = ort_run(model, {"x": x})
    reference = evaluate(graph, {"x": x})
    assert list(runtime) == [v.name for v in graph.outputs]
    for name, want in reference.items():
        assert runtime[name].shape == want.shape
        if (kind == "chain" and name != graph.outputs[-1].name) or kind.startswith("interleave"):
            np.testing.assert_allclose(runtime[name], want, rtol=1e-5, atol=1e-5)  # a real convolution
        else:
            np.testing.assert_array_equal(runtime[name], want.astype(np.float32))  # pure data movement


@pytest.mark.parametrize(
    ("kind", "col2ims"),
    [("depth-to-space-nd", 1), ("depth-to-space-nd-tree", 1), ("interleave", 1), ("interleave-tree", 2)],
)
def test_phase_interleaves_are_one_col2im_from_opset_18(kind, col2ims):
    """From opset 18 every CRD DepthToSpaceND and every Interleave of several phases is written as one
    Col2Im (the DCR ones keep their older form); below it, only ops older runtimes have. The values
    are checked at both opsets by test_project_ops_written_as_standard_onnx."""
    graph = OWN_GRAPHS[kind][0]()
    ops = [n.op_type for n in to_onnx(graph, opset=18).graph.node]
    assert ops.count("Col2Im") == col2ims and "DepthToSpace" not in ops[: ops.index("Col2Im")]
    assert "Col2Im" not in [n.op_type for n in to_onnx(graph, opset=17).graph.node]


@pytest.mark.parametrize(("dtype", "sizes"), [("float64", [8, 10]), ("int64", [8, 10]), ("float32", [0, 10])])
def test_col2im_forms_only_where_onnxruntime_has_them(dtype, sizes):
    """onnxruntime's Col2Im is float-only and refuses an empty image: other element types and empty
    outputs keep the older form at opset 18, and run."""
    g = Graph("d2s")
    x = g.add_input("x", (2, 8, 4, 5), dtype)
    g.outputs.append(g.op("DepthToSpaceND", x, blocks=[2, 2], mode="CRD", begins=[0, 0], sizes=sizes))
    model = to_onnx(g, opset=18)
    assert "Col2Im" not in [n.op_type for n in model.graph.node]
    data = (np.arange(2 * 8 * 4 * 5).reshape(2, 8, 4, 5) % 7).astype(dtype)
    got = ort_run(model, {"x": data})
    np.testing.assert_array_equal(got[g.outputs[0].name], evaluate(g, {"x": data})[g.outputs[0].name])


@pytest.mark.parametrize(
    ("channels", "out_channels", "attrs", "two_d"),
    [
        (256, 128, {"pads": [1, 2], "strides": [2], "dilations": [2]}, True),
        (256, 256, {"auto_pad": "SAME_UPPER", "group": 2}, True),
        (256, 128, {"pads": [0, 0]}, True),
        (128, 256, {"pads": [1, 1]}, False),  # too few input channels: onnxruntime's 2-D kernels lose there
        (256, 64, {"pads": [1, 1]}, False),
    ],
)
def test_wide_1d_convolutions_are_written_as_2d(channels, out_channels, attrs, two_d):
    """A wide float32 1-D Conv with constant weights is written as a 2-D Conv of unit height between two
    Reshapes (onnxruntime's blocked kernels); narrow ones stay 1-D. onnxruntime's result equals the
    reference either way, with a symbolic batch."""
    rng = np.random.default_rng(11)
    group = attrs.get("group", 1)
    g = Graph("conv1d")
    x = g.add_input("x", ("N", channels, 19), "float32")
    w = g.const((rng.standard_normal((out_channels, channels // group, 3)) / 16).astype(np.float32), "w")
    b = g.const(rng.standard_normal(out_channels).astype(np.float32), "b")
    g.outputs.append(g.op("Conv", x, w, b, **attrs))
    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops == (["Reshape", "Conv", "Reshape"] if two_d else ["Conv"])
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    kernel = next(t for t in model.graph.initializer if t.name == conv.input[1])
    assert len(kernel.dims) == (4 if two_d else 3)
    data = rng.standard_normal((3, channels, 19)).astype(np.float32)
    got = ort_run(model, {"x": data})[g.outputs[0].name]
    np.testing.assert_allclose(got, evaluate(g, {"x": data})[g.outputs[0].name], rtol=1e-4, atol=1e-4)


def test_big_endian_constants_are_written_little_endian():
    g = Graph("be")
    x = g.add_input("x", (4,), "float32")
    g.outputs.append(g.op("Add", x, g.const(np.arange(4, dtype=">f4"), "c")))
    (tensor,) = to_onnx(g).graph.initializer
    np.testing.assert_array_equal(numpy_helper.to_array(tensor), np.arange(4, dtype=np.float32))


def test_single_phase_interleave_keeps_the_graph_input_name():
    """Strides 1, nothing cropped: the expansion is an Identity, never a renamed graph input."""
    g = Graph("one_phase")
    x = g.add_input("p0", (1, 2, 3))
    g.outputs.append(g.op("Interleave", x, strides=[1], name="y"))
    data = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    out = ort_run(to_onnx(g), {"p0": data})
    np.testing.assert_array_equal(out[g.outputs[0].name], data)


def test_interior_pad_and_flip_by_hand():
    """The reference meaning the ONNX output is compared with, checked on a tiny case by hand."""
    g = Graph("tiny")
    x = g.add_input("x", (1, 1, 2, 3))
    g.outputs.append(g.op("Flip", g.op("InteriorPad", x, interior=[0, 0, 1, 2]), axes=[3]))
    data = np.array([[[[1, 2, 3], [4, 5, 6]]]], np.float32)
    want = np.array([[[[3, 0, 0, 2, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0], [6, 0, 0, 5, 0, 0, 4]]]], np.float32)
    np.testing.assert_array_equal(ort_run(to_onnx(g), {"x": data})[g.outputs[0].name], want)


def test_export_below_opset_11_is_refused():
    with pytest.raises(UnsupportedError, match="10") as info:
        to_onnx(_flip_graph(), opset=10)
    assert one_line(str(info.value))


def test_export_above_known_opset_is_refused():
    with pytest.raises(UnsupportedError) as info:
        to_onnx(_flip_graph(), opset=onnx.defs.onnx_opset_version() + 1)
    assert one_line(str(info.value))


def _col2im_graph() -> Graph:
    g = Graph("col2im")
    cols = g.add_input("cols", (1, 4, 6))
    image = g.const(np.array([3, 4], np.int64), "image_shape")
    block = g.const(np.array([2, 2], np.int64), "block_shape")
    g.outputs.append(g.op("Col2Im", cols, image, block, name="fold"))
    return g


def test_col2im_needs_opset_18():
    with pytest.raises(UnsupportedError, match="Col2Im") as info:
        to_onnx(_col2im_graph(), opset=17)
    assert one_line(str(info.value)) and "18" in str(info.value)


def test_col2im_at_opset_18_matches_onnxruntime():
    graph = _col2im_graph()
    model = to_onnx(graph, opset=18)
    onnx.checker.check_model(model, full_check=True)
    cols = np.random.default_rng(10).standard_normal((1, 4, 6)).astype(np.float32)
    got = ort_run(model, {"cols": cols})[graph.outputs[0].name]
    np.testing.assert_allclose(got, evaluate(graph, {"cols": cols})[graph.outputs[0].name], rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------- optional inputs, Constant forms, layouts per opset


def test_missing_optional_input_constant_forms_and_pass_through_outputs():
    """Clip(x, '', hi), Constant value_ints / value_float, and graph outputs that are an input and an
    initializer: all survive the round trip and run the same in onnxruntime."""
    nodes = [
        helper.make_node("Constant", [], ["shape"], value_ints=[2, 12]),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Constant", [], ["hi"], value_float=0.3),
        helper.make_node("Clip", ["flat", "", "hi"], ["y"]),
    ]
    model = make_model(
        nodes,
        [tensor_info("x", [2, 3, 4])],
        [tensor_info("y", [2, 12]), tensor_info("x", [2, 3, 4]), tensor_info("k", [2])],
        initializers={"k": np.array([1.0, 2.0], np.float32)},
        opset=13,
    )
    x = np.random.default_rng(12).standard_normal((2, 3, 4)).astype(np.float32)
    written = _check_round_trip(model, {"x": x})
    clip = next(n for n in written.graph.node if n.op_type == "Clip")
    assert list(clip.input)[1] == ""
    np.testing.assert_array_equal(ort_run(written, {"x": x})["y"], np.minimum(x.reshape(2, 12), np.float32(0.3)))


def _pad_model(opset: int, mode: str, with_axes: bool) -> onnx.ModelProto:
    inputs = ["x", "pads", "", "axes"] if with_axes else ["x", "pads"]
    pads = np.array([1, 2], np.int64) if with_axes else np.array([0, 0, 1, 0, 0, 2], np.int64)
    initializers = {"pads": pads, **({"axes": np.array([-1], np.int64)} if with_axes else {})}
    node = helper.make_node("Pad", inputs, ["y"], name="pad", mode=mode)
    return make_model(
        [node], [tensor_info("x", [2, 3, 4])], [tensor_info("y", [2, 3, 7])], initializers=initializers, opset=opset
    )


@pytest.mark.parametrize(
    ("mode", "with_axes", "opset"), [("edge", True, 18), ("wrap", False, 19), ("reflect", True, 21)]
)
def test_pad_layouts_against_numpy(mode, with_axes, opset):
    x = np.random.default_rng(13).standard_normal((2, 3, 4)).astype(np.float32)
    want = np.pad(x, ((0, 0), (0, 0), (1, 2)), mode={"edge": "edge", "wrap": "wrap", "reflect": "reflect"}[mode])
    model = _pad_model(opset, mode, with_axes)
    written = _check_round_trip(model, {"x": x})
    np.testing.assert_array_equal(ort_run(written, {"x": x})["y"], want)
    np.testing.assert_array_equal(evaluate(from_onnx(model), {"x": x})["y"], want)


@pytest.mark.parametrize(
    ("mode", "with_axes", "target", "fragment"),
    [("edge", True, 17, "'axes' input of Pad needs opset >= 18"), ("wrap", False, 18, "'wrap' needs opset >= 19")],
)
def test_pad_forms_newer_than_the_target_opset_are_refused(mode, with_axes, target, fragment):
    graph = from_onnx(_pad_model(19, mode, with_axes))
    with pytest.raises(UnsupportedError, match=fragment) as info:
        to_onnx(graph, opset=target)
    assert one_line(str(info.value)) and "pad" in str(info.value)


def test_reshape_allowzero_below_opset_14():
    graph = Graph("reshape")
    x = graph.add_input("x", (2, 3, 4))
    graph.outputs.append(graph.op("Reshape", x, graph.const(np.array([4, 6], np.int64)), name="flat", allowzero=0))
    written = to_onnx(graph, opset=13)  # allowzero=0 is what opset 13 means anyway: dropped
    onnx.checker.check_model(written, full_check=True)
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(ort_run(written, {"x": data})[graph.outputs[0].name], data.reshape(4, 6))
    graph.nodes[0].attrs["allowzero"] = 1
    with pytest.raises(UnsupportedError, match="allowzero") as info:
        to_onnx(graph, opset=13)
    assert one_line(str(info.value))
    onnx.checker.check_model(to_onnx(graph, opset=14), full_check=True)
