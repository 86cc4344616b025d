"""Pass infrastructure (registry, options, pipelines, the verifying manager) and the supporting passes
canonicalize, fold-constants and dce.

Values are checked against `lowering.evaluate` of the graph before the pass (the float64 reference
of the definitions); padding rules against numbers worked out by hand from the ONNX operator page.
"""

from __future__ import annotations

import dataclasses
import io
import re
from dataclasses import dataclass

import numpy as np
import pytest

import passes
from lowering import Graph, LoweringError, VerificationError, evaluate, lower, parse_ir
from passes import PASSES, Pass, PassManager, PassResult, get_pass, parse_pipeline, register_pass
from passes.canonicalize import Canonicalize
from passes.dce import DeadCodeElimination
from passes.fold_constants import FoldConstants

KEBAB = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


def conv_transpose_graph(
    x_shape=(1, 2, 3, 3), w_shape=(2, 3, 3, 3), *, bias=True, dtype="float64", seed=0, **attrs
) -> tuple[Graph, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    graph = Graph("g")
    x = graph.add_input("x", x_shape, dtype)
    w = graph.add_initializer("w", rng.standard_normal(w_shape).astype(dtype))
    inputs = [x, w]
    if bias:
        channels = w_shape[1] * attrs.get("group", 1)
        inputs.append(graph.add_initializer("b", rng.standard_normal(channels).astype(dtype)))
    y = graph.add_node("ConvTranspose", inputs, attrs, outputs=["y"], name="up").outputs[0]
    graph.outputs.append(y)
    return graph, {"x": rng.standard_normal(x_shape).astype(dtype)}


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


# --------------------------------------------------------------------------- registry and options


def test_registry_names_are_kebab_case() -> None:
    expected = {"canonicalize", "fold-constants", "dce", "zero-insertion", "matrix", "col2im", "subpixel", "auto"}
    assert expected <= set(PASSES)
    for name, cls in PASSES.items():
        assert KEBAB.fullmatch(name), name
        assert cls.name == name
        assert issubclass(cls, Pass)
        assert dataclasses.is_dataclass(cls)
    assert set(passes.STRATEGIES) == {"zero-insertion", "matrix", "col2im", "subpixel", "subpixel-fused", "auto"}


def test_get_pass_sets_options_from_dataclass_fields() -> None:
    matrix = get_pass("matrix", budget_bytes=1234, sparse="no")
    assert (matrix.budget_bytes, matrix.sparse) == (1234, "no")
    assert set(PASSES["matrix"].options()) == {"budget_bytes", "sparse"}
    assert set(PASSES["subpixel"].options()) >= {"form"}
    assert get_pass("subpixel", form="per-phase").form == "per-phase"
    assert get_pass("fold-constants", max_elements=7).max_elements == 7
    for name, cls in PASSES.items():
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        assert set(cls.options()) == fields, name
        assert isinstance(get_pass(name), cls)


def test_auto_state_is_not_an_option() -> None:
    """auto's per-node decisions are its state: neither settable nor printed as an option."""
    options = {"backend", "matrix_budget", "tune", "device", "tune_seconds", "tune_margin", "opset"}
    assert set(PASSES["auto"].options()) == options
    with pytest.raises(LoweringError):
        get_pass("auto", decisions=[])
    assert "decisions" not in str(get_pass("auto"))


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("dce", {"budget_bytes": 1}, "pass 'dce' has no option budget_bytes"),
        ("matrix", {"budget": 1}, "pass 'matrix' has no option budget"),
        ("subpixel", {"forms": "fused", "zzz": 1}, "has no option forms, zzz"),
    ],
)
def test_unknown_options_are_refused_in_one_line(name: str, options: dict, expected: str) -> None:
    with pytest.raises(LoweringError) as info:
        get_pass(name, **options)
    assert expected in one_line(info)


def test_unknown_pass_is_refused() -> None:
    with pytest.raises(LoweringError) as info:
        get_pass("no-such-pass")
    assert "unknown pass 'no-such-pass'" in one_line(info)
    with pytest.raises(LoweringError) as info:
        parse_pipeline("canonicalize,no-such-pass")
    assert "no-such-pass" in one_line(info)


def test_lower_refuses_options_no_pass_takes() -> None:
    graph, _ = conv_transpose_graph(strides=[2, 2])
    with pytest.raises(LoweringError) as info:
        lower(graph, "col2im", budget_bytes=10)
    assert "budget_bytes" in one_line(info)


