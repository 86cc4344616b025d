"""The float64 reference evaluator against independent oracles.

Every expectation here comes from somewhere other than the code under test: PyTorch's float64
conv / conv_transpose (which only take symmetric padding), the ONNX padding formulas applied by hand
to an un-padded transposed convolution, NumPy one-liners, or numbers worked out on paper.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import lowering
from lowering import Graph, evaluate

CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
MAX_IN = {1: 6, 2: 4, 3: 3}  # spatial input sizes stay small so hundreds of draws run in seconds


def _t(array: np.ndarray | None) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(np.array(array, np.float64))  # writable copy


def torch_conv_transpose(x, w, b=None, *, stride=1, padding=0, output_padding=0, groups=1, dilation=1) -> np.ndarray:
    fn = CONV_T[x.ndim - 2]
    return fn(
        _t(x),
        _t(w),
        _t(b),
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        groups=groups,
        dilation=dilation,
    ).numpy()


def torch_conv(x, w, b=None, *, stride=1, pads_begin=None, pads_end=None, groups=1, dilation=1) -> np.ndarray:
    """torch conv with per-axis begin/end pads, applied with an explicit F.pad (negative crops)."""
    rank = x.ndim - 2
    tx = _t(x)
    if pads_begin is not None:
        widths: list[int] = []
        for axis in reversed(range(rank)):  # F.pad lists the last axis first
            widths += [pads_begin[axis], pads_end[axis]]
        tx = F.pad(tx, widths)
    return CONV[rank](tx, _t(w), _t(b), stride=stride, groups=groups, dilation=dilation).numpy()


def crop_or_extend(full: np.ndarray, begins, sizes) -> np.ndarray:
    """Trailing axes: take `sizes` elements starting at `begins`, zeros outside `full` (negative begin extends)."""
    out = full
    rank = len(begins)
    for j, (begin, size) in enumerate(zip(begins, sizes, strict=True)):
        axis = out.ndim - rank + j
        front = max(0, -begin)
        back = max(0, begin + size - out.shape[axis])
        widths = [(0, 0)] * out.ndim
        widths[axis] = (front, back)
        out = np.pad(out, widths)
        out = np.take(out, np.arange(begin + front, begin + front + size), axis=axis)
    return out


def onnx_conv_transpose_oracle(x, w, b, *, strides, dilations, group, pads_begin, out_sizes) -> np.ndarray:
    """ONNX ConvTranspose by an independent route: torch's un-padded transpose, cropped by hand, then bias."""
    full = torch_conv_transpose(x, w, None, stride=tuple(strides), groups=group, dilation=tuple(dilations))
    y = crop_or_extend(full, pads_begin, out_sizes)
    if b is not None:
        y = y + np.asarray(b, np.float64).reshape(-1, *([1] * len(strides)))
    return y


def run_single(op: str, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, dtype="float64", **attrs):
    """Build X -> op(X, const W, const B) and evaluate it; return (output, recorded output shape)."""
    g = Graph()
    xv = g.add_input("x", x.shape, dtype)
    wv = g.const(np.asarray(w, dtype), "w")
    bv = None if b is None else g.const(np.asarray(b, dtype), "b")
    y = g.op(op, xv, wv, bv, name="n", **attrs)
    g.outputs.append(y)
    g.verify()
    out = evaluate(g, {"x": np.asarray(x, dtype)})[y.name]
    return out, y.shape


def assert_close(actual: np.ndarray, expected: np.ndarray, tol: float = 1e-12) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == np.float64
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale)


# --------------------------------------------------------------------------- ConvTranspose configurations


