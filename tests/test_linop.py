"""Conv / ConvTranspose as linear operators: the adjoint identity, explicit matrices, shapes, SciPy.

The matrices are checked against matrices taken from PyTorch's float64 conv / conv_transpose (probed
with unit vectors, or as the Jacobian of torch's conv; padding by hand where ONNX pads are asymmetric
or negative), never against another method of the operator under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import lsqr

from lowering import (
    ConvGeometry,
    ConvOperator,
    ConvTransposeGeometry,
    ConvTransposeOperator,
    Graph,
    UnsupportedError,
    conv_operator,
)

CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
MAX_IN = {1: 6, 2: 4, 3: 3}
MAX_SD = {1: 3, 2: 3, 3: 2}  # strides and dilations; 3-D stays small so probed matrices stay small


# --------------------------------------------------------------------------- independent oracles


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, np.float64))  # a writable copy: weights are read-only


def _crop_or_extend(full: np.ndarray, begins, sizes) -> np.ndarray:
    """Trailing axes: `sizes` elements from `begins` on, zeros outside `full`."""
    out = full
    rank = len(begins)
    for j, (begin, size) in enumerate(zip(begins, sizes, strict=True)):
        axis = out.ndim - rank + j
        front, back = max(0, -begin), max(0, begin + size - out.shape[axis])
        widths = [(0, 0)] * out.ndim
        widths[axis] = (front, back)
        out = np.take(np.pad(out, widths), np.arange(begin + front, begin + front + size), axis=axis)
    return out


def torch_conv_transpose(x: np.ndarray, w: np.ndarray, *, strides, dilations, group, pads_begin, out_sizes):
    """ONNX ConvTranspose (no bias): torch's un-padded transpose, cropped / zero-extended by hand."""
    full = CONV_T[len(strides)](_t(x), _t(w), stride=tuple(strides), dilation=tuple(dilations), groups=group)
    return _crop_or_extend(full.numpy(), pads_begin, out_sizes)


def torch_pad(x: torch.Tensor, pads_begin, pads_end) -> torch.Tensor:
    """Pad the trailing axes; negative pads crop. Zeros go on first: a crop may reach into the padding
    (pads 2 and −2 on a size-1 axis), which a single F.pad refuses."""
    grow: list[int] = []
    crop: list[int] = []
    for axis in reversed(range(len(pads_begin))):  # F.pad lists the last axis first
        grow += [max(0, pads_begin[axis]), max(0, pads_end[axis])]
        crop += [min(0, pads_begin[axis]), min(0, pads_end[axis])]
    return F.pad(F.pad(x, grow), crop)


def torch_conv(x: np.ndarray, w: np.ndarray, *, strides, dilations, group, pads_begin, pads_end):
    """ONNX Conv (no bias) with per-axis pads, negative ones cropping."""
    padded = torch_pad(_t(x), pads_begin, pads_end)
    return CONV[len(strides)](padded, _t(w), stride=tuple(strides), dilation=tuple(dilations), groups=group).numpy()


def probe(fn, in_shape: tuple[int, ...]) -> np.ndarray:
    """The dense matrix of a linear map on one sample: apply it to every unit vector at once."""
    n = math.prod(in_shape)
    columns = fn(np.eye(n).reshape(n, *in_shape))
    return columns.reshape(n, -1).T


def oracle_ct_matrix(g: ConvTransposeGeometry, w: np.ndarray) -> np.ndarray:
    return probe(
        lambda x: torch_conv_transpose(
            x,
            w,
            strides=g.strides,
            dilations=g.dilations,
            group=g.group,
            pads_begin=g.pads_begin,
            out_sizes=g.out_spatial,
        ),
        (g.in_channels, *g.in_spatial),
    )


def oracle_conv_matrix(g: ConvGeometry, w: np.ndarray) -> np.ndarray:
    """The Conv's matrix as torch's Jacobian of its own conv (reverse mode: one pass per output element,
    so the cost follows the Conv's small output side, not its large input side)."""
    weight = _t(w)

    def conv(x: torch.Tensor) -> torch.Tensor:
        padded = torch_pad(x[None], g.pads_begin, g.pads_end)
        return CONV[g.rank](padded, weight, stride=g.strides, dilation=g.dilations, groups=g.group)[0]

    x = torch.zeros((g.in_channels, *g.in_spatial), dtype=torch.float64)
    jacobian = torch.func.jacrev(conv)(x)
    return jacobian.reshape(-1, math.prod(x.shape)).numpy()


