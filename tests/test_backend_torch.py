"""The PyTorch backend against the float64 reference of the UNLOWERED graph.

The oracle is `lowering.evaluate` of the original graph: every op from its registry definition, in
float64, sharing nothing with torch. Each lowering strategy (and the unlowered graph, which runs
torch's native conv_transpose) is compiled with `lowering.compile(g, backend="torch")` and must
agree within 1e-10 (float64 graphs) or 1e-5 (float32 graphs) of the largest reference magnitude.
Every op of the registry also has direct cases of its own.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lowering  # noqa: E402
from lowering import Graph, LoweringError, UnsupportedError, evaluate, examples, lower  # noqa: E402
from lowering.api import strategy_names  # noqa: E402
from lowering.backends.torch_backend import EMITTERS, emit_torch, write_torch_module  # noqa: E402
from lowering.ops import registered_ops  # noqa: E402

TOLERANCE = {"float64": 1e-10, "float32": 1e-5, "float16": 2e-3}
# Whole example networks chain five float32 layers (with batch norm between): rounding compounds, and
# oneDNN may pick a different summation order from run to run, so they get a wider float32 bound.
EXAMPLE_TOLERANCE = 1e-4
STRATEGIES = [None, *strategy_names()]  # None: the unlowered graph, native conv_transpose
STRATEGY_IDS = ["unlowered", *strategy_names()]


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float, what: str = "") -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    if want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-6)
    err = float(np.abs(got.astype(np.float64) - want).max(initial=0.0))
    assert err <= rtol * scale, f"{what}: max abs error {err:.3g} above {rtol:g} x {scale:.3g}"


def check_graph(graph: Graph, feeds: dict[str, np.ndarray], rtol: float | None = None, **options) -> dict:
    """Compile for torch, run, compare every output (value, shape and dtype) with the reference."""
    want = evaluate(graph, feeds)
    compiled = lowering.compile(graph, backend="torch", **options)
    got = compiled(feeds)
    assert list(got) == [v.name for v in graph.outputs]
    for value in graph.outputs:
        assert got[value.name].dtype == np.dtype(value.dtype), value.name
        assert_close(got[value.name], want[value.name], rtol or TOLERANCE.get(value.dtype, 0.0), value.name)
    return got


# --------------------------------------------------------------------------- ConvTranspose configurations


@dataclass
class Case:
    in_spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...] | None = None
    output_padding: tuple[int, ...] | None = None
    pads: tuple[int, ...] | None = None
    output_shape: tuple[int, ...] | None = None
    auto_pad: str | None = None
    group: int = 1
    in_per_group: int = 2
    out_per_group: int = 2
    batch: int = 2
    bias: bool = True
    weights_as_input: bool = False
    dtype: str = "float64"
    seed: int = 0
    label: str = field(default="", compare=False)

    def build(self) -> tuple[Graph, dict[str, np.ndarray]]:
        rng = np.random.default_rng(self.seed)
        graph = Graph("case")
        channels, out_channels = self.group * self.in_per_group, self.group * self.out_per_group
        x_shape = (self.batch, channels, *self.in_spatial)
        w_shape = (channels, self.out_per_group, *self.kernel)
        feeds = {"x": rng.standard_normal(x_shape).astype(self.dtype)}
        x = graph.add_input("x", x_shape, self.dtype)
        w_data = rng.standard_normal(w_shape).astype(self.dtype)
        b_data = rng.standard_normal(out_channels).astype(self.dtype)
        if self.weights_as_input:
            w = graph.add_input("w", w_shape, self.dtype)
            feeds["w"] = w_data
            b = graph.add_input("b", (out_channels,), self.dtype) if self.bias else None
            if self.bias:
                feeds["b"] = b_data
        else:
            w = graph.add_initializer("w", w_data)
            b = graph.add_initializer("b", b_data) if self.bias else None
        attrs: dict = {"strides": list(self.strides), "group": self.group}
        for name in ("dilations", "output_padding", "pads", "output_shape", "auto_pad"):
            value = getattr(self, name)
            if value is not None:
                attrs[name] = value if isinstance(value, str) else list(value)
        inputs = [x, w] + ([b] if b is not None else [])
        y = graph.add_node("ConvTranspose", inputs, attrs, outputs=["y"], name="up").outputs[0]
        graph.outputs.append(y)
        return graph, feeds


def random_case(seed: int) -> Case:
    """A seeded random configuration: rank 1-3, groups (incl. depthwise), dilations, asymmetric pads,
    output_padding, output_shape and auto_pad, bias or not, weights constant or graph inputs."""
    rng = np.random.default_rng(1000 + seed)
    rank = int(rng.choice([1, 2, 2, 3]))
    max_in, max_k = (5, 4) if rank < 3 else (3, 3)
    in_spatial = tuple(int(v) for v in rng.integers(1, max_in + 1, rank))
    kernel = tuple(int(v) for v in rng.integers(1, max_k + 1, rank))
    strides = tuple(int(v) for v in rng.integers(1, 5, rank))
    dilations = tuple(int(v) for v in rng.integers(1, 4, rank))
    output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(strides, dilations, strict=True))
    full = [
        s * (i - 1) + a + (k - 1) * d + 1
        for i, k, s, d, a in zip(in_spatial, kernel, strides, dilations, output_padding, strict=True)
    ]
    mode = str(rng.choice(["pads", "pads", "pads", "output_shape", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    pads = output_shape = auto_pad = None
    if mode == "pads":
        begins = [int(rng.integers(0, f)) for f in full]
        ends = [int(rng.integers(0, f - b)) for f, b in zip(full, begins, strict=True)]
        pads = (*begins, *ends)
    elif mode == "output_shape":
        output_shape = tuple(int(rng.integers(1, f + 4)) for f in full)  # above `full`: negative derived pads
    else:
        auto_pad = mode
    group = int(rng.integers(1, 5))
    depthwise = rng.random() < 0.3
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
        in_per_group=1 if depthwise else int(rng.integers(1, 3)),
        out_per_group=1 if depthwise else int(rng.integers(1, 3)),
        batch=int(rng.integers(1, 3)),
        bias=bool(rng.random() < 0.7),
        weights_as_input=bool(rng.random() < 0.25),
        dtype="float32" if rng.random() < 0.35 else "float64",
        seed=seed,
        label=f"random-{seed}",
    )


FIXED_CASES = [
    Case((5,), (4,), (2,), pads=(1, 2), label="1d-asymmetric"),
    Case((4, 3), (3, 3), (2, 2), pads=(1, 1, 1, 1), output_padding=(1, 1), label="2d-output-padding"),
    Case((4, 3), (3, 2), (2, 3), dilations=(2, 1), pads=(0, 2, 3, 1), label="2d-dilated-asymmetric"),
    Case((3,), (3,), (2,), dilations=(4,), output_padding=(3,), pads=(1, 0), label="output-padding-above-stride"),
    Case((4, 4), (3, 3), (2, 2), pads=(1, 1, 1, 1), group=4, in_per_group=1, out_per_group=1, label="depthwise"),
    Case((5,), (4,), (2,), pads=(1, 2), group=2, in_per_group=1, out_per_group=3, label="depthwise-multiplier"),
    Case((3, 2), (2, 2), (2, 2), output_shape=(9, 8), label="output-shape-larger"),  # negative pads: extend
    Case((3,), (3,), (2,), pads=(4, 2), label="pads-crop-most"),
    Case((2, 3, 2), (2, 3, 2), (2, 1, 3), dilations=(1, 2, 1), pads=(1, 0, 0, 0, 1, 1), group=2, label="3d"),
    Case((3, 3), (2, 2), (1, 1), bias=False, weights_as_input=True, label="weights-as-inputs"),
    Case((4, 4), (4, 4), (2, 2), pads=(1, 1, 1, 1), dtype="float32", label="float32-dcgan-like"),
    Case((3, 4), (3, 4), (2, 3), auto_pad="SAME_LOWER", label="same-lower"),
]
RANDOM_CASES = [random_case(seed) for seed in range(24)]
CASES = FIXED_CASES + RANDOM_CASES


def lowered_or_refused(graph: Graph, strategy: str | None) -> Graph | None:
    if strategy is None:
        return graph
    if strategy == "matrix" and any(v.name == "w" for v in graph.inputs):
        with pytest.raises(LoweringError, match="'w'"):  # matrix needs constant weights
            lower(graph, strategy)
        return None
    lowered = lower(graph, strategy)
    assert not lowered.nodes_of("ConvTranspose")
    return lowered


@pytest.mark.parametrize("strategy", STRATEGIES, ids=STRATEGY_IDS)
@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_conv_transpose_configurations(case: Case, strategy: str | None) -> None:
    graph, feeds = case.build()
    want = evaluate(graph, feeds)  # the unlowered graph: the definition
    lowered = lowered_or_refused(graph, strategy)
    if lowered is None:
        return
    got = lowering.compile(lowered, backend="torch")(feeds)
    assert got["y"].dtype == np.dtype(case.dtype)
    assert_close(got["y"], want["y"], TOLERANCE[case.dtype])


@pytest.mark.parametrize("strategy", ["subpixel", "subpixel-fused"])
@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_plain_phase_paths_on_every_configuration(case: Case, strategy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the size thresholds at zero, every prepacked phase convolution that may leave a plain
    result does (DepthToSpaceND row copies and complex pairs, Interleave pairs from over-padded,
    cropped phases): every geometry of the suite, as float32 with constant weights (what oneDNN
    prepacks), still equals the float64 reference."""
    from lowering.backends import torch_backend

    monkeypatch.setattr(torch_backend, "PLAIN_PHASE_MIN_ELEMENTS", 0)
    monkeypatch.setattr(torch_backend, "PAIRED_PHASE_MIN_ELEMENTS", 0)
    graph, feeds = dataclasses.replace(case, dtype="float32", weights_as_input=False).build()
    want = evaluate(graph, feeds)
    got = lowering.compile(lower(graph, strategy), backend="torch")(feeds)
    assert_close(got["y"], want["y"], TOLERANCE["float32"])