@st.composite
def conv_transpose_configs(draw, rank: int, symmetric: bool) -> dict:
    """A valid ConvTranspose: groups (depthwise included), dilation, stride, output_padding, bias or not."""
    batch = draw(st.integers(1, 3))
    if draw(st.booleans()):  # depthwise: one input channel per group
        group = channels = draw(st.integers(1, 4))
    else:
        group = draw(st.integers(1, 3))
        channels = group * draw(st.integers(1, 2))
    out_per_group = draw(st.integers(1, 3))
    axes = st.integers(1, MAX_IN[rank])
    in_spatial = [draw(axes) for _ in range(rank)]
    kernel = [draw(st.integers(1, 3)) for _ in range(rank)]
    strides = [draw(st.integers(1, 3)) for _ in range(rank)]
    dilations = [draw(st.integers(1, 3)) for _ in range(rank)]
    output_padding = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(strides, dilations, strict=True)]
    pads_begin, pads_end = [], []
    for i, k, s, d, a in zip(in_spatial, kernel, strides, dilations, output_padding, strict=True):
        full = s * (i - 1) + a + (k - 1) * d + 1
        if symmetric:  # output size full - 2p must stay >= 1
            p = draw(st.integers(0, (full - 1) // 2))
            pads_begin.append(p)
            pads_end.append(p)
        else:
            pb = draw(st.integers(0, min(full - 1, k * d + 1)))
            pe = draw(st.integers(0, min(full - 1 - pb, k * d + 1)))
            pads_begin.append(pb)
            pads_end.append(pe)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((batch, channels, *in_spatial))
    w = rng.standard_normal((channels, out_per_group, *kernel))
    b = rng.standard_normal(group * out_per_group) if draw(st.booleans()) else None
    return dict(
        x=x,
        w=w,
        b=b,
        group=group,
        strides=strides,
        dilations=dilations,
        output_padding=output_padding,
        pads_begin=pads_begin,
        pads_end=pads_end,
    )


def _attrs(cfg: dict) -> dict:
    return dict(
        strides=cfg["strides"],
        dilations=cfg["dilations"],
        group=cfg["group"],
        output_padding=cfg["output_padding"],
        pads=cfg["pads_begin"] + cfg["pads_end"],
    )


@pytest.mark.parametrize(("rank", "examples"), [(1, 130), (2, 110), (3, 60)])
def test_conv_transpose_matches_torch(rank: int, examples: int) -> None:
    @settings(max_examples=examples, deadline=None)
    @given(cfg=conv_transpose_configs(rank, symmetric=True))
    def check(cfg: dict) -> None:
        out, recorded = run_single("ConvTranspose", cfg["x"], cfg["w"], cfg["b"], **_attrs(cfg))
        expected = torch_conv_transpose(
            cfg["x"],
            cfg["w"],
            cfg["b"],
            stride=tuple(cfg["strides"]),
            padding=tuple(cfg["pads_begin"]),
            output_padding=tuple(cfg["output_padding"]),
            groups=cfg["group"],
            dilation=tuple(cfg["dilations"]),
        )
        assert recorded == expected.shape
        assert_close(out, expected)

    check()


@pytest.mark.parametrize(("rank", "examples"), [(1, 40), (2, 40), (3, 20)])
def test_conv_transpose_asymmetric_pads_match_cropped_full_transpose(rank: int, examples: int) -> None:
    @settings(max_examples=examples, deadline=None)
    @given(cfg=conv_transpose_configs(rank, symmetric=False))
    def check(cfg: dict) -> None:
        out, recorded = run_single("ConvTranspose", cfg["x"], cfg["w"], cfg["b"], **_attrs(cfg))
        out_sizes = [
            s * (i - 1) + a + (k - 1) * d + 1 - pb - pe
            for s, i, a, k, d, pb, pe in zip(
                cfg["strides"],
                cfg["x"].shape[2:],
                cfg["output_padding"],
                cfg["w"].shape[2:],
                cfg["dilations"],
                cfg["pads_begin"],
                cfg["pads_end"],
                strict=True,
            )
        ]
        expected = onnx_conv_transpose_oracle(
            cfg["x"],
            cfg["w"],
            cfg["b"],
            strides=cfg["strides"],
            dilations=cfg["dilations"],
            group=cfg["group"],
            pads_begin=cfg["pads_begin"],
            out_sizes=out_sizes,
        )
        assert recorded == expected.shape
        assert_close(out, expected)

    check()


@settings(max_examples=30, deadline=None)
@given(cfg=st.integers(1, 3).flatmap(lambda r: conv_transpose_configs(r, symmetric=True)))
def test_conv_transpose_weights_and_bias_as_graph_inputs(cfg: dict) -> None:
    g = Graph()
    x = g.add_input("x", cfg["x"].shape, "float64")
    w = g.add_input("w", cfg["w"].shape, "float64")
    feeds = {"x": cfg["x"], "w": cfg["w"]}
    b = None
    if cfg["b"] is not None:
        b = g.add_input("b", cfg["b"].shape, "float64")
        feeds["b"] = cfg["b"]
    y = g.op("ConvTranspose", x, w, b, **_attrs(cfg))
    g.outputs.append(y)
    expected = torch_conv_transpose(
        cfg["x"],
        cfg["w"],
        cfg["b"],
        stride=tuple(cfg["strides"]),
        padding=tuple(cfg["pads_begin"]),
        output_padding=tuple(cfg["output_padding"]),
        groups=cfg["group"],
        dilation=tuple(cfg["dilations"]),
    )
    assert_close(evaluate(g, feeds)[y.name], expected)


# --------------------------------------------------------------------------- ConvTranspose by hand

# x = [1, 2, 3], w = [1, 10, 100], stride 2: input i scatters w to 2i, 2i+1, 2i+2, so the un-padded
# transpose (length 2·(3−1) + 3 = 7) is [1, 10, 100+2, 20, 200+3, 30, 300].
X3 = np.array([[[1.0, 2.0, 3.0]]])
W3 = np.array([[[1.0, 10.0, 100.0]]])
FULL7 = [1.0, 10.0, 102.0, 20.0, 203.0, 30.0, 300.0]


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({}, FULL7),
        ({"auto_pad": "VALID"}, FULL7),
        ({"pads": [1, 2]}, [10.0, 102.0, 20.0, 203.0]),
        ({"pads": [0, 3]}, [1.0, 10.0, 102.0, 20.0]),
        ({"output_padding": [1]}, [*FULL7, 0.0]),
        ({"output_padding": [1], "pads": [2, 0]}, [102.0, 20.0, 203.0, 30.0, 300.0, 0.0]),
        # SAME: output 3·2 = 6, total padding 7 − 6 = 1; the odd one goes at the end for SAME_UPPER
        ({"auto_pad": "SAME_UPPER"}, [1.0, 10.0, 102.0, 20.0, 203.0, 30.0]),
        ({"auto_pad": "SAME_LOWER"}, [10.0, 102.0, 20.0, 203.0, 30.0, 300.0]),
        # output_shape 5: total 2 -> 1 and 1
        ({"output_shape": [5]}, [10.0, 102.0, 20.0, 203.0, 30.0]),
        ({"output_shape": [1, 1, 5]}, [10.0, 102.0, 20.0, 203.0, 30.0]),
        # output_shape 4: total 3; NOTSET puts the odd one at the beginning, SAME_UPPER at the end
        ({"output_shape": [4]}, [102.0, 20.0, 203.0, 30.0]),
        ({"output_shape": [4], "auto_pad": "SAME_UPPER"}, [10.0, 102.0, 20.0, 203.0]),
        ({"output_shape": [4], "auto_pad": "SAME_LOWER"}, [102.0, 20.0, 203.0, 30.0]),
        # output_shape 9 > 7: total −2 -> pads −1, −1, i.e. one zero on each side
        ({"output_shape": [9]}, [0.0, *FULL7, 0.0]),
        # pads are ignored when output_shape is given
        ({"output_shape": [5], "pads": [0, 0]}, [10.0, 102.0, 20.0, 203.0, 30.0]),
    ],
)
def test_conv_transpose_hand_worked_1d(attrs: dict, expected: list[float]) -> None:
    out, recorded = run_single("ConvTranspose", X3, W3, None, strides=[2], **attrs)
    assert recorded == (1, 1, len(expected))
    np.testing.assert_array_equal(out, np.array([[expected]]))


