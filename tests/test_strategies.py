"""Every ConvTranspose lowering against the float64 reference of the unlowered graph.

The oracle is `lowering.evaluate` of the ORIGINAL graph: it runs ConvTranspose from its definition
(DESIGN.md section 2, one scatter per tap), sharing nothing with the rewrites under test. Each lowering
goes through the public `lowering.lower` (canonicalize, strategy, fold-constants, dce, verification
after every pass), and is checked for: no ConvTranspose left, a graph that verifies, the same output
names, shapes and dtypes, and values within 1e-10 (float64) or 1e-5 (float32) of the reference,
relative to the largest output magnitude.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lowering
from lowering import Graph, LoweringError, evaluate, lower
from passes import get_pass

# (strategy, options): subpixel is run in both of its forms, matrix in all of its storage choices
VARIANTS = {
    "zero-insertion": ("zero-insertion", {}),
    "matrix": ("matrix", {}),
    "matrix-dense": ("matrix", {"sparse": "no"}),
    "matrix-sparse": ("matrix", {"sparse": "yes"}),
    "col2im": ("col2im", {}),
    "subpixel-fused": ("subpixel", {"form": "fused"}),
    "subpixel-per-phase": ("subpixel", {"form": "per-phase"}),
    "subpixel-auto": ("subpixel", {"form": "auto"}),
    "auto": ("auto", {}),
}
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


# --------------------------------------------------------------------------- configurations


@dataclass
class Case:
    """One ConvTranspose configuration, in ONNX attribute terms."""

    in_spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    output_padding: tuple[int, ...] = ()
    pads: tuple[int, ...] | None = None  # begins then ends
    output_shape: tuple[int, ...] | None = None
    auto_pad: str | None = None
    group: int = 1
    in_per_group: int = 1
    out_per_group: int = 1
    batch: int = 1
    bias: bool = True
    weights_as_input: bool = False
    dtype: str = "float64"
    write_defaults: bool = True
    seed: int = 0
    label: str = field(default="", compare=False)

    @property
    def rank(self) -> int:
        return len(self.in_spatial)

    @property
    def channels(self) -> int:
        return self.group * self.in_per_group

    @property
    def out_channels(self) -> int:
        return self.group * self.out_per_group

    def attrs(self) -> dict:
        rank = self.rank
        attrs: dict = {}
        for name in ("strides", "dilations", "output_padding"):
            value = tuple(getattr(self, name))
            if value and (self.write_defaults or value != ((0,) if name == "output_padding" else (1,)) * rank):
                attrs[name] = list(value)
        if self.group != 1 or self.write_defaults:
            attrs["group"] = self.group
        if self.write_defaults:
            attrs["kernel_shape"] = list(self.kernel)
        if self.pads is not None:
            attrs["pads"] = list(self.pads)
        if self.output_shape is not None:
            attrs["output_shape"] = list(self.output_shape)
        if self.auto_pad is not None:
            attrs["auto_pad"] = self.auto_pad
        return attrs

    def build(self) -> tuple[Graph, dict[str, np.ndarray]]:
        """The graph (X -> ConvTranspose -> Y) and run-time feeds for every graph input."""
        rng = np.random.default_rng(self.seed)
        graph = Graph("case")
        x_shape = (self.batch, self.channels, *self.in_spatial)
        w_shape = (self.channels, self.out_per_group, *self.kernel)
        feeds = {"x": rng.standard_normal(x_shape).astype(self.dtype)}
        x = graph.add_input("x", x_shape, self.dtype)
        w_data = rng.standard_normal(w_shape).astype(self.dtype)
        b_data = rng.standard_normal(self.out_channels).astype(self.dtype)
        if self.weights_as_input:
            w = graph.add_input("w", w_shape, self.dtype)
            feeds["w"] = w_data
            b = None
            if self.bias:
                b = graph.add_input("b", (self.out_channels,), self.dtype)
                feeds["b"] = b_data
        else:
            w = graph.add_initializer("w", w_data)
            b = graph.add_initializer("b", b_data) if self.bias else None
        inputs = [x, w] + ([b] if b is not None else [])
        y = graph.add_node("ConvTranspose", inputs, self.attrs(), outputs=["y"], name="up").outputs[0]
        graph.outputs.append(y)
        return graph, feeds


def full_size(i: int, k: int, s: int, d: int, a: int) -> int:
    return s * (i - 1) + a + (k - 1) * d + 1


@st.composite
def cases(draw) -> Case:
    rank = draw(st.sampled_from([1, 1, 2, 2, 3]))
    max_in, max_k = (5, 4) if rank < 3 else (3, 3)
    in_spatial = tuple(draw(st.integers(1, max_in)) for _ in range(rank))
    kernel = tuple(draw(st.integers(1, max_k)) for _ in range(rank))
    strides = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    dilations = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(strides, dilations, strict=True))
    full = [full_size(*t) for t in zip(in_spatial, kernel, strides, dilations, output_padding, strict=True)]
    mode = draw(st.sampled_from(["pads", "pads", "pads", "output_shape", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    pads = output_shape = auto_pad = None
    if mode == "pads":
        begins, ends = [], []
        for f, k, d in zip(full, kernel, dilations, strict=True):
            reach = (k - 1) * d + 3  # up to beyond the kernel: a crop
            b = draw(st.integers(0, min(f - 1, reach)))
            begins.append(b)
            ends.append(draw(st.integers(0, min(f - 1 - b, reach))))
        pads = (*begins, *ends)
    elif mode == "output_shape":
        # above `full` the derived pads are negative: the output is wider than the scatter reaches
        output_shape = tuple(draw(st.one_of(st.integers(1, f), st.integers(f + 1, f + 3))) for f in full)
        auto_pad = draw(st.sampled_from([None, "SAME_UPPER", "SAME_LOWER"]))
    else:
        auto_pad = mode
    group = draw(st.integers(1, 4))
    in_per_group = draw(st.integers(1, 4 // group))
    out_per_group = draw(st.integers(1, 4 // group))
    weights_as_input = draw(st.booleans())
    return Case(
        in_spatial=in_spatial,
        kernel=kernel,
        strides=strides,
        dilations=dilations,
        output_padding=output_padding,
        pads=pads,
        output_shape=output_shape,
        auto_pad=auto_pad,
        group=group,
        in_per_group=in_per_group,
        out_per_group=out_per_group,
        batch=draw(st.integers(1, 3)),
        bias=draw(st.booleans()),
        weights_as_input=weights_as_input,
        dtype=draw(st.sampled_from(["float64", "float64", "float32"])),
        write_defaults=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


# --------------------------------------------------------------------------- checks


def nonempty_phases(case: Case) -> int:
    """Phases (residues r of s per axis) reached by at least one tap: some κ < k with δ·κ ≡ r (mod s)."""
    count = 1
    for k, s, d in zip(case.kernel, case.strides, case.dilations, strict=True):
        count *= len({(d * kappa) % s for kappa in range(k)})
    return count


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float) -> None:
    assert got.shape == want.shape
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-6)
    err = float(np.abs(got.astype(np.float64) - want).max(initial=0.0))
    assert err <= rtol * scale, f"max abs error {err:.3g} above {rtol:g} x {scale:.3g}"


def check_refusal(graph: Graph, strategy: str, options: dict) -> None:
    """matrix refuses weights that are graph inputs: one line naming the node and the weight."""
    with pytest.raises(LoweringError) as info:
        lower(graph, strategy, **options)
    message = str(info.value)
    assert "\n" not in message
    assert "ConvTranspose 'up'" in message
    assert "'w'" in message


def check_case(case: Case, variant: str) -> Graph | None:
    strategy, options = VARIANTS[variant]
    graph, feeds = case.build()
    graph.verify()
    before = graph.format(elide_above=None)
    if strategy == "matrix" and case.weights_as_input:
        check_refusal(graph, strategy, options)
        return None
    want = evaluate(graph, feeds)
    lowered = lower(graph, strategy, **options)
    assert graph.format(elide_above=None) == before, "lower() modified its argument"
    assert not lowered.nodes_of("ConvTranspose")
    lowered.verify()
    assert [(v.name, v.shape, v.dtype) for v in lowered.outputs] == [(v.name, v.shape, v.dtype) for v in graph.outputs]
    assert [(v.name, v.shape, v.dtype) for v in lowered.inputs] == [(v.name, v.shape, v.dtype) for v in graph.inputs]
    got = evaluate(lowered, feeds)
    for name, expected in want.items():
        assert_close(got[name], expected, TOLERANCE[case.dtype])

    # the form asked for is the form that was built
    convs = len(lowered.nodes_of("Conv"))
    if variant == "subpixel-fused":
        assert convs == 1
    elif variant == "subpixel-per-phase":
        assert convs == nonempty_phases(case)
    elif variant == "matrix-dense":
        assert lowered.nodes_of("MatMul") and not lowered.nodes_of("SparseMatMul")
    elif variant == "matrix-sparse":
        assert lowered.nodes_of("SparseMatMul") and not lowered.nodes_of("MatMul")
    elif variant == "col2im":
        assert len(lowered.nodes_of("Col2Im")) == 1
    elif variant == "auto":
        notes = lowered.meta["lowering_notes"]
        assert len(notes) == 1 and notes[0].startswith("up: ")
    return lowered


# --------------------------------------------------------------------------- random configurations


@pytest.mark.parametrize("variant", list(VARIANTS))
@settings(
    max_examples=500,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=cases())
def test_random_configurations(variant: str, case: Case) -> None:
    check_case(case, variant)


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_random_configurations_long(variant: str, case: Case) -> None:
    check_case(case, variant)


# --------------------------------------------------------------------------- fixed edge cases


def _case(label: str, **kw) -> Case:
    kw.setdefault("dilations", (1,) * len(kw["in_spatial"]))
    kw.setdefault("output_padding", (0,) * len(kw["in_spatial"]))
    return Case(label=label, **kw)


EDGE_CASES = [
    _case("kernel-1", in_spatial=(4, 3), kernel=(1, 1), strides=(2, 3), pads=(0, 0, 0, 0)),
    _case("kernel-1-stride-1", in_spatial=(5,), kernel=(1,), strides=(1,), pads=(0, 0), in_per_group=3),
    _case("stride-above-kernel", in_spatial=(3, 4), kernel=(2, 1), strides=(3, 4), pads=(0, 1, 1, 0)),
    _case("stride-above-kernel-1d", in_spatial=(4,), kernel=(2,), strides=(5,), pads=(1, 1), out_per_group=2),
    _case("d2-s2", in_spatial=(4, 3), kernel=(3, 2), strides=(2, 2), dilations=(2, 2), pads=(1, 0, 2, 1)),
    _case("d4-s6", in_spatial=(3,), kernel=(3,), strides=(6,), dilations=(4,), pads=(2, 1), in_per_group=2),
    _case("d6-s4", in_spatial=(3, 2), kernel=(2, 3), strides=(4, 2), dilations=(6, 2), pads=(0, 0, 0, 0)),
    _case("d3-s2", in_spatial=(4,), kernel=(4,), strides=(2,), dilations=(3,), pads=(1, 2), out_per_group=2),
    _case("output-padding-max-stride", in_spatial=(3, 3), kernel=(3, 2), strides=(3, 2), output_padding=(2, 1)),
    _case(
        "output-padding-max-dilation",
        in_spatial=(3,),
        kernel=(3,),
        strides=(2,),
        dilations=(4,),
        output_padding=(3,),
        pads=(1, 0),
    ),
    _case("pads-above-kernel", in_spatial=(5, 4), kernel=(2, 2), strides=(3, 3), pads=(3, 4, 4, 3)),
    _case("pads-crop-all-but-one", in_spatial=(3,), kernel=(3,), strides=(2,), pads=(4, 2)),
    _case(
        "crop-into-output-padding",  # the crop reaches past the data into the zeros output_padding adds
        in_spatial=(1, 2),
        kernel=(1, 2),
        strides=(1, 2),
        dilations=(3, 1),
        output_padding=(2, 1),
        pads=(2, 3, 0, 0),
    ),
    _case("one-element-axes", in_spatial=(1, 1), kernel=(3, 2), strides=(2, 3), pads=(1, 0, 0, 0), batch=2),
    _case("one-element-axis-3d", in_spatial=(1, 3, 1), kernel=(2, 2, 3), strides=(2, 1, 3), pads=(0,) * 6),
    _case("depthwise", in_spatial=(4, 3), kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), group=4),
    _case("depthwise-multiplier", in_spatial=(5,), kernel=(4,), strides=(2,), pads=(1, 2), group=2, out_per_group=2),
    _case("groups", in_spatial=(3, 3), kernel=(2, 3), strides=(2, 1), group=2, in_per_group=2, out_per_group=2),
    _case("output-shape-larger", in_spatial=(3, 2), kernel=(2, 2), strides=(2, 2), output_shape=(9, 8)),
    _case(
        "output-shape-larger-same-upper",
        in_spatial=(3,),
        kernel=(3,),
        strides=(2,),
        output_shape=(10,),
        auto_pad="SAME_UPPER",
    ),
    _case("output-shape-smaller", in_spatial=(4, 4), kernel=(3, 3), strides=(2, 2), output_shape=(5, 6)),
    _case("output-shape-with-nc", in_spatial=(3,), kernel=(3,), strides=(2,), output_shape=(1, 1, 6)),
    _case("same-upper", in_spatial=(3, 4), kernel=(3, 4), strides=(2, 3), auto_pad="SAME_UPPER"),
    _case("same-lower", in_spatial=(3, 4), kernel=(3, 4), strides=(2, 3), auto_pad="SAME_LOWER"),
    _case("valid", in_spatial=(2, 3), kernel=(3, 2), strides=(2, 2), dilations=(2, 1), auto_pad="VALID"),
    _case("no-attributes", in_spatial=(3, 3), kernel=(2, 2), strides=(1, 1), write_defaults=False, bias=False),
    _case(
        "3d", in_spatial=(2, 3, 2), kernel=(2, 3, 2), strides=(2, 1, 3), dilations=(1, 2, 1), pads=(1, 0, 0, 0, 1, 1)
    ),
    _case("batch-3", in_spatial=(3, 2), kernel=(3, 3), strides=(2, 2), pads=(1, 1, 0, 2), batch=3),
    # an empty batch is valid ONNX (onnxruntime runs it): every lowering must keep the zero, not infer it
    _case("empty-batch", in_spatial=(4, 3), kernel=(3, 3), strides=(2, 2), pads=(1, 1, 0, 1), batch=0, group=2),
    _case("empty-batch-1d", in_spatial=(5,), kernel=(4,), strides=(2,), pads=(1, 1), batch=0, out_per_group=2),
    _case("empty-batch-3d", in_spatial=(2, 3, 2), kernel=(2, 3, 2), strides=(2, 1, 2), pads=(0,) * 6, batch=0),
    _case("dcgan-like", in_spatial=(4, 4), kernel=(4, 4), strides=(2, 2), pads=(1, 1, 1, 1), in_per_group=3),
    _case("float32", in_spatial=(4, 4), kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), dtype="float32"),
]
EDGE_VARIANTS = [v for v in VARIANTS if v != "subpixel-auto"]


@pytest.mark.parametrize("weights_as_input", [False, True], ids=["const-w", "input-w"])
@pytest.mark.parametrize("case", EDGE_CASES, ids=[c.label for c in EDGE_CASES])
@pytest.mark.parametrize("variant", EDGE_VARIANTS)
def test_edge_cases(variant: str, case: Case, weights_as_input: bool) -> None:
    check_case(dataclasses.replace(case, weights_as_input=weights_as_input), variant)


# onnxruntime 1.32's Col2Im is wrong off 2-D when a dilation is > 1 (1-D with several channels, 3-D even
# with one); the ONNX writer works around it (lowering.backends.onnx_legalize.WORKAROUNDS), and these
# cases show that it does.
ORT_COL2IM_BUG = {"d3-s2", "3d"}


ORT_PARAMS = [
    pytest.param(
        variant,
        case,
        weights_as_input,
        id=f"{variant}-{case.label}-{'input-w' if weights_as_input else 'const-w'}",
    )
    for variant in EDGE_VARIANTS
    for case in EDGE_CASES
    for weights_as_input in (False, True)
    if not (weights_as_input and VARIANTS[variant][0] == "matrix")  # refused: test_edge_cases checks that
]


@pytest.mark.parametrize(("variant", "case", "weights_as_input"), ORT_PARAMS)
def test_edge_cases_in_onnxruntime(variant: str, case: Case, weights_as_input: bool) -> None:
    """The lowered graph, exported to ONNX, run by onnxruntime in float32, against the float64 reference."""
    strategy, options = VARIANTS[variant]
    graph, feeds = dataclasses.replace(case, weights_as_input=weights_as_input, dtype="float32").build()
    want = evaluate(graph, feeds)["y"]
    model = lowering.to_onnx(lower(graph, strategy, **options))
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(["y"], feeds)
    assert_close(got, want, 1e-5)


def test_edge_cases_are_what_they_say() -> None:
    """The grid really contains crops, negative derived pads and the largest output_padding."""
    by_label = {c.label: c for c in EDGE_CASES}
    for label in ("pads-above-kernel", "pads-crop-all-but-one"):
        c = by_label[label]
        assert max(c.pads) > max((k - 1) * d + 1 for k, d in zip(c.kernel, c.dilations, strict=True))
    larger = by_label["output-shape-larger"]
    assert all(
        t > full_size(*a)
        for t, a in zip(
            larger.output_shape,
            zip(larger.in_spatial, larger.kernel, larger.strides, larger.dilations, larger.output_padding, strict=True),
            strict=True,
        )
    )
    for label in ("output-padding-max-stride", "output-padding-max-dilation"):
        c = by_label[label]
        assert all(a == max(s, d) - 1 for a, s, d in zip(c.output_padding, c.strides, c.dilations, strict=True))
    graph, _ = by_label["output-shape-larger"].build()
    lowered = lower(graph, "zero-insertion", pipeline="canonicalize")
    assert min(lowered.nodes_of("ConvTranspose")[0].attr("pads")) < 0


@pytest.mark.parametrize("variant", EDGE_VARIANTS)
def test_symbolic_batch(variant: str) -> None:
    """A batch dimension named, not numbered: one lowering serves every batch size (stride 3 with
    k = 2 leaves a phase without taps, which subpixel fills with zeros shaped after the input)."""
    strategy, options = VARIANTS[variant]
    rng = np.random.default_rng(4)
    graph = Graph("sym")
    x = graph.add_input("x", ("N", 2, 3, 4), "float32")
    w = graph.add_initializer("w", rng.standard_normal((2, 3, 2, 3)).astype(np.float32))
    b = graph.add_initializer("b", rng.standard_normal(3).astype(np.float32))
    attrs = {"strides": [3, 2], "pads": [1, 0, 0, 2], "output_padding": [1, 0]}
    graph.outputs.append(graph.add_node("ConvTranspose", [x, w, b], attrs, outputs=["y"]).outputs[0])
    lowered = lower(graph, strategy, **options)
    assert (
        lowered.outputs[0].shape == graph.outputs[0].shape == ("N", 3, 8, 7)
    )  # 3·2 + 1 + 2 − 1 − 0, 2·3 + 0 + 3 − 0 − 2
    session = ort.InferenceSession(lowering.to_onnx(lowered).SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        feeds = {"x": rng.standard_normal((n, 2, 3, 4)).astype(np.float32)}
        want = evaluate(graph, feeds)["y"]
        assert_close(evaluate(lowered, feeds)["y"], want, 1e-10)
        assert_close(session.run(["y"], feeds)[0], want, 1e-5)


# --------------------------------------------------------------------------- weights: folded or kept


WEIGHT_OPS = {"Flip", "Transpose", "Reshape", "Slice", "Pad", "InteriorPad", "Concat"}


@pytest.mark.parametrize("variant", EDGE_VARIANTS)
def test_constant_weights_are_folded(variant: str) -> None:
    """With constant weights, fold-constants leaves no node whose inputs are all constants."""
    case = _case("c", in_spatial=(3, 4), kernel=(3, 2), strides=(2, 3), dilations=(2, 1), pads=(1, 0, 0, 1), group=2)
    lowered = check_case(case, variant)
    assert lowered is not None
    for node in lowered.nodes:
        assert any(v is not None and lowered.constant_value(v) is None for v in node.inputs), (
            f"{node.label} has only constant inputs after fold-constants"
        )


@pytest.mark.parametrize("variant", ["zero-insertion", "col2im", "subpixel-fused", "subpixel-per-phase"])
def test_weights_as_inputs_keep_their_ops(variant: str) -> None:
    """With W a graph input, the weight rearrangements stay in the graph and act on W at run time."""
    case = _case("c", in_spatial=(3, 4), kernel=(3, 2), strides=(2, 3), dilations=(2, 1), pads=(1, 0, 0, 1), group=2)
    case = dataclasses.replace(case, weights_as_input=True)
    lowered = check_case(case, variant)
    assert lowered is not None
    w = lowered.value("w")
    consumers = {node.op for node, _ in w.uses}
    assert consumers & WEIGHT_OPS, consumers
    if variant != "col2im":
        assert lowered.nodes_of("Flip") or lowered.nodes_of("Slice")


def test_matrix_refuses_weights_as_inputs_in_one_line() -> None:
    case = _case("c", in_spatial=(3,), kernel=(2,), strides=(2,), weights_as_input=True)
    graph, _ = case.build()
    for sparse in ("auto", "yes", "no"):
        check_refusal(graph, "matrix", {"sparse": sparse})


# --------------------------------------------------------------------------- matrix: memory budget


def _parse_bytes(text: str) -> float:
    number, unit = re.search(r"needs ([0-9.]+) (B|KiB|MiB|GiB|TiB)", text).groups()  # type: ignore[union-attr]
    return float(number) * 1024 ** ["B", "KiB", "MiB", "GiB", "TiB"].index(unit)


def test_matrix_refuses_a_huge_layer_quickly() -> None:
    """512 -> 256 channels on 64x64: F^T would need tens of GiB even sparse; refused in one line, < 1 s."""
    c, m, i, k = 512, 256, 64, 4
    graph = Graph("big")
    x = graph.add_input("x", (1, c, i, i), "float32")
    w = graph.add_initializer("w", np.zeros((c, m, k, k), np.float32))
    graph.outputs.append(graph.op("ConvTranspose", x, w, name="big", strides=[2, 2], pads=[1, 1, 1, 1]))
    start = time.perf_counter()
    with pytest.raises(LoweringError) as info:
        lower(graph, "matrix")
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    message = str(info.value)
    assert "\n" not in message and "ConvTranspose 'big'" in message and "budget" in message
    estimate = _parse_bytes(message)
    nnz = c * m * k * k * i * i  # every tap of every input lands somewhere: C·(M/g)·Πk·Πi nonzeros
    assert estimate >= nnz * 4 * 0.99  # at least the values of the nonzeros
    assert estimate > 10 * 1024**3
    # the estimate is what the strategy states as its cost, before anything is built
    from passes.matrix import MatrixLowering

    node = graph.nodes_of("ConvTranspose")[0]
    cost = MatrixLowering().cost(graph, node, lowering.node_geometry(node))
    assert abs(cost.weight_bytes - estimate) / estimate < 0.06  # the message rounds to one decimal


@pytest.mark.parametrize("sparse", ["yes", "no"])
def test_matrix_budget_is_the_stored_matrix(sparse: str) -> None:
    """The stated memory is what the lowered graph stores; a budget one byte below it is refused."""
    case = _case("c", in_spatial=(3, 4), kernel=(3, 2), strides=(2, 1), pads=(1, 0, 0, 0), bias=False)
    graph, feeds = case.build()
    from passes.matrix import MatrixLowering

    node = graph.nodes_of("ConvTranspose")[0]
    stated = MatrixLowering(sparse=sparse).cost(graph, node, lowering.node_geometry(node)).weight_bytes
    lowered = lower(graph, "matrix", sparse=sparse, budget_bytes=stated)
    shape_operands = {id(n.inputs[1]) for n in lowered.nodes_of("Reshape")}
    stored = sum(v.const.nbytes for v in lowered.initializers.values() if id(v) not in shape_operands)
    assert 0 < stored <= stated
    if sparse == "no":
        rows, cols = case.out_channels * 6 * 5, case.channels * 3 * 4  # (M·Πo) x (C·Πi), o = (6, 5)
        assert stated == rows * cols * 8
    assert_close(evaluate(lowered, feeds)["y"], evaluate(graph, feeds)["y"], 1e-10)
    with pytest.raises(LoweringError, match="budget"):
        lower(graph, "matrix", sparse=sparse, budget_bytes=stated - 1)


def test_matrix_sparse_option_is_checked() -> None:
    graph, _ = _case("c", in_spatial=(3,), kernel=(2,), strides=(2,)).build()
    with pytest.raises(LoweringError, match="sparse") as info:
        lower(graph, "matrix", sparse="maybe")
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- subpixel options


def test_subpixel_form_is_checked() -> None:
    graph, _ = _case("c", in_spatial=(3,), kernel=(2,), strides=(2,)).build()
    with pytest.raises(LoweringError, match="form") as info:
        lower(graph, "subpixel", form="diagonal")
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- auto


def _two_layer_graph(weights_as_input: bool = False) -> tuple[Graph, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    graph = Graph("two")
    x = graph.add_input("x", (2, 4, 3, 3), "float64")
    feeds = {"x": rng.standard_normal((2, 4, 3, 3))}
    w1_data = rng.standard_normal((4, 3, 3, 3))
    if weights_as_input:
        w1 = graph.add_input("w1", w1_data.shape, "float64")
        feeds["w1"] = w1_data
    else:
        w1 = graph.add_initializer("w1", w1_data)
    b1 = graph.add_initializer("b1", rng.standard_normal(3))
    h = graph.op("ConvTranspose", x, w1, b1, name="first", strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])
    h = graph.op("Relu", h, name="act")
    w2 = graph.add_initializer("w2", rng.standard_normal((3, 1, 2, 2)))
    y = graph.op("ConvTranspose", h, w2, name="second", strides=[2, 2], group=1)
    graph.rename(y, "y")
    graph.outputs.append(y)
    return graph, feeds


@pytest.mark.parametrize("backend", ["onnx", "torch", "numpy"])
@pytest.mark.parametrize("weights_as_input", [False, True], ids=["const-w", "input-w"])
def test_auto_explains_every_choice(backend: str, weights_as_input: bool) -> None:
    graph, feeds = _two_layer_graph(weights_as_input)
    lowered = lower(graph, "auto", backend=backend)
    assert not lowered.nodes_of("ConvTranspose")
    lowered.verify()
    assert_close(evaluate(lowered, feeds)["y"], evaluate(graph, feeds)["y"], 1e-10)
    notes = lowered.meta["lowering_notes"]
    assert len(notes) == 2
    useful = {"first": 2 * 4 * 3 * 9 * 9, "second": 2 * 3 * 1 * 4 * 36}  # N·C·(M/g)·Πk·Πi by hand
    for note, name in zip(notes, ["first", "second"], strict=True):
        head, *lines = note.splitlines()
        assert head.split(": ")[0] == name
        chosen = head.split(": ")[1]
        assert chosen in lowering.api.strategy_names() and chosen != "auto"
        assert any(line.lstrip().startswith(f"* {chosen} ") for line in lines)
        for line in (ln for ln in lines if "est" in ln):
            assert f"useful {useful[name]:>14,} MACs".replace(" ", "") in line.replace(" ", "")
            assert re.search(r"executed\s+[0-9,]+", line)
            assert re.search(r"largest intermediate\s+[0-9,]+ B", line)
            assert re.search(r"weights\s+[0-9,]+ B", line)
        if weights_as_input and name == "first":
            assert re.search(r"matrix\s+declined: .*constant weights", note)


def test_auto_with_a_large_layer_still_lowers() -> None:
    """Where matrix is over its budget, auto picks another strategy; it never leaves a ConvTranspose."""
    graph = Graph("big")
    x = graph.add_input("x", (1, 64, 16, 16), "float32")
    w = graph.add_initializer("w", np.zeros((64, 32, 4, 4), np.float32))
    graph.outputs.append(graph.op("ConvTranspose", x, w, name="big", strides=[2, 2], pads=[1, 1, 1, 1]))
    lowered = lower(graph, "auto")
    assert not lowered.nodes_of("ConvTranspose")
    (note,) = lowered.meta["lowering_notes"]
    assert not note.startswith("big: matrix")
    assert re.search(r"matrix\s+declined: .*budget", note)


def test_auto_backend_is_checked() -> None:
    graph, _ = _two_layer_graph()
    with pytest.raises(LoweringError, match="backend") as info:
        lower(graph, "auto", backend="tpu")
    assert "\n" not in str(info.value)


def test_unknown_strategy_is_refused() -> None:
    graph, _ = _two_layer_graph()
    with pytest.raises(LoweringError, match="unknown strategy 'fft'") as info:
        lower(graph, "fft")
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- golden IR

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_VARIANTS = ["zero-insertion", "matrix", "matrix-dense", "col2im", "subpixel-fused", "subpixel-per-phase", "auto"]


def golden_graph() -> tuple[Graph, dict[str, np.ndarray]]:
    """X f32[1,2,4,4], W f32[2,3,3,3] (small integers), bias; strides 2, pads 1, output_padding 1."""
    graph = Graph("golden")
    x = graph.add_input("x", (1, 2, 4, 4), "float32")
    w = graph.add_initializer("w", (np.arange(54, dtype=np.float32).reshape(2, 3, 3, 3) % 7) - 3)
    b = graph.add_initializer("b", np.array([0.5, -1.0, 2.0], np.float32))
    y = graph.add_node(
        "ConvTranspose",
        [x, w, b],
        {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
        outputs=["y"],
        name="up",
    ).outputs[0]
    graph.outputs.append(y)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)}
    return graph, feeds


@pytest.mark.parametrize("variant", GOLDEN_VARIANTS)
def test_golden_ir(variant: str) -> None:
    """The printed IR of each lowering of one small 2-D case, frozen after reading it by eye.

    Regenerate with LOWERING_UPDATE_GOLDEN=1 (and read the diff before committing it).
    """
    strategy, options = VARIANTS[variant]
    graph, feeds = golden_graph()
    lowered = lower(graph, strategy, **options)
    text = str(lowered)
    path = GOLDEN / f"lower_{variant}.ir"
    if os.environ.get("LOWERING_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()
    assert_close(evaluate(lowered, feeds)["y"], evaluate(graph, feeds)["y"], 1e-10)


def test_auto_takes_the_fused_subpixel_form_only_where_it_is_exact() -> None:
    """`subpixel-fused` as auto weighs it declines where a sub-kernel needs padding taps (k3 s2), and
    the fixed strategy lowers either way to the reference's result."""
    from lowering.geometry import node_geometry
    from lowering.layers import parse_layer
    from passes.auto import AUTO_MATRIX_BUDGET
    from passes.strategy import Declined
    from passes.subpixel import SubpixelFusedLowering

    for spec, exact in (("N=2 C=3 M=4 in=5x6 k=4 s=2 p=1", True), ("N=2 C=3 M=4 in=5x6 k=3 s=2 p=1 op=1", False)):
        graph = parse_layer(spec)
        node = graph.nodes_of("ConvTranspose")[0]
        candidate = SubpixelFusedLowering.for_auto(AUTO_MATRIX_BUDGET)
        if exact:
            candidate.check(graph, node, node_geometry(node))
        else:
            with pytest.raises(Declined, match="padding taps"):
                candidate.check(graph, node, node_geometry(node))
        feeds = {"x": np.random.default_rng(0).standard_normal(graph.inputs[0].shape).astype("float32")}
        want = evaluate(graph, feeds)["y"]
        np.testing.assert_allclose(evaluate(lower(graph, "subpixel-fused"), feeds)["y"], want, rtol=1e-5, atol=1e-5)
        auto = get_pass("auto")
        auto.run(graph.copy())
        assert ("subpixel-fused" in auto.decisions[0].declined) is not exact