def test_random_cases_cover_the_features() -> None:
    """The random draws really include 1-D/2-D/3-D, depthwise, crops, negative derived pads and input weights."""
    assert {len(c.in_spatial) for c in RANDOM_CASES} == {1, 2, 3}
    assert any(c.group > 1 and c.in_per_group == c.out_per_group == 1 for c in RANDOM_CASES)
    assert any(c.output_shape is not None for c in RANDOM_CASES)
    assert any(c.auto_pad is not None for c in RANDOM_CASES)
    assert any(c.pads and c.pads[: len(c.in_spatial)] != c.pads[len(c.in_spatial) :] for c in RANDOM_CASES)
    assert any(c.weights_as_input for c in RANDOM_CASES)
    assert {c.dtype for c in RANDOM_CASES} == {"float32", "float64"}


EXAMPLES = {"dcgan": examples.dcgan, "unet_decoder": examples.unet_decoder, "vocoder": examples.vocoder}


@pytest.mark.parametrize("strategy", STRATEGIES, ids=STRATEGY_IDS)
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_examples(name: str, strategy: str | None) -> None:
    graph = EXAMPLES[name]()
    rng = np.random.default_rng(0)
    feeds = {v.name: rng.standard_normal(v.shape).astype(v.dtype) for v in graph.inputs}
    try:
        lowered = graph if strategy is None else lower(graph, strategy)
    except LoweringError as error:  # matrix refuses beyond its memory budget (dcgan): a clear refusal is fine
        assert strategy == "matrix" and "budget" in str(error), error
        return
    want = evaluate(graph, feeds)
    got = lowering.compile(lowered, backend="torch")(feeds)
    for key, expected in want.items():
        assert_close(got[key], expected, EXAMPLE_TOLERANCE, key)


def test_symbolic_batch() -> None:
    """A graph with a symbolic batch runs at any batch size, unlowered and lowered."""
    graph = Graph("dynamic")
    x = graph.add_input("x", ("N", 3, 4, 5), "float64")
    w = graph.const(np.random.default_rng(3).standard_normal((3, 2, 3, 3)))
    y = graph.op("ConvTranspose", x, w, strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 0])
    graph.rename(y, "y")
    graph.outputs.append(y)
    for batch in (1, 3):
        feeds = {"x": np.random.default_rng(batch).standard_normal((batch, 3, 4, 5))}
        for strategy in ("zero-insertion", "col2im", "subpixel", None):
            check_graph(graph if strategy is None else lower(graph, strategy), feeds, rtol=1e-10)


def test_float16_computes_in_float32() -> None:
    case = Case((4, 4), (3, 3), (2, 2), pads=(1, 1, 1, 1), dtype="float16")
    graph, feeds = case.build()
    compiled = lowering.compile(graph, backend="torch")
    assert "x.float()" in compiled.source and "torch.float16" in compiled.source
    assert next(iter(compiled.artifacts["module"].buffers())).dtype == torch.float32
    got = compiled(feeds)["y"]
    assert got.dtype == np.float16
    assert_close(got, evaluate(graph, feeds)["y"], TOLERANCE["float16"])


# --------------------------------------------------------------------------- every registry op, directly


@dataclass
class OpCase:
    op: str
    label: str
    build: Callable[[], tuple[Graph, dict[str, np.ndarray]]]


def single(
    op: str,
    inputs: list,
    attrs: dict | None = None,
    *,
    outputs: int = 1,
    symbolic: dict[str, tuple] | None = None,
) -> Callable[[], tuple[Graph, dict[str, np.ndarray]]]:
    """A graph of one node. `inputs`: ("in", array) a graph input, ("const", array) an initializer, None omitted."""

    def build() -> tuple[Graph, dict[str, np.ndarray]]:
        graph = Graph(op.lower())
        feeds: dict[str, np.ndarray] = {}
        values = []
        for index, spec in enumerate(inputs):
            if spec is None:
                values.append(None)
                continue
            kind, array = spec
            array = np.asarray(array)
            name = f"in{index}"
            if kind == "in":
                shape = (symbolic or {}).get(name, array.shape)
                values.append(graph.add_input(name, shape, array.dtype.name))
                feeds[name] = array
            else:
                values.append(graph.add_initializer(name, array))
        # output names given explicitly: Graph.add_node(outputs=<count>) names every output alike
        node = graph.add_node(op, values, attrs or {}, outputs=[f"out{k}" for k in range(outputs)], name="node")
        graph.outputs.extend(node.outputs)
        return graph, feeds

    return build


R = np.random.default_rng(7)


def rand(*shape: int, dtype: str = "float64") -> np.ndarray:
    return R.standard_normal(shape).astype(dtype)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def constant_graph() -> tuple[Graph, dict[str, np.ndarray]]:
    """Constant nodes in every form: a runtime operand, a shape operand (compile time), a scalar."""
    graph = Graph("constants")
    x = graph.add_input("x", (2, 6), "float32")
    table = graph.op("Constant", value=np.arange(12, dtype=np.float32).reshape(2, 6))
    shape = graph.op("Constant", value_ints=[3, 4])
    scale = graph.op("Constant", value_float=0.5)
    y = graph.op("Reshape", graph.op("Mul", graph.op("Add", x, table), scale), shape)
    graph.rename(y, "y")
    graph.outputs.append(y)
    return graph, {"x": rand(2, 6, dtype="float32")}