def test_conv_transpose_hand_worked_bias_covers_output_padding() -> None:
    out, _ = run_single("ConvTranspose", X3, W3, np.array([0.5]), strides=[2], output_padding=[1])
    np.testing.assert_array_equal(out, np.array([[[*FULL7, 0.0]]]) + 0.5)


def test_conv_transpose_hand_worked_dilation_and_groups() -> None:
    # dilation 2: taps at o = i + 2κ. x = [1, 2], w = [1, 10]: [1, 2, 10, 20]
    out, _ = run_single("ConvTranspose", np.array([[[1.0, 2.0]]]), np.array([[[1.0, 10.0]]]), None, dilations=[2])
    np.testing.assert_array_equal(out, [[[1.0, 2.0, 10.0, 20.0]]])
    # two groups, one channel each, two outputs per group; bias per output channel
    x = np.array([[[1.0], [2.0]]])  # (N=1, C=2, i=1)
    w = np.array([[[1.0], [3.0]], [[5.0], [7.0]]])  # (C=2, M/g=2, k=1)
    out, _ = run_single("ConvTranspose", x, w, np.array([0.0, 1.0, 2.0, 3.0]), group=2)
    np.testing.assert_array_equal(out, [[[1.0], [4.0], [12.0], [17.0]]])


@pytest.mark.parametrize(
    ("i", "k", "attrs", "size"),
    [
        (5, 3, {"strides": [2], "auto_pad": "SAME_UPPER"}, 10),
        (5, 3, {"strides": [2], "auto_pad": "SAME_LOWER"}, 10),
        (5, 3, {"strides": [2], "auto_pad": "VALID"}, 11),
        (5, 3, {"strides": [2], "pads": [1, 1], "output_padding": [1]}, 10),
        (4, 3, {"strides": [3], "dilations": [2]}, 14),  # 3·3 + (2·2 + 1)
        (4, 3, {"strides": [3], "dilations": [2], "output_padding": [2], "pads": [4, 0]}, 12),
        (7, 2, {"strides": [1], "pads": [1, 1]}, 6),
        (3, 1, {"strides": [4], "output_shape": [12]}, 12),
    ],
)
def test_conv_transpose_output_sizes_by_hand(i: int, k: int, attrs: dict, size: int) -> None:
    out, recorded = run_single("ConvTranspose", np.ones((1, 1, i)), np.ones((1, 1, k)), None, **attrs)
    assert recorded == (1, 1, size)
    assert out.shape == (1, 1, size)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET"])
@pytest.mark.parametrize("with_output_shape", ["none", "spatial", "with_nc"])
def test_conv_transpose_auto_pad_and_output_shape_2d(auto_pad: str, with_output_shape: str) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 3, 5))
    w = rng.standard_normal((4, 3, 3, 2))  # group 2 -> M = 6
    b = rng.standard_normal(6)
    strides, dilations, output_padding, group = [2, 3], [2, 1], [1, 2], 2
    full = [
        s * (i - 1) + a + (k - 1) * d + 1
        for s, i, a, k, d in zip(strides, (3, 5), output_padding, (3, 2), dilations, strict=True)
    ]
    attrs: dict = dict(strides=strides, dilations=dilations, output_padding=output_padding, group=group)
    if auto_pad != "NOTSET":
        attrs["auto_pad"] = auto_pad
    if with_output_shape != "none":
        target = [full[0] - 3, full[1] - 2]
        attrs["output_shape"] = target if with_output_shape == "spatial" else [2, 6, *target]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [3 * 2, 5 * 3]
    elif auto_pad == "VALID":
        target = full
    else:
        attrs["pads"] = [1, 0, 2, 3]
        target = [full[0] - 3, full[1] - 3]
    totals = [f - t for f, t in zip(full, target, strict=True)]
    if with_output_shape == "none" and auto_pad == "NOTSET":
        begins = [1, 0]
    elif auto_pad == "SAME_UPPER":
        begins = [t // 2 for t in totals]
    else:
        begins = [t - t // 2 for t in totals]
    out, recorded = run_single("ConvTranspose", x, w, b, **attrs)
    expected = onnx_conv_transpose_oracle(
        x, w, b, strides=strides, dilations=dilations, group=group, pads_begin=begins, out_sizes=target
    )
    assert recorded == (2, 6, *target)
    assert_close(out, expected)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_conv_transpose_auto_pad_same_3d(auto_pad: str) -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 3, 2, 3, 2))
    w = rng.standard_normal((3, 2, 2, 3, 3))  # depthwise-ish: group 3, M = 6
    strides, dilations = [2, 1, 3], [1, 2, 1]
    full = [s * (i - 1) + (k - 1) * d + 1 for s, i, k, d in zip(strides, (2, 3, 2), (2, 3, 3), dilations, strict=True)]
    target = [i * s for i, s in zip((2, 3, 2), strides, strict=True)]
    totals = [f - t for f, t in zip(full, target, strict=True)]
    begins = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]
    out, _ = run_single("ConvTranspose", x, w, None, strides=strides, dilations=dilations, group=3, auto_pad=auto_pad)
    expected = onnx_conv_transpose_oracle(
        x, w, None, strides=strides, dilations=dilations, group=3, pads_begin=begins, out_sizes=target
    )
    assert_close(out, expected)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_conv_transpose_low_precision_inputs_evaluate_in_float64(dtype: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 5, 3)).astype(dtype)
    w = rng.standard_normal((4, 2, 3, 2)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    out, _ = run_single("ConvTranspose", x, w, b, dtype=dtype, strides=[2, 1], pads=[1, 0, 1, 0], group=2)
    assert out.dtype == np.float64
    # the oracle sees exactly the rounded values the graph holds, so the float64 results agree to rounding
    expected = torch_conv_transpose(
        x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), stride=(2, 1), padding=(1, 0), groups=2
    )
    assert_close(out, expected)


