"""The Python API under misuse: a mistake is one clear LoweringError line, never an internal
exception or a silently wrong result, and a refused edit leaves the graph as it was."""

from __future__ import annotations

import numpy as np
import pytest

import lowering
from lowering import Graph, InputError, LoweringError, VerificationError
from lowering.layers import parse_layer


def small_graph() -> Graph:
    graph = Graph("g")
    x = graph.add_input("x", (1, 4, 5, 5))
    w = graph.const(np.ones((4, 2, 3, 3), np.float32), "w")
    graph.outputs.append(graph.op("ConvTranspose", x, w, strides=[2, 2]))
    return graph


def test_a_refused_node_leaves_the_graph_as_it_was():
    graph = small_graph()
    x = graph.inputs[0]
    with pytest.raises(VerificationError, match="value name 's' is defined twice"):
        graph.add_node("Split", [x], {"axis": 1, "num_outputs": 2}, outputs=["s", "s"])
    other = small_graph()
    with pytest.raises(VerificationError, match=r"'before' node .* is not in graph 'g'"):
        graph.op("Relu", x, before=other.nodes[0])
    graph.verify()
    assert not graph.has_value("s") and [n.op for n in graph.nodes] == ["ConvTranspose"]
    assert [node for node, _ in x.uses] == graph.nodes


def test_any_character_in_a_name_gets_a_fresh_name():
    graph = Graph("g")
    x = graph.add_input("x\ny", (1, 2))
    y = graph.op("Relu", x, name="x\ny")
    assert y.name != x.name
    graph.verify()


@pytest.mark.parametrize(
    "entry",
    [
        lambda g: lowering.lower(g, "subpixel"),
        lambda g: lowering.evaluate(g, {"x": np.ones((1, 4, 5, 5), np.float32)}),
        lambda g: lowering.compile(g, "numpy"),
        lambda g: lowering.to_onnx(g),
    ],
    ids=["lower", "evaluate", "compile", "to_onnx"],
)
def test_every_entry_point_verifies_a_hand_built_graph(entry):
    graph = small_graph()
    graph.outputs.append(small_graph().outputs[0])  # a value of another graph
    with pytest.raises(VerificationError, match=r"graph output .* is not defined"):
        entry(graph)
    named = small_graph()
    named.outputs[0] = "y"  # a name where the value belongs
    with pytest.raises(VerificationError, match="graph output 'y' is not a Value"):
        entry(named)


def test_a_graph_parsed_from_elided_text_is_not_run_or_written():
    text = str(parse_layer("C=8 M=8 in=4x4 k=4 s=2 p=1"))  # the default text elides the weights
    assert "elided<" in text
    graph = lowering.parse_ir(text)
    for entry in (
        lambda: lowering.compile(lowering.lower(graph, "subpixel"), "numpy"),
        lambda: lowering.to_onnx(graph),
    ):
        with pytest.raises(lowering.UnsupportedError, match="were elided in the text"):
            entry()


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        (np.ones((1, 4, 5, 5), np.float32), "inputs must be a mapping of input name -> array, got ndarray"),
        ([np.ones((1, 4, 5, 5), np.float32)], "inputs must be a mapping of input name -> array, got list"),
        ({"x": [[1.0, 2.0], [3.0]]}, "input 'x' is not an array"),
        ({"x": "hello"}, "input 'x' has element type str160, not a number type"),
    ],
)
@pytest.mark.parametrize("backend", ["reference", "numpy"])
def test_inputs_that_are_not_named_arrays_are_one_line(feeds, message, backend):
    graph = small_graph()
    run = (lambda f: lowering.evaluate(graph, f)) if backend == "reference" else lowering.compile(graph, "numpy")
    with pytest.raises(InputError, match=message.replace("(", r"\(")) as info:
        run(feeds)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("strategy", "options", "message"),
    [
        ("matrix", {"budget_bytes": "big"}, "pass 'matrix': option budget_bytes must be int, got str 'big'"),
        ("auto", {"tune_margin": "x"}, "pass 'auto': option tune_margin must be float, got str 'x'"),
        ("auto", {"tune": 1}, "pass 'auto': option tune must be bool, got int 1"),
    ],
)
def test_pass_options_of_the_wrong_type_are_refused_by_name(strategy, options, message):
    with pytest.raises(LoweringError, match=message):
        lowering.lower(small_graph(), strategy, **options)
    lowering.lower(small_graph(), "matrix", budget_bytes=np.int64(1 << 20))  # a NumPy integer is an int


def test_text_with_an_attribute_given_twice_or_not_text_is_refused():
    text = lowering.lower(parse_layer("C=2 M=3 in=4x4 k=3 s=2 p=1"), "zero-insertion").format(elide_above=None)
    line = next(line for line in text.splitlines() if "strides=" in line)
    twice = text.replace(line, line.replace("strides=", "strides=[9, 9], strides=", 1))
    with pytest.raises(lowering.ParseError, match="attribute 'strides' is given twice"):
        lowering.parse_ir(twice)
    with pytest.raises(lowering.ParseError, match="takes the text form as a str, got bytes"):
        lowering.parse_ir(text.encode())