def test_col2im_multiplies_depthwise_groups_elementwise() -> None:
    """One input channel per group: the products are a broadcast Mul, not g one-by-one MatMuls."""
    from lowering.layers import parse_layer

    graph = parse_layer("N=2 C=6 M=12 g=C in=5x4 k=3 s=2 p=1")
    lowered = lower(graph, "col2im")
    ops = {n.op for n in lowered.nodes}
    assert "Mul" in ops and "MatMul" not in ops
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 6, 5, 4)).astype("float32")}
    assert_close(evaluate(lowered, feeds)["y"], evaluate(graph, feeds)["y"], 1e-5)


def test_auto_on_a_gpu_uses_the_gpu_rates() -> None:
    """The static model has PyTorch-on-CUDA rates of its own (fitted on a GPU run): there it weighs the
    strategies differently from the CPU (super-resolution: the per-phase form on the CPU, zero-insertion
    on the GPU); a device without rates of its own falls back to its backend's CPU tables."""
    from lowering.geometry import node_geometry
    from lowering.layers import parse_layer
    from passes import STRATEGIES
    from passes.cost_model import MODEL

    graph = parse_layer("N=8 C=64 M=64 in=64x64 k=3 s=2 p=1 op=1")

    def pick(**options) -> str:
        return lower(graph, "auto", backend="torch", **options).meta["lowering_notes"][0].split(": ")[1].split()[0]

    assert pick() == "subpixel" and pick(device="cuda") == "zero-insertion"
    node = graph.nodes_of("ConvTranspose")[0]
    cost = STRATEGIES["col2im"]().cost(graph, node, node_geometry(node))
    assert MODEL.seconds(cost, "torch:xpu") == MODEL.seconds(cost, "torch") != MODEL.seconds(cost, "torch:cuda")