def identity_graph() -> tuple[Graph, dict[str, np.ndarray]]:
    """Identity of an input as a graph output, and of a constant."""
    graph = Graph("identity")
    x = graph.add_input("x", (2, 3), "float64")
    a = graph.op("Identity", x)
    b = graph.op("Identity", graph.const(np.ones((2, 3))))
    graph.outputs.extend([a, graph.op("Add", a, b)])
    return graph, {"x": rand(2, 3)}


_COLS_1D = rand(2, 3 * 3, 6)  # C=3, block 3, L=6
OP_CASES = [
    # convolutions (ConvTranspose has its own sweep above)
    OpCase(
        "Conv",
        "1d-asymmetric",
        single("Conv", [("in", rand(2, 4, 9)), ("const", rand(6, 2, 3))], {"pads": [2, 0], "strides": [2], "group": 2}),
    ),
    OpCase(
        "Conv",
        "2d-negative-pads",
        single(
            "Conv",
            [("in", rand(1, 3, 8, 7)), ("const", rand(4, 3, 2, 3)), ("const", rand(4))],
            {"pads": [-1, 1, 2, -2], "dilations": [2, 1]},
        ),
    ),
    OpCase(
        "Conv",
        "3d-depthwise",
        single(
            "Conv",
            [("in", rand(1, 4, 4, 5, 3)), ("in", rand(4, 1, 2, 2, 2))],
            {"pads": [1, 1, 1, 1, 1, 1], "strides": [2, 1, 1], "group": 4},
        ),
    ),
    OpCase(
        "Conv",
        "same-upper",
        single(
            "Conv",
            [("in", rand(1, 2, 7, 6)), ("const", rand(2, 2, 3, 2))],
            {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
        ),
    ),
    OpCase(
        "ConvTranspose",
        "extend-bias",
        single(
            "ConvTranspose",
            [("in", rand(1, 2, 3)), ("const", rand(2, 3, 2)), ("const", rand(3))],
            {"pads": [-2, -1], "strides": [2]},
        ),
    ),
    # Pad
    OpCase(
        "Pad",
        "constant-crop",
        single("Pad", [("in", rand(2, 3, 5)), ("const", i64(0, 1, -2, 0, -1, 3)), ("const", np.array(1.5))]),
    ),
    OpCase(
        "Pad",
        "constant-axes",
        single("Pad", [("in", rand(2, 3, 5)), ("const", i64(2, 1, 0, 3)), None, ("const", i64(-1, 1))]),
    ),
    OpCase(
        "Pad", "runtime-value", single("Pad", [("in", rand(2, 3)), ("const", i64(1, 0, 0, 2)), ("in", np.array(-3.0))])
    ),
    OpCase(
        "Pad", "reflect-large", single("Pad", [("in", rand(2, 4)), ("const", i64(0, 7, 0, 9))], {"mode": "reflect"})
    ),
    OpCase(
        "Pad", "reflect-crop", single("Pad", [("in", rand(3, 5)), ("const", i64(-1, 2, 1, -2))], {"mode": "reflect"})
    ),
    OpCase("Pad", "edge", single("Pad", [("in", rand(2, 1, 3)), ("const", i64(1, 2, 0, 0, 3, 4))], {"mode": "edge"})),
    OpCase("Pad", "wrap-large", single("Pad", [("in", rand(2, 3)), ("const", i64(0, 5, 1, 7))], {"mode": "wrap"})),
    OpCase(
        "Pad",
        "int-data",
        single("Pad", [("in", np.arange(6, dtype=np.int64).reshape(2, 3)), ("const", i64(1, 1, 0, 1))]),
    ),
    # Slice
    OpCase(
        "Slice",
        "steps",
        single(
            "Slice",
            [
                ("in", rand(5, 7, 4)),
                ("const", i64(1, -1)),
                ("const", i64(100, -8)),
                ("const", i64(0, 1)),
                ("const", i64(2, -2)),
            ],
        ),
    ),
    OpCase(
        "Slice",
        "negative-step-all",
        single(
            "Slice",
            [
                ("in", rand(6, 4)),
                ("const", i64(-1, 3)),
                ("const", i64(-(2**62), 0)),
                ("const", i64(0, -1)),
                ("const", i64(-1, -3)),
            ],
        ),
    ),
    OpCase(
        "Slice", "empty", single("Slice", [("in", rand(3, 4)), ("const", i64(3)), ("const", i64(1)), ("const", i64(1))])
    ),
    OpCase(
        "Slice",
        "symbolic-batch",
        single(
            "Slice",
            [("in", rand(2, 6)), ("const", i64(1)), ("const", i64(5)), ("const", i64(1)), ("const", i64(2))],
            symbolic={"in0": ("N", 6)},
        ),
    ),
    # Reshape / Transpose / Concat / Split
    OpCase("Reshape", "copy-and-infer", single("Reshape", [("in", rand(2, 3, 4)), ("const", i64(0, -1, 2))])),
    OpCase(
        "Reshape",
        "symbolic-batch",
        single("Reshape", [("in", rand(3, 2, 4)), ("const", i64(0, 8))], symbolic={"in0": ("N", 2, 4)}),
    ),
    OpCase("Transpose", "default-perm", single("Transpose", [("in", rand(2, 3, 4))])),
    OpCase("Transpose", "perm", single("Transpose", [("in", rand(2, 3, 4, 5))], {"perm": [0, 2, 3, 1]})),
    OpCase(
        "Concat",
        "three",
        single("Concat", [("in", rand(2, 3)), ("const", rand(2, 1)), ("in", rand(2, 4))], {"axis": -1}),
    ),
    OpCase("Split", "sizes", single("Split", [("in", rand(2, 7)), ("const", i64(2, 0, 5))], {"axis": 1}, outputs=3)),
    OpCase("Split", "num-outputs", single("Split", [("in", rand(7, 2))], {"num_outputs": 3}, outputs=3)),
    # products
    OpCase("MatMul", "2d", single("MatMul", [("in", rand(3, 4)), ("const", rand(4, 5))])),
    OpCase("MatMul", "batched-broadcast", single("MatMul", [("in", rand(2, 1, 3, 4)), ("in", rand(5, 4, 2))])),
    OpCase("MatMul", "vectors", single("MatMul", [("in", rand(4)), ("in", rand(3, 4, 2))])),
    OpCase(
        "Gemm",
        "trans-alpha-beta",
        single(
            "Gemm",
            [("in", rand(4, 3)), ("const", rand(5, 4)), ("const", rand(5))],
            {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0},
        ),
    ),
    OpCase("Gemm", "scalar-c", single("Gemm", [("in", rand(3, 4)), ("in", rand(4, 2)), ("const", np.array(1.25))])),
    OpCase("Gemm", "no-c", single("Gemm", [("in", rand(3, 4)), ("in", rand(4, 2))], {"alpha": -2.0})),
    # elementwise
    OpCase("Add", "broadcast", single("Add", [("in", rand(2, 3, 4)), ("const", rand(3, 1))])),
    OpCase("Sub", "broadcast", single("Sub", [("in", rand(4)), ("in", rand(2, 3, 4))])),
    OpCase("Mul", "broadcast", single("Mul", [("in", rand(2, 1, 4)), ("in", rand(3, 1))])),
    OpCase("Div", "broadcast", single("Div", [("in", rand(2, 3)), ("const", rand(3) + 3.0)])),
    OpCase("Relu", "", single("Relu", [("in", rand(3, 4))])),
    OpCase("LeakyRelu", "alpha", single("LeakyRelu", [("in", rand(3, 4))], {"alpha": 0.2})),
    OpCase("Sigmoid", "", single("Sigmoid", [("in", 30 * rand(3, 4))])),
    OpCase("Tanh", "", single("Tanh", [("in", rand(3, 4, dtype="float32"))])),
    OpCase("Clip", "both", single("Clip", [("in", rand(4, 5)), ("const", np.array(-0.5)), ("const", np.array(0.7))])),
    OpCase("Clip", "max-only", single("Clip", [("in", rand(4, 5)), None, ("const", np.array(0.1))])),
    OpCase(
        "Clip", "runtime-bounds", single("Clip", [("in", rand(4, 5)), ("in", np.array(0.3)), ("in", np.array(-0.2))])
    ),
    OpCase("Clip", "none", single("Clip", [("in", rand(4, 5))])),
    OpCase(
        "BatchNormalization",
        "4d",
        single(
            "BatchNormalization",
            [
                ("in", rand(2, 3, 4, 5)),
                ("const", rand(3)),
                ("const", rand(3)),
                ("const", rand(3)),
                ("const", rand(3) ** 2 + 0.5),
            ],
            {"epsilon": 1e-3},
        ),
    ),
    OpCase(
        "BatchNormalization",
        "3d-f32",
        single(
            "BatchNormalization",
            [
                ("in", rand(2, 3, 4, dtype="float32")),
                *[("const", rand(3, dtype="float32") ** 2 + 0.5) for _ in range(4)],
            ],
        ),
    ),
    # layout
    OpCase("DepthToSpace", "dcr", single("DepthToSpace", [("in", rand(2, 12, 3, 4))], {"blocksize": 2})),
    OpCase("DepthToSpace", "crd", single("DepthToSpace", [("in", rand(2, 18, 2, 3))], {"blocksize": 3, "mode": "CRD"})),
    OpCase("SpaceToDepth", "", single("SpaceToDepth", [("in", rand(2, 3, 4, 6))], {"blocksize": 2})),
    # windows
    OpCase(
        "Col2Im",
        "1d",
        single("Col2Im", [("in", _COLS_1D), ("const", i64(12)), ("const", i64(3))], {"strides": [2], "pads": [1, 0]}),
    ),
    OpCase(
        "Col2Im",
        "1d-symmetric",
        single("Col2Im", [("in", _COLS_1D), ("const", i64(12)), ("const", i64(3))], {"strides": [2], "pads": [1, 1]}),
    ),
    OpCase(
        "Col2Im",
        "1d-negative-pads",
        single("Col2Im", [("in", _COLS_1D), ("const", i64(12)), ("const", i64(3))], {"strides": [2], "pads": [-1, 3]}),
    ),
    OpCase(
        "Col2Im",
        "2d-symmetric",
        single(
            "Col2Im",
            [("in", rand(2, 2 * 6, 12)), ("const", i64(5, 6)), ("const", i64(2, 3))],
            {"strides": [2, 1], "dilations": [1, 2], "pads": [1, 1, 1, 1]},
        ),
    ),
    OpCase(
        "Col2Im",
        "2d-asymmetric",
        single(
            "Col2Im",
            [("in", rand(1, 3 * 4, 6)), ("const", i64(4, 5)), ("const", i64(2, 2))],
            {"strides": [2, 2], "pads": [0, 1, 1, 0]},
        ),
    ),
    OpCase(
        "Col2Im",
        "2d-negative-pads",
        single(
            "Col2Im", [("in", rand(1, 2 * 4, 16)), ("const", i64(4, 5)), ("const", i64(2, 2))], {"pads": [-1, 0, 2, 0]}
        ),
    ),
    OpCase(
        "Col2Im",
        "3d",
        single(
            "Col2Im",
            [("in", rand(1, 2 * 8, 8)), ("const", i64(3, 4, 3)), ("const", i64(2, 2, 2))],
            {"strides": [1, 2, 1], "pads": [0, 0, 0, 0, 1, 0]},
        ),
    ),
    OpCase(
        "Im2Col",
        "1d",
        single(
            "Im2Col", [("in", rand(2, 3, 9)), ("const", i64(3))], {"strides": [2], "dilations": [2], "pads": [1, 2]}
        ),
    ),
    OpCase(
        "Im2Col",
        "2d-symmetric",
        single("Im2Col", [("in", rand(2, 2, 5, 6)), ("const", i64(2, 3))], {"strides": [2, 1], "pads": [1, 1, 1, 1]}),
    ),
    OpCase(
        "Im2Col",
        "2d-asymmetric",
        single(
            "Im2Col", [("in", rand(1, 3, 5, 4)), ("const", i64(3, 2))], {"dilations": [1, 2], "pads": [2, 0, -1, 1]}
        ),
    ),
    OpCase(
        "Im2Col",
        "3d",
        single(
            "Im2Col",
            [("in", rand(1, 2, 3, 4, 5)), ("const", i64(2, 2, 3))],
            {"strides": [1, 2, 2], "pads": [1, 0, 0, 0, 1, 1]},
        ),
    ),
    OpCase("InteriorPad", "", single("InteriorPad", [("in", rand(2, 3, 4))], {"interior": [0, 2, 1]})),
    OpCase(
        "Interleave",
        "2d-cropped",
        single("Interleave", [(f"p{i}", rand(2, 3, 4, 3)) for i in range(4)], {"strides": [2, 2], "sizes": [7, 6]}),
    ),
    OpCase(
        "DepthToSpaceND",
        "2d-crd-cropped",  # plain input, blocks <= 2: one row copy per phase
        single(
            "DepthToSpaceND",
            [("in", rand(2, 12, 3, 4))],
            {"blocks": [2, 2], "mode": "CRD", "begins": [1, 0], "sizes": [4, 7]},
        ),
    ),
    OpCase(
        "DepthToSpaceND",
        "3d-dcr-block3",  # larger blocks: one permuting copy, then the crop
        single(
            "DepthToSpaceND",
            [("in", rand(1, 18, 2, 3, 2))],
            {"blocks": [1, 3, 2], "mode": "DCR", "begins": [0, 2, 1], "sizes": [2, 6, 3]},
        ),
    ),
    OpCase("Interleave", "1d", single("Interleave", [(f"p{i}", rand(1, 2, 5)) for i in range(3)], {"strides": [3]})),
    OpCase("NearestUpsample", "", single("NearestUpsample", [("in", rand(2, 3, 4, 5))], {"scales": [2, 3]})),
    OpCase("NearestUpsample", "1d", single("NearestUpsample", [("in", rand(2, 3, 4))], {"scales": [3]})),
    OpCase("SumPool", "remainder", single("SumPool", [("in", rand(2, 3, 7, 5))], {"kernel_shape": [3, 2]})),
    OpCase("SumPool", "3d", single("SumPool", [("in", rand(1, 2, 4, 4, 6))], {"kernel_shape": [2, 1, 3]})),
    OpCase("Flip", "", single("Flip", [("in", rand(2, 3, 4))], {"axes": [-1, 1]})),
    OpCase("Identity", "", identity_graph),
    OpCase("Constant", "", constant_graph),
    # indexing
    OpCase(
        "Gather", "const-negative", single("Gather", [("in", rand(4, 5)), ("const", i64(-1, 0, 2, 2))], {"axis": 1})
    ),
    OpCase(
        "Gather", "runtime-2d", single("Gather", [("in", rand(4, 3)), ("in", np.array([[0, -1], [3, 1]], np.int64))])
    ),
    OpCase(
        "Gather", "scalar-int32", single("Gather", [("in", rand(4, 3)), ("const", np.array(-2, np.int32))], {"axis": 0})
    ),
    OpCase(
        "ScatterND",
        "add-duplicates",
        single(
            "ScatterND",
            [("in", rand(4, 3)), ("const", np.array([[1], [3], [1]], np.int64)), ("in", rand(3, 3))],
            {"reduction": "add"},
        ),
    ),
    OpCase(
        "ScatterND",
        "add-depth-2",
        single(
            "ScatterND",
            [("in", rand(3, 4, 2)), ("in", np.array([[0, 1], [2, 3], [0, 1]], np.int64)), ("in", rand(3, 2))],
            {"reduction": "add"},
        ),
    ),
    OpCase(
        "ScatterND",
        "none",
        single("ScatterND", [("in", rand(4, 3)), ("const", np.array([[2], [0]], np.int64)), ("in", rand(2, 3))]),
    ),
    OpCase(
        "ScatterND",
        "mul",
        single(
            "ScatterND",
            [("in", rand(4, 3)), ("const", np.array([[2], [0], [2]], np.int64)), ("in", rand(3, 3))],
            {"reduction": "mul"},
        ),
    ),
    OpCase(
        "ScatterND",
        "max-depth-2",
        single(
            "ScatterND",
            [("in", rand(3, 4)), ("const", np.array([[0, 1], [0, 1], [2, -1]], np.int64)), ("in", rand(3))],
            {"reduction": "max"},
        ),
    ),
    OpCase(
        "ScatterND",
        "min",
        single(
            "ScatterND",
            [("in", rand(4, 3)), ("const", np.array([[3], [3]], np.int64)), ("in", rand(2, 3))],
            {"reduction": "min"},
        ),
    ),
    # sparse
    OpCase(
        "SparseMatMul",
        "const-duplicates",
        single(
            "SparseMatMul",
            [
                ("in", rand(2, 3, 5)),
                ("const", rand(7)),
                ("const", i64(0, 4, 2, 0, 4, 1, 3)),
                ("const", i64(1, 0, 5, 1, 0, 2, 5)),
            ],
            {"shape": [5, 6]},
        ),
    ),
    OpCase(
        "SparseMatMul",
        "const-f32",
        single(
            "SparseMatMul",
            [
                ("in", rand(4, 5, dtype="float32")),
                ("const", rand(3, dtype="float32")),
                ("const", i64(0, 4, 2)),
                ("const", i64(1, 0, 1)),
            ],
            {"shape": [5, 3]},
        ),
    ),
    OpCase(
        "SparseMatMul",
        "runtime-coo",
        single(
            "SparseMatMul",
            [("in", rand(3, 5)), ("in", rand(4)), ("in", i64(0, 4, 0, 1)), ("in", i64(1, 0, 1, 2))],
            {"shape": [5, 3]},
        ),
    ),
]


@pytest.mark.parametrize("case", OP_CASES, ids=[f"{c.op}-{c.label}".rstrip("-") for c in OP_CASES])
def test_op_against_reference(case: OpCase) -> None:
    graph, feeds = case.build()
    assert graph.nodes_of(case.op)
    check_graph(graph, feeds)


def test_every_registered_op_is_emitted_and_tested() -> None:
    ops = set(registered_ops())
    assert ops <= set(EMITTERS), f"ops without a torch emitter: {sorted(ops - set(EMITTERS))}"
    assert ops <= {c.op for c in OP_CASES}, f"ops without a direct test: {sorted(ops - {c.op for c in OP_CASES})}"


def test_symbolic_batch_feeds_another_batch() -> None:
    graph, _ = single("Reshape", [("in", rand(3, 2, 4)), ("const", i64(0, 8))], symbolic={"in0": ("N", 2, 4)})()
    check_graph(graph, {"in0": rand(5, 2, 4)})


# --------------------------------------------------------------------------- refusals, code, files


def test_unsupported_op_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    graph, _ = single("Flip", [("in", rand(2, 3))], {"axes": [0]})()
    monkeypatch.delitem(EMITTERS, "Flip")
    with pytest.raises(UnsupportedError) as info:
        lowering.compile(graph, backend="torch")
    message = str(info.value)
    assert "\n" not in message and "Flip 'node'" in message and "torch" in message


def test_four_spatial_axes_are_refused() -> None:
    graph, _ = single("ConvTranspose", [("in", rand(1, 1, 2, 2, 2, 2)), ("const", rand(1, 1, 2, 2, 2, 2))])()
    with pytest.raises(UnsupportedError, match=r"ConvTranspose 'node'.*4-D"):
        emit_torch(graph)


def test_code_is_readable() -> None:
    gm = emit_torch(examples.unet_decoder())
    code = gm.code
    assert "self.up_w" in code and "torch.conv_transpose2d(bottleneck, up_w, up_b" in code
    assert "torch.conv2d(" in code and "torch.cat(" in code and "return {'features': " in code
    assert lowering.compile(examples.unet_decoder(), backend="torch", prepack=False).source == code
    subpixel = emit_torch(lower(examples.unet_decoder(), "subpixel-fused")).code
    assert "torch.conv2d(" in subpixel and "depth_to_space_nd(conv_out, [2, 2], 'CRD'" in subpixel
    assert "interior_pad(" in emit_torch(lower(examples.vocoder(), "zero-insertion")).code


def test_input_names_are_sanitized() -> None:
    graph = Graph("names")
    x = graph.add_input("input.1", (2, 3), "float64")
    y = graph.add_input("torch", (2, 3), "float64")
    z = graph.op("Add", x, y)
    graph.rename(z, "out:0")
    graph.outputs.append(z)
    got = check_graph(graph, {"input.1": rand(2, 3), "torch": rand(2, 3)})
    assert list(got) == ["out:0"]


def test_constant_output_is_a_copy() -> None:
    graph = Graph("const_out")
    graph.add_input("x", (2,), "float64")
    c = graph.const(np.arange(3.0), "c")
    graph.outputs.append(c)
    compiled = lowering.compile(graph, backend="torch")
    first = compiled({"x": np.zeros(2)})["c"]
    first[:] = 7
    np.testing.assert_array_equal(compiled({"x": np.zeros(2)})["c"], np.arange(3.0))


def load_module(path):
    spec = importlib.util.spec_from_file_location(f"written_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name, strategy",
    [
        ("unet_decoder", None),
        ("vocoder", "col2im"),
        ("vocoder", "zero-insertion"),
        ("unet_decoder", "subpixel"),
        ("unet_decoder", "matrix"),
        ("dcgan", "subpixel-fused"),  # DepthToSpaceND's per-phase copies: a cached plan, helper calling helper
    ],
)
def test_write_torch_module(tmp_path, name: str, strategy: str | None) -> None:
    graph = EXAMPLES[name]()
    if strategy is not None:
        graph = lower(graph, strategy)
    path = tmp_path / "model.py"
    written = write_torch_module(graph, path)
    assert written == [path, tmp_path / "model.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.py"]  # no temporary left over
    source = path.read_text()
    assert "lowering" not in source.replace("lowering torch backend", "").replace("lowering_backends", "")
    module = load_module(path)
    classes = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, torch.nn.Module)]
    model = classes[0]()
    rng = np.random.default_rng(0)
    feeds = {v.name: rng.standard_normal(v.shape).astype(v.dtype) for v in graph.inputs}
    with torch.inference_mode():
        got = model(*(torch.from_numpy(feeds[v.name]) for v in graph.inputs))
    want = evaluate(graph, feeds)
    for key, expected in want.items():
        assert_close(got[key].numpy(), expected, TOLERANCE["float32"], key)


