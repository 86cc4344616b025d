"""The adjoint pass, held to the dot-product identity and to independent constructions.

The oracle throughout is the float64 reference evaluator on the *original* graph: for random u and v,
`⟨g(u), v⟩ = ⟨u, adjoint(g)(v)⟩` must hold to 1e-10 relative to `‖g(u)‖‖v‖ + ‖u‖‖adjoint(g)(v)‖`
(a rule that dropped, doubled or misplaced one element breaks it by far more). Random graphs are
chains and small DAGs of every op that has a transpose rule, with random attributes (hypothesis).
Independent checks: the adjoint of a Conv against a ConvTranspose built by hand, `as_operator`
against the explicit matrix of `conv_operator`, and `lsqr` recovering an image from its blur.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import lowering
from lowering import Graph, Value, evaluate
from lowering.api import strategy_names
from lowering.cli import main
from lowering.errors import LoweringError, VerificationError
from lowering.transposition import NotLinearError, as_operator, cotangent_name, strip_biases
from lowering.transposition import adjoint as adjoint_fn

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-10
MAX_ELEMENTS = 4000


# ----------------------------------------------------------------------------- oracles


def random_feeds(graph: Graph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {v.name: rng.standard_normal(v.shape) for v in graph.inputs}


def dot_product_gap(graph: Graph, transposed: Graph, rng: np.random.Generator) -> float:
    """|⟨g(u), v⟩ − ⟨u, gᵀ(v)⟩| relative to the Cauchy-Schwarz bound of both sides."""
    outs = list(zip(graph.outputs, transposed.inputs, strict=True))  # output y <-> seed ȳ
    ins = list(zip(graph.inputs, transposed.outputs, strict=True))  # input x <-> result x̄
    u = random_feeds(graph, rng)
    ys = evaluate(graph, u)
    v = {seed.name: rng.standard_normal(ys[y.name].shape) for y, seed in outs}
    xs = evaluate(transposed, v)
    lhs = sum(np.vdot(ys[y.name], v[seed.name]) for y, seed in outs)
    rhs = sum(np.vdot(u[x.name], xs[back.name]) for x, back in ins)
    scale = sum(np.linalg.norm(ys[y.name]) * np.linalg.norm(v[seed.name]) for y, seed in outs)
    scale += sum(np.linalg.norm(u[x.name]) * np.linalg.norm(xs[back.name]) for x, back in ins)
    return abs(lhs - rhs) / scale if scale else abs(lhs - rhs)


def assert_same_function(first: Graph, second: Graph, rng: np.random.Generator, rtol: float = 1e-12) -> None:
    """The same outputs on random inputs (matched by position), and the same input and output names
    unless an input of `first` is also one of its outputs (then the adjoint renames one, see adjoint())."""
    passthrough = any(v is x for v in first.outputs for x in first.inputs)
    if not passthrough:
        assert [v.name for v in first.inputs] == [v.name for v in second.inputs]
        assert [v.name for v in first.outputs] == [v.name for v in second.outputs]
    feeds = random_feeds(first, rng)
    want = evaluate(first, feeds)
    got = evaluate(second, {v.name: feeds[x.name] for v, x in zip(second.inputs, first.inputs, strict=True)})
    for mine, theirs in zip(first.outputs, second.outputs, strict=True):
        expected, actual = want[mine.name], got[theirs.name]
        assert actual.shape == expected.shape, mine.name
        bound = rtol * max(1.0, float(np.abs(expected).max(initial=0.0)))
        np.testing.assert_allclose(actual, expected, rtol=0, atol=bound, err_msg=mine.name)


def check_adjoint(graph: Graph, seed: int = 0) -> Graph:
    """Dot-product identity, the interface of the adjoint and the double adjoint; returns the adjoint."""
    graph.verify()
    transposed = lowering.adjoint(graph)
    rng = np.random.default_rng(seed)
    assert [v.shape for v in transposed.inputs] == [v.shape for v in graph.outputs]
    assert [v.shape for v in transposed.outputs] == [v.shape for v in graph.inputs]
    gap = dot_product_gap(graph, transposed, rng)
    assert gap < TOLERANCE, f"dot-product identity off by {gap:.2e}\n{graph}\n{transposed}"
    assert_same_function(graph, lowering.adjoint(transposed), rng)
    return transposed


# ----------------------------------------------------------------------------- random linear graphs
# Each builder appends one linear op (or a small linear subgraph) to x, an (N, C, H, W) value, and
# returns the new 4-D value. Attributes are drawn freely; a draw the op refuses (VerificationError)
# leaves x as it was.

Draw = Callable


def _const(graph: Graph, rng: np.random.Generator, shape, hint: str) -> Value:
    return graph.const(rng.standard_normal(shape).astype(np.float32), hint)


def _ints(graph: Graph, values, hint: str = "ints") -> Value:
    return graph.const(np.asarray(values, np.int64), hint)


def b_conv(draw: Draw, g: Graph, x: Value, rng) -> Value:
    c = x.shape[1]
    group = draw(st.sampled_from([d for d in (1, 2, 3) if c % d == 0]))
    m = group * draw(st.integers(1, 2))
    k = [draw(st.integers(1, 3)) for _ in range(2)]
    attrs = {
        "strides": [draw(st.integers(1, 3)) for _ in range(2)],
        "dilations": [draw(st.integers(1, 2)) for _ in range(2)],
        "pads": [draw(st.integers(0, 2)) for _ in range(4)],
        "group": group,
    }
    return g.op("Conv", x, _const(g, rng, (m, c // group, *k), "w"), **attrs)


def b_conv_transpose(draw: Draw, g: Graph, x: Value, rng) -> Value:
    c = x.shape[1]
    group = draw(st.sampled_from([d for d in (1, 2) if c % d == 0]))
    k = [draw(st.integers(1, 3)) for _ in range(2)]
    strides = [draw(st.integers(1, 2)) for _ in range(2)]
    dilations = [draw(st.integers(1, 2)) for _ in range(2)]
    attrs = {
        "strides": strides,
        "dilations": dilations,
        "pads": [draw(st.integers(-1, 2)) for _ in range(4)],
        "output_padding": [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(strides, dilations, strict=True)],
        "group": group,
    }
    return g.op("ConvTranspose", x, _const(g, rng, (c, draw(st.integers(1, 2)), *k), "w"), **attrs)


def b_interior_pad(draw: Draw, g: Graph, x: Value, rng) -> Value:
    return g.op("InteriorPad", x, interior=[0, 0, draw(st.integers(0, 2)), draw(st.integers(0, 2))])


def b_slice(draw: Draw, g: Graph, x: Value, rng) -> Value:
    axes = draw(st.sampled_from([[2], [3], [2, 3], [1, 3]]))
    starts, ends, steps = [], [], []
    for axis in axes:
        dim = x.shape[axis]
        steps.append(draw(st.sampled_from([1, 2, 3, -1, -2])))
        starts.append(draw(st.integers(-dim - 1, dim + 1)))
        ends.append(draw(st.integers(-dim - 1, dim + 1)))
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        if len(range(x.shape[axis])[slice(start, end, step)]) == 0:
            raise VerificationError("empty slice")  # empty tensors are valid, but dull: redraw as no-op
    return g.op("Slice", x, _ints(g, starts), _ints(g, ends), _ints(g, axes), _ints(g, steps))


def b_pad(draw: Draw, g: Graph, x: Value, rng) -> Value:
    pads = [0, 0, draw(st.integers(-1, 2)), draw(st.integers(-1, 2))]
    pads += [0, 0, draw(st.integers(-1, 2)), draw(st.integers(-1, 2))]
    if draw(st.booleans()):
        return g.op("Pad", x, _ints(g, pads), g.const(np.zeros((), np.float32), "zero"))
    return g.op("Pad", x, _ints(g, pads))


def b_reshape(draw: Draw, g: Graph, x: Value, rng) -> Value:
    n, c, h, w = x.shape
    target = draw(st.sampled_from([[n, c * h, w, 1], [n, 1, c * h, w], [n, c, h * w, 1], [n, -1, 1, w]]))
    return g.op("Reshape", x, _ints(g, target))


def b_transpose(draw: Draw, g: Graph, x: Value, rng) -> Value:
    return g.op("Transpose", x, perm=[0, *draw(st.permutations([1, 2, 3]))])


def b_mul(draw: Draw, g: Graph, x: Value, rng) -> Value:
    n, c, h, w = x.shape
    shape = draw(st.sampled_from([(), (c, 1, 1), (1, c, h, w), (n, c, h, w), (w,)]))
    constant = _const(g, rng, shape, "scale")
    return g.op("Mul", *((x, constant) if draw(st.booleans()) else (constant, x)))


def b_div(draw: Draw, g: Graph, x: Value, rng) -> Value:
    c = x.shape[1]
    divisor = g.const(rng.uniform(0.5, 2.0, (c, 1, 1)).astype(np.float32), "divisor")
    return g.op("Div", x, divisor)


def b_matmul(draw: Draw, g: Graph, x: Value, rng) -> Value:
    h, w = x.shape[2:]
    if draw(st.booleans()):
        return g.op("MatMul", x, _const(g, rng, (w, draw(st.integers(1, 4))), "b"))
    return g.op("MatMul", _const(g, rng, (draw(st.integers(1, 4)), h), "a"), x)


def b_depth_space(draw: Draw, g: Graph, x: Value, rng) -> Value:
    c = x.shape[1]
    if draw(st.booleans()):
        if c % 4:
            raise VerificationError("channels not divisible by 4")
        return g.op("DepthToSpace", x, blocksize=2, mode=draw(st.sampled_from(["DCR", "CRD"])))
    return g.op("SpaceToDepth", x, blocksize=2)


def b_interleave(draw: Draw, g: Graph, x: Value, rng) -> Value:
    """x and scaled copies of it as the phases, the output cut by up to s − 1 on each axis."""
    strides = [draw(st.integers(1, 2)), draw(st.integers(1, 3))]
    phases = [x] + [g.op("Mul", x, _const(g, rng, (), "scale")) for _ in range(strides[0] * strides[1] - 1)]
    sizes = [j * s - draw(st.integers(0, s - 1)) for j, s in zip(x.shape[2:], strides, strict=True)]
    return g.op("Interleave", *phases, strides=strides, sizes=sizes)


def b_depth_to_space_nd(draw: Draw, g: Graph, x: Value, rng) -> Value:
    """Channels shuffled into space by blocks 1-2 per axis (either channel order), cropped at both ends."""
    blocks = [draw(st.integers(1, 2)), draw(st.integers(1, 2))]
    if x.shape[1] % (blocks[0] * blocks[1]):
        raise VerificationError("channels not divisible by the blocks")
    full = [q * s for q, s in zip(x.shape[2:], blocks, strict=True)]
    begins = [draw(st.integers(0, s - 1)) for s in blocks]
    sizes = [f - b - draw(st.integers(0, s - 1)) for f, b, s in zip(full, begins, blocks, strict=True)]
    mode = draw(st.sampled_from(["DCR", "CRD"]))
    return g.op("DepthToSpaceND", x, blocks=blocks, mode=mode, begins=begins, sizes=sizes)


def b_upsample(draw: Draw, g: Graph, x: Value, rng) -> Value:
    return g.op("NearestUpsample", x, scales=[draw(st.integers(1, 2)), draw(st.integers(1, 3))])


def b_sum_pool(draw: Draw, g: Graph, x: Value, rng) -> Value:
    return g.op("SumPool", x, kernel_shape=[draw(st.integers(1, 3)), draw(st.integers(1, 2))])


def b_unpool_switches(draw: Draw, g: Graph, x: Value, rng) -> Value:
    """Deconvnet unpooling: each sample goes to one (switch) position of its 2x2 window."""
    up = g.op("NearestUpsample", x, scales=[2, 2])
    n, c, h, w = up.shape
    choice = rng.integers(0, 4, (n, c, h // 2, w // 2))
    mask = np.zeros((n, c, h // 2, 2, w // 2, 2), np.float32)
    for index in np.ndindex(n, c, h // 2, w // 2):
        r, s = divmod(int(choice[index]), 2)
        mask[index[0], index[1], index[2], r, index[3], s] = 1.0
    return g.op("Mul", up, g.const(mask.reshape(n, c, h, w), "switches"))


def b_im2col(draw: Draw, g: Graph, x: Value, rng) -> Value:
    h, w = x.shape[2:]
    block = [draw(st.integers(1, 2)), draw(st.integers(1, 3))]
    attrs = {
        "strides": [draw(st.integers(1, 2)), draw(st.integers(1, 2))],
        "dilations": [draw(st.integers(1, 2)), 1],
        "pads": [draw(st.integers(0, 1)) for _ in range(4)],
    }
    cols = g.op("Im2Col", x, _ints(g, block, "block"), **attrs)
    if draw(st.booleans()):
        return g.op("Col2Im", cols, _ints(g, [h, w], "image"), _ints(g, block, "block"), **attrs)
    return g.op("Reshape", cols, _ints(g, [0, 0, -1, 1]))


def b_gemm(draw: Draw, g: Graph, x: Value, rng) -> Value:
    rows, cols = x.shape[0], math.prod(x.shape[1:])
    flat = g.op("Reshape", x, _ints(g, [rows, cols]))
    ta, tb = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    alpha = draw(st.sampled_from([1.0, 0.5, -2.0]))
    k = draw(st.integers(1, 3))
    if draw(st.booleans()):  # the graph's value is A
        p, q = (cols, rows) if ta else (rows, cols)
        b = _const(g, rng, (k, q) if tb else (q, k), "gemm_b")
        y = g.op("Gemm", flat, b, alpha=alpha, transA=ta, transB=tb)
    else:  # the graph's value is B
        p, q = (cols, rows) if tb else (rows, cols)
        a = _const(g, rng, (p, k) if ta else (k, p), "gemm_a")
        y = g.op("Gemm", a, flat, alpha=alpha, transA=ta, transB=tb)
    return g.op("Reshape", y, _ints(g, [1, *y.shape, 1]))


def b_batch_norm(draw: Draw, g: Graph, x: Value, rng) -> Value:
    c = x.shape[1]
    zero = g.const(np.zeros(c, np.float32), "bn_zero")
    scale = _const(g, rng, (c,), "bn_scale")
    var = g.const(rng.uniform(0.5, 2.0, c).astype(np.float32), "bn_var")
    return g.op("BatchNormalization", x, scale, zero, zero, var, epsilon=1e-3)


def b_flip(draw: Draw, g: Graph, x: Value, rng) -> Value:
    return g.op("Flip", x, axes=draw(st.sampled_from([[1], [2], [3], [2, 3], [1, 3]])))


def b_sparse_matmul(draw: Draw, g: Graph, x: Value, rng) -> Value:
    k, n = x.shape[-1], draw(st.integers(1, 4))
    nnz = draw(st.integers(1, 2 * k * n))
    rows = g.const(rng.integers(0, k, nnz).astype(np.int64), "rows")
    cols = g.const(rng.integers(0, n, nnz).astype(np.int64), "cols")
    return g.op("SparseMatMul", x, _const(g, rng, (nnz,), "values"), rows, cols, shape=[k, n])


def b_gather(draw: Draw, g: Graph, x: Value, rng) -> Value:
    axis = draw(st.integers(1, 3))
    dim = x.shape[axis]
    indices = rng.integers(-dim, dim, draw(st.integers(1, 5))).astype(np.int64)  # repeats and negatives
    return g.op("Gather", x, g.const(indices, "indices"), axis=axis)


def b_scatter(draw: Draw, g: Graph, x: Value, rng) -> Value:
    """ScatterND into x: 'add' with repeated indices, or 'none' overwriting distinct positions."""
    depth = draw(st.integers(1, 2))
    lead = x.shape[:depth]
    count = min(draw(st.integers(1, 3)), math.prod(lead))
    reduction = draw(st.sampled_from(["add", "none"]))
    flat = rng.choice(math.prod(lead), count, replace=reduction == "add")
    indices = np.stack(np.unravel_index(flat, lead), axis=-1).astype(np.int64)
    updates = g.op(
        "Mul", g.op("Slice", x, _ints(g, [0]), _ints(g, [1]), _ints(g, [0])), g.const(np.float32(2.0), "two")
    )
    updates = g.op("Reshape", updates, _ints(g, [-1]))
    size = math.prod(x.shape[depth:])
    updates = g.op("Slice", updates, _ints(g, [0]), _ints(g, [count * size]), _ints(g, [0]))
    if updates.shape[0] != count * size:
        raise VerificationError("not enough values for the updates")
    updates = g.op("Reshape", updates, _ints(g, [count, *x.shape[depth:]]))
    return g.op("ScatterND", x, g.const(indices, "indices"), updates, reduction=reduction)


def _shape_preserving(draw: Draw, g: Graph, x: Value, rng) -> Value:
    kind = draw(st.sampled_from(["self", "mul", "conv", "flip", "transpose"]))
    _, c, h, w = x.shape
    if kind == "mul":
        return g.op("Mul", x, _const(g, rng, (c, h, w), "scale"))
    if kind == "conv":
        return g.op("Conv", x, _const(g, rng, (c, c, 3, 3), "w"), pads=[1, 1, 1, 1])
    if kind == "flip":
        return g.op("Flip", x, axes=[2, 3])
    if kind == "transpose" and h == w:
        return g.op("Transpose", x, perm=[0, 1, 3, 2])
    return x


def b_add(draw: Draw, g: Graph, x: Value, rng) -> Value:
    """Fan-out and fan-in: x feeds two branches that are summed (or subtracted)."""
    first, second = _shape_preserving(draw, g, x, rng), _shape_preserving(draw, g, x, rng)
    return g.op(draw(st.sampled_from(["Add", "Sub"])), first, second)


def b_concat(draw: Draw, g: Graph, x: Value, rng) -> Value:
    first, second = _shape_preserving(draw, g, x, rng), _shape_preserving(draw, g, x, rng)
    return g.op("Concat", first, second, axis=draw(st.integers(1, 3)))


def b_split(draw: Draw, g: Graph, x: Value, rng) -> Value:
    """Split into parts, treat each part on its own, put them back together (Concat or Add)."""
    axis = draw(st.integers(1, 3))
    dim = x.shape[axis]
    if dim < 2:
        raise VerificationError("axis too short to split")
    cut = draw(st.integers(1, dim - 1))
    first, second = g.add_node("Split", [x, _ints(g, [cut, dim - cut], "split")], {"axis": axis}, outputs=2).outputs
    first = g.op("Mul", first, _const(g, rng, first.shape[1:], "scale"))
    if cut == dim - cut and draw(st.booleans()):
        return g.op("Add", first, second)
    if draw(st.booleans()):  # a piece nothing uses: its cotangent is zero
        return first
    return g.op("Concat", second, first, axis=axis)


BUILDERS = [
    b_conv,
    b_conv_transpose,
    b_interior_pad,
    b_slice,
    b_pad,
    b_reshape,
    b_transpose,
    b_mul,
    b_div,
    b_matmul,
    b_depth_space,
    b_interleave,
    b_depth_to_space_nd,
    b_upsample,
    b_sum_pool,
    b_unpool_switches,
    b_im2col,
    b_gemm,
    b_batch_norm,
    b_flip,
    b_sparse_matmul,
    b_gather,
    b_scatter,
    b_add,
    b_concat,
    b_split,
]


def extend(draw: Draw, g: Graph, x: Value, rng, steps: int) -> Value:
    """Apply `steps` randomly drawn builders to x; a builder whose draw is invalid is skipped."""
    for _ in range(steps):
        builder = draw(st.sampled_from(BUILDERS))
        try:
            y = builder(draw, g, x, rng)
        except VerificationError:
            continue
        if y.rank != 4 or math.prod(y.shape) > MAX_ELEMENTS or 0 in y.shape:
            continue  # the node stays, unused: the adjoint must skip dead nodes too
        x = y
    return x


@st.composite
def linear_chains(draw) -> Graph:
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    g = Graph("chain")
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(2, 7)), draw(st.integers(2, 7)))
    x = g.add_input("x", shape)
    y = extend(draw, g, x, rng, draw(st.integers(1, 5)))
    if y is x:
        y = g.op("Identity", x)
    g.rename(y, "y")
    g.outputs.append(y)
    return g


@st.composite
def linear_dags(draw) -> Graph:
    """Two inputs combined by Add or Concat, up to three outputs (one may be an input or an intermediate),
    and sometimes an input no output depends on."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    g = Graph("dag")
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(2, 6)), draw(st.integers(2, 6)))
    x1, x2 = g.add_input("x1", shape), g.add_input("x2", shape)
    a = extend(draw, g, x1, rng, draw(st.integers(0, 2)))
    b = g.op("Mul", x2, _const(g, rng, shape, "scale"))
    if a.shape == b.shape and draw(st.booleans()):
        joined = g.op("Add", a, b)
    else:
        flat_a = g.op("Reshape", a, _ints(g, [a.shape[0], -1, 1, 1]))
        flat_b = g.op("Reshape", b, _ints(g, [b.shape[0], -1, 1, 1]))
        if flat_a.shape[0] != flat_b.shape[0]:
            flat_a = g.op("Reshape", a, _ints(g, [1, -1, 1, 1]))
            flat_b = g.op("Reshape", b, _ints(g, [1, -1, 1, 1]))
        joined = g.op("Concat", flat_a, flat_b, axis=1)
    out = extend(draw, g, joined, rng, draw(st.integers(0, 3)))
    g.outputs.append(out if out is not joined else g.op("Identity", joined))
    extra = draw(st.sampled_from(["none", "intermediate", "input"]))
    if extra == "intermediate" and a is not x1:
        g.outputs.append(a)
    elif extra == "input":
        g.outputs.append(x2)
    if draw(st.booleans()):
        g.add_input("unused", (2, 3))
    return g


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(linear_chains())
def test_random_chains(graph: Graph) -> None:
    check_adjoint(graph)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(linear_dags())