def test_conv_low_precision_inputs_evaluate_in_float64() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 6)).astype(np.float16)
    w = rng.standard_normal((3, 2, 3)).astype(np.float16)
    out, _ = run_single("Conv", x, w, None, dtype="float16", pads=[1, 1])
    assert out.dtype == np.float64
    assert_close(out, torch_conv(x.astype(np.float64), w.astype(np.float64), pads_begin=[1], pads_end=[1]))


# --------------------------------------------------------------------------- Conv


@st.composite
def conv_configs(draw, rank: int) -> dict:
    batch = draw(st.integers(1, 3))
    group = draw(st.integers(1, 3))
    channels = group * draw(st.integers(1, 2))
    out_channels = group * draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 3)) for _ in range(rank)]
    strides = [draw(st.integers(1, 3)) for _ in range(rank)]
    dilations = [draw(st.integers(1, 2)) for _ in range(rank)]
    pads_begin = [draw(st.integers(0, 2)) for _ in range(rank)]
    pads_end = [draw(st.integers(0, 2)) for _ in range(rank)]
    in_spatial = []
    for k, d, pb, pe in zip(kernel, dilations, pads_begin, pads_end, strict=True):
        low = max(1, (k - 1) * d + 1 - pb - pe)
        in_spatial.append(draw(st.integers(low, low + MAX_IN[rank])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((batch, channels, *in_spatial))
    w = rng.standard_normal((out_channels, channels // group, *kernel))
    b = rng.standard_normal(out_channels) if draw(st.booleans()) else None
    return dict(
        x=x, w=w, b=b, group=group, strides=strides, dilations=dilations, pads_begin=pads_begin, pads_end=pads_end
    )


@pytest.mark.parametrize(("rank", "examples"), [(1, 40), (2, 40), (3, 20)])
def test_conv_matches_torch(rank: int, examples: int) -> None:
    @settings(max_examples=examples, deadline=None)
    @given(cfg=conv_configs(rank))
    def check(cfg: dict) -> None:
        out, recorded = run_single(
            "Conv",
            cfg["x"],
            cfg["w"],
            cfg["b"],
            strides=cfg["strides"],
            dilations=cfg["dilations"],
            group=cfg["group"],
            pads=cfg["pads_begin"] + cfg["pads_end"],
        )
        expected = torch_conv(
            cfg["x"],
            cfg["w"],
            cfg["b"],
            stride=tuple(cfg["strides"]),
            pads_begin=cfg["pads_begin"],
            pads_end=cfg["pads_end"],
            groups=cfg["group"],
            dilation=tuple(cfg["dilations"]),
        )
        assert recorded == expected.shape
        assert_close(out, expected)

    check()


def test_conv_symmetric_padding_matches_torch_padding_argument() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 7, 5))
    w = rng.standard_normal((6, 1, 3, 2))  # depthwise: group = C = 6
    b = rng.standard_normal(6)
    out, _ = run_single("Conv", x, w, b, group=6, strides=[2, 1], dilations=[1, 2], pads=[1, 2, 1, 2])
    expected = F.conv2d(_t(x), _t(w), _t(b), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=6).numpy()
    assert_close(out, expected)


# x = [1..6], w = [1, 10, 100] (cross-correlation: y[o] = Σ x[s·o + κ − p] w[κ])
X6 = np.arange(1.0, 7.0).reshape(1, 1, 6)


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({}, [321.0, 432.0, 543.0, 654.0]),
        ({"pads": [1, 0]}, [210.0, 321.0, 432.0, 543.0, 654.0]),
        ({"strides": [2]}, [321.0, 543.0]),
        ({"dilations": [2]}, [1.0 + 30.0 + 500.0, 2.0 + 40.0 + 600.0]),
        # SAME, stride 2: output ceil(6/2) = 3, total padding 2·2 + 3 − 6 = 1
        ({"strides": [2], "auto_pad": "SAME_UPPER"}, [321.0, 543.0, 65.0]),
        ({"strides": [2], "auto_pad": "SAME_LOWER"}, [210.0, 432.0, 654.0]),
        ({"auto_pad": "VALID", "strides": [3]}, [321.0, 654.0]),
    ],
)
def test_conv_hand_worked_1d(attrs: dict, expected: list[float]) -> None:
    out, recorded = run_single("Conv", X6, np.array([[[1.0, 10.0, 100.0]]]), None, **attrs)
    assert recorded == (1, 1, len(expected))
    np.testing.assert_array_equal(out, np.array([[expected]]))


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conv_auto_pad_same_matches_padded_torch(auto_pad: str, rank: int) -> None:
    rng = np.random.default_rng(rank)
    in_spatial = [7, 6, 5][:rank]
    kernel, strides, dilations = [3, 2, 3][:rank], [2, 3, 1][:rank], [2, 1, 1][:rank]
    x = rng.standard_normal((2, 4, *in_spatial))
    w = rng.standard_normal((6, 2, *kernel))
    b = rng.standard_normal(6)
    begins, ends = [], []
    for i, k, s, d in zip(in_spatial, kernel, strides, dilations, strict=True):
        out = math.ceil(i / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - i)
        begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        begins.append(begin)
        ends.append(total - begin)
    out, recorded = run_single("Conv", x, w, b, group=2, strides=strides, dilations=dilations, auto_pad=auto_pad)
    expected = torch_conv(
        x, w, b, stride=tuple(strides), pads_begin=begins, pads_end=ends, groups=2, dilation=tuple(dilations)
    )
    assert recorded[2:] == tuple(math.ceil(i / s) for i, s in zip(in_spatial, strides, strict=True))
    assert_close(out, expected)