# --------------------------------------------------------------------------- configurations


@st.composite
def ct_configs(draw, rank: int) -> dict:
    """A ConvTranspose node's numbers: groups (depthwise too), dilation, output_padding, asymmetric pads."""
    if draw(st.booleans()):
        group = channels = draw(st.integers(1, 3))
    else:
        group = draw(st.integers(1, 2))
        channels = group * draw(st.integers(1, 2))
    out_per_group = draw(st.integers(1, 2))
    in_spatial = [draw(st.integers(1, MAX_IN[rank])) for _ in range(rank)]
    kernel = [draw(st.integers(1, 3)) for _ in range(rank)]
    strides = [draw(st.integers(1, MAX_SD[rank])) for _ in range(rank)]
    dilations = [draw(st.integers(1, MAX_SD[rank])) for _ in range(rank)]
    output_padding = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(strides, dilations, strict=True)]
    pads_begin, pads_end = [], []
    for i, k, s, d, a in zip(in_spatial, kernel, strides, dilations, output_padding, strict=True):
        full = s * (i - 1) + a + (k - 1) * d + 1
        pb = draw(st.integers(0, min(full - 1, k * d)))
        pe = draw(st.integers(0, min(full - 1 - pb, k * d)))
        pads_begin.append(pb)
        pads_end.append(pe)
    seed = draw(st.integers(0, 2**32 - 1))
    w = np.random.default_rng(seed).standard_normal((channels, out_per_group, *kernel))
    attrs = dict(
        strides=strides,
        dilations=dilations,
        group=group,
        output_padding=output_padding,
        pads=pads_begin + pads_end,
    )
    return dict(x_shape=(draw(st.integers(1, 2)), channels, *in_spatial), w=w, attrs=attrs, seed=seed)


