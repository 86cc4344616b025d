"""Invalid Conv / ConvTranspose configurations and broken graphs are refused with one clear line.

Each message must name the op and the node, the attribute and the axis at fault, and the numbers
that disagree, so a user can fix the model without reading a traceback. A refused node must also
leave the graph as it was.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import lowering
from lowering import Graph, VerificationError

NODE = "dec3"


def _build(op: str, x_shape, w_shape, b_shape=None, *, x_dtype="float64", w_dtype="float64", **attrs):
    g = Graph("g")
    x = g.add_input("x", x_shape, x_dtype)
    w = g.const(np.zeros(w_shape, w_dtype), "w")
    b = None if b_shape is None else g.const(np.zeros(b_shape, w_dtype), "b")
    return g, lambda: g.op(op, x, w, b, name=NODE, **attrs)


def _refused(op: str, x_shape, w_shape, b_shape=None, **kwargs) -> str:
    """Try to add the node; return the message after checking it is one line and the graph is untouched."""
    g, add = _build(op, x_shape, w_shape, b_shape, **kwargs)
    values_before = sorted(v.name for v in g.values())
    with pytest.raises(VerificationError) as info:
        add()
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{op} '{NODE}': "), message
    # the node never entered the graph, and nothing it would have created stayed behind
    assert g.nodes == []
    assert sorted(v.name for v in g.values()) == values_before
    assert all(not v.uses for v in g.values())
    g.verify()
    return message


def _num(n: int | float) -> str:
    """A regex for the number n standing alone (not a digit of a bigger number)."""
    return rf"(?<![\d.]){re.escape(str(n))}(?![\d.])"


def _attr(name: str) -> str:
    return rf"attribute '{name}'"


CONV_T = "ConvTranspose"
X4 = (1, 4, 4, 4)
W4 = (4, 2, 3, 3)

# (id, op, x shape, w shape, b shape, attrs, regexes the message must match)
CASES = [
    (
        "ct-group-divides-channels",
        CONV_T,
        (1, 5, 4, 4),
        (5, 2, 3, 3),
        None,
        {"group": 2},
        [_attr("group"), r"channels", _num(5), _num(2)],
    ),
    (
        "ct-weight-dim0-vs-channels",
        CONV_T,
        X4,
        (3, 2, 3, 3),
        None,
        {},
        [r"weight W dimension 0", _num(3), rf"{_num(4)} channels"],
    ),
    ("ct-bias-shape", CONV_T, X4, W4, (5,), {}, [r"bias B", r"\[2\]", r"\[5\]"]),
    ("ct-bias-shape-grouped", CONV_T, X4, W4, (2,), {"group": 2}, [r"bias B", r"\[4\]", r"\[2\]"]),
    (
        "ct-kernel-shape-vs-weight",
        CONV_T,
        X4,
        W4,
        None,
        {"kernel_shape": [3, 2]},
        [_attr("kernel_shape"), r"axis 1\b", r"is 2\b", r"kernel size 3\b"],
    ),
    ("ct-stride-zero", CONV_T, X4, W4, None, {"strides": [1, 0]}, [_attr("strides"), r"axis 1\b", r">= 1", _num(0)]),
    (
        "ct-dilation-negative",
        CONV_T,
        X4,
        W4,
        None,
        {"dilations": [-1, 1]},
        [_attr("dilations"), r"axis 0\b", r"-1\b"],
    ),
    (
        "ct-output-size-below-one",
        CONV_T,
        (1, 4, 1, 4),
        (4, 2, 1, 3),
        None,
        {"pads": [1, 0, 1, 0]},
        [r"output size", r"axis 0\b", r"would be -1\b", r"pads 1 - 1\b"],
    ),
    (
        "ct-output-shape-zero",
        CONV_T,
        X4,
        W4,
        None,
        {"output_shape": [6, 0]},
        [r"output size", r"axis 1\b", r"would be 0\b"],
    ),
    (
        "ct-output-padding-vs-stride",
        CONV_T,
        X4,
        W4,
        None,
        {"strides": [2, 3], "output_padding": [0, 3]},
        [_attr("output_padding"), r"axis 1\b", r"is 3\b", r"stride 3\b", r"dilation 1\b"],
    ),
    (
        "ct-output-padding-vs-dilation",
        CONV_T,
        X4,
        W4,
        None,
        {"dilations": [2, 1], "output_padding": [2, 0]},
        [_attr("output_padding"), r"axis 0\b", r"is 2\b", r"stride 1\b", r"dilation 2\b"],
    ),
    (
        "ct-output-padding-negative",
        CONV_T,
        X4,
        W4,
        None,
        {"output_padding": [0, -1]},
        [_attr("output_padding"), r"axis 1\b", r"-1\b"],
    ),
    ("ct-rank-w-lower", CONV_T, X4, (4, 2, 3), None, {}, [r"rank 3\b", r"rank 4\b", r"weight W", r"input X"]),
    ("ct-rank-w-higher", CONV_T, (1, 4, 4), W4, None, {}, [r"rank 4\b", r"rank 3\b", r"weight W", r"input X"]),
    ("ct-x-rank-too-low", CONV_T, (1, 4), (4, 2), None, {}, [r"input X", r"rank >= 3", r"rank 2\b"]),
    ("ct-type-group-float", CONV_T, X4, W4, None, {"group": 1.5}, [_attr("group"), r"must be an int", r"1\.5"]),
    ("ct-type-group-bool", CONV_T, X4, W4, None, {"group": True}, [_attr("group"), r"must be an int", r"bool"]),
    ("ct-type-strides-scalar", CONV_T, X4, W4, None, {"strides": 2}, [_attr("strides"), r"must be a list", _num(2)]),
    (
        "ct-type-pads-floats",
        CONV_T,
        X4,
        W4,
        None,
        {"pads": [1.0, 1, 1, 1]},
        [_attr("pads"), r"must be an int", r"1\.0"],
    ),
    ("ct-type-auto-pad", CONV_T, X4, W4, None, {"auto_pad": 3}, [_attr("auto_pad"), r"must be a string", _num(3)]),
    (
        "ct-auto-pad-value",
        CONV_T,
        X4,
        W4,
        None,
        {"auto_pad": "SAME"},
        [_attr("auto_pad"), r"'SAME'", r"SAME_UPPER", r"SAME_LOWER"],
    ),
    (
        "ct-unknown-attribute",
        CONV_T,
        X4,
        W4,
        None,
        {"padding": [1, 1]},
        [r"unknown attribute 'padding'", r"\bpads\b", r"output_padding"],
    ),
    (
        "ct-pads-length",
        CONV_T,
        X4,
        W4,
        None,
        {"pads": [1, 1]},
        [_attr("pads"), r"has 2 values", r"expected 4\b", r"2-D"],
    ),
    (
        "ct-pads-length-3d",
        CONV_T,
        (1, 4, 3, 3, 3),
        (4, 2, 2, 2, 2),
        None,
        {"pads": [1, 1, 1, 1]},
        [_attr("pads"), r"has 4 values", r"expected 6\b", r"3-D"],
    ),
    (
        "ct-strides-length",
        CONV_T,
        X4,
        W4,
        None,
        {"strides": [1, 1, 1]},
        [_attr("strides"), r"has 3 values", r"expected 2\b"],
    ),
    (
        "ct-output-padding-length",
        CONV_T,
        X4,
        W4,
        None,
        {"output_padding": [1]},
        [_attr("output_padding"), r"has 1 values", r"expected 2\b"],
    ),
    (
        "ct-output-shape-length",
        CONV_T,
        X4,
        W4,
        None,
        {"output_shape": [1, 2, 3]},
        [_attr("output_shape"), r"has 3 values", r"expected 2\b"],
    ),
    ("ct-group-zero", CONV_T, X4, W4, None, {"group": 0}, [_attr("group"), r">= 1", _num(0)]),
    ("ct-out-per-group-zero", CONV_T, X4, (4, 0, 3, 3), None, {}, [r"weight W dimension 1", _num(0)]),
    ("ct-kernel-zero", CONV_T, X4, (4, 2, 0, 3), None, {}, [r"weight W kernel size", r"axis 0\b", _num(0)]),
    (
        "conv-group-divides-channels",
        "Conv",
        X4,
        (6, 2, 3, 3),
        None,
        {"group": 3},
        [_attr("group"), r"input channels 4\b", r"group 3\b"],
    ),
    (
        "conv-group-divides-out-channels",
        "Conv",
        (1, 6, 4, 4),
        (4, 2, 3, 3),
        None,
        {"group": 3},
        [_attr("group"), r"output channels 4\b", r"group 3\b"],
    ),
    (
        "conv-weight-dim1-vs-channels",
        "Conv",
        (1, 6, 4, 4),
        (6, 3, 3, 3),
        None,
        {"group": 3},
        [r"weight W dimension 1 is 3\b", r"6 channels", r"3 groups", r"expected 2\b"],
    ),
    (
        "conv-output-size-below-one",
        "Conv",
        (1, 6, 4, 2),
        (6, 2, 3, 3),
        None,
        {"group": 3, "pads": [0, 0, 0, 0]},
        [r"axis 1\b", r"padded input size 2\b", r"effective kernel 3\b", r"output size"],
    ),
    (
        "conv-dilated-kernel-too-big",
        "Conv",
        (1, 2, 5),
        (1, 2, 3),
        None,
        {"dilations": [3]},
        [r"axis 0\b", r"padded input size 5\b", r"effective kernel 7\b"],
    ),
    ("conv-bias-shape", "Conv", (1, 6, 4, 4), (6, 2, 3, 3), (5,), {"group": 3}, [r"bias B", r"\[6\]", r"\[5\]"]),
    ("conv-stride-zero", "Conv", X4, (2, 4, 3, 3), None, {"strides": [0, 1]}, [_attr("strides"), r"axis 0\b"]),
    (
        "conv-kernel-shape-vs-weight",
        "Conv",
        X4,
        (2, 4, 3, 3),
        None,
        {"kernel_shape": [2, 3]},
        [_attr("kernel_shape"), r"axis 0\b", r"is 2\b", r"kernel size 3\b"],
    ),
    (
        "conv-has-no-output-padding",
        "Conv",
        X4,
        (2, 4, 3, 3),
        None,
        {"output_padding": [0, 1]},
        [r"unknown attribute 'output_padding'"],
    ),
    (
        "conv-dilations-length",
        "Conv",
        X4,
        (2, 4, 3, 3),
        None,
        {"dilations": [1]},
        [_attr("dilations"), r"has 1 values", r"expected 2\b"],
    ),
    ("conv-rank-mismatch", "Conv", (1, 4, 4, 4, 4), (2, 4, 3, 3), None, {}, [r"rank 4\b", r"rank 5\b"]),
]


@pytest.mark.parametrize(
    ("op", "x_shape", "w_shape", "b_shape", "attrs", "patterns"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_invalid_configuration_is_refused_with_one_line(op, x_shape, w_shape, b_shape, attrs, patterns) -> None:
    message = _refused(op, x_shape, w_shape, b_shape, **attrs)
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"


def test_errors_are_lowering_errors() -> None:
    with pytest.raises(lowering.LoweringError):
        _build(CONV_T, X4, W4, strides=[0, 1])[1]()


def test_valid_neighbours_of_the_refused_cases_are_accepted() -> None:
    """The limits are where the definition puts them, not one off."""
    accepted = [
        (X4, W4, {"strides": [2, 3], "output_padding": [1, 2]}, (1, 2, 10, 14)),  # a = s − 1
        (X4, W4, {"dilations": [3, 1], "output_padding": [2, 0]}, (1, 2, 12, 6)),  # a >= s but < d
        ((1, 4, 1, 4), (4, 2, 1, 3), {"pads": [0, 0, 0, 0]}, (1, 2, 1, 6)),  # output size exactly 1
        (X4, W4, {"output_shape": [1, 1]}, (1, 2, 1, 1)),
        (("N", 4, 4, 4), W4, {"group": 2, "kernel_shape": [3, 3]}, ("N", 4, 6, 6)),  # symbolic batch is fine
    ]
    for x_shape, w_shape, attrs, shape in accepted:
        _, add = _build(CONV_T, x_shape, w_shape, **attrs)
        assert add().shape == shape


def test_weight_element_type_must_match_input() -> None:
    message = _refused(CONV_T, X4, W4, w_dtype="float32")
    assert re.search(r"weight W", message)
    assert re.search(r"float32", message) and re.search(r"float64", message)


def test_integer_input_is_refused() -> None:
    message = _refused(CONV_T, X4, W4, x_dtype="int64", w_dtype="int64")
    assert re.search(r"input X must be a float tensor", message) and "int64" in message


def test_symbolic_spatial_axis_is_refused() -> None:
    message = _refused(CONV_T, (1, 4, "H", 4), W4)
    assert re.search(r"input X spatial axis 0\b", message) and "'H'" in message


# --------------------------------------------------------------------------- graph structure


def _two_node_graph() -> tuple[Graph, lowering.Value, lowering.Value]:
    g = Graph("g")
    x = g.add_input("x", X4, "float64")
    y = g.op(CONV_T, x, g.const(np.zeros(W4), "w"), name="up1", strides=[2, 2])
    r = g.op("Relu", y, name="act")
    g.outputs.append(r)
    g.verify()
    return g, y, r


def _one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def test_verify_refuses_use_before_definition() -> None:
    g, y, _ = _two_node_graph()
    g.nodes.reverse()
    with pytest.raises(VerificationError) as info:
        g.verify()
    message = _one_line(info)
    assert re.search(r"graph 'g'", message)
    assert re.search(rf"Relu 'act' uses '{y.name}' which is defined later", message)


def test_verify_refuses_a_value_from_another_graph() -> None:
    g, _, _ = _two_node_graph()
    other = Graph("other")
    stranger = other.add_input("s", (1, 2, 9, 9), "float64")
    with pytest.raises(VerificationError, match="value 's' does not belong to graph 'g'"):
        g.set_input(g.nodes[1], 0, stranger)  # the builder refuses it; a pass editing inputs directly would not
    g.nodes[1].inputs[0] = stranger
    with pytest.raises(VerificationError) as info:
        g.verify()
    assert re.search(r"Relu 'act' uses 's' which is defined nowhere in this graph", _one_line(info))


def test_verify_refuses_a_stale_output_shape() -> None:
    g, y, _ = _two_node_graph()
    assert y.shape == (1, 2, 9, 9)
    y.shape = (1, 2, 9, 8)
    with pytest.raises(VerificationError) as info:
        g.verify()
    message = _one_line(info)
    assert message.startswith("ConvTranspose 'up1': ")
    assert re.search(rf"output '{y.name}'", message)
    assert re.search(r"\[1,\s*2,\s*9,\s*8\]", message) and re.search(r"\[1,\s*2,\s*9,\s*9\]", message)


def test_verify_refuses_a_stale_output_dtype() -> None:
    g, y, _ = _two_node_graph()
    y.dtype = "float32"
    with pytest.raises(VerificationError) as info:
        g.verify()
    message = _one_line(info)
    assert message.startswith("ConvTranspose 'up1': ") and "f32" in message and "f64" in message


def test_verify_reruns_op_rules_after_a_hand_edit() -> None:
    g, _, _ = _two_node_graph()
    g.nodes[0].attrs["strides"] = [2, 0]
    with pytest.raises(VerificationError) as info:
        g.verify()
    assert re.search(r"^ConvTranspose 'up1': attribute 'strides' axis 1\b.*\b0\b", _one_line(info))


def test_verify_refuses_stale_input_shape_downstream() -> None:
    g, _, _ = _two_node_graph()
    g.inputs[0].shape = (1, 4, 5, 5)  # the recorded ConvTranspose output (9 x 9) no longer follows
    with pytest.raises(VerificationError) as info:
        g.verify()
    message = _one_line(info)
    assert message.startswith("ConvTranspose 'up1': ") and re.search(r"\[1,\s*2,\s*11,\s*11\]", message)


@pytest.mark.parametrize("kind", ["input", "initializer", "const-name", "node-output"])
def test_duplicate_names_are_refused(kind: str) -> None:
    g, y, r = _two_node_graph()
    with pytest.raises(VerificationError) as info:
        if kind == "input":
            g.add_input("x", (1,), "float64")
        elif kind == "initializer":
            g.add_initializer("w", np.zeros(3))
        elif kind == "const-name":
            g.add_input(y.name, (1,), "float64")
        else:
            g.add_node("Relu", [y], outputs=[r.name])
    message = _one_line(info)
    name = {"input": "x", "initializer": "w", "const-name": y.name, "node-output": r.name}[kind]
    assert re.search(rf"graph 'g'.*'{re.escape(name)}'.*defined twice", message)
    # the refused addition left nothing behind
    assert len(g.nodes) == 2 and len(g.inputs) == 1
    g.verify()


def test_verify_refuses_duplicate_registration_by_hand() -> None:
    g, _, _ = _two_node_graph()
    g.inputs.append(g.inputs[0])
    with pytest.raises(VerificationError) as info:
        g.verify()
    assert re.search(r"'x' is defined twice", _one_line(info))


@pytest.mark.parametrize("shape", [(1, -2, 3), (1, 2.5), (True, 2)])
def test_graph_input_sizes_are_checked(shape):
    with pytest.raises(lowering.VerificationError, match=r"graph input 'x' axis \d: size must be >= 0 or a name"):
        lowering.Graph().add_input("x", shape)