def test_auto_leaves_out_what_the_target_runtime_has_no_kernel_for():
    # the same tiny layer: the matrix form wins on onnxruntime in float32, but its ScatterND has no
    # float16 kernel there; PyTorch runs the float16 matrix form (in float32, as every float16 graph)
    from lowering.layers import parse_layer

    spec = "N=1 C=2 M=3 in=3x3 k=3 s=2 p=1"
    assert any(n.op == "SparseMatMul" for n in lower(parse_layer(spec), "auto", backend="onnx").nodes)
    half = parse_layer(spec + " dtype=f16")
    lowered = lower(half, "auto", backend="onnx")
    assert not any(n.op == "SparseMatMul" for n in lowered.nodes)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float16)}
    want = evaluate(half, feeds)["y"]
    for graph, backend in ((lowered, "onnx"), (lower(half, "matrix"), "torch")):
        got = lowering.compile(graph, backend)(feeds)["y"]
        assert got.dtype == np.float16
        assert_close(got, want, 2e-2)


@pytest.mark.parametrize("opset", [11, 13, 16, 17])
def test_auto_picks_only_what_the_target_opset_can_hold(opset):
    # ScatterND's reduction (the sparse matrix form) needs opset 16, Col2Im opset 18; auto picked the
    # sparse matrix form for this small layer and the export then failed below 16
    from lowering.layers import parse_layer

    graph = parse_layer("N=1 C=8 M=4 in=8x8 k=4 s=2 p=1")
    graph.meta["opset"] = opset
    lowered = lower(graph, "auto", backend="onnx")
    ops = {n.op for n in lowered.nodes}
    assert ("SparseMatMul" in ops) <= (opset >= 16) and "Col2Im" not in ops
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 8, 8, 8)).astype(np.float32)}
    assert_close(lowering.compile(lowered, "onnx")(feeds)["y"], evaluate(graph, feeds)["y"], 1e-5)
    assert any(n.op == "SparseMatMul" for n in lower(graph, "auto", backend="onnx", opset=18).nodes)