def test_random_dags(graph: Graph) -> None:
    check_adjoint(graph)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
@given(linear_chains())
def test_random_chains_long(graph: Graph) -> None:
    check_adjoint(graph)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(linear_dags())
def test_random_dags_long(graph: Graph) -> None:
    check_adjoint(graph)


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__[2:])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_each_op_family(builder, data, seed: int) -> None:
    """Every builder above on its own, so each op family is exercised whatever the chains draw."""
    rng = np.random.default_rng(seed)
    g = Graph("one")
    x = g.add_input("x", (1, 4, 6, 6))
    try:
        y = builder(data.draw, g, x, rng)
    except VerificationError:
        reject()
    g.outputs.append(y if y is not x else g.op("Identity", x))
    check_adjoint(g, seed)


# ----------------------------------------------------------------------------- Conv <-> ConvTranspose

CONV_CASES = [
    # (input spatial, kernel, strides, dilations, pads, group)
    ((9, 8), (3, 2), (2, 3), (1, 2), (1, 0, 0, 1), 1),
    ((7,), (3,), (2,), (1,), (1, 1), 2),
    ((6, 5, 4), (2, 2, 2), (2, 1, 2), (1, 1, 1), (0, 1, 0, 1, 0, 1), 1),
    ((10, 10), (4, 4), (3, 3), (1, 1), (2, 1, 2, 1), 2),
]