@pytest.mark.parametrize(
    ("operand", "message"),
    [
        (np.ones((3, 5, 6)), r"the operand has shape \[3, 5, 6\], expected \[2, 4, 4\]"),
        ([[1.0, 2.0], [3.0]], "the operand is not an array"),
        ("x", "not a number type"),
    ],
)
def test_an_operator_view_names_a_wrong_operand(operand, message):
    graph = parse_layer("C=2 M=3 in=4x4 k=3 s=2 p=1")
    operator = lowering.conv_operator(graph, graph.nodes[0])
    with pytest.raises(InputError, match=message):
        operator.apply(operand)


def test_a_plugin_pass_that_returns_the_wrong_thing_is_named():
    from passes import PassManager
    from passes.base import Pass

    class ReturnsGraph(Pass):
        name = "returns-graph"

        def run(self, graph):
            return graph

    with pytest.raises(LoweringError, match="pass 'returns-graph' returned Graph, not a PassResult"):
        PassManager([ReturnsGraph()]).run(small_graph())


def test_from_onnx_names_what_it_was_given():
    with pytest.raises(lowering.ModelLoadError, match=r"expected a path or an onnx\.ModelProto, got bytes"):
        lowering.from_onnx(b"\x08\x07")


def test_a_declined_lowering_names_the_node():
    graph = parse_layer("C=2 M=2 in=4x4 k=3 s=2 p=1 name=up")
    graph.nodes[0].name = "up"
    with pytest.raises(LoweringError, match=r"ConvTranspose 'up': the fused form would multiply padding taps"):
        lowering.lower(graph, "subpixel-fused", exact_only=True)


def test_constant_operands_are_checked_when_the_node_is_built():
    graph = Graph("g")
    x = graph.add_input("x", (3, 4))
    with pytest.raises(LoweringError, match=r"Gather: index 5 is out of range for axis 0 of size 3 \(valid: -3 to 2\)"):
        graph.op("Gather", x, graph.const(np.array([5])), axis=0)
    with pytest.raises(LoweringError, match=r"Reshape: input 1 \(shape\) must be int64, got float64"):
        graph.op("Reshape", x, graph.const([12.0]))
    graph.verify()


def test_from_torch_names_what_it_cannot_take():
    torch = pytest.importorskip("torch")
    module = torch.nn.ConvTranspose2d(2, 3, 3, stride=2)
    with pytest.raises(lowering.UnsupportedError, match=r"expected a torch\.nn\.Module, got function"):
        lowering.from_torch(lambda t: t * 2, torch.ones(1, 2, 4, 4))
    with pytest.raises(lowering.UnsupportedError, match=r"a torch\.Tensor or a tuple of them, got ndarray"):
        lowering.from_torch(module, np.ones((1, 2, 4, 4), np.float32))


def test_compile_names_an_option_its_backend_does_not_have():
    with pytest.raises(
        LoweringError, match=r"backend 'torch' has no option threads \(options: compile, tf32, prepack\)"
    ):
        lowering.compile(small_graph(), "torch", threads=2)


def test_a_misspelt_strategy_or_device_is_refused_even_beside_a_pipeline():
    with pytest.raises(LoweringError, match="unknown strategy 'nope'"):
        lowering.lower(small_graph(), "nope", pipeline="dce")
    with pytest.raises(LoweringError, match="auto: device must be one of cpu, cuda, got 'tpu'"):
        lowering.lower(small_graph(), "auto", device="tpu")


@pytest.mark.parametrize("backend", ["numpy", "torch", "onnx"])
def test_every_backend_computes_in_the_graph_type_whatever_float_type_comes_in(backend):
    graph = small_graph()
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 4, 5, 5))}  # float64 into a float32 graph
    out = lowering.compile(graph, backend)(feeds)
    assert out[graph.outputs[0].name].dtype == np.float32


def test_graph_edits_check_what_they_are_given():
    graph = small_graph()
    node = graph.nodes[0]
    other = small_graph()
    with pytest.raises(VerificationError, match="input index 5 is out of range"):
        graph.set_input(node, 5, None)
    with pytest.raises(VerificationError, match="does not belong to graph 'g'"):
        graph.set_input(node, 0, other.inputs[0])
    with pytest.raises(VerificationError, match="cannot remove a node that is not in graph 'g'"):
        graph.remove_node(other.nodes[0])
    graph.verify()


def test_as_operator_dims_must_be_sizes():
    graph = parse_layer("N=1 C=2 M=2 in=4x4 k=3 s=2")
    for dims in ({"N": -1}, {"N": "x"}):
        with pytest.raises(InputError, match=r"as_operator: dims\['N'\] must be an integer >= 0"):
            lowering.as_operator(graph, dims=dims)


def test_names_must_be_text():
    with pytest.raises(VerificationError, match="a graph's name must be a str, got NoneType"):
        Graph(None)
    graph = Graph("g")
    for name in (5, ""):
        with pytest.raises(VerificationError, match="a value name must be a non-empty str"):
            graph.add_input(name, (1, 2))
    graph.verify()