@pytest.mark.parametrize("name", ["Bad", "snake_case", "two words", "-lead", "trail-", "double--dash", ""])
def test_register_pass_refuses_names_that_are_not_kebab_case(name: str) -> None:
    @dataclass
    class Named(Pass):
        pass

    Named.name = name
    with pytest.raises(ValueError, match="kebab-case"):
        register_pass(Named)
    assert name not in PASSES


def test_parse_pipeline() -> None:
    pipeline = parse_pipeline("canonicalize,zero-insertion,fold-constants,dce")
    assert [p.name for p in pipeline] == ["canonicalize", "zero-insertion", "fold-constants", "dce"]
    assert [type(p) for p in pipeline] == [PASSES[p.name] for p in pipeline]
    spaced = parse_pipeline(" canonicalize , matrix ,dce, ", {"budget_bytes": 99, "sparse": "yes"})
    assert [p.name for p in spaced] == ["canonicalize", "matrix", "dce"]
    assert (spaced[1].budget_bytes, spaced[1].sparse) == (99, "yes")
    for text, message in (("", "is empty"), ("dce,,dce", "no pass name at position 2 of 3"), (",", "is empty")):
        with pytest.raises(LoweringError, match=message):
            parse_pipeline(text)


def test_a_custom_pipeline_through_lower() -> None:
    graph, feeds = conv_transpose_graph(strides=[2, 2], pads=[1, 0, 0, 1])
    lowered = lower(graph, pipeline="canonicalize,col2im,fold-constants,dce")
    assert not lowered.nodes_of("ConvTranspose") and lowered.nodes_of("Col2Im")
    np.testing.assert_allclose(evaluate(lowered, feeds)["y"], evaluate(graph, feeds)["y"], rtol=1e-12, atol=1e-12)
    only = lower(graph, pipeline="canonicalize")
    assert len(only.nodes_of("ConvTranspose")) == 1


# --------------------------------------------------------------------------- the manager


@dataclass
class CorruptGraph(Pass):
    """A deliberately broken pass: it leaves the graph inconsistent in the way `how` says."""

    name = "test-corrupt-graph"
    how: str = "shape"

    def run(self, graph: Graph) -> PassResult:
        node = graph.nodes[-1]
        if self.how == "shape":  # an output type its op would not infer
            node.outputs[0].shape = (7, 7)
        elif self.how == "dangling":  # a node dropped from the list while its output is still used
            graph.nodes.remove(graph.nodes[0])
        elif self.how == "uses":  # an input swapped behind the graph's back: use lists go stale
            node.inputs[0] = graph.inputs[0]
        return PassResult(graph, True)


@pytest.fixture
def corrupt_pass():
    register_pass(CorruptGraph)
    yield CorruptGraph
    PASSES.pop(CorruptGraph.name, None)


def relu_chain() -> Graph:
    graph = Graph("chain")
    x = graph.add_input("x", (1, 2, 3), "float32")
    h = graph.op("Relu", x, name="first")
    y = graph.op("Sigmoid", h, name="second")
    graph.outputs.append(y)
    return graph


@pytest.mark.parametrize("how", ["shape", "dangling", "uses"])
def test_manager_reports_the_pass_that_broke_the_graph(corrupt_pass, how: str) -> None:
    manager = PassManager([get_pass("dce"), get_pass("test-corrupt-graph", how=how), get_pass("dce")])
    with pytest.raises(VerificationError) as info:
        manager.run(relu_chain())
    assert one_line(info).startswith("after pass 'test-corrupt-graph': ")


@pytest.mark.parametrize("how", ["shape", "dangling", "uses"])
def test_manager_without_verification_lets_it_through(corrupt_pass, how: str) -> None:
    result = PassManager([get_pass("test-corrupt-graph", how=how)], verify=False).run(relu_chain())
    assert result.modified
    with pytest.raises(VerificationError):  # the graph really is broken: only the check was skipped
        result.graph.verify()


def test_lower_names_the_broken_pass_of_a_pipeline(corrupt_pass) -> None:
    graph, _ = conv_transpose_graph(strides=[2, 2])
    with pytest.raises(VerificationError) as info:
        lower(graph, pipeline="canonicalize,zero-insertion,test-corrupt-graph,dce")
    assert "after pass 'test-corrupt-graph'" in one_line(info)
    lower(graph, pipeline="canonicalize,zero-insertion,test-corrupt-graph", verify=False)