def conv_graph(spatial, kernel, strides, dilations, pads, group, seed=0) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("conv")
    x = g.add_input("x", (2, 2 * group, *spatial))
    w = g.const(rng.standard_normal((3 * group, 2, *kernel)).astype(np.float32), "w")
    g.outputs.append(
        g.op("Conv", x, w, strides=list(strides), dilations=list(dilations), pads=list(pads), group=group, name="conv")
    )
    g.rename(g.outputs[0], "y")
    return g


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{len(c[0])}d-s{c[2]}-g{c[5]}")
def test_adjoint_of_conv_is_the_conv_transpose_with_the_same_weights(case) -> None:
    """Built by hand from DESIGN.md section 2: the ConvTranspose with Conv's W, strides, dilations,
    pads and group, and output_padding = (i + p_begin + p_end − K) mod s so the shape comes back."""
    spatial, kernel, strides, dilations, pads, group = case
    g = conv_graph(*case)
    transposed = check_adjoint(g)
    rank = len(spatial)
    effective = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    remainder = [(i + pads[a] + pads[a + rank] - effective[a]) % strides[a] for a, i in enumerate(spatial)]
    by_hand = Graph("by_hand")
    z = by_hand.add_input("y_cotangent", g.outputs[0].shape)
    w = by_hand.add_initializer("w", g.initializers["w"].const)
    out = by_hand.op(
        "ConvTranspose",
        z,
        w,
        strides=list(strides),
        dilations=list(dilations),
        pads=list(pads),
        output_padding=remainder,
        group=group,
    )
    by_hand.rename(out, "x_cotangent")
    by_hand.outputs.append(out)
    assert [n.op for n in transposed.nodes] == ["ConvTranspose"]
    assert transposed.outputs[0].shape == g.inputs[0].shape
    v = {"y_cotangent": np.random.default_rng(1).standard_normal(g.outputs[0].shape)}
    np.testing.assert_array_equal(evaluate(transposed, v)["x_cotangent"], evaluate(by_hand, v)["x_cotangent"])