# --------------------------------------------------------------------------- other ops


def _graph_with_input(x: np.ndarray) -> tuple[Graph, lowering.Value]:
    g = Graph()
    return g, g.add_input("x", x.shape, x.dtype.name)


def _eval(g: Graph, y, x: np.ndarray) -> np.ndarray:
    g.outputs.append(y)
    g.verify()
    out = evaluate(g, {"x": x})[y.name]
    assert out.shape == y.shape
    return out


def test_pad_negative_pads_crop() -> None:
    x = np.arange(10.0).reshape(2, 5)
    g, xv = _graph_with_input(x)
    y = g.op("Pad", xv, g.const(np.array([0, -1, 0, -2], np.int64), "pads"))
    np.testing.assert_array_equal(_eval(g, y, x), [[1.0, 2.0], [6.0, 7.0]])


def test_pad_mixed_signs_constant_value_and_axes() -> None:
    x = np.arange(10.0).reshape(2, 5)
    g, xv = _graph_with_input(x)
    pads = g.const(np.array([1, -1, 0, 2], np.int64), "pads")  # axis 0: +1 before; axis 1: crop 1, add 2
    y = g.op("Pad", xv, pads, g.const(np.array(7.0), "fill"))
    expected = [[7.0, 7.0, 7.0, 7.0, 7.0, 7.0], [1.0, 2.0, 3.0, 4.0, 7.0, 7.0], [6.0, 7.0, 8.0, 9.0, 7.0, 7.0]]
    np.testing.assert_array_equal(_eval(g, y, x), expected)

    g, xv = _graph_with_input(x)
    y = g.op("Pad", xv, g.const(np.array([-2, 1], np.int64), "pads"), None, g.const(np.array([-1], np.int64), "axes"))
    np.testing.assert_array_equal(_eval(g, y, x), [[2.0, 3.0, 4.0, 0.0], [7.0, 8.0, 9.0, 0.0]])


@pytest.mark.parametrize(
    ("starts", "ends", "steps", "expected"),
    [
        ([8], [1], [-3], [8.0, 5.0, 2.0]),
        ([-1], [np.iinfo(np.int64).min], [-1], [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]),
        ([100], [-100], [-4], [9.0, 5.0, 1.0]),  # start clamps to 9, end clamps to before 0
        ([-2], [-5], [-1], [8.0, 7.0, 6.0]),
        ([1], [8], [3], [1.0, 4.0, 7.0]),
    ],
)
def test_slice_steps_1d(starts, ends, steps, expected) -> None:
    x = np.arange(10.0)
    g, xv = _graph_with_input(x)
    i64 = lambda v: g.const(np.array(v, np.int64), "s")  # noqa: E731
    y = g.op("Slice", xv, i64(starts), i64(ends), i64([0]), i64(steps))
    np.testing.assert_array_equal(_eval(g, y, x), expected)


def test_slice_negative_step_on_chosen_axis() -> None:
    x = np.arange(12.0).reshape(3, 4)
    g, xv = _graph_with_input(x)
    i64 = lambda v: g.const(np.array(v, np.int64), "s")  # noqa: E731
    y = g.op("Slice", xv, i64([-1]), i64([0]), i64([1]), i64([-2]))
    np.testing.assert_array_equal(_eval(g, y, x), [[3.0, 1.0], [7.0, 5.0], [11.0, 9.0]])


def test_depth_to_space_crd_matches_pixel_shuffle() -> None:
    x = np.random.default_rng(0).standard_normal((2, 12, 3, 4))
    g, xv = _graph_with_input(x)
    y = g.op("DepthToSpace", xv, blocksize=2, mode="CRD")
    np.testing.assert_array_equal(_eval(g, y, x), F.pixel_shuffle(_t(x), 2).numpy())


def test_depth_to_space_dcr_and_space_to_depth_by_index() -> None:
    b, n, c, h, w = 3, 1, 2, 2, 3
    x = np.random.default_rng(1).standard_normal((n, c * b * b, h, w))
    expected = np.zeros((n, c, h * b, w * b))
    for ch in range(c):
        for i in range(b):
            for j in range(b):
                # ONNX DCR: depth index (i·b + j)·C' + c lands at (h·b + i, w·b + j)
                expected[:, ch, i::b, j::b] = x[:, (i * b + j) * c + ch]
    g, xv = _graph_with_input(x)
    y = g.op("DepthToSpace", xv, blocksize=b)
    np.testing.assert_array_equal(_eval(g, y, x), expected)

    g, xv = _graph_with_input(expected)
    y = g.op("SpaceToDepth", xv, blocksize=b)
    np.testing.assert_array_equal(_eval(g, y, expected), x)