def test_write_without_buffers(tmp_path) -> None:
    graph, feeds = single("Pad", [("in", rand(2, 3)), ("const", i64(0, 1, 0, 2))], {"mode": "reflect"})()
    written = write_torch_module(graph, tmp_path / "pad.py")
    assert written == [tmp_path / "pad.py"]
    model = next(
        v
        for v in vars(load_module(tmp_path / "pad.py")).values()
        if isinstance(v, type) and issubclass(v, torch.nn.Module)
    )()
    assert_close(model(torch.from_numpy(feeds["in0"]))["out0"].numpy(), evaluate(graph, feeds)["out0"], 1e-12)


# --------------------------------------------------------------------------- devices and torch.compile


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("strategy", STRATEGIES, ids=STRATEGY_IDS)
def test_cuda(strategy: str | None) -> None:
    for case in [*FIXED_CASES, *RANDOM_CASES[:8]]:
        graph, feeds = case.build()
        lowered = lowered_or_refused(graph, strategy)
        if lowered is None:
            continue
        compiled = lowering.compile(lowered, backend="torch", device="cuda")
        assert all(buffer.device.type == "cuda" for buffer in compiled.artifacts["module"].buffers())
        assert_close(compiled(feeds)["y"], evaluate(graph, feeds)["y"], TOLERANCE[case.dtype], case.label)
    graph = examples.vocoder()
    feeds = {"mel": np.random.default_rng(0).standard_normal((1, 80, 32)).astype(np.float32)}
    got = lowering.compile(graph if strategy is None else lower(graph, strategy), backend="torch", device="cuda")(feeds)
    assert_close(got["audio_features"], evaluate(graph, feeds)["audio_features"], TOLERANCE["float32"])


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [None, "zero-insertion", "col2im", "subpixel"], ids=lambda s: s or "unlowered")
def test_torch_compile(strategy: str | None) -> None:
    graph = examples.unet_decoder()
    rng = np.random.default_rng(0)
    feeds = {v.name: rng.standard_normal(v.shape).astype(v.dtype) for v in graph.inputs}
    candidate = graph if strategy is None else lower(graph, strategy)
    compiled = lowering.compile(candidate, backend="torch", compile=True)
    want = evaluate(graph, feeds)
    for _ in range(2):
        got = compiled(feeds)
        assert_close(got["features"], want["features"], TOLERANCE["float32"])