def test_adjoint_of_conv_transpose_is_conv_and_crops_negative_pads() -> None:
    """pads_end − output_padding < 0 (and a negative pad) become a Pad in front of a Conv with pads >= 0."""
    rng = np.random.default_rng(0)
    g = Graph("up")
    x = g.add_input("x", (1, 4, 5, 6))
    w = g.const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    y = g.op("ConvTranspose", x, w, strides=[2, 2], pads=[-1, 1, 0, 0], output_padding=[1, 1], name="up")
    g.outputs.append(y)
    transposed = check_adjoint(g)
    assert [n.op for n in transposed.nodes] == ["Pad", "Conv"]
    assert min(transposed.nodes_of("Conv")[0].attr("pads")) >= 0
    plain = Graph("plain")
    plain.outputs.append(
        plain.op(
            "ConvTranspose",
            plain.add_input("x", (1, 4, 5, 6)),
            plain.add_initializer("w", w.const),
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        )
    )
    assert [n.op for n in check_adjoint(plain).nodes] == ["Conv"]


@pytest.mark.parametrize("strategy", strategy_names())
@pytest.mark.parametrize("case", CONV_CASES[:2] + CONV_CASES[3:], ids=lambda c: f"{len(c[0])}d-s{c[2]}-g{c[5]}")
def test_every_strategy_lowers_the_adjoint(strategy: str, case) -> None:
    """The adjoint's ConvTranspose, lowered by each strategy, agrees with the unlowered adjoint."""
    transposed = lowering.adjoint(conv_graph(*case))
    lowered = lowering.lower(transposed, strategy)
    assert not lowered.nodes_of("ConvTranspose")
    v = {"y_cotangent": np.random.default_rng(2).standard_normal(transposed.inputs[0].shape)}
    want, got = evaluate(transposed, v)["x_cotangent"], evaluate(lowered, v)["x_cotangent"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("strategy", strategy_names())
def test_adjoint_of_every_lowering(strategy: str) -> None:
    """Every op a lowering emits (InteriorPad, Flip, SparseMatMul, Col2Im, DepthToSpace, ...) has a rule."""
    rng = np.random.default_rng(3)
    g = Graph("up")
    x = g.add_input("x", (1, 4, 5, 4))
    w = g.const(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    g.outputs.append(g.op("ConvTranspose", x, w, strides=[2, 2], pads=[1, 0, 1, 1], output_padding=[1, 0]))
    for form in ("per-phase", "fused") if strategy == "subpixel" else (None,):
        lowered = lowering.lower(g, strategy, **({"form": form} if form else {}))
        check_adjoint(lowered)


def test_adjoint_of_a_written_matrix_lowering() -> None:
    """The matrix lowering as written to ONNX (Gather, ScatterND 'add' into zeros from an empty slice)."""
    from lowering.backends.onnx_legalize import legalize_for_onnx

    rng = np.random.default_rng(8)
    g = Graph("up")
    x = g.add_input("x", (2, 3, 4, 3))
    w = g.const(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w")
    g.outputs.append(g.op("ConvTranspose", x, w, strides=[2, 1], pads=[1, 1, 0, 1]))
    written = legalize_for_onnx(lowering.lower(g, "matrix", sparse="yes"), 18)
    assert written.nodes_of("ScatterND") and written.nodes_of("Gather")
    check_adjoint(written)


def test_gather_with_scalar_and_matrix_indices() -> None:
    for indices in (np.array(-1), np.array([[0, 2, 2], [1, 0, 3]])):
        g = Graph("gather")
        x = g.add_input("x", (2, 4, 3))
        g.outputs.append(g.op("Gather", x, g.const(indices.astype(np.int64), "idx"), axis=1))
        check_adjoint(g)


def test_scatter_refusals() -> None:
    g = Graph("scatter")
    x = g.add_input("x", (4, 3))
    u = g.add_input("u", (2, 3))
    g.outputs.append(g.op("ScatterND", x, g.const(np.array([[1], [1]], np.int64), "idx"), u, name="write"))
    with pytest.raises(NotLinearError, match=r"^ScatterND 'write': writes some positions twice"):
        lowering.adjoint(g)


# ----------------------------------------------------------------------------- refusals and --strip-bias


def affine_graph() -> Graph:
    """Conv with a bias, an added constant and a BatchNormalization with a shift: affine, not linear."""
    rng = np.random.default_rng(4)
    g = Graph("affine")
    x = g.add_input("x", (1, 2, 6, 6))
    w = g.const(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w")
    b = g.const(rng.standard_normal(3).astype(np.float32), "b")
    y = g.op("Conv", x, w, b, pads=[1, 1, 1, 1], name="conv")
    y = g.op("Add", y, g.const(np.float32(0.5), "offset"), name="shift")
    ones, zeros = g.const(np.ones(3, np.float32), "ones"), g.const(np.zeros(3, np.float32), "zeros")
    y = g.op(
        "BatchNormalization",
        y,
        g.const(rng.uniform(0.5, 2, 3).astype(np.float32), "gamma"),
        ones,
        zeros,
        ones,
        name="bn",
    )
    g.outputs.append(y)
    return g


def test_refuses_a_non_linear_op_naming_op_and_node() -> None:
    g = affine_graph()
    g.outputs = [g.op("Relu", g.outputs[0], name="act")]
    with pytest.raises(NotLinearError, match=r"^Relu 'act': not a linear op"):
        lowering.adjoint(g)
    with pytest.raises(NotLinearError, match=r"Relu 'act'"):
        lowering.adjoint(g, strip_bias=True)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("conv", r"^Conv 'conv': adds the bias 'b', so it is affine, not linear; drop biases first with --strip-bias"),
        ("shift", r"^Add 'shift': adds the constant 'offset' \(input 1\), a bias"),
        ("bn", r"^BatchNormalization 'bn': has a shift"),
    ],
)
def test_refuses_each_bias(node: str, message: str) -> None:
    g = affine_graph()
    for other in g.nodes:  # neutralise the other two biases, so this one is the first refused
        if other.name == node:
            continue
        if other.op == "Conv":
            g.set_input(other, 2, None)
            del other.inputs[2:]
        if other.op == "Add":
            g.set_input(other, 1, g.const(np.float32(0), "no_offset"))
        if other.op == "BatchNormalization":
            g.set_input(other, 2, g.const(np.zeros(3, np.float32), "no_shift"))
    with pytest.raises(NotLinearError, match=message):
        lowering.adjoint(g)


def test_strip_bias_transposes_the_linear_part() -> None:
    g = affine_graph()
    stripped, notes = strip_biases(g)
    assert len(notes) == 3 and any("'b'" in n and "Conv 'conv'" in n for n in notes)
    assert len(g.nodes_of("Add")) == 1 and g.nodes_of("Conv")[0].input(2) is not None  # the original is untouched
    transposed = lowering.adjoint(g, strip_bias=True)
    assert transposed.meta["adjoint_notes"] == notes
    assert dot_product_gap(stripped, transposed, np.random.default_rng(0)) < TOLERANCE
    # the linear part is the affine map minus its value at zero
    u = np.random.default_rng(1).standard_normal((1, 2, 6, 6))
    name = g.outputs[0].name
    linear = evaluate(g, {"x": u})[name] - evaluate(g, {"x": np.zeros_like(u)})[name]
    np.testing.assert_allclose(evaluate(stripped, {"x": u})[name], linear, atol=1e-12)


def test_refuses_products_of_inputs_and_weights_that_are_inputs() -> None:
    g = Graph("bilinear")
    a, b = g.add_input("a", (2, 3)), g.add_input("b", (3, 2))
    g.outputs.append(g.op("MatMul", a, b, name="mm"))
    with pytest.raises(NotLinearError, match=r"^MatMul 'mm': multiplies two values that both depend on the graph"):
        lowering.adjoint(g)
    g = Graph("weights")
    x, w = g.add_input("x", (1, 2, 5, 5)), g.add_input("w", (3, 2, 3, 3))
    g.outputs.append(g.op("Conv", x, w, name="conv"))
    with pytest.raises(NotLinearError, match=r"^Conv 'conv': input 1 \(W 'w'\) depends on the graph inputs"):
        lowering.adjoint(g)


def test_refuses_linear_ops_without_a_rule_and_non_constant_padding() -> None:
    g = Graph("reflect")
    x = g.add_input("x", (1, 1, 4, 4))
    g.outputs.append(g.op("Pad", x, g.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)), mode="reflect", name="p"))
    with pytest.raises(NotLinearError, match=r"^Pad 'p': mode 'reflect' is linear but has no transpose rule"):
        lowering.adjoint(g)


