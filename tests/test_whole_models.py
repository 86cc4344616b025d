"""Whole models in and out: a PyTorch model exported by `torch.onnx.export`, and hand-built models
with ops the IR has no semantics for, read with `from_onnx`, lowered, written with `to_onnx`.

Oracles: PyTorch running the module in float64, onnxruntime running the original model, and the
original ONNX protos themselves (what must come back unchanged).
"""

from __future__ import annotations

import copy
import logging
import warnings

import numpy as np
import onnx
import pytest
from helpers import make_model, one_line, ort_run, tensor_info
from onnx import AttributeProto, TensorProto, helper

import lowering
from lowering import UnsupportedError, evaluate, from_onnx, lower, parse_ir, to_onnx
from lowering.api import strategy_names

torch = pytest.importorskip("torch")
nn = torch.nn

RNG = np.random.default_rng(7)


# ----------------------------------------------------------------- a model exported by torch.onnx.export


class Decoder(nn.Module):
    """The decoder ops: ConvTranspose, BatchNorm, LeakyReLU, cat, Conv, pixel_shuffle, tanh, sigmoid, add."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(8, 16, 3, padding=1)

    def forward(self, x, skip):
        y = nn.functional.leaky_relu(self.bn(self.up(x)), 0.2)
        y = torch.cat([y, skip], dim=1)
        y = nn.functional.pixel_shuffle(self.conv(y), 2)
        return torch.relu(torch.tanh(y) + torch.sigmoid(y))


@pytest.fixture(scope="module")
def exported():
    """(module, ONNX model): exported with the torch.export-based exporter, a symbolic batch, BatchNorm kept."""
    torch.manual_seed(0)
    module = Decoder().eval()
    with torch.no_grad():
        module.bn.running_mean.uniform_(-0.5, 0.5)
        module.bn.running_var.uniform_(0.5, 2.0)
        module.bn.weight.uniform_(0.5, 1.5)
        module.bn.bias.uniform_(-0.5, 0.5)
    args = (torch.randn(2, 8, 5, 5), torch.randn(2, 4, 10, 10))
    batch = torch.export.Dim("batch", min=1, max=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                optimize=False,  # keep BatchNormalization a node of its own, for fold-batchnorm to fold
                verbose=False,
                input_names=["x", "skip"],
                output_names=["y"],
                dynamic_shapes=({0: batch}, {0: batch}),
            )
        finally:
            logging.disable(logging.NOTSET)
    return module, program.model_proto


def _torch_reference(module, feeds: dict[str, np.ndarray]) -> np.ndarray:
    reference = copy.deepcopy(module).double()
    with torch.no_grad():
        return reference(*(torch.from_numpy(feeds[k]).double() for k in ("x", "skip"))).numpy()


def _feeds(batch: int) -> dict[str, np.ndarray]:
    return {
        "x": RNG.standard_normal((batch, 8, 5, 5)).astype(np.float32),
        "skip": RNG.standard_normal((batch, 4, 10, 10)).astype(np.float32),
    }


def _dims(info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim]


def test_exported_model_reads_back_and_evaluates_like_pytorch(exported):
    module, model = exported
    graph = from_onnx(model)
    ops = {n.op for n in graph.nodes}
    assert {"ConvTranspose", "BatchNormalization", "Concat", "Conv", "DepthToSpace", "Tanh", "Sigmoid"} <= ops
    assert graph.inputs[0].shape == ("batch", 8, 5, 5)
    feeds = _feeds(3)
    want = _torch_reference(module, feeds)
    np.testing.assert_allclose(evaluate(graph, feeds)["y"], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ort_run(model, feeds)["y"], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("strategy", strategy_names())
def test_exported_model_lowered_runs_on_all_three_backends(exported, strategy):
    module, model = exported
    graph = from_onnx(model)
    lowered = lower(graph, strategy)
    assert not lowered.nodes_of("ConvTranspose")
    if strategy == "auto":
        assert not lowered.nodes_of("BatchNormalization")  # auto always folds BatchNorm first
    feeds = _feeds(3)  # another batch than the exported one: the batch is symbolic
    want = _torch_reference(module, feeds)
    for backend in ("numpy", "torch", "onnx"):
        got = lowering.compile(lowered, backend)(feeds)["y"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=backend)


def test_dynamic_batch_survives_lowering_and_export(exported):
    _, model = exported
    written = to_onnx(lower(from_onnx(model), "subpixel", fold_bn=True))
    onnx.checker.check_model(written, full_check=True)
    assert [_dims(v) for v in written.graph.input] == [_dims(v) for v in model.graph.input]
    assert _dims(written.graph.output[0]) == ["batch", 4, 20, 20]
    for batch in (1, 4):
        feeds = _feeds(batch)
        np.testing.assert_allclose(ort_run(written, feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-4, atol=1e-5)


def test_exported_model_keeps_its_facts(exported):
    _, model = exported
    written = to_onnx(lower(from_onnx(model), "col2im"))
    assert written.producer_name == model.producer_name and written.producer_version == model.producer_version
    assert [(e.domain, e.version) for e in written.opset_import if e.domain] == [
        (e.domain, e.version) for e in model.opset_import if e.domain
    ]
    kept = {(n.name, n.op_type) for n in written.graph.node}
    for node in model.graph.node:
        if node.op_type != "ConvTranspose":
            assert (node.name, node.op_type) in kept, node.name


# ----------------------------------------------------------------- opaque nodes


def _attribute_with_doc(name: str, value, doc: str) -> AttributeProto:
    attr = helper.make_attribute(name, value)
    attr.doc_string = doc
    return attr


def _opaque_model(opset: int = 18) -> onnx.ModelProto:
    """ConvTranspose -> Softmax -> Resize (scales) -> Relu, with a value_info, metadata and facts to keep."""
    softmax = helper.make_node("Softmax", ["h"], ["s"], name="/head/Softmax")
    softmax.attribute.append(_attribute_with_doc("axis", 1, "channels"))
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["h"], name="up", strides=[2, 2]),
        softmax,
        helper.make_node(
            "Resize",
            ["s", "roi", "scales"],
            ["r"],
            name="resize",
            mode="nearest",
            nearest_mode="floor",
            cubic_coeff_a=-0.5,
        ),
        helper.make_node("Relu", ["r"], ["y"], name="relu"),
    ]
    initializers = {
        "w": RNG.standard_normal((3, 2, 3, 3)).astype(np.float32),
        "roi": np.zeros(0, np.float32),
        "scales": np.array([1, 1, 2, 2], np.float32),
    }
    model = make_model(
        nodes,
        [tensor_info("x", ["N", 3, 4, 4])],
        [tensor_info("y", ["N", 2, 18, 18])],
        opset=opset,
        initializers=initializers,
        producer_name="tests",
        producer_version="1.2",
        doc_string="a model with ops the IR does not define",
    )
    model.graph.value_info.append(tensor_info("s", ["N", 2, 9, 9]))
    model.graph.doc_string = "graph doc"
    model.model_version = 3
    model.metadata_props.add(key="author", value="tests")
    return model


def _x(batch: int = 2) -> dict[str, np.ndarray]:
    return {"x": RNG.standard_normal((batch, 3, 4, 4)).astype(np.float32)}


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _without_inputs(node: onnx.NodeProto) -> onnx.NodeProto:
    """The node less its inputs: a node reading a lowered ConvTranspose reads a new value."""
    node = copy.deepcopy(node)
    del node.input[:]
    return node


def test_opaque_nodes_are_read_with_raw_attributes_and_inferred_types():
    graph = from_onnx(_opaque_model())
    softmax = next(n for n in graph.nodes if n.name == "/head/Softmax")
    assert softmax.opdef is None and isinstance(softmax.attrs["axis"], AttributeProto)
    assert softmax.attrs["axis"].doc_string == "channels"
    assert graph.value("s").shape == ("N", 2, 9, 9) and graph.value("s").dtype == "float32"
    # ONNX inference cannot carry N through Resize; the model's declared output names it again
    assert graph.value("r").shape == ("N", 2, 18, 18)
    assert graph.outputs[0].shape == ("N", 2, 18, 18)
    text = str(graph)
    assert 'Softmax(%h) {axis=1} @"/head/Softmax"' in text
    assert 'Resize(%s, %roi, %scales) {cubic_coeff_a=-0.5, mode="nearest", nearest_mode="floor"} @resize' in text


@pytest.mark.parametrize("strategy", strategy_names())
def test_opaque_nodes_are_written_back_verbatim_and_run(strategy):
    model = _opaque_model()
    written = to_onnx(lower(from_onnx(model), strategy))
    onnx.checker.check_model(written, full_check=True)
    assert _node(written, "resize") == _node(model, "resize")  # op, domain, inputs, outputs, attributes
    # attributes with their doc strings included
    assert _without_inputs(_node(written, "/head/Softmax")) == _without_inputs(_node(model, "/head/Softmax"))
    assert not [n for n in written.graph.node if n.op_type == "ConvTranspose"]
    assert _node(written, "relu").op_type == "Relu"
    for batch in (1, 3):
        feeds = _x(batch)
        np.testing.assert_allclose(ort_run(written, feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-5, atol=1e-6)


def test_model_facts_are_kept():
    model = _opaque_model()
    written = to_onnx(lower(from_onnx(model), "subpixel"))
    for field in ("producer_name", "producer_version", "doc_string", "model_version", "ir_version"):
        assert getattr(written, field) == getattr(model, field), field
    assert written.graph.doc_string == "graph doc"
    assert {p.key: p.value for p in written.metadata_props} == {"author": "tests"}
    assert [(e.domain, e.version) for e in written.opset_import] == [("", 18)]
    assert "s" in {v.name for v in written.graph.value_info}
    scales = next(t for t in written.graph.initializer if t.name == "scales")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(scales), [1, 1, 2, 2])
    assert _dims(written.graph.input[0]) == ["N", 3, 4, 4] and _dims(written.graph.output[0]) == ["N", 2, 18, 18]


def test_numpy_and_torch_backends_refuse_opaque_nodes_by_op_and_node():
    lowered = lower(from_onnx(_opaque_model()), "auto")
    for backend in ("numpy", "torch"):
        with pytest.raises(UnsupportedError) as info:
            lowering.compile(lowered, backend)
        message = str(info.value)
        assert one_line(message) and "Softmax" in message and "/head/Softmax" in message, backend
    with pytest.raises(UnsupportedError) as info:
        evaluate(lowered, _x())
    assert one_line(str(info.value)) and "/head/Softmax" in str(info.value)


def test_opaque_nodes_survive_the_text_form():
    model = _opaque_model()
    graph = from_onnx(model)
    parsed = parse_ir(graph.format(elide_above=None))
    written = to_onnx(parsed)
    resize = _node(written, "resize")
    assert {a.name: helper.get_attribute_value(a) for a in resize.attribute} == {
        "mode": b"nearest",
        "nearest_mode": b"floor",
        "cubic_coeff_a": -0.5,
    }
    feeds = _x()
    np.testing.assert_allclose(ort_run(written, feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-6)


def test_custom_domain_op_is_carried_through_with_its_opset_import():
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["h"], name="up", strides=[2]),
        helper.make_node("Frobnicate", ["h"], ["y"], name="frob", domain="com.acme", level=3, mode="fast"),
    ]
    model = make_model(
        nodes,
        [tensor_info("x", [1, 2, 5])],
        [tensor_info("y", [1, 3, 11])],
        initializers={"w": RNG.standard_normal((2, 3, 3)).astype(np.float32)},
    )
    model.opset_import.append(helper.make_opsetid("com.acme", 2))
    graph = from_onnx(model)
    frob = graph.nodes[-1]
    assert frob.domain == "com.acme" and frob.opdef is None
    assert graph.value("y").shape == (1, 3, 11)  # no inference for com.acme: the declared output type
    written = to_onnx(lower(graph, "col2im"), opset=18)
    onnx.checker.check_model(written)
    assert _without_inputs(_node(written, "frob")) == _without_inputs(_node(model, "frob"))
    assert ("com.acme", 2) in [(e.domain, e.version) for e in written.opset_import]


def test_omitted_optional_outputs_stay_omitted():
    """LSTM writing only its last hidden state: outputs ['', 'h_n']."""
    hidden = 3
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["seq"], name="up", strides=[2]),
        helper.make_node("LSTM", ["seq", "W", "R"], ["", "h_n"], name="lstm", hidden_size=hidden),
    ]
    # ConvTranspose1d output (N=4, C=2, L=7) is read by the LSTM as (seq 4, batch 2, features 7)
    initializers = {
        "w": RNG.standard_normal((3, 2, 3)).astype(np.float32),
        "W": RNG.standard_normal((1, 4 * hidden, 7)).astype(np.float32),
        "R": RNG.standard_normal((1, 4 * hidden, hidden)).astype(np.float32),
    }
    model = make_model(
        nodes, [tensor_info("x", [4, 3, 3])], [tensor_info("h_n", [1, 2, hidden])], initializers=initializers
    )
    written = to_onnx(lower(from_onnx(model), "zero-insertion"))
    onnx.checker.check_model(written, full_check=True)
    assert list(_node(written, "lstm").output) == ["", "h_n"]
    feeds = {"x": RNG.standard_normal((4, 3, 3)).astype(np.float32)}
    np.testing.assert_allclose(ort_run(written, feeds)["h_n"], ort_run(model, feeds)["h_n"], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- refusals


def test_opaque_op_is_not_written_at_an_opset_that_changed_it():
    model = _opaque_model(opset=11)  # Softmax changed at opset 13
    graph = from_onnx(model)
    with pytest.raises(UnsupportedError) as info:
        to_onnx(graph, opset=13)
    message = str(info.value)
    assert one_line(message) and "/head/Softmax" in message and "11" in message and "13" in message
    assert to_onnx(graph, opset=11)  # its own opset is fine


def test_opaque_op_moves_between_opsets_that_define_it_the_same():
    model = _opaque_model(opset=13)  # Softmax 13, Resize 13 .. 17 -> 18: Resize changed at 18, Softmax did not
    graph = lower(from_onnx(model), "subpixel")
    with pytest.raises(UnsupportedError, match="resize"):
        to_onnx(graph, opset=18)
    written = to_onnx(graph, opset=17)
    feeds = _x()
    np.testing.assert_allclose(ort_run(written, feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-5, atol=1e-6)


def test_subgraph_attributes_are_refused_in_one_line():
    then_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["a"])], "then", [], [tensor_info("a", [1, 3])]
    )
    else_branch = helper.make_graph([helper.make_node("Neg", ["x"], ["b"])], "else", [], [tensor_info("b", [1, 3])])
    model = make_model(
        [helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_branch, else_branch=else_branch)],
        [tensor_info("x", [1, 3]), tensor_info("c", [], TensorProto.BOOL)],
        [tensor_info("y", [1, 3])],
    )
    with pytest.raises(UnsupportedError) as info:
        from_onnx(model)
    message = str(info.value)
    assert one_line(message) and "If 'branch'" in message and "subgraph" in message