PREPACK_CASES = {  # float32 Conv / ConvTranspose layers: (op, input shape, weight shape, attributes)
    "conv-1d": ("Conv", (2, 6, 9), (4, 6, 3), {}),
    "conv-2d-grouped-dilated-strided": (
        "Conv",
        (2, 6, 7, 8),
        (6, 2, 3, 3),
        {"group": 3, "dilations": [2, 1], "strides": [2, 1]},
    ),
    "conv-2d-asymmetric-pads": ("Conv", (1, 4, 6, 7), (5, 4, 2, 2), {"pads": [1, 0, 0, 2]}),
    "conv-3d": ("Conv", (2, 3, 4, 5, 6), (4, 3, 2, 2, 2), {"pads": [1, 1, 1, 1, 1, 1]}),
    "transpose-1d": ("ConvTranspose", (2, 6, 9), (6, 4, 4), {"strides": [2], "pads": [1, 1]}),
    "transpose-2d-grouped-dilated-output-padding": (
        "ConvTranspose",
        (2, 6, 5, 7),
        (6, 2, 3, 3),
        {"group": 3, "dilations": [2, 1], "strides": [2, 3], "output_padding": [1, 2]},
    ),
    "transpose-2d-asymmetric-pads": (
        "ConvTranspose",
        (1, 4, 6, 7),
        (4, 5, 4, 4),
        {"strides": [2, 2], "pads": [2, 0, 1, 3]},
    ),
    "transpose-3d": ("ConvTranspose", (2, 3, 4, 5, 6), (3, 4, 4, 4, 4), {"strides": [2, 2, 2], "pads": [1] * 6}),
}