def test_refuses_a_linear_op_without_a_rule(monkeypatch) -> None:
    monkeypatch.setattr(lowering.ops.lookup("Flip"), "_transpose", None)
    g = Graph("flip")
    g.outputs.append(g.op("Flip", g.add_input("x", (4, 3)), axes=[0], name="rev"))
    with pytest.raises(NotLinearError, match=r"^Flip 'rev': Flip is linear but has no transpose rule"):
        lowering.adjoint(g)


def test_constant_subgraphs_are_folded_and_dead_nodes_skipped() -> None:
    """Weights computed from constants are fine; a Relu nothing reads does not make the graph non-linear."""
    rng = np.random.default_rng(5)
    g = Graph("folded")
    x = g.add_input("x", (1, 2, 5, 5))
    raw = g.const(rng.standard_normal((2, 3, 3, 3)).astype(np.float32), "raw")
    w = g.op("Flip", g.op("Transpose", raw, perm=[1, 0, 2, 3]), axes=[2, 3])
    y = g.op("Conv", x, w, pads=[1, 1, 1, 1])
    g.op("Relu", y, name="dead")
    g.outputs.append(y)
    transposed = check_adjoint(g)
    assert [n.op for n in transposed.nodes] == ["ConvTranspose"]


def test_names_and_the_pass() -> None:
    g = conv_graph(*CONV_CASES[0])
    transposed = lowering.adjoint(g)
    assert transposed.name == "conv_adjoint"
    assert [v.name for v in transposed.inputs] == ["y_cotangent"]
    assert [v.name for v in transposed.outputs] == ["x_cotangent"]
    assert cotangent_name("y") == "y_cotangent" and cotangent_name("y_cotangent") == "y"
    assert lowering.adjoint(transposed).name == "conv"
    assert lowering.adjoint is not None and adjoint_fn(g).name == "conv_adjoint"
    from passes import PassManager, get_pass

    result = PassManager([get_pass("adjoint", strip_bias=True)]).run(affine_graph())
    assert result.modified and len(result.notes) == 3
    assert [v.name for v in result.graph.outputs] == ["x_cotangent"]
    assert str(get_pass("adjoint")) == "adjoint(strip_bias=False)"


