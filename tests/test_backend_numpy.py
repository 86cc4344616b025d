"""The NumPy backend against the float64 reference of the unlowered graph.

Every strategy's lowered graph, compiled to NumPy source, must compute what `lowering.evaluate`
computes for the original ConvTranspose; the emitted module must import and run on its own.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lowering
from lowering.api import strategy_names
from lowering.backends.numpy_backend import emit_numpy, write_numpy_module
from lowering.examples import EXAMPLES

STRATEGIES = [*strategy_names(), None]


def conv_transpose_graph(draw_params: dict, dtype: str = "float64") -> tuple[lowering.Graph, dict[str, np.ndarray]]:
    p = draw_params
    rng = np.random.default_rng(p["seed"])
    g = lowering.Graph("t")
    x = g.add_input("x", (p["n"], p["c"], *p["size"]), dtype)
    w = g.const(rng.standard_normal((p["c"], p["m"] // p["g"], *p["k"])).astype(dtype), "w")
    b = g.const(rng.standard_normal(p["m"]).astype(dtype), "b") if p["bias"] else None
    rank = len(p["size"])
    y = g.op(
        "ConvTranspose",
        x,
        w,
        b,
        strides=p["s"],
        dilations=p["d"],
        pads=p["pb"] + p["pe"],
        output_padding=p["op"],
        group=p["g"],
        name="up",
    )
    g.outputs.append(y)
    assert rank == len(p["k"])
    return g, {"x": rng.standard_normal((p["n"], p["c"], *p["size"])).astype(dtype)}


@st.composite
def layer_params(draw):
    rank = draw(st.integers(1, 3))
    group = draw(st.sampled_from([1, 2]))
    k = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    s = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    d = draw(st.lists(st.integers(1, 2), min_size=rank, max_size=rank))
    op = [draw(st.integers(0, max(si, di) - 1)) for si, di in zip(s, d, strict=True)]
    size = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    eff = [(ki - 1) * di + 1 for ki, di in zip(k, d, strict=True)]
    pb = [draw(st.integers(0, e)) for e in eff]
    pe = [draw(st.integers(0, e)) for e in eff]
    # keep the output at least one element long on every axis
    for axis in range(rank):
        full = s[axis] * (size[axis] - 1) + op[axis] + eff[axis]
        while full - pb[axis] - pe[axis] < 1:
            pb[axis] = max(0, pb[axis] - 1)
            pe[axis] = max(0, pe[axis] - 1)
    return {
        "n": draw(st.integers(1, 2)),
        "c": group * draw(st.integers(1, 2)),
        "m": group * draw(st.integers(1, 2)),
        "g": group,
        "k": k,
        "s": s,
        "d": d,
        "op": op,
        "size": size,
        "pb": pb,
        "pe": pe,
        "bias": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def run_numpy(graph: lowering.Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return lowering.compile(graph, backend="numpy")(feeds)


def assert_close(out: np.ndarray, ref: np.ndarray, rtol: float) -> None:
    assert out.shape == ref.shape
    scale = max(float(np.abs(ref).max(initial=0.0)), 1.0)
    assert float(np.abs(out.astype(np.float64) - ref).max(initial=0.0)) <= rtol * scale


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=30, deadline=None, derandomize=True)
@given(params=layer_params())
def test_every_strategy_on_numpy_matches_reference(strategy, params):
    graph, feeds = conv_transpose_graph(params)
    reference = lowering.evaluate(graph, feeds)["up"]
    candidate = graph if strategy is None else lowering.lower(graph, strategy)
    assert_close(run_numpy(candidate, feeds)["up"], reference, 1e-10)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@pytest.mark.parametrize("strategy", ["auto", "subpixel", "col2im", None])
def test_examples_in_float32(name, strategy):
    graph = EXAMPLES[name](2)
    rng = np.random.default_rng(0)
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in graph.inputs}
    reference = lowering.evaluate(graph, feeds)
    candidate = (
        graph
        if strategy is None
        else lowering.lower(graph, strategy, **({"backend": "numpy"} if strategy == "auto" else {}))
    )
    outputs = run_numpy(candidate, feeds)
    for key, ref in reference.items():
        assert outputs[key].dtype == np.float32
        assert_close(outputs[key], ref, 1e-5)


def test_float16_graph_computes_in_float32_and_returns_float16():
    params = {
        "n": 1,
        "c": 2,
        "m": 2,
        "g": 1,
        "k": [3, 3],
        "s": [2, 2],
        "d": [1, 1],
        "op": [1, 1],
        "size": [3, 3],
        "pb": [1, 1],
        "pe": [1, 1],
        "bias": True,
        "seed": 3,
    }
    graph, feeds = conv_transpose_graph(params, "float16")
    out = run_numpy(lowering.lower(graph, "subpixel"), feeds)["up"]
    assert out.dtype == np.float16
    assert_close(out, lowering.evaluate(graph, feeds)["up"], 5e-3)


def test_emitted_source_is_standalone_numpy(tmp_path):
    graph = EXAMPLES["unet-decoder"](1)
    written = write_numpy_module(lowering.lower(graph, "col2im"), tmp_path / "decoder.py")
    assert [p.suffix for p in written] == [".py", ".npz"]
    source = (tmp_path / "decoder.py").read_text()
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"numpy", "pathlib"}
    assert "for " not in source.split("def run(")[1]  # the graph body is straight-line, vectorised code
    rng = np.random.default_rng(1)
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in graph.inputs}
    np.savez(tmp_path / "in.npz", **feeds)
    script = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import decoder; "
        "out = decoder.run(dict(np.load(sys.argv[1] + '/in.npz'))); np.savez(sys.argv[1] + '/out.npz', **out)"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=tmp_path)
    result = np.load(tmp_path / "out.npz")
    assert_close(result["features"], lowering.evaluate(graph, feeds)["features"], 1e-5)


def test_small_constants_are_inlined_and_large_ones_external():
    graph = EXAMPLES["unet-decoder"](1)
    source, constants = emit_numpy(lowering.lower(graph, "zero-insertion"))
    assert constants and all(a.size > 16 for a in constants.values())
    assert "np.array(" in source or not any(v.const.size <= 16 for v in graph.initializers.values())


def test_unsupported_op_is_refused_in_one_line():
    graph = lowering.Graph()
    x = graph.add_input("x", (1, 2))
    graph.outputs.append(graph.op("Relu", x))
    from lowering.backends import numpy_backend

    saved = numpy_backend.EMITTERS.pop("Relu")
    try:
        with pytest.raises(lowering.UnsupportedError, match=r"Relu.*not supported by the NumPy backend") as info:
            emit_numpy(graph)
        assert "\n" not in str(info.value)
    finally:
        numpy_backend.EMITTERS["Relu"] = saved


def test_module_can_be_imported_from_a_file(tmp_path):
    graph = EXAMPLES["vocoder"](1)
    write_numpy_module(lowering.lower(graph, "auto", backend="numpy"), tmp_path / "voc.py")
    spec = importlib.util.spec_from_file_location("voc", tmp_path / "voc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    feeds = {"mel": np.random.default_rng(2).standard_normal((1, 80, 32)).astype(np.float32)}
    assert_close(module.run(feeds)["audio_features"], lowering.evaluate(graph, feeds)["audio_features"], 1e-5)


def test_non_finite_constants_and_attributes_are_written_as_numpy_names():
    # repr() writes NaN and infinity as bare `nan` / `inf`, which the generated module does not define
    graph = lowering.Graph("nonfinite")
    x = graph.add_input("x", (1, 4), "float32")
    shifted = graph.op("Add", x, graph.const(np.array([[np.nan, np.inf, -np.inf, 1.5]], np.float32), "c"))
    graph.outputs.append(graph.op("LeakyRelu", shifted, alpha=float("inf")))
    feeds = {"x": np.array([[1.0, -2.0, 3.0, -4.0]], np.float32)}
    got = lowering.compile(graph, "numpy")(feeds)
    want = lowering.evaluate(graph, feeds)
    name = graph.outputs[0].name
    np.testing.assert_array_equal(got[name], want[name].astype(np.float32))
    assert np.isnan(want[name]).any() and np.isinf(want[name]).any()