@pytest.mark.parametrize("case", PREPACK_CASES)
def test_prepacked_conv_matches_the_reference(case: str) -> None:
    """Constant float32 Conv and ConvTranspose weights are reordered for oneDNN once (a graph that keeps its
    ConvTranspose too); results equal the reference, dense."""
    from lowering.backends.torch_backend import prepacking_available

    if not prepacking_available():
        pytest.skip("this torch build has no oneDNN")
    op, x_shape, w_shape, attrs = PREPACK_CASES[case]
    rng = np.random.default_rng(3)
    graph = Graph("conv")
    x = graph.add_input("x", x_shape, "float32")
    w = graph.const(rng.standard_normal(w_shape).astype("float32"), "w")
    out_channels = w_shape[0] if op == "Conv" else w_shape[1] * attrs.get("group", 1)
    b = graph.const(rng.standard_normal(out_channels).astype("float32"), "b")
    y = graph.op(op, x, w, b, **attrs)
    graph.rename(y, "y")
    graph.outputs.append(y)
    helper = "conv_prepacked(" if op == "Conv" else "conv_transpose_prepacked("
    assert helper in lowering.compile(graph, backend="torch").source
    assert helper not in lowering.compile(graph, backend="torch", prepack=False).source
    got = check_graph(graph, {"x": rng.standard_normal(x_shape).astype("float32")})
    assert got["y"].flags.c_contiguous