def test_symbolic_batch_and_implicit_geometry() -> None:
    """A dynamic batch stays symbolic in the adjoint; auto_pad and output_shape resolve to explicit pads."""
    rng = np.random.default_rng(9)
    g = Graph("dynamic")
    x = g.add_input("x", ("N", 2, 8, 6))
    y = g.op("Conv", x, _const(g, rng, (3, 2, 3, 3), "w"), auto_pad="SAME_UPPER", strides=[2, 2])
    y = g.op("NearestUpsample", y, scales=[2, 1])
    y = g.op("SumPool", y, kernel_shape=[1, 2])
    y = g.op("ConvTranspose", y, _const(g, rng, (3, 2, 2, 2), "w2"), output_shape=[9, 5], strides=[2, 2])
    y = g.op("Reshape", y, _ints(g, [0, -1]))
    g.outputs.append(g.op("MatMul", y, _const(g, rng, (90, 4), "proj")))
    transposed = lowering.adjoint(g)
    assert transposed.inputs[0].shape == ("N", 4) and transposed.outputs[0].shape == ("N", 2, 8, 6)
    assert lowering.parse_ir(transposed.format(elide_above=None)).format() == transposed.format()
    for batch in (1, 3):
        fixed = lowering.parse_ir(g.format(elide_above=None).replace("N,", f"{batch},"))
        assert dot_product_gap(fixed, transposed, np.random.default_rng(batch)) < TOLERANCE
    feeds = {"x": rng.standard_normal((3, 2, 8, 6))}
    want, got = evaluate(g, feeds), evaluate(lowering.adjoint(transposed), feeds)
    np.testing.assert_allclose(got[g.outputs[0].name], want[g.outputs[0].name], rtol=1e-12)