@pytest.mark.parametrize(
    ("pads", "strides", "dilations"),
    [([0, 0, 0, 0], [1, 1], [1, 1]), ([1, 2, 1, 2], [2, 1], [1, 2]), ([1, 0, 2, 1], [2, 3], [2, 1])],
)
def test_col2im_matches_torch_fold(pads, strides, dilations) -> None:
    image, block, channels = (7, 6), (3, 2), 2
    padded = [image[a] + pads[a] + pads[a + 2] for a in range(2)]
    blocks = [(padded[a] - (block[a] - 1) * dilations[a] - 1) // strides[a] + 1 for a in range(2)]
    cols = np.random.default_rng(2).standard_normal((2, channels * math.prod(block), math.prod(blocks)))
    g, xv = _graph_with_input(cols)
    y = g.op(
        "Col2Im",
        xv,
        g.const(np.array(image, np.int64), "image"),
        g.const(np.array(block, np.int64), "block"),
        pads=pads,
        strides=strides,
        dilations=dilations,
    )
    # torch folds onto the padded canvas (padding 0), then the pads are cut away by hand
    canvas = F.fold(_t(cols), tuple(padded), block, dilation=tuple(dilations), stride=tuple(strides)).numpy()
    expected = canvas[:, :, pads[0] : pads[0] + image[0], pads[1] : pads[1] + image[1]]
    np.testing.assert_allclose(_eval(g, y, cols), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("pads", "strides", "dilations"),
    [([0, 0, 0, 0], [1, 1], [1, 1]), ([1, 2, 1, 2], [2, 1], [1, 2]), ([1, 0, 2, 1], [2, 3], [2, 1])],
)
def test_im2col_matches_torch_unfold(pads, strides, dilations) -> None:
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 6))
    block = (3, 2)
    g, xv = _graph_with_input(x)
    y = g.op("Im2Col", xv, g.const(np.array(block, np.int64), "block"), pads=pads, strides=strides, dilations=dilations)
    padded = F.pad(_t(x), (pads[1], pads[3], pads[0], pads[2]))
    expected = F.unfold(padded, block, dilation=tuple(dilations), stride=tuple(strides)).numpy()
    np.testing.assert_array_equal(_eval(g, y, x), expected)


def test_interior_pad_inserts_zeros_between_neighbours() -> None:
    x = np.arange(1.0, 7.0).reshape(1, 2, 3)
    g, xv = _graph_with_input(x)
    y = g.op("InteriorPad", xv, interior=[0, 1, 2])
    expected = np.zeros((1, 3, 7))
    for r in range(2):
        for c in range(3):
            expected[0, 2 * r, 3 * c] = x[0, r, c]
    out = _eval(g, y, x)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0].tolist() == [1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 3.0]