def test_print_after_all_writes_the_ir_after_each_pass() -> None:
    graph, feeds = conv_transpose_graph(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])
    stream = io.StringIO()
    pipeline = parse_pipeline("canonicalize,zero-insertion,fold-constants,dce")
    result = PassManager(pipeline, print_after_all=True, stream=stream).run(graph.copy())
    text = stream.getvalue()
    headers = re.findall(r"^// ----- IR after (\S+?)(?:\(.*\))?( \(unchanged\))?$", text, flags=re.M)
    assert [h[0] for h in headers] == ["canonicalize", "zero-insertion", "fold-constants", "dce"]
    assert headers[0][1] == ""  # canonicalize wrote the defaults out
    blocks = re.split(r"^// ----- IR after .*\n", text, flags=re.M)[1:]
    assert len(blocks) == 4
    assert "ConvTranspose" in blocks[0] and "ConvTranspose" not in blocks[1]
    assert "Flip" in blocks[1] and "Flip" not in blocks[2]  # folded into a constant
    assert blocks[-1] == result.graph.format()
    np.testing.assert_allclose(evaluate(result.graph, feeds)["y"], evaluate(graph, feeds)["y"], rtol=1e-12, atol=1e-12)


def test_print_after_all_dumps_parse_back() -> None:
    """Each dump is a complete graph in the text form (large constants elided)."""
    graph, _ = conv_transpose_graph(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])
    stream = io.StringIO()
    pipeline = parse_pipeline("canonicalize,zero-insertion,fold-constants,dce")
    PassManager(pipeline, print_after_all=True, stream=stream).run(graph.copy())
    blocks = re.split(r"^// ----- IR after .*\n", stream.getvalue(), flags=re.M)[1:]
    assert len(blocks) == 4
    for block in blocks:
        parsed = parse_ir(block)
        parsed.verify()
        assert parsed.format() == block