def test_public_names_are_the_functions() -> None:
    g = conv_graph(*CONV_CASES[1])
    assert lowering.adjoint(g).name == adjoint_fn(g).name == "conv_adjoint"
    assert lowering.as_operator is as_operator


# ----------------------------------------------------------------------------- matrix view


def test_as_operator_is_the_explicit_matrix() -> None:
    g = conv_graph(*CONV_CASES[0])
    g.inputs[0].shape = (1, *g.inputs[0].shape[1:])
    g.infer_shapes()
    op = as_operator(g)
    dense = lowering.conv_operator(g, g.nodes_of("Conv")[0]).to_matrix(sparse=False)
    assert op.shape == dense.shape
    np.testing.assert_allclose(op.matmat(np.eye(op.shape[1])), dense, atol=1e-12)
    np.testing.assert_allclose(op.rmatmat(np.eye(op.shape[0])), dense.T, atol=1e-12)


def test_as_operator_binds_symbolic_batch_and_refuses_two_inputs() -> None:
    g = Graph("batch")
    x = g.add_input("x", ("N", 1, 4, 4))
    g.outputs.append(g.op("SumPool", x, kernel_shape=[2, 2]))
    with pytest.raises(LoweringError, match=r"axis 0 is symbolic \('N'\): bind it"):
        as_operator(g)
    op = as_operator(g, dims={"N": 3})
    assert op.shape == (3 * 4, 3 * 16)
    g.add_input("other", (2,))
    with pytest.raises(LoweringError, match="needs exactly one of each"):
        as_operator(g)