@pytest.mark.parametrize(
    ("strides", "rows", "sizes"),
    [([2, 2], [3, 4], [6, 8]), ([2, 3], [3, 2], [5, 4]), ([3], [4], [10]), ([1, 2, 2], [2, 3, 2], [2, 6, 3])],
)
def test_interleave_places_phase_r_row_j_at_j_times_s_plus_r(strides, rows, sizes) -> None:
    """Element by element: Y[..., j·s + r] = phase_r[..., j] (r row-major over the axes), cut to `sizes`."""
    rng = np.random.default_rng(5)
    phases = [rng.standard_normal((2, 3, *rows)) for _ in range(int(np.prod(strides)))]
    g = Graph()
    inputs = [g.add_input(f"p{i}", p.shape, "float64") for i, p in enumerate(phases)]
    y = g.op("Interleave", *inputs, strides=strides, sizes=sizes)
    g.outputs.append(y)
    g.verify()
    out = evaluate(g, {f"p{i}": p for i, p in enumerate(phases)})[y.name]
    assert out.shape == (2, 3, *sizes)
    for position in np.ndindex(*sizes):
        flat = 0
        for o, s in zip(position, strides, strict=True):
            flat = flat * s + o % s
        source = tuple(o // s for o, s in zip(position, strides, strict=True))
        np.testing.assert_array_equal(out[(..., *position)], phases[flat][(..., *source)])


def test_interleave_refuses_wrong_counts_in_one_line() -> None:
    g = Graph()
    a = g.add_input("a", (1, 2, 3, 3), "float32")
    with pytest.raises(lowering.VerificationError, match="takes Πstrides = 4 inputs, got 2"):
        g.op("Interleave", a, a, strides=[2, 2])
    with pytest.raises(lowering.VerificationError, match=r"attribute 'sizes'.*must be in \[0, 6\]"):
        g.op("Interleave", a, a, a, a, strides=[2, 2], sizes=[7, 6])


@pytest.mark.parametrize(
    ("blocks", "rows", "mode", "begins", "sizes"),
    [
        ([2, 2], [3, 4], "CRD", [1, 1], [4, 6]),
        ([2, 3], [3, 2], "DCR", None, None),
        ([4], [3], "CRD", [2], [9]),
        ([2, 1, 2], [2, 3, 2], "DCR", [1, 0, 0], [3, 2, 4]),
    ],
)
def test_depth_to_space_nd_places_channel_phase_r_row_q_at_q_times_s_plus_r(blocks, rows, mode, begins, sizes) -> None:
    """Element by element: Y[n, m, o] = X[n, channel(m, r), q] where q·s + r = o + begin on every axis;
    channel(m, r) = m·Πs + r (CRD) or r·M + m (DCR), r flattened row-major."""
    rng = np.random.default_rng(6)
    phases, channels = int(np.prod(blocks)), 3
    x = rng.standard_normal((2, channels * phases, *rows))
    g, xv = _graph_with_input(x)
    attrs = {} if begins is None else {"begins": begins, "sizes": sizes}
    y = g.op("DepthToSpaceND", xv, blocks=blocks, mode=mode, **attrs)
    out = _eval(g, y, x)
    begins = begins or [0] * len(blocks)
    sizes = sizes or [q * s for q, s in zip(rows, blocks, strict=True)]
    assert out.shape == (2, channels, *sizes)
    for m in range(channels):
        for position in np.ndindex(*sizes):
            canvas = [o + b for o, b in zip(position, begins, strict=True)]
            flat = 0
            for p, s in zip(canvas, blocks, strict=True):
                flat = flat * s + p % s
            channel = m * phases + flat if mode == "CRD" else flat * channels + m
            source = tuple(p // s for p, s in zip(canvas, blocks, strict=True))
            np.testing.assert_array_equal(out[(slice(None), m, *position)], x[(slice(None), channel, *source)])


def test_depth_to_space_nd_agrees_with_onnx_depth_to_space_in_2d() -> None:
    x = np.random.default_rng(7).standard_normal((1, 12, 3, 2))
    for mode in ("DCR", "CRD"):
        g, xv = _graph_with_input(x)
        nd = g.op("DepthToSpaceND", xv, blocks=[2, 2], mode=mode)
        onnx_op = g.op("DepthToSpace", xv, blocksize=2, mode=mode)
        g.outputs.append(onnx_op)
        np.testing.assert_array_equal(_eval(g, nd, x), _eval(g, onnx_op, x))


def test_depth_to_space_nd_refuses_bad_attributes_in_one_line() -> None:
    g = Graph()
    a = g.add_input("a", (1, 8, 3, 3), "float32")
    with pytest.raises(lowering.VerificationError, match="channels 8 are not divisible by Πblocks = 9"):
        g.op("DepthToSpaceND", a, blocks=[3, 3])
    with pytest.raises(lowering.VerificationError, match=r"attribute 'sizes'.*must lie in \[0, 6\]"):
        g.op("DepthToSpaceND", a, blocks=[2, 2], begins=[1, 0], sizes=[6, 6])


def test_flip_reverses_given_axes() -> None:
    x = np.arange(24.0).reshape(2, 3, 4)
    g, xv = _graph_with_input(x)
    y = g.op("Flip", xv, axes=[0, -1])
    np.testing.assert_array_equal(_eval(g, y, x), torch.flip(_t(x), (0, 2)).numpy())


def test_split_with_sizes_and_equal_parts() -> None:
    x = np.arange(14.0).reshape(2, 7)
    g, xv = _graph_with_input(x)
    sizes = g.const(np.array([2, 4, 1], np.int64), "split")
    node = g.add_node("Split", [xv, sizes], {"axis": 1}, outputs=["p0", "p1", "p2"])
    g.outputs.extend(node.outputs)
    outs = evaluate(g, {"x": x})
    got = [outs[v.name] for v in node.outputs]
    np.testing.assert_array_equal(got[0], [[0.0, 1.0], [7.0, 8.0]])
    np.testing.assert_array_equal(got[1], [[2.0, 3.0, 4.0, 5.0], [9.0, 10.0, 11.0, 12.0]])
    np.testing.assert_array_equal(got[2], [[6.0], [13.0]])

    g, xv = _graph_with_input(x)
    # num_outputs 3: parts of ceil(7/3) = 3, so sizes 3, 3, 1
    node = g.add_node("Split", [xv], {"axis": -1, "num_outputs": 3}, outputs=["q0", "q1", "q2"])
    g.outputs.extend(node.outputs)
    outs = evaluate(g, {"x": x})
    assert [v.shape for v in node.outputs] == [(2, 3), (2, 3), (2, 1)]
    np.testing.assert_array_equal(outs[node.outputs[2].name], [[6.0], [13.0]])


def test_concat_joins_along_axis() -> None:
    a = np.arange(6.0).reshape(2, 3)
    g = Graph()
    av = g.add_input("a", a.shape, "float64")
    bv = g.const(np.array([[10.0], [20.0]]), "b")
    y = g.op("Concat", av, bv, av, axis=-1)
    g.outputs.append(y)
    out = evaluate(g, {"a": a})[y.name]
    np.testing.assert_array_equal(out, [[0.0, 1.0, 2.0, 10.0, 0.0, 1.0, 2.0], [3.0, 4.0, 5.0, 20.0, 3.0, 4.0, 5.0]])


@pytest.mark.parametrize(("trans_a", "trans_b"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm_alpha_beta_transposes(trans_a: int, trans_b: int) -> None:
    rng = np.random.default_rng(9)
    a = rng.standard_normal((4, 3) if trans_a else (3, 4))
    b = rng.standard_normal((5, 4) if trans_b else (4, 5))
    c = rng.standard_normal(5)  # broadcasts over rows
    g = Graph()
    av = g.add_input("a", a.shape, "float64")
    y = g.op("Gemm", av, g.const(b, "b"), g.const(c, "c"), alpha=0.5, beta=-2.0, transA=trans_a, transB=trans_b)
    g.outputs.append(y)
    out = evaluate(g, {"a": a})[y.name]
    expected = 0.5 * ((a.T if trans_a else a) @ (b.T if trans_b else b)) - 2.0 * c
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_gemm_by_hand() -> None:
    g = Graph()
    av = g.add_input("a", (1, 2), "float64")
    y = g.op("Gemm", av, g.const(np.array([[1.0, 2.0], [3.0, 4.0]]), "b"))
    g.outputs.append(y)
    np.testing.assert_array_equal(evaluate(g, {"a": np.array([[1.0, 1.0]])})[y.name], [[4.0, 6.0]])


def test_batch_normalization_matches_torch() -> None:
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 4, 5))
    scale, bias, mean = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3)
    var = rng.uniform(0.5, 2.0, 3)
    g, xv = _graph_with_input(x)
    y = g.op(
        "BatchNormalization",
        xv,
        g.const(scale, "scale"),
        g.const(bias, "bias"),
        g.const(mean, "mean"),
        g.const(var, "var"),
        epsilon=1e-3,
    )
    expected = F.batch_norm(_t(x), _t(mean), _t(var), _t(scale), _t(bias), training=False, eps=1e-3).numpy()
    np.testing.assert_allclose(_eval(g, y, x), expected, rtol=0, atol=1e-12)


def test_conv_transpose_chain_into_other_ops_evaluates_in_order() -> None:
    """A small decoder block (ConvTranspose -> BatchNorm -> Relu) against the same chain in torch."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((1, 4, 3, 3))
    w = rng.standard_normal((4, 2, 4, 4))
    scale, bias, mean, var = rng.standard_normal(2), rng.standard_normal(2), rng.standard_normal(2), np.ones(2)
    g, xv = _graph_with_input(x)
    t = g.op("ConvTranspose", xv, g.const(w, "w"), strides=[2, 2], pads=[1, 1, 1, 1])
    t = g.op("BatchNormalization", t, *(g.const(v, "bn") for v in (scale, bias, mean, var)))
    y = g.op("Relu", t)
    ct = F.conv_transpose2d(_t(x), _t(w), stride=2, padding=1)
    expected = F.relu(F.batch_norm(ct, _t(mean), _t(var), _t(scale), _t(bias), training=False, eps=1e-5)).numpy()
    np.testing.assert_allclose(_eval(g, y, x), expected, rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), rank=st.integers(1, 3))
def test_im2col_and_col2im_are_adjoint(data, rank: int) -> None:
    """<Im2Col x, c> = <x, Col2Im c> for any block geometry, 1-D to 3-D (torch only folds 2-D)."""
    block = [data.draw(st.integers(1, 3)) for _ in range(rank)]
    strides = [data.draw(st.integers(1, 3)) for _ in range(rank)]
    dilations = [data.draw(st.integers(1, 2)) for _ in range(rank)]
    pads = [data.draw(st.integers(0, 2)) for _ in range(2 * rank)]
    image = [
        data.draw(st.integers(max(1, (k - 1) * d + 1 - pads[a] - pads[a + rank]), 5))
        for a, (k, d) in enumerate(zip(block, dilations, strict=True))
    ]
    attrs = dict(strides=strides, dilations=dilations, pads=pads)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((2, 2, *image))
    g, xv = _graph_with_input(x)
    cols_value = g.op("Im2Col", xv, g.const(np.array(block, np.int64), "block"), **attrs)
    cols = _eval(g, cols_value, x)
    c = rng.standard_normal(cols.shape)
    g, cv = _graph_with_input(c)
    y = g.op(
        "Col2Im", cv, g.const(np.array(image, np.int64), "image"), g.const(np.array(block, np.int64), "b"), **attrs
    )
    back = _eval(g, y, c)
    lhs, rhs = float(np.vdot(cols, c)), float(np.vdot(x, back))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, np.linalg.norm(cols) * np.linalg.norm(c))


def test_symbolic_batch_binds_at_run_time() -> None:
    rng = np.random.default_rng(14)
    w, b = rng.standard_normal((2, 3, 3)), rng.standard_normal(3)
    g = Graph()
    x = g.add_input("x", ("N", 2, 4), "float64")
    y = g.op("ConvTranspose", x, g.const(w, "w"), g.const(b, "b"), strides=[2], pads=[1, 1], output_padding=[1])
    g.outputs.append(y)
    assert y.shape == ("N", 3, 8)
    for batch in (1, 3):
        xs = rng.standard_normal((batch, 2, 4))
        expected = torch_conv_transpose(xs, w, b, stride=2, padding=1, output_padding=1)
        assert_close(evaluate(g, {"x": xs})[y.name], expected)


def test_relu_and_leaky_relu_match_torch_including_nan() -> None:
    x = np.array([[np.nan, -2.0, -0.5, 0.0, 0.5, 3.0, -np.inf, np.inf]])
    g, xv = _graph_with_input(x)
    y = g.op("Relu", xv)
    np.testing.assert_array_equal(_eval(g, y, x), torch.relu(_t(x)).numpy())  # NaN stays NaN
    g, xv = _graph_with_input(x)
    y = g.op("LeakyRelu", xv, alpha=0.25)
    np.testing.assert_array_equal(_eval(g, y, x), F.leaky_relu(_t(x), 0.25).numpy())


@pytest.mark.parametrize("begin", range(-7, 5))
@pytest.mark.parametrize("end", range(-7, 5))
def test_pad_with_any_signs_matches_its_definition(begin, end):
    """out[o] = x[o - begin] where that index exists, else the fill value (checked element by element)."""
    size = 5 + begin + end
    if size < 0:
        return
    x = np.arange(1.0, 6.0)[None, None]
    g = lowering.Graph()
    xv = g.add_input("x", (1, 1, 5), "float64")
    y = g.op("Pad", xv, g.const(np.array([0, 0, begin, 0, 0, end])), g.const(np.array(-1.0)))
    g.outputs.append(y)
    expected = [x[0, 0, o - begin] if 0 <= o - begin < 5 else -1.0 for o in range(size)]
    assert lowering.evaluate(g, {"x": x})[y.name].ravel().tolist() == expected