@pytest.mark.parametrize(
    ("x_shape", "blocks", "group", "plain"),
    [
        ((1, 8, 5, 5), [2, 2], 1, False),  # small: per-phase copies from channels-last
        ((1, 4, 6, 6), [4, 4], 1, False),  # blocks > 2: one permuting copy from channels-last, then the crop
        ((2, 8, 128, 128), [2, 2], 1, True),  # large: plain conv result, per-phase row copies
        ((1, 4, 4, 64, 64), [2, 2, 2], 1, True),
        ((2, 8, 128, 128), [2, 2], 4, False),  # grouped: channels-last (the plain primitive is slower)
    ],
)
def test_conv_into_depth_to_space_nd_picks_its_output_layout(x_shape, blocks, group, plain) -> None:
    """A prepacked Conv feeding a DepthToSpaceND (the fused sub-pixel tail) leaves a large result with
    blocks <= 2 in plain memory for per-phase row copies, any other channels-last; every copy pattern
    equals the reference."""
    from lowering.backends.torch_backend import prepacking_available

    if not prepacking_available():
        pytest.skip("this torch build has no oneDNN")
    rng = np.random.default_rng(4)
    rank = len(x_shape) - 2
    channels = 4 * int(np.prod(blocks))
    graph = Graph("fused_tail")
    x = graph.add_input("x", x_shape, "float32")
    w = graph.const(rng.standard_normal((channels, x_shape[1] // group, *[2] * rank)).astype("float32"), "w")
    conv = graph.op("Conv", x, w, pads=[1] * (2 * rank), group=group)
    full = [(n + 1) * s for n, s in zip(x_shape[2:], blocks, strict=True)]
    y = graph.op("DepthToSpaceND", conv, blocks=blocks, mode="CRD", begins=[1] * rank, sizes=[f - 2 for f in full])
    graph.rename(y, "y")
    graph.outputs.append(y)
    source = lowering.compile(graph, backend="torch").source
    assert ("conv_prepacked_plain(" in source) == plain
    got = check_graph(graph, {"x": rng.standard_normal(x_shape).astype("float32")})
    assert got["y"].flags.c_contiguous


@pytest.mark.parametrize(
    ("shape", "blocks", "mode", "begins", "sizes", "copies"),
    [
        ((1, 64, 5, 5), [2, 2], "CRD", [1, 1], [8, 8], 1),  # small, 64 channels a position: one view
        ((2, 84, 5, 5), [2, 2], "CRD", [1, 1], [8, 8], 1),  # small, 84 channels a position: per phase
        ((1, 256, 9, 9, 9), [2, 2, 2], "CRD", [1, 1, 1], [16, 16, 16], 1),
        ((1, 64, 9, 9), [2, 2], "DCR", [0, 1], [18, 16], 1),
        ((1, 64, 9, 9), [2, 2], "CRD", [1, 1], [15, 16], None),  # an odd size: not whole blocks
        ((1, 64, 9, 9), [4, 4], "CRD", [2, 2], [32, 32], 4),  # phases 2, 3 | 0, 1: two runs an axis
        ((1, 576, 5, 5), [3, 3], "DCR", [0, 0], [15, 15], 1),  # begin 0: the order never wraps
        ((1, 64, 7), [4], "CRD", [0], [28], 1),
        ((2, 64, 9), [8], "CRD", [4], [64], 2),  # the vocoder's and FCN x8's crop: half a block
    ],
)
def test_depth_to_space_nd_copy_patterns_from_channels_last_equal_the_reference(
    shape, blocks, mode, begins, sizes, copies
) -> None:
    """The torch helper on a channels-last input (what a prepacked Conv leaves): at most 2^rank strided
    copies where the output is whole blocks, per-phase copies or the permuting copy elsewhere; each
    equals the reference DepthToSpaceND, on plain input too."""
    import torch

    from lowering.backends.torch_kernels import depth_to_space_nd, interleave_runs, load_torch
    from lowering.reference import evaluate

    load_torch()  # the helpers run after the backend has imported torch for them

    x = np.random.default_rng(5).standard_normal(shape).astype("float32")
    graph = Graph("d2s")
    xv = graph.add_input("x", shape, "float32")
    graph.outputs.append(graph.op("DepthToSpaceND", xv, blocks=blocks, mode=mode, begins=begins, sizes=sizes))
    want = evaluate(graph, {"x": x})[graph.outputs[0].name]
    rank = len(shape) - 2
    channels_last = torch.from_numpy(np.moveaxis(x, 1, -1).copy()).movedim(-1, 1)
    plan = interleave_runs(shape, channels_last.stride(), tuple(blocks), mode, tuple(begins), tuple(sizes))
    assert (None if plan is None else len(plan)) == copies
    for tensor in (channels_last, torch.from_numpy(x)):
        got = depth_to_space_nd(tensor, blocks, mode, begins, sizes)
        assert got.shape == (shape[0], shape[1] // int(np.prod(blocks)), *sizes) and rank == len(sizes)
        np.testing.assert_array_equal(got.contiguous().numpy(), want)


@pytest.mark.parametrize(
    ("shape", "blocks", "mode", "begins", "sizes", "pairs"),
    [
        ((2, 12, 5, 5), [2, 2], "CRD", [1, 1], [8, 8], 2),  # the k4 s2 p1 crop: pairs read shifted rows
        ((1, 12, 5, 5), [2, 2], "DCR", [0, 1], [9, 8], 2),  # an odd size on a leading axis is fine
        ((1, 24, 3, 4, 5), [2, 1, 2], "CRD", [0, 0, 1], [6, 4, 8], 2),
        ((1, 6, 7), [2], "CRD", [1], [12], 1),
        ((1, 12, 5, 5), [2, 2], "CRD", [1, 1], [8, 7], None),  # an odd last axis: phase copies
        ((1, 12, 5, 5), [2, 1], "CRD", [0, 0], [10, 5], None),  # last block 1: nothing alternates
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_depth_to_space_nd_pairs_alternating_phases_bit_for_bit(
    shape, blocks, mode, begins, sizes, pairs, dtype
) -> None:
    """From plain memory, the two phases alternating along the last axis go through one complex
    column each pair; every element arrives bit for bit (NaN, ±inf, −0.0 included), as the reference
    places it."""
    import torch

    from lowering.backends.torch_kernels import depth_to_space_nd, load_torch, paired_phase_plan
    from lowering.reference import evaluate

    load_torch()
    x = np.random.default_rng(6).standard_normal(shape).astype(dtype)
    x.flat[::7], x.flat[1::11], x.flat[2::13], x.flat[3::17] = np.nan, -0.0, np.inf, -np.inf
    graph = Graph("d2s")
    xv = graph.add_input("x", shape, dtype)
    graph.outputs.append(graph.op("DepthToSpaceND", xv, blocks=blocks, mode=mode, begins=begins, sizes=sizes))
    want = evaluate(graph, {"x": x})[graph.outputs[0].name].astype(dtype)  # placement only: exact in any type
    tensor = torch.from_numpy(x)
    plan = paired_phase_plan(shape, tensor.stride(), tuple(blocks), mode, tuple(begins), tuple(sizes))
    assert (None if plan is None else len(plan)) == pairs
    got = depth_to_space_nd(tensor, blocks, mode, begins, sizes).numpy()
    assert got.shape == want.shape
    unsigned = {"float32": np.uint32, "float64": np.uint64}[dtype]
    np.testing.assert_array_equal(got.view(unsigned), want.view(unsigned))


@pytest.mark.parametrize(
    ("shape", "strides", "sizes"),
    [
        ((2, 3, 4, 5), [2, 2], [8, 10]),
        ((1, 2, 5, 6), [2, 2], [9, 10]),  # an odd leading size: the last row of two phases is cut
        ((1, 2, 4, 6), [3, 2], [11, 10]),
        ((2, 4, 6), [2], [12]),
        ((1, 2, 2, 3, 3), [2, 1, 2], [4, 3, 6]),
        ((1, 2, 3, 4), [2, 2], [6, 7]),  # an odd last size: one copy per phase
        ((2, 4, 6), [8], [44]),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["plain", "channels-last", "cropped"])
def test_interleave_on_the_cpu_places_every_bit(shape, strides, sizes, dtype, layout) -> None:
    """The CPU Interleave: from plain rows with a last stride of 2 and an even size, each pair of phases
    alternating along a row as one complex column; otherwise one strided copy per phase. Either way
    every element lands bit for bit (NaN, ±inf, −0.0) where the reference puts it, from plain,
    channels-last or cropped (over-padded) phases."""
    import torch

    from lowering.backends.torch_kernels import interleave, load_torch

    load_torch()
    rng = np.random.default_rng(8)
    phases = [rng.standard_normal(shape).astype(dtype) for _ in range(int(np.prod(strides)))]
    for p in phases:
        p.flat[::5], p.flat[1::7], p.flat[2::9] = np.nan, -0.0, -np.inf
    graph = Graph("interleave")
    values = [graph.add_input(f"p{i}", shape, dtype) for i in range(len(phases))]
    graph.outputs.append(graph.op("Interleave", *values, strides=strides, sizes=sizes))
    want = evaluate(graph, {f"p{i}": p for i, p in enumerate(phases)})[graph.outputs[0].name].astype(dtype)
    if layout == "plain":
        tensors = [torch.from_numpy(p) for p in phases]
    elif layout == "channels-last":
        tensors = [torch.from_numpy(np.moveaxis(p, 1, -1).copy()).movedim(-1, 1) for p in phases]
    else:  # a view into a larger result, as an over-padded Conv leaves it
        tensors = [torch.from_numpy(np.pad(p, [(0, 0), (0, 0)] + [(1, 1)] * (p.ndim - 2)))[..., 1:-1] for p in phases]
        tensors = [t[(slice(None), slice(None), *(slice(1, -1),) * (t.dim() - 3))] for t in tensors]
    got = interleave(tensors, strides, sizes).numpy()
    unsigned = {"float32": np.uint32, "float64": np.uint64}[dtype]
    np.testing.assert_array_equal(got.view(unsigned), want.view(unsigned))


@pytest.mark.parametrize(
    ("x_shape", "plain"),
    [
        ((2, 8, 256, 256), True),  # 2^20 elements a phase: plain phases, one complex column per pair
        ((1, 8, 64, 64), False),  # 2^15: channels-last phases and one copy each
        ((1, 4, 16, 64, 64), True),  # 3-D: 2^19 elements a phase
    ],
)
def test_per_phase_subpixel_convs_pick_their_output_layout(x_shape, plain) -> None:
    """The per-phase sub-pixel form's convolutions leave large phases in plain memory (reading the plain
    input as it is) and small ones channels-last (their one input converted to channels-last once for
    all of them); values equal the reference."""
    from lowering.backends.torch_backend import prepacking_available

    if not prepacking_available():
        pytest.skip("this torch build has no oneDNN")
    rng = np.random.default_rng(9)
    graph = Graph("super_resolution")
    x = graph.add_input("x", x_shape, "float32")
    rank = len(x_shape) - 2
    w = graph.const(rng.standard_normal((x_shape[1], 8, *[3] * rank)).astype("float32"), "w")
    y = graph.op("ConvTranspose", x, w, strides=[2] * rank, pads=[1] * (2 * rank), output_padding=[1] * rank)
    graph.rename(y, "y")
    graph.outputs.append(y)
    lowered = lowering.lower(graph, "subpixel")
    source = lowering.compile(lowered, backend="torch").source
    assert ("conv_prepacked_plain(" in source) == plain
    assert "to_mkldnn" not in source
    assert source.count("memory_format = torch.channels_last") == (0 if plain else 1)
    check_graph(lowered, {"x": rng.standard_normal(x_shape).astype("float32")})


def test_prepacking_is_only_for_constant_float32_weights_on_the_cpu() -> None:
    from lowering.backends.torch_backend import prepacking_available

    if not prepacking_available():
        pytest.skip("this torch build has no oneDNN")
    for dtype in ("float64", "float16"):
        graph = Graph("conv")
        x = graph.add_input("x", ("N", 3, 5, 5), dtype)
        graph.outputs.append(graph.op("Conv", x, graph.const(np.ones((2, 3, 2, 2), dtype), "w")))
        assert "conv_prepacked(" not in lowering.compile(graph, backend="torch").source
    graph = Graph("conv")
    x = graph.add_input("x", (1, 3, 5, 5), "float32")
    w = graph.add_input("w", (2, 3, 2, 2), "float32")
    graph.outputs.append(graph.op("Conv", x, w))
    assert "conv_prepacked(" not in lowering.compile(graph, backend="torch").source
    with pytest.raises(LoweringError, match=r"prepack needs the CPU, oneDNN and no torch\.compile"):
        lowering.compile(graph, backend="torch", prepack=True, compile=True)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_phase_convolutions_share_one_channels_last_input_and_crop_instead_of_padding() -> None:
    """Asymmetric pads whose wider side keeps the first output on the stride grid run padded
    symmetrically and cropped (no F.pad copy), and the convolutions reading one input convert it to
    channels-last once; off the grid, with too many extra outputs, negative pads or 1-D each keeps
    its F.pad. Every output equals the reference."""
    from lowering.backends.torch_backend import prepacking_available

    if not prepacking_available():
        pytest.skip("this torch build has no oneDNN")
    rng = np.random.default_rng(6)
    cases = {  # name: (pads, strides, padded with F.pad)
        "phase-right": ([0, 0, 0, 1], [1, 1], False),
        "phase-left": ([1, 1, 0, 0], [1, 1], False),
        "strided-on-grid": ([2, 0, 0, 0], [2, 1], False),
        "strided-off-grid": ([0, 0, 1, 0], [2, 1], True),
        "strided-wider-begin": ([1, 0, 0, 0], [2, 1], False),
        "too-many-extra": ([0, 0, 4, 4], [1, 1], True),
        "negative": ([-1, 0, 1, 0], [1, 1], True),
    }
    for name, (pads, strides, padded) in cases.items():
        graph = Graph(name)
        x = graph.add_input("x", (2, 8, 9, 10), "float32")
        outs = []
        for index in range(2):
            w = graph.const(rng.standard_normal((5, 8, 2, 3)).astype("float32"), f"w{index}")
            outs.append(graph.op("Conv", x, w, pads=pads, strides=strides))
        for index, y in enumerate(outs):
            graph.rename(y, f"y{index}")
            graph.outputs.append(y)
        source = lowering.compile(graph, backend="torch").source
        assert ("pad(" in source) == padded, name
        assert source.count("memory_format = torch.channels_last") == (0 if padded else 1), name
        check_graph(graph, {"x": rng.standard_normal((2, 8, 9, 10)).astype("float32")})
    graph = Graph("one-d")
    x = graph.add_input("x", (2, 8, 9), "float32")
    w = graph.const(rng.standard_normal((5, 8, 2)).astype("float32"), "w")
    graph.outputs.append(graph.op("Conv", x, w, pads=[0, 1]))
    assert "pad(" in lowering.compile(graph, backend="torch").source
    check_graph(graph, {"x": rng.standard_normal((2, 8, 9)).astype("float32")})


@pytest.mark.parametrize(
    ("shape", "strides", "sizes"),
    [
        ((2, 3, 4, 5), [2, 2], [8, 10]),
        ((1, 2, 3, 4), [2, 3], [5, 11]),
        ((2, 4, 6), [8], [44]),
        ((1, 2, 2, 2, 3), [2, 2, 2], [4, 3, 5]),
    ],
)
def test_interleave_by_stacking_equals_the_reference(shape, strides, sizes) -> None:
    """The GPU form of Interleave (one stack, one permuting copy, a crop), run here on the CPU."""
    import torch

    from lowering.backends.torch_kernels import interleave_stacked, load_torch

    load_torch()

    rng = np.random.default_rng(7)
    phases = [rng.standard_normal(shape).astype("float32") for _ in range(int(np.prod(strides)))]
    graph = Graph("interleave")
    values = [graph.add_input(f"p{i}", shape, "float32") for i in range(len(phases))]
    graph.outputs.append(graph.op("Interleave", *values, strides=strides, sizes=sizes))
    want = evaluate(graph, {f"p{i}": p for i, p in enumerate(phases)})[graph.outputs[0].name]
    got = interleave_stacked([torch.from_numpy(p) for p in phases], strides, sizes)
    np.testing.assert_array_equal(got.contiguous().numpy(), want)


@pytest.mark.parametrize("name", ["ac\x00", 'a"""b', "x\ny", "q'\\N{x}", "é"])
def test_any_graph_or_node_name_gives_source_that_compiles(tmp_path, name):
    # names reach docstrings and comments of the generated NumPy and PyTorch source
    from lowering.backends.numpy_backend import write_numpy_module
    from lowering.backends.torch_backend import write_torch_module
    from lowering.layers import parse_layer

    graph = parse_layer("C=2 M=2 in=3x3 k=3 s=2 p=1")
    graph.name = name
    for node in graph.nodes:
        node.name = name
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)}
    want = lowering.evaluate(graph, feeds)["y"]
    lowered = lowering.lower(graph, "subpixel")
    for backend in ("numpy", "torch"):
        np.testing.assert_allclose(lowering.compile(lowered, backend)(feeds)["y"], want, rtol=1e-5, atol=1e-5)
    for write, path in ((write_numpy_module, tmp_path / "m.py"), (write_torch_module, tmp_path / "t.py")):
        write(lowered, path)
        compile(path.read_text(), str(path), "exec")
