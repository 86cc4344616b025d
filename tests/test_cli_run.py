"""`lowering run`, `check` and `emit` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import lowering
from lowering.cli import main
from lowering.examples import vocoder


@pytest.fixture()
def model(tmp_path):
    graph = vocoder(1)
    path = tmp_path / "voc.onnx"
    path.write_bytes(lowering.to_onnx(graph).SerializeToString())
    return graph, path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lowering", *args], capture_output=True, text=True)


@pytest.mark.parametrize("backend", ["numpy", "onnx", "torch"])
def test_run_writes_outputs_by_name(model, tmp_path, backend):
    graph, path = model
    feeds = {"mel": np.random.default_rng(0).standard_normal((1, 80, 32)).astype(np.float32)}
    np.savez(tmp_path / "in.npz", **feeds)
    code = main(
        [
            "run",
            str(path),
            "--inputs",
            str(tmp_path / "in.npz"),
            "-o",
            str(tmp_path / "out.npz"),
            "--strategy",
            "subpixel",
            "--backend",
            backend,
        ]
    )
    assert code == 0
    out = np.load(tmp_path / "out.npz")
    assert list(out.files) == ["audio_features"]
    ref = lowering.evaluate(graph, feeds)["audio_features"]
    assert np.abs(out["audio_features"] - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({}, "missing input"),
        ({"mel": np.zeros((1, 80, 32), np.float32), "other": np.zeros(1)}, "unknown input"),
        ({"mel": np.zeros((1, 80, 31), np.float32)}, "axis 2: 31 vs 32"),
        ({"mel": np.zeros((1, 80), np.float32)}, "rank 2"),
    ],
)
def test_run_refuses_bad_inputs_in_one_line(model, tmp_path, feeds, message):
    _, path = model
    np.savez(tmp_path / "in.npz", **feeds)
    result = cli("run", str(path), "--inputs", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"))
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out.npz").exists()


def test_check_passes_every_strategy_and_backend(model):
    _, path = model
    result = cli("check", str(path))
    assert result.returncode == 0, result.stderr
    for strategy in [*lowering.api.strategy_names(), "none"]:
        for backend in ("numpy", "torch", "onnx"):
            assert any(strategy in line and backend in line and "ok" in line for line in result.stdout.splitlines())


def test_check_fails_when_a_backend_is_wrong(model, monkeypatch, capsys):
    from lowering.backends import numpy_backend

    _, path = model
    monkeypatch.setitem(numpy_backend.EMITTERS, "LeakyRelu", lambda ctx, node, a: f"np.maximum({a[0]}, 0)")
    assert main(["check", str(path), "--backends", "numpy", "--strategies", "col2im"]) == 1
    assert "ABOVE TOLERANCE" in capsys.readouterr().out


def _layer_model(tmp_path, spec: str, opset: int = 18):
    from lowering.layers import parse_layer

    path = tmp_path / "layer.onnx"
    path.write_bytes(lowering.to_onnx(parse_layer(spec), opset=opset).SerializeToString())
    return path


def test_check_calls_what_a_backend_cannot_run_unsupported_not_failed(tmp_path, capsys):
    # opset 17 has no Col2Im (col2im on onnx); onnxruntime has no float64 Conv (the sub-pixel forms)
    path = _layer_model(tmp_path, "C=2 M=3 in=5x5 k=3 s=2 p=1 dtype=f64", opset=17)
    assert main(["check", str(path), "--backends", "onnx"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "unsupported" in line]
    assert any("col2im" in row and "needs ONNX opset >= 18" in row for row in rows)
    assert any("subpixel" in row and "NOT_IMPLEMENTED" in row for row in rows)


def test_check_reports_a_broken_backend_in_its_row_and_goes_on(model, monkeypatch, capsys):
    from lowering.backends import numpy_backend

    def broken(ctx, node, a):
        raise ZeroDivisionError("a bug in an emitter")

    _, path = model
    monkeypatch.setitem(numpy_backend.EMITTERS, "LeakyRelu", broken)
    assert main(["check", str(path), "--backends", "numpy,onnx", "--strategies", "col2im"]) == 1
    out = capsys.readouterr().out
    assert "ERROR: ZeroDivisionError: a bug in an emitter" in out
    assert any("col2im" in line and "onnx" in line and "ok" in line for line in out.splitlines())


def test_a_runtime_refusal_at_run_time_is_one_line(tmp_path):
    # output_padding 1 is below the dilation (valid, as in PyTorch) but not below the stride, which
    # onnxruntime's own ConvTranspose requires when it runs
    path = _layer_model(tmp_path, "C=2 M=2 in=5x5 k=3 s=1x2 d=2 op=1x0")
    result = cli("run", str(path), "--strategy", "none", "--backend", "onnx", "-o", str(tmp_path / "out.npz"))
    assert result.returncode == 2, result.stderr
    assert "onnxruntime refused to run the model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_emit_writes_python(model, tmp_path, backend):
    _, path = model
    out = tmp_path / f"voc_{backend}.py"
    assert main(["emit", str(path), "--backend", backend, "--strategy", "col2im", "-o", str(out)]) == 0
    compile(out.read_text(), str(out), "exec")


def test_emit_onnx_has_no_conv_transpose(model, tmp_path):
    import onnx

    _, path = model
    out = tmp_path / "voc_lowered.onnx"
    assert main(["emit", str(path), "--backend", "onnx", "-o", str(out)]) == 0
    assert not [n for n in onnx.load(str(out)).graph.node if n.op_type == "ConvTranspose"]


def test_compare_layer_tiny_writes_json_with_every_field(tmp_path):
    out = tmp_path / "cmp.json"
    result = cli(
        "compare",
        "--layer",
        "N=1 C=4 M=2 in=3x3 k=3 s=2 p=1 op=1",
        "--time",
        "0.05",
        "--min-rounds",
        "3",
        "--json",
        str(out),
        "--csv",
        str(tmp_path / "cmp.csv"),
        "--plot",
        str(tmp_path / "cmp.png"),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert {"machine", "threads", "peak_gflops", "layers", "command"} <= set(data)
    (layer,) = data["layers"]
    labels = {m["label"] for m in layer["measurements"]}
    assert {"native/torch", "native/onnx", "auto/torch", "auto/onnx", "subpixel/numpy"} <= labels
    fields = {
        "median_s",
        "min_s",
        "max_s",
        "q1_s",
        "q3_s",
        "runs",
        "gflops",
        "peak_fraction",
        "vs_torch_native",
        "vs_onnx_native",
        "peak_extra_bytes",
        "max_abs_error",
        "max_rel_error",
        "status",
    }
    for m in layer["measurements"]:
        assert fields <= set(m)
        if m["status"] == "ok":
            assert m["runs"] >= 3 and m["max_rel_error"] < 1e-4
    assert (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "cmp.csv").read_text().startswith("layer,")


@pytest.mark.parametrize(
    ("spec", "message"),
    [("C=4 M=2 in=3x3 k=3 s=2 q=1", "unknown key 'q'"), ("C=4 M=2 in=3x3 k=3 s=2 s=3", "'s=' is given twice")],
)
def test_compare_refuses_a_bad_layer_spec(spec, message):
    result = cli("compare", "--layer", spec)
    assert result.returncode == 2 and message in result.stderr


def test_bench_on_a_small_suite_layer_writes_json_with_summary(tmp_path):
    out = tmp_path / "bench.json"
    result = cli(
        "bench",
        "--layers",
        "fcn-x2",
        "--batches",
        "1",
        "--backends",
        "onnx,torch",
        "--strategies",
        "subpixel,auto",
        "--time",
        "0.05",
        "--min-rounds",
        "3",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    environment = data["threads"]["environment"]  # the measurement environment
    assert environment["OPENBLAS_THREAD_TIMEOUT"] == "1" and environment["GOMP_SPINCOUNT"] == "10000"
    assert data["peak_gflops"]["peak"] > 0
    (layer,) = data["layers"]
    assert layer["name"] == "fcn-x2-b1" and layer["static_choice"]
    labels = {m["label"] for m in layer["measurements"] if m["status"] == "ok"}
    assert {"native/torch", "native/onnx", "auto/onnx", "subpixel/torch"} <= labels
    summary = data["summary"]["layers"]["fcn-x2-b1"]
    assert set(summary) == {
        "auto_torch_vs_torch",
        "auto_onnx_vs_onnx",
        "auto_torch_vs_torch_interval",
        "auto_onnx_vs_onnx_interval",
        "best_auto_vs_best_native",
        "auto_torch_vs_torch_prepacked",
        "static_pick_cost",
    }
    low, high = summary["auto_onnx_vs_onnx_interval"]
    assert low <= summary["auto_onnx_vs_onnx"] <= high
    assert set(data["summary"]["verdicts"]["auto_onnx_vs_onnx"]) == {"met", "tie", "slower"}
    if "native-prepacked/torch" in labels:  # PyTorch's ConvTranspose with weights reordered once (oneDNN builds)
        prepacked = next(m for m in layer["measurements"] if m["label"] == "native-prepacked/torch")
        auto = next(m for m in layer["measurements"] if m["label"] == "auto/torch")
        assert summary["auto_torch_vs_torch_prepacked"] == pytest.approx(auto["median_s"] / prepacked["median_s"])