@st.composite
def conv_configs(draw, rank: int) -> dict:
    group = draw(st.integers(1, 2))
    channels = group * draw(st.integers(1, 2))
    out_channels = group * draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 3)) for _ in range(rank)]
    strides = [draw(st.integers(1, MAX_SD[rank])) for _ in range(rank)]
    dilations = [draw(st.integers(1, MAX_SD[rank])) for _ in range(rank)]
    pads_begin = [draw(st.integers(0, 2)) for _ in range(rank)]
    pads_end = [draw(st.integers(0, 2)) for _ in range(rank)]
    in_spatial = []
    for k, d, pb, pe in zip(kernel, dilations, pads_begin, pads_end, strict=True):
        low = max(1, (k - 1) * d + 1 - pb - pe)
        in_spatial.append(draw(st.integers(low, low + MAX_IN[rank])))
    seed = draw(st.integers(0, 2**32 - 1))
    w = np.random.default_rng(seed).standard_normal((out_channels, channels // group, *kernel))
    attrs = dict(strides=strides, dilations=dilations, group=group, pads=pads_begin + pads_end)
    return dict(x_shape=(1, channels, *in_spatial), w=w, attrs=attrs, seed=seed)


def any_rank(configs):
    return st.integers(1, 3).flatmap(configs)


def node_operator(op: str, cfg: dict):
    g = Graph()
    x = g.add_input("x", cfg["x_shape"], "float64")
    g.op(op, x, g.const(cfg["w"], "w"), name="n", **cfg["attrs"])
    return conv_operator(g, g.nodes[0])


def dot_test(A, u: np.ndarray, v: np.ndarray) -> None:
    """<A u, v> = <u, Aᵀ v> to 1e-10, relative to the Cauchy–Schwarz bound of either side."""
    Au, ATv = A.apply(u), A.adjoint(v)
    assert Au.shape == v.shape and ATv.shape == u.shape
    lhs, rhs = float(np.vdot(Au, v)), float(np.vdot(u, ATv))
    scale = max(np.linalg.norm(Au) * np.linalg.norm(v), np.linalg.norm(u) * np.linalg.norm(ATv), 1e-300)
    assert abs(lhs - rhs) <= 1e-10 * scale, (lhs, rhs)


# --------------------------------------------------------------------------- the adjoint identity


@settings(max_examples=80, deadline=None)
@given(cfg=any_rank(ct_configs))
def test_conv_transpose_dot_product_identity(cfg: dict) -> None:
    A = node_operator("ConvTranspose", cfg)
    assert isinstance(A, ConvTransposeOperator)
    rng = np.random.default_rng(cfg["seed"] + 1)
    dot_test(A, rng.standard_normal(A.in_shape), rng.standard_normal(A.out_shape))


@settings(max_examples=50, deadline=None)
@given(cfg=any_rank(conv_configs))
def test_conv_dot_product_identity(cfg: dict) -> None:
    A = node_operator("Conv", cfg)
    assert isinstance(A, ConvOperator)
    rng = np.random.default_rng(cfg["seed"] + 1)
    dot_test(A, rng.standard_normal(A.in_shape), rng.standard_normal(A.out_shape))


# --------------------------------------------------------------------------- explicit matrices


@settings(max_examples=60, deadline=None)
@given(cfg=any_rank(ct_configs))
def test_conv_transpose_matrix_matches_probed_torch_and_apply(cfg: dict) -> None:
    A = node_operator("ConvTranspose", cfg)
    sparse = A.to_matrix(sparse=True)
    dense = A.to_matrix(sparse=False)
    assert sp.issparse(sparse) and sparse.format == "csr"
    assert isinstance(dense, np.ndarray) and dense.shape == A.shape == sparse.shape
    expected = oracle_ct_matrix(A.geometry, A.weight)
    np.testing.assert_allclose(dense, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sparse.toarray(), expected, rtol=0, atol=1e-12)
    u = np.random.default_rng(cfg["seed"]).standard_normal(A.in_shape)
    y = A.apply(u)
    assert y.shape == A.out_shape
    np.testing.assert_allclose(sparse @ u.reshape(-1), y.reshape(-1), rtol=0, atol=1e-12 * max(1.0, np.abs(y).max()))
    np.testing.assert_allclose(dense @ u.reshape(-1), y.reshape(-1), rtol=0, atol=1e-12 * max(1.0, np.abs(y).max()))


@settings(max_examples=40, deadline=None)
@given(cfg=any_rank(conv_configs))
def test_conv_matrix_matches_probed_torch_and_apply(cfg: dict) -> None:
    A = node_operator("Conv", cfg)
    expected = oracle_conv_matrix(A.geometry, A.weight)
    np.testing.assert_allclose(A.to_matrix(sparse=False), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(A.to_matrix(sparse=True).toarray(), expected, rtol=0, atol=1e-12)
    u = np.random.default_rng(cfg["seed"]).standard_normal(A.in_shape)
    np.testing.assert_allclose(expected @ u.reshape(-1), A.apply(u).reshape(-1), rtol=0, atol=1e-11)


@settings(max_examples=60, deadline=None)
@given(cfg=any_rank(ct_configs))
def test_conv_transpose_matrix_is_transpose_of_adjoint_conv_matrix(cfg: dict) -> None:
    A = node_operator("ConvTranspose", cfg)
    adjoint = A.geometry.adjoint()
    assert isinstance(adjoint, ConvGeometry)
    ct = A.to_matrix(sparse=False)
    # the Conv with the same weights and the matching geometry: probed from torch, and its own gather
    # reference (applied to a few random batches rather than probed: its input side is the large one)
    conv_by_torch = oracle_conv_matrix(adjoint, A.weight)
    np.testing.assert_allclose(ct, conv_by_torch.T, rtol=0, atol=1e-12)
    v = np.random.default_rng(cfg["seed"]).standard_normal((3, adjoint.in_channels, *adjoint.in_spatial))
    by_reference = ConvOperator(adjoint, A.weight).apply(v).reshape(3, -1)
    np.testing.assert_allclose(by_reference, v.reshape(3, -1) @ ct, rtol=0, atol=1e-11 * max(1.0, np.abs(v).max()))
    np.testing.assert_allclose(A.T.to_matrix(sparse=False), conv_by_torch, rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(cfg=any_rank(conv_configs))
def test_conv_operator_transpose_applies_torch_conv_transpose(cfg: dict) -> None:
    """Symmetric pads: the Conv's `.T` is torch's conv_transpose with output_padding = the dropped remainder."""
    rank = len(cfg["x_shape"]) - 2
    pads = cfg["attrs"]["pads"]
    p = [max(pads[a], pads[a + rank]) for a in range(rank)]  # 2p >= pb + pe keeps the input big enough
    cfg = dict(cfg, attrs=dict(cfg["attrs"], pads=p + p))
    A = node_operator("Conv", cfg)
    g = A.geometry
    remainders = tuple(
        (i + 2 * q - (k - 1) * d - 1) % s
        for i, q, k, d, s in zip(g.in_spatial, p, g.kernel, g.dilations, g.strides, strict=True)
    )
    v = np.random.default_rng(cfg["seed"]).standard_normal((2, *A.out_shape))
    expected = CONV_T[g.rank](
        _t(v),
        _t(A.weight),
        stride=g.strides,
        padding=tuple(p),
        output_padding=remainders,
        groups=g.group,
        dilation=g.dilations,
    ).numpy()
    assert expected.shape[2:] == g.in_spatial
    got = A.T.apply(v)  # batched
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * max(1.0, np.abs(expected).max()))
    np.testing.assert_allclose(A.adjoint(v[0]), expected[0], rtol=0, atol=1e-12 * max(1.0, np.abs(expected).max()))


def test_conv_transpose_matrix_by_hand_1d() -> None:
    # x (1 channel, 2 samples), w = [1, 2, 3], stride 2, pads [1, 0]: scatter targets 2i + κ − 1
    g = Graph()
    x = g.add_input("x", (1, 1, 2), "float64")
    g.op("ConvTranspose", x, g.const(np.array([[[1.0, 2.0, 3.0]]]), "w"), strides=[2], pads=[1, 0])
    A = conv_operator(g, g.nodes[0])
    # output size 2·(2 − 1) + 3 − 1 = 4; tap κ of input i lands on 2i + κ − 1 (i = 0, κ = 0 falls off)
    expected = np.array([[2.0, 0.0], [3.0, 1.0], [0.0, 2.0], [0.0, 3.0]])
    np.testing.assert_array_equal(A.to_matrix(sparse=False), expected)
    np.testing.assert_array_equal(A.to_matrix(sparse=True).toarray(), expected)
    np.testing.assert_array_equal(A.apply(np.array([[1.0, 10.0]])), [[2.0, 13.0, 20.0, 30.0]])
    np.testing.assert_array_equal(A.adjoint(np.array([[1.0, 1.0, 1.0, 1.0]])), [[5.0, 6.0]])


def test_batched_apply_equals_per_sample_apply() -> None:
    cfg = dict(
        x_shape=(3, 4, 3, 2),
        w=np.random.default_rng(0).standard_normal((4, 3, 2, 3)),
        attrs=dict(strides=[2, 1], group=2, pads=[1, 0, 0, 2], output_padding=[1, 0]),
    )
    A = node_operator("ConvTranspose", cfg)
    x = np.random.default_rng(1).standard_normal((3, *A.in_shape))
    np.testing.assert_array_equal(A.apply(x), np.stack([A.apply(s) for s in x]))


def test_to_matrix_dtype() -> None:
    cfg = dict(x_shape=(1, 2, 3), w=np.arange(1.0, 7.0).reshape(2, 1, 3), attrs=dict(strides=[2]))
    A = node_operator("ConvTranspose", cfg)
    assert A.to_matrix(sparse=True, dtype=np.float32).dtype == np.float32
    assert A.to_matrix(sparse=False).dtype == np.float64


# --------------------------------------------------------------------------- geometry round trips


@settings(max_examples=80, deadline=None)
@given(cfg=any_rank(conv_configs))
def test_conv_geometry_adjoint_round_trips_shapes(cfg: dict) -> None:
    A = node_operator("Conv", cfg)
    conv = A.geometry
    ct = conv.adjoint()
    assert isinstance(ct, ConvTransposeGeometry)
    assert ct.out_spatial == conv.in_spatial and ct.in_spatial == conv.out_spatial
    assert (ct.in_channels, ct.out_channels, ct.group) == (conv.out_channels, conv.in_channels, conv.group)
    for axis, i in enumerate(conv.in_spatial):
        s, K = conv.strides[axis], (conv.kernel[axis] - 1) * conv.dilations[axis] + 1
        pb, pe = conv.pads_begin[axis], conv.pads_end[axis]
        o = (i + pb + pe - K) // s + 1
        assert conv.out_spatial[axis] == o
        assert ct.output_padding[axis] == (i + pb + pe - K) % s
        assert s * (o - 1) + ct.output_padding[axis] + K - ct.pads_begin[axis] - ct.pads_end[axis] == i
    # an actual ConvTranspose node with the adjoint's attributes infers the Conv's input shape
    g = Graph()
    y = g.add_input("y", (1, conv.out_channels, *conv.out_spatial), "float64")
    out = g.op(
        "ConvTranspose",
        y,
        g.const(A.weight, "w"),
        strides=list(ct.strides),
        dilations=list(ct.dilations),
        group=ct.group,
        pads=ct.pads,
        output_padding=list(ct.output_padding),
    )
    assert out.shape == (1, conv.in_channels, *conv.in_spatial)


@pytest.mark.parametrize(
    ("i", "k", "s", "d", "pads", "remainder"),
    [
        (6, 3, 2, 1, (0, 0), 1),  # (6 − 3) % 2
        (7, 3, 2, 1, (0, 0), 0),
        (10, 3, 4, 1, (1, 0), 0),  # (10 + 1 − 3) % 4
        (10, 3, 4, 1, (1, 2), 2),
        (9, 2, 3, 3, (0, 1), 0),  # K = 4: (9 + 1 − 4) % 3
        (8, 2, 3, 3, (0, 0), 1),
    ],
)
def test_conv_geometry_adjoint_by_hand(i: int, k: int, s: int, d: int, pads: tuple[int, int], remainder: int) -> None:
    cfg = dict(x_shape=(1, 1, i), w=np.ones((1, 1, k)), attrs=dict(strides=[s], dilations=[d], pads=list(pads)))
    A = node_operator("Conv", cfg)
    ct = A.geometry.adjoint()
    assert ct.output_padding == (remainder,)
    assert ct.out_spatial == (i,)
    dot_test(
        A, np.random.default_rng(0).standard_normal(A.in_shape), np.random.default_rng(1).standard_normal(A.out_shape)
    )


@settings(max_examples=60, deadline=None)
@given(cfg=any_rank(ct_configs))
def test_conv_transpose_geometry_adjoint_round_trips_shapes(cfg: dict) -> None:
    A = node_operator("ConvTranspose", cfg)
    ct = A.geometry
    conv = ct.adjoint()
    assert conv.out_spatial == ct.in_spatial and conv.in_spatial == ct.out_spatial
    for axis in range(ct.rank):
        s, K = ct.strides[axis], (ct.kernel[axis] - 1) * ct.dilations[axis] + 1
        span = ct.out_spatial[axis] + conv.pads_begin[axis] + conv.pads_end[axis] - K
        assert span % s == 0 and span // s + 1 == ct.in_spatial[axis]
    # adjoint twice is the same operator again (possibly written with other pads)
    again = conv.adjoint()
    assert again.out_spatial == ct.out_spatial and again.in_spatial == ct.in_spatial
    np.testing.assert_array_equal(
        ConvTransposeOperator(again, A.weight).to_matrix(sparse=False), A.to_matrix(sparse=False)
    )


# --------------------------------------------------------------------------- SciPy and sparsity


def test_lsqr_solves_least_squares_like_dense_lstsq() -> None:
    cfg = dict(
        x_shape=(1, 2, 4, 3),
        w=np.random.default_rng(5).standard_normal((2, 3, 3, 2)),
        attrs=dict(strides=[2, 1], dilations=[1, 2], pads=[1, 0, 0, 1], output_padding=[1, 0]),
    )
    A = node_operator("ConvTranspose", cfg)
    rows, cols = A.shape
    assert rows > cols  # over-determined
    dense = oracle_ct_matrix(A.geometry, A.weight)
    b = np.random.default_rng(6).standard_normal(rows)
    expected = np.linalg.lstsq(dense, b, rcond=None)[0]
    op = A.as_linear_operator()
    assert op.shape == (rows, cols)
    v, w = np.random.default_rng(7).standard_normal(cols), np.random.default_rng(8).standard_normal(rows)
    np.testing.assert_allclose(op.matvec(v), dense @ v, rtol=0, atol=1e-12)
    np.testing.assert_allclose(op.rmatvec(w), dense.T @ w, rtol=0, atol=1e-12)
    np.testing.assert_allclose(op @ v, dense @ v, rtol=0, atol=1e-12)
    solution = lsqr(op, b, atol=1e-14, btol=1e-14, iter_lim=10_000)[0]
    np.testing.assert_allclose(solution, expected, rtol=0, atol=1e-8 * np.abs(expected).max())


def test_conv_linear_operator_lsqr() -> None:
    cfg = dict(
        x_shape=(1, 2, 7),
        w=np.random.default_rng(9).standard_normal((6, 1, 3)),
        attrs=dict(group=2, pads=[1, 1]),
    )
    A = node_operator("Conv", cfg)  # (6·7) × (2·7): tall
    dense = oracle_conv_matrix(A.geometry, A.weight)
    b = np.random.default_rng(10).standard_normal(A.shape[0])
    expected = np.linalg.lstsq(dense, b, rcond=None)[0]
    solution = lsqr(A.as_linear_operator(), b, atol=1e-14, btol=1e-14, iter_lim=10_000)[0]
    np.testing.assert_allclose(solution, expected, rtol=0, atol=1e-8 * np.abs(expected).max())


@settings(max_examples=60, deadline=None)
@given(cfg=any_rank(ct_configs))
def test_sparse_nnz_is_bounded(cfg: dict) -> None:
    A = node_operator("ConvTranspose", cfg)
    g = A.geometry
    bound = g.in_channels * g.out_channels_per_group * math.prod(g.kernel) * math.prod(g.in_spatial)
    assert A.nnz_bound() == bound
    matrix = A.to_matrix(sparse=True)
    assert matrix.nnz <= bound
    # every stored entry is a real scatter: the probed oracle has a nonzero there too (weights are never 0)
    assert matrix.nnz == np.count_nonzero(oracle_ct_matrix(g, A.weight))


@pytest.mark.parametrize("output_padding", [0, 1])
def test_sparse_nnz_reaches_the_bound_without_cropping(output_padding: int) -> None:
    cfg = dict(
        x_shape=(1, 4, 3, 5),
        w=np.random.default_rng(11).standard_normal((4, 3, 2, 3)),
        attrs=dict(strides=[2, 3], dilations=[2, 1], group=2, output_padding=[output_padding, 0]),
    )
    A = node_operator("ConvTranspose", cfg)
    assert A.to_matrix(sparse=True).nnz == 4 * 3 * (2 * 3) * (3 * 5)


# --------------------------------------------------------------------------- refusals


def test_conv_operator_refuses_weight_given_as_graph_input() -> None:
    g = Graph()
    x = g.add_input("x", (1, 2, 4), "float64")
    w = g.add_input("w", (2, 3, 3), "float64")
    g.op("ConvTranspose", x, w, name="up")
    with pytest.raises(UnsupportedError) as info:
        conv_operator(g, g.nodes[0])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("ConvTranspose 'up': ") and "weight W" in message and "graph input" in message


def test_conv_operator_refuses_other_ops() -> None:
    g = Graph()
    x = g.add_input("x", (1, 2, 4), "float64")
    g.op("Relu", x, name="act")
    with pytest.raises(UnsupportedError) as info:
        conv_operator(g, g.nodes[0])
    message = str(info.value)
    assert "\n" not in message and message.startswith("Relu 'act': ")


def test_conv_operator_accepts_weight_from_constant_node() -> None:
    w = np.arange(1.0, 7.0).reshape(2, 1, 3)
    g = Graph()
    x = g.add_input("x", (1, 2, 4), "float64")
    wv = g.op("Constant", value=w)
    g.op("ConvTranspose", x, wv, strides=[2])
    A = conv_operator(g, g.nodes[-1])
    expected = torch_conv_transpose(
        np.eye(8).reshape(8, 2, 4), w, strides=[2], dilations=[1], group=1, pads_begin=[0], out_sizes=[9]
    )
    np.testing.assert_array_equal(A.to_matrix(sparse=False), expected.reshape(8, -1).T)