def test_print_after_all_defaults_to_stderr(capsys) -> None:
    graph, _ = conv_transpose_graph(strides=[2, 2])
    lower(graph, "col2im", print_after_all=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("// ----- IR after ") == 4
    assert "// ----- IR after col2im" in captured.err


def test_pass_results_say_whether_they_changed_anything() -> None:
    graph, _ = conv_transpose_graph(strides=[2, 2])
    assert Canonicalize().run(graph).modified
    assert not Canonicalize().run(graph).modified
    assert not DeadCodeElimination().run(graph).modified
    assert not FoldConstants().run(graph).modified
    assert not get_pass("col2im").run(relu_chain()).modified  # no ConvTranspose to lower


# --------------------------------------------------------------------------- canonicalize

# (attributes, x spatial, kernel, strides, expected pads, expected output spatial); worked out by hand:
# full = s·(i − 1) + a + (k − 1)·d + 1; SAME target i·s, total = full − target; SAME_UPPER puts the
# odd unit at the end, SAME_LOWER (and output_shape without auto_pad) at the beginning.
CANONICAL_CASES = {
    "same-upper": ({"auto_pad": "SAME_UPPER"}, (3, 4), (3, 4), (2, 3), [0, 0, 1, 1], (6, 12)),
    "same-lower": ({"auto_pad": "SAME_LOWER"}, (3, 4), (3, 4), (2, 3), [1, 1, 0, 0], (6, 12)),
    "same-upper-negative": ({"auto_pad": "SAME_UPPER"}, (3, 2), (1, 2), (3, 2), [-1, 0, -1, 0], (9, 4)),
    "valid": ({"auto_pad": "VALID"}, (3, 3), (3, 2), (2, 2), [0, 0, 0, 0], (7, 6)),
    "output-shape": ({"output_shape": [6, 9]}, (3, 4), (3, 3), (2, 2), [1, 0, 0, 0], (6, 9)),
    "output-shape-larger": ({"output_shape": [10, 9]}, (3, 4), (3, 3), (2, 2), [-1, 0, -2, 0], (10, 9)),
    "output-shape-same-upper": (
        {"output_shape": [6, 9], "auto_pad": "SAME_UPPER"},
        (3, 4),
        (3, 3),
        (2, 2),
        [0, 0, 1, 0],
        (6, 9),
    ),
    "output-shape-with-nc": ({"output_shape": [2, 3, 5, 8]}, (3, 4), (3, 3), (2, 2), [1, 1, 1, 0], (5, 8)),
}


@pytest.mark.parametrize("label", list(CANONICAL_CASES))
def test_canonicalize_makes_padding_explicit(label: str) -> None:
    attrs, spatial, kernel, strides, pads, out = CANONICAL_CASES[label]
    graph, feeds = conv_transpose_graph((2, 2, *spatial), (2, 3, *kernel), strides=list(strides), **attrs)
    want = evaluate(graph, feeds)["y"]
    assert want.shape == (2, 3, *out)
    result = Canonicalize().run(graph)
    assert result.modified
    graph.verify()
    node = graph.nodes_of("ConvTranspose")[0]
    assert "auto_pad" not in node.attrs and "output_shape" not in node.attrs
    assert node.attrs["pads"] == pads
    assert node.attrs["strides"] == list(strides)
    assert node.attrs["dilations"] == [1, 1]
    assert node.attrs["kernel_shape"] == list(kernel)
    assert node.attrs["output_padding"] == [0, 0]
    assert node.attrs["group"] == 1
    assert graph.outputs[0].shape == (2, 3, *out)
    np.testing.assert_array_equal(evaluate(graph, feeds)["y"], want)


def test_canonicalize_fills_defaults_and_is_idempotent() -> None:
    graph, feeds = conv_transpose_graph((1, 4, 3), (4, 1, 2), group=2)
    want = evaluate(graph, feeds)["y"]
    assert Canonicalize().run(graph).modified
    node = graph.nodes_of("ConvTranspose")[0]
    assert node.attrs == {
        "dilations": [1],
        "group": 2,
        "kernel_shape": [2],
        "output_padding": [0],
        "pads": [0, 0],
        "strides": [1],
    }
    assert not Canonicalize().run(graph).modified
    np.testing.assert_array_equal(evaluate(graph, feeds)["y"], want)


@pytest.mark.parametrize(
    ("auto_pad", "spatial", "pads"),
    [("SAME_UPPER", (5, 4), [1, 0, 1, 1]), ("SAME_LOWER", (5, 4), [1, 1, 1, 0]), ("VALID", (5, 4), [0, 0, 0, 0])],
)
def test_canonicalize_conv_too(auto_pad: str, spatial, pads) -> None:
    """Conv: SAME output ceil(i/s), total = max(0, (o − 1)·s + k − i); i=5: o=3, total 2; i=4: o=2, total 1."""
    rng = np.random.default_rng(1)
    graph = Graph("c")
    x = graph.add_input("x", (1, 2, *spatial), "float64")
    w = graph.add_initializer("w", rng.standard_normal((3, 2, 3, 3)))
    graph.outputs.append(graph.op("Conv", x, w, auto_pad=auto_pad, strides=[2, 2]))
    feeds = {"x": rng.standard_normal((1, 2, *spatial))}
    want = evaluate(graph, feeds)
    Canonicalize().run(graph)
    graph.verify()
    node = graph.nodes_of("Conv")[0]
    assert "auto_pad" not in node.attrs and node.attrs["pads"] == pads
    got = evaluate(graph, feeds)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_canonicalize_leaves_other_nodes_alone() -> None:
    graph = relu_chain()
    before = str(graph)
    assert not Canonicalize().run(graph).modified
    assert str(graph) == before


# --------------------------------------------------------------------------- fold-constants


def test_fold_constants_evaluates_constant_subgraphs_once() -> None:
    graph = Graph("f")
    x = graph.add_input("x", (3, 2), "float32")
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    c = graph.add_initializer("c", data)
    t = graph.op("Transpose", c, perm=[1, 0])
    t = graph.op("Sub", t, graph.add_initializer("one", np.ones((3, 2), np.float32)))
    y = graph.op("Add", x, t)
    graph.outputs.append(y)
    feeds = {"x": np.ones((3, 2), np.float32)}
    want = evaluate(graph, feeds)
    result = FoldConstants().run(graph)
    assert result.modified
    graph.verify()
    assert [n.op for n in graph.nodes] == ["Add"]
    folded = graph.constant_value(graph.nodes[0].inputs[1])
    assert folded.dtype == np.float32
    np.testing.assert_array_equal(folded, data.T - 1)
    np.testing.assert_array_equal(evaluate(graph, feeds)[y.name], want[y.name])
    assert not FoldConstants().run(graph).modified


def test_fold_constants_respects_max_elements() -> None:
    graph = Graph("f")
    x = graph.add_input("x", (3, 2), "float32")
    c = graph.add_initializer("c", np.ones((2, 3), np.float32))
    graph.outputs.append(graph.op("Add", x, graph.op("Transpose", c, perm=[1, 0])))
    assert not FoldConstants(max_elements=5).run(graph).modified
    assert [n.op for n in graph.nodes] == ["Transpose", "Add"]
    assert FoldConstants(max_elements=6).run(graph).modified


def test_fold_constants_keeps_ops_on_graph_inputs() -> None:
    graph = Graph("f")
    w = graph.add_input("w", (2, 3), "float32")
    graph.outputs.append(graph.op("Sigmoid", graph.op("Transpose", w, perm=[1, 0])))
    assert not FoldConstants().run(graph).modified
    assert [n.op for n in graph.nodes] == ["Transpose", "Sigmoid"]


@pytest.mark.parametrize("strategy", ["zero-insertion", "subpixel", "col2im"])
def test_weight_rearrangements_fold_only_for_constant_weights(strategy: str) -> None:
    """After lowering, no Flip/Transpose/Reshape/Slice acts on a constant W; on a W input they stay."""
    graph, feeds = conv_transpose_graph((1, 2, 3, 3), (2, 3, 3, 3), strides=[2, 2], pads=[1, 1, 1, 1])
    lowered = lower(graph, strategy)
    weight_ops = {"Flip", "Transpose", "Reshape", "Slice", "InteriorPad", "Pad", "Concat"}
    for node in lowered.nodes:
        if node.op in weight_ops:
            assert lowered.constant_value(node.inputs[0]) is None, f"{node.label} acts on a constant"
    np.testing.assert_allclose(evaluate(lowered, feeds)["y"], evaluate(graph, feeds)["y"], rtol=1e-12, atol=1e-12)

    rng = np.random.default_rng(5)
    dynamic = Graph("d")
    x = dynamic.add_input("x", (1, 2, 3, 3), "float64")
    w = dynamic.add_input("w", (2, 3, 3, 3), "float64")
    dynamic.outputs.append(dynamic.op("ConvTranspose", x, w, strides=[2, 2], pads=[1, 1, 1, 1]))
    lowered = lower(dynamic, strategy)
    on_w = [node.op for node, _ in lowered.value("w").uses]
    assert set(on_w) & {"Flip", "Transpose", "Reshape", "Slice"}, on_w
    feeds = {"x": rng.standard_normal((1, 2, 3, 3)), "w": rng.standard_normal((2, 3, 3, 3))}
    name = dynamic.outputs[0].name
    np.testing.assert_allclose(evaluate(lowered, feeds)[name], evaluate(dynamic, feeds)[name], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- dce


def test_dce_removes_dead_nodes_and_initializers() -> None:
    graph = Graph("d")
    x = graph.add_input("x", (2, 3), "float32")
    unused_input = graph.add_input("unused", (1,), "float32")
    live_c = graph.add_initializer("live_c", np.ones((2, 3), np.float32))
    dead_c = graph.add_initializer("dead_c", np.ones((2, 3), np.float32))
    graph.add_initializer("orphan", np.zeros(4, np.float32))
    dead = graph.op("Mul", x, dead_c, name="dead1")
    graph.op("Relu", dead, name="dead2")  # a chain: removing dead2 exposes dead1
    y = graph.op("Add", x, live_c, name="live")
    graph.outputs.append(y)
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "unused": np.zeros(1, np.float32)}
    want = evaluate(graph, feeds)
    result = DeadCodeElimination().run(graph)
    assert result.modified
    graph.verify()
    assert [n.name for n in graph.nodes] == ["live"]
    assert set(graph.initializers) == {"live_c"}
    assert graph.inputs == [x, unused_input]  # the interface is kept
    assert evaluate(graph, feeds)[y.name].tolist() == want[y.name].tolist()
    assert not DeadCodeElimination().run(graph).modified


def test_dce_keeps_graph_outputs_and_their_producers() -> None:
    graph = Graph("d")
    x = graph.add_input("x", (2,), "float32")
    c = graph.add_initializer("c", np.ones(2, np.float32))
    first = graph.op("Relu", x, name="first")
    graph.outputs += [first, c]  # an output that is also used nowhere else, and a constant output
    before = str(graph)
    assert not DeadCodeElimination().run(graph).modified
    assert str(graph) == before