def test_lsqr_solves_a_small_deconvolution() -> None:
    """Blur an image with a full 2-D convolution (injective), then recover it by least squares."""
    from scipy.sparse.linalg import lsqr

    rng = np.random.default_rng(6)
    g = Graph("blur")
    x = g.add_input("image", (1, 1, 12, 12))
    kernel = np.outer([1, 3, 1], [1, 4, 1]).astype(np.float32)[None, None] / 30
    g.outputs.append(g.op("ConvTranspose", x, g.const(kernel, "blur")))
    truth = np.zeros((12, 12))
    truth[3:9, 4:7] = 1.0
    truth[2, 2] = -1.0
    op = as_operator(g)
    observed = op.matvec(truth.reshape(-1)) + 1e-9 * rng.standard_normal(op.shape[0])
    solution, stop, iterations = lsqr(op, observed, atol=1e-14, btol=1e-14, iter_lim=500)[:3]
    assert stop in (1, 2), f"lsqr stopped with code {stop} after {iterations} iterations"
    np.testing.assert_allclose(solution.reshape(12, 12), truth, atol=1e-6)


# ----------------------------------------------------------------------------- the new ops on every backend


@pytest.mark.parametrize("backend", ["numpy", "torch", "onnx"])
def test_upsample_and_sum_pool_on_every_backend(backend: str) -> None:
    g = Graph("pool")
    x = g.add_input("x", (2, 3, 7, 5), "float32")
    up = g.op("NearestUpsample", x, scales=[2, 3])
    g.outputs.append(g.op("SumPool", up, kernel_shape=[3, 2]))
    g.outputs.append(up)
    transposed = lowering.adjoint(g)
    for graph in (g, transposed):
        feeds = {v.name: np.random.default_rng(0).standard_normal(v.shape).astype(np.float32) for v in graph.inputs}
        want = evaluate(graph, feeds)
        got = lowering.compile(graph, backend)(feeds)
        for name, expected in want.items():
            np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-5, err_msg=f"{backend} {name}")


def test_sum_pool_drops_the_remainder_and_its_transpose_pads_it_back() -> None:
    x = np.arange(2 * 7, dtype=np.float64).reshape(1, 2, 7)
    g = Graph("pool1d")
    g.outputs.append(g.op("SumPool", g.add_input("x", (1, 2, 7)), kernel_shape=[3]))
    np.testing.assert_array_equal(evaluate(g, {"x": x})[g.outputs[0].name], [[[3, 12], [24, 33]]])
    transposed = check_adjoint(g)
    assert [n.op for n in transposed.nodes] == ["NearestUpsample", "Pad"]


# ----------------------------------------------------------------------------- command line


def linear_model(tmp_path: Path, bias: bool = False) -> Path:
    rng = np.random.default_rng(7)
    g = Graph("decoder")
    z = g.add_input("z", (1, 4, 5, 5))
    w = g.const(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    b = g.const(rng.standard_normal(2).astype(np.float32), "b") if bias else None
    y = g.op("ConvTranspose", z, w, b, strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1], name="up")
    y = g.op("NearestUpsample", y, scales=[2, 2])
    y = g.op("Mul", y, g.const(rng.standard_normal((1, 2, 20, 20)).astype(np.float32), "switches"))
    y = g.op("Conv", y, g.const(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w2"), strides=[2, 2])
    g.rename(y, "image")
    g.outputs.append(y)
    path = tmp_path / ("affine.onnx" if bias else "linear.onnx")
    onnx.save(lowering.to_onnx(g), path)
    return path


def test_cli_writes_the_adjoint_model(tmp_path: Path) -> None:
    """`python -m lowering adjoint` in a subprocess; the written model runs in onnxruntime."""
    from helpers import ort_run

    source = linear_model(tmp_path)
    out = tmp_path / "adjoint.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "lowering", "adjoint", str(source), "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "image_cotangent -> z_cotangent" in done.stderr
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["image_cotangent"]
    assert [o.name for o in model.graph.output] == ["z_cotangent"]
    original, transposed = lowering.from_onnx(source), lowering.from_onnx(out)
    assert dot_product_gap(original, transposed, np.random.default_rng(0)) < 1e-6  # float32 model data
    v = np.random.default_rng(1).standard_normal(original.outputs[0].shape).astype(np.float32)
    want = evaluate(transposed, {"image_cotangent": v})["z_cotangent"]
    got = ort_run(model, {"image_cotangent": v})["z_cotangent"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_cli_refuses_in_one_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    source = linear_model(tmp_path, bias=True)
    out = tmp_path / "adjoint.onnx"
    assert main(["adjoint", str(source), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ConvTranspose 'up': adds the bias 'b'" in err and "--strip-bias" in err
    assert not out.exists()
    assert main(["adjoint", str(source), "-o", str(out), "--strip-bias"]) == 0
    assert "dropped the bias 'b' of ConvTranspose 'up'" in capsys.readouterr().err
    assert out.exists()
    assert main(["adjoint", str(source), "-o", str(source)]) == 2
    assert "is the input file" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the example


def test_deconvnet_example_runs(tmp_path: Path) -> None:
    out = tmp_path / "figure.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "deconvnet_projection.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "dot-product check" in done.stdout
    gap = float(done.stdout.split("relative gap")[1].split()[0])
    assert gap < TOLERANCE
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_elided_weights_stay_elided() -> None:
    """A graph parsed from text with elided weights transposes; its adjoint is marked elided too."""
    g = conv_graph(*CONV_CASES[0])
    parsed = lowering.parse_ir(g.format())
    transposed = lowering.adjoint(parsed)
    assert "elided<" in transposed.format()
    with pytest.raises(LoweringError, match="elided"):
        evaluate(transposed, {"y_cotangent": np.zeros(transposed.inputs[0].shape)})
    g.outputs = [g.op("MatMul", g.outputs[0], g.const(np.ones((3, 40), np.float32), "big"))]
    with pytest.raises(NotLinearError, match=r"^MatMul: needs the data of constant 'big', which was elided"):
        lowering.adjoint(lowering.parse_ir(g.format()))
