"""The text form: print -> parse -> print is the identity, full-precision text keeps every bit,
elided text keeps types but refuses to run, and parse errors are one line with a line number.

Expected values come from outside the printer and parser: the graph the text was printed from
(evaluated by the reference evaluator on both sides), bit patterns of every float16 value, a golden
file checked by eye, and a ConvTranspose output worked out by hand.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line

from lowering import Graph, ParseError, UnsupportedError, evaluate, examples, parse_ir

GOLDEN = Path(__file__).parent / "golden"


# ----------------------------------------------------------------- graphs to print


def core_small() -> Graph:
    """ConvTranspose with eight inline weights and a bias, then Relu; the golden-text graph."""
    g = Graph("core_small")
    x = g.add_input("x", ("N", 2, 3, 3))
    w = g.add_initializer("w", (np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2) - 3.5) / 4)
    b = g.add_initializer("b", np.array([0.25], np.float32))
    t = g.op(
        "ConvTranspose", x, w, b, name="/up/ConvTranspose", strides=[2, 2], pads=[0, 1, 1, 0], output_padding=[1, 0]
    )
    y = g.op("Relu", t, name="relu")
    g.rename(y, "y")
    g.outputs.append(y)
    return g


def feature_graph() -> Graph:
    """Every corner of the syntax at once: quoted names, symbolic dims (one that needs quotes),
    a missing optional input, multi-output Split, float / string / tensor attributes, and constants
    of several element types holding inf, nan and -0.0."""
    rng = np.random.default_rng(0)
    g = Graph("/model/graph")
    x = g.add_input("/model/up/input.1", ("N", 4, 3, 3))
    side = g.add_input("side input", ("batch size", 3), "float64")
    w = g.add_initializer("/model/w:0", rng.standard_normal((4, 2, 2, 2)).astype(np.float32))
    ct = g.add_node(
        "ConvTranspose",
        [x, w, None],
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        outputs=["/model/up/ConvTranspose_output_0"],
        name="/model/up/ConvTranspose",
    ).outputs[0]
    sizes = g.add_initializer("split sizes", np.array([1, 1], np.int64))
    first, second = g.add_node("Split", [ct, sizes], {"axis": 1}, outputs=["a b", 'c"d'], name="split").outputs
    act = g.op("LeakyRelu", first, alpha=0.2, name="leaky")
    hi = g.add_initializer("hi", np.array(0.5, np.float32))
    clipped = g.add_node("Clip", [second, None, hi], outputs=["clipped"], name="clip").outputs[0]
    special16 = np.array([[np.inf, -np.inf], [np.nan, -0.0]], np.float16)
    c16 = g.add_node("Constant", [], {"value": special16}, outputs=["c16"], name="const16").outputs[0]
    c64 = g.add_initializer("c64", np.array([1e-300, -0.0, np.inf, -np.inf, np.nan, 0.1, 1 / 3, 5e-324]))
    ci = g.add_initializer("ci", np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0, -1], np.int64))
    ci32 = g.add_node("Constant", [], {"value": np.array([-7, 2**31 - 1], np.int32)}, outputs=["ci32"]).outputs[0]
    cb = g.add_initializer("cb", np.array([True, False, True]))
    c8 = g.add_initializer("c8", np.array([-128, 127], np.int8))
    cu8 = g.add_initializer("cu8", np.array([0, 255], np.uint8))
    f32 = g.add_initializer("f32", np.array([3.4028235e38, 1e-45, -1.5, np.float32(0.1)], np.float32))
    side_act = g.op("Relu", side, name="side_relu")
    g.outputs += [act, clipped, c16, c64, ci, ci32, cb, c8, cu8, f32, side_act]
    return g


def feature_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "/model/up/input.1": rng.standard_normal((2, 4, 3, 3)).astype(np.float32),
        "side input": rng.standard_normal((5, 3)),
    }


def opaque_op_text() -> str:
    """An op of another domain, without a definition: carried through with its declared types."""
    return (
        "graph @g(%x: f32[2]) {\n"
        '  %y: f32[2], %z: ?[*] = com.acme::Foo(%x, none) {k=1, s="a"} @foo\n'
        "  %w: f32[2] = Relu(%y)\n"
        "  return %w, %z\n"
        "}\n"
    )


GRAPHS = {
    "dcgan": examples.dcgan,
    "unet-decoder": examples.unet_decoder,
    "vocoder": examples.vocoder,
    "dcgan-batch-3": lambda: examples.dcgan(3),
    "core-small": core_small,
    "features": feature_graph,
}


def _bits(array: np.ndarray) -> np.ndarray:
    """The raw bytes of each element, so -0.0 and 0.0 differ and equal floats compare equal."""
    array = np.ascontiguousarray(array)
    return array.view(f"u{array.dtype.itemsize}") if array.dtype.kind == "f" else array


def assert_same_data(got: np.ndarray, want: np.ndarray) -> None:
    """Bitwise equal: -0.0 is not 0.0, and every NaN keeps its sign and payload."""
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(_bits(got), _bits(want))


# ----------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", list(GRAPHS))
def test_print_parse_print_is_identity(name):
    graph = GRAPHS[name]()
    text = str(graph)
    again = parse_ir(text)
    assert str(again) == text
    assert [v.name for v in again.inputs] == [v.name for v in graph.inputs]
    assert [v.name for v in again.outputs] == [v.name for v in graph.outputs]
    for value in graph.values():
        assert again.value(value.name).type_str() == value.type_str(), value.name


@pytest.mark.parametrize("name", ["unet-decoder", "vocoder", "core-small", "features"])
def test_full_text_is_identity_and_keeps_every_bit(name):
    graph = GRAPHS[name]()
    text = graph.format(elide_above=None)
    again = parse_ir(text)
    assert again.format(elide_above=None) == text
    assert str(again) == str(graph)  # the elided form agrees too: same digests
    for key, value in graph.initializers.items():
        assert_same_data(again.initializers[key].const, value.const)
    for node, parsed in zip(graph.nodes, again.nodes, strict=True):
        assert (parsed.op, parsed.name, sorted(parsed.attrs)) == (node.op, node.name, sorted(node.attrs))
        for key, value in node.attrs.items():
            if isinstance(value, np.ndarray):
                assert_same_data(parsed.attrs[key], value)
            else:
                assert parsed.attrs[key] == value and type(parsed.attrs[key]) is type(value)


def _inputs_for(graph: Graph) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    out = {}
    for value in graph.inputs:
        shape = tuple(d if isinstance(d, int) else 2 for d in value.shape)
        out[value.name] = rng.standard_normal(shape).astype(value.dtype)
    return out


@pytest.mark.parametrize("name", ["unet-decoder", "vocoder", "core-small", "features"])
def test_full_text_evaluates_exactly_like_the_original(name):
    graph = GRAPHS[name]()
    again = parse_ir(graph.format(elide_above=None))
    feeds = feature_inputs() if name == "features" else _inputs_for(graph)
    want = evaluate(graph, feeds)
    got = evaluate(again, feeds)
    assert list(got) == list(want)
    for key in want:
        assert_same_data(got[key], want[key])


@pytest.mark.slow
def test_dcgan_full_text_round_trip():
    graph = examples.dcgan()
    text = graph.format(elide_above=None)
    again = parse_ir(text)
    assert again.format(elide_above=None) == text
    feeds = _inputs_for(graph)
    np.testing.assert_array_equal(evaluate(again, feeds)["image"], evaluate(graph, feeds)["image"])


def test_every_float16_and_random_float32_float64_bit_pattern_round_trips():
    patterns = {
        np.float16: np.arange(2**16, dtype=np.uint16),
        np.float32: np.random.default_rng(3).integers(0, 2**32, 50_000, dtype=np.uint64).astype(np.uint32),
        np.float64: np.random.default_rng(4).integers(0, 2**64, 20_000, dtype=np.uint64),
    }
    for dtype, bits in patterns.items():
        graph = Graph("bits")
        graph.outputs.append(graph.add_initializer("c", bits.view(dtype)))
        parsed = parse_ir(graph.format(elide_above=None)).initializers["c"].const
        assert_same_data(parsed, bits.view(dtype))


def test_negative_zero_and_specials_print_as_expected():
    graph = Graph("specials")
    graph.outputs.append(graph.add_initializer("c", np.array([-0.0, np.inf, -np.inf, np.nan, 1.0], np.float32)))
    assert "dense<[-0.0, inf, -inf, nan, 1.0]>" in str(graph)


def test_nans_with_a_sign_or_payload_print_as_hex_bits_and_parse_back():
    bits = np.array([0x7FC00000, 0xFFC00000, 0x7FC00001, 0x7F800001], np.uint32)  # nan, -nan, payloads
    graph = Graph("nans")
    graph.outputs.append(graph.add_initializer("c", bits.view(np.float32)))
    text = str(graph)
    assert "dense<[nan, 0xFFC00000, 0x7FC00001, 0x7F800001]>" in text
    np.testing.assert_array_equal(parse_ir(text).initializers["c"].const.view(np.uint32), bits)


@pytest.mark.parametrize(
    ("dtype", "element", "message"),
    [("f32", "0x7FC000011", "wider than float32"), ("i32", "0x7FC00001", "only for float tensors")],
)
def test_bad_hex_elements_are_refused(dtype, element, message):
    text = f"graph @g() {{\n  %c: {dtype}[1] = initializer dense<[{element}]>\n  return %c\n}}\n"
    with pytest.raises(ParseError, match=message) as info:
        parse_ir(text)
    assert one_line(str(info.value))


def test_opaque_op_of_another_domain_round_trips():
    text = opaque_op_text()
    graph = parse_ir(text)
    assert str(graph) == text
    assert graph.nodes[0].domain == "com.acme" and graph.value("z").shape is None
    with pytest.raises(UnsupportedError, match="Foo") as info:
        evaluate(graph, {"x": np.zeros(2, np.float32)})
    assert one_line(str(info.value))


def test_attribute_order_does_not_change_the_text():
    def build(attrs):
        g = Graph("order")
        x = g.add_input("x", (1, 2, 3, 3))
        w = g.add_initializer("w", np.ones((2, 1, 2, 2), np.float32))
        g.outputs.append(g.add_node("ConvTranspose", [x, w], attrs, outputs=["y"]).outputs[0])
        return str(g)

    forward = {"strides": [2, 2], "pads": [0, 0, 1, 1], "dilations": [1, 1], "group": 1}
    assert build(forward) == build(dict(reversed(list(forward.items()))))
    assert "{dilations=[1, 1], group=1, pads=[0, 0, 1, 1], strides=[2, 2]}" in build(forward)


def test_quoted_symbolic_dims_bind_at_run_time():
    graph = parse_ir(feature_graph().format(elide_above=None))
    assert '%"side input": f64["batch size",3]' in str(graph)
    assert graph.value("side input").shape == ("batch size", 3)
    assert graph.outputs[-1].shape == ("batch size", 3)
    side = feature_inputs()["side input"]
    np.testing.assert_array_equal(evaluate(graph, feature_inputs())[graph.outputs[-1].name], np.maximum(side, 0))


# ----------------------------------------------------------------- elided constants


def test_elided_text_keeps_types_and_refuses_to_run():
    graph = examples.unet_decoder()
    text = str(graph)
    assert "elided<" in text
    parsed = parse_ir(text)
    for value in graph.values():
        assert parsed.value(value.name).type_str() == value.type_str()
    assert parsed.format(elide_above=None) == text  # no data to print: it stays elided, never invented
    with pytest.raises(UnsupportedError) as info:
        evaluate(parsed, _inputs_for(graph))
    message = str(info.value)
    assert one_line(message) and "up_w" in message and "conv_w" in message and "elide" in message


def test_elide_threshold():
    graph = Graph("threshold")
    graph.outputs += [
        graph.add_initializer("small", np.arange(4, dtype=np.float32)),
        graph.add_initializer("big", np.arange(5, dtype=np.float32)),
    ]
    text = graph.format(elide_above=4)
    assert "%small: f32[4] = initializer dense<[0.0, 1.0, 2.0, 3.0]>" in text
    assert "%big: f32[5] = initializer elided<" in text


# ----------------------------------------------------------------- golden text


def test_golden_core_small():
    golden = (GOLDEN / "core_small.ir").read_text()
    assert str(core_small()) == golden
    assert str(parse_ir(golden)) == golden


def test_golden_core_small_evaluates_to_hand_derived_values():
    """One input pixel per channel, so every output is a single weight plus the bias, then Relu.

    Channel 0 pixel (0, 0) lands at o = 2·i + κ − p_begin with p_begin = (0, 1): taps κ = (0, 1)
    and (1, 1) reach (0, 0) and (1, 0) with weights −0.625 and −0.125; taps with κ_w = 0 fall
    off the left edge. Channel 1 pixel (2, 2) reaches (4, 3), (4, 4), (5, 3), (5, 4) with weights
    0.125, 0.375, 0.625, 0.875. Every other output is the bias 0.25.
    """
    graph = parse_ir((GOLDEN / "core_small.ir").read_text())
    x = np.zeros((1, 2, 3, 3), np.float32)
    x[0, 0, 0, 0] = 1.0
    x[0, 1, 2, 2] = 1.0
    want = np.full((1, 1, 6, 5), 0.25)
    want[0, 0, 0, 0] = max(0.25 - 0.625, 0.0)
    want[0, 0, 1, 0] = 0.25 - 0.125
    want[0, 0, 4, 3], want[0, 0, 4, 4] = 0.25 + 0.125, 0.25 + 0.375
    want[0, 0, 5, 3], want[0, 0, 5, 4] = 0.25 + 0.625, 0.25 + 0.875
    np.testing.assert_array_equal(evaluate(graph, {"x": x})["y"], want)


# ----------------------------------------------------------------- parse errors

BASE = """graph @g(%x: f32[1,1,3,3]) {
  %w: f32[1,1,2,2] = initializer dense<[1.0, 2.0, 3.0, 4.0]>
  %y: f32[1,1,4,4] = ConvTranspose(%x, %w)
  return %y
}
"""

# (id, text, line of the error, a fragment of the message)
PARSE_ERRORS = [
    ("unknown-input-type", BASE.replace("%x: f32", "%x: q32"), 1, "element type"),
    ("unknown-initializer-type", BASE.replace("%w: f32", "%w: f31"), 2, "element type"),
    ("undefined-value", BASE.replace("(%x, %w)", "(%x, %v)"), 3, "'%v'"),
    ("declared-shape-disagrees", BASE.replace("%y: f32[1,1,4,4]", "%y: f32[1,1,5,4]"), 3, "f32[1,1,4,4]"),
    ("declared-dtype-disagrees", BASE.replace("%y: f32[1,1,4,4]", "%y: f64[1,1,4,4]"), 3, "f64[1,1,4,4]"),
    ("undefined-return", BASE.replace("return %y", "return %z"), 4, "'%z'"),
    ("too-few-elements", BASE.replace("3.0, 4.0", "3.0"), 2, "needs 4 elements"),
    ("bad-element", BASE.replace("3.0, 4.0", "3.0, abc"), 2, "abc"),
    (
        "int-out-of-range",
        BASE.replace("dense<[1.0, 2.0, 3.0, 4.0]>", "dense<[1, 2, 3, 4]>\n  %c: i8[1] = initializer dense<[300]>"),
        3,
        "int8",
    ),
    (
        "int-overflow",
        BASE.replace("%w: f32[1,1,2,2]", "%c: i64[1] = initializer dense<[99999999999999999999]>\n  %w: f32[1,1,2,2]"),
        2,
        "element",
    ),
    ("fractional-dim", BASE.replace("f32[1,1,3,3]", "f32[1,1.5,3,3]"), 1, "dimension"),
    ("bad-character", BASE.replace("%x, %w", "%x; %w"), 3, "';'"),
    ("trailing-text", BASE + "junk\n", 6, "end of text"),
    ("empty", "", 1, "'graph'"),
    ("bad-attribute", BASE.replace("(%x, %w)", "(%x, %w) {strides=[2, 2, 2]}"), 3, "strides"),
    ("unknown-attribute", BASE.replace("(%x, %w)", "(%x, %w) {colour=1}"), 3, "colour"),
    ("defined-twice", BASE.replace("%w: f32[1,1,2,2]", "%x: f32[1,1,2,2]").replace("%w)", "%x)"), 2, "twice"),
    ("missing-brace", BASE.replace("}\n", ""), 4, "'}'"),
    ("comment-lines-count", "// a comment\n// another\n" + BASE.replace("(%x, %w)", "(%x, %v)"), 5, "'%v'"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), [c[1:] for c in PARSE_ERRORS], ids=[c[0] for c in PARSE_ERRORS])
def test_parse_error_is_one_line_with_line_number(text, line, fragment):
    with pytest.raises(ParseError) as info:
        parse_ir(text)
    message = str(info.value)
    assert one_line(message)
    assert message.startswith(f"line {line}:"), message
    assert fragment in message


def test_base_text_of_the_error_cases_parses():
    """The error cases above are one edit away from a valid graph."""
    graph = parse_ir(BASE)
    x = np.zeros((1, 1, 3, 3), np.float32)
    x[0, 0, 1, 1] = 1.0
    want = np.zeros((1, 1, 4, 4))
    want[0, 0, 1:3, 1:3] = [[1.0, 2.0], [3.0, 4.0]]
    np.testing.assert_array_equal(evaluate(graph, {"x": x})["y"], want)


def test_parsing_is_linear_in_the_text():
    """Half a million elements (6 MB of text) parse in about a second; a tokenizer that recounts
    lines from the start of the text for every token takes minutes."""
    graph = Graph("big")
    data = np.random.default_rng(5).standard_normal(500_000).astype(np.float32)
    graph.outputs.append(graph.add_initializer("c", data))
    text = graph.format(elide_above=None)
    start = time.perf_counter()
    parsed = parse_ir(text)
    assert time.perf_counter() - start < 30.0
    assert_same_data(parsed.initializers["c"].const, data)
