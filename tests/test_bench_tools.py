"""The scripts behind the README's performance section: the cost-model fit and the report table."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "docs" / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_run(path: Path, fastest: dict[str, str]) -> None:
    """A bench JSON in which, per layer spec, one strategy is twice as fast as the others everywhere."""
    strategies = ("zero-insertion", "col2im", "subpixel", "subpixel-fused", "native", "auto")
    layers = []
    for index, (spec, best) in enumerate(fastest.items()):
        measurements = [
            {"strategy": s, "backend": b, "status": "ok", "median_s": 1e-3 if s == best else 2e-3}
            for s in strategies
            for b in ("torch", "onnx", "numpy")
        ]
        layers.append({"name": f"layer{index}", "spec": spec, "measurements": measurements})
    path.write_text(json.dumps({"layers": layers}))


def test_fit_finds_a_model_that_picks_the_measured_best(tmp_path):
    fit = load("fit_cost_model")
    run = tmp_path / "run.json"
    synthetic_run(run, {"N=1 C=8 M=4 in=6x6 k=4 s=2 p=1": "zero-insertion"})  # not what the shipped model picks
    rows = fit.observations([str(run)])
    assert len(rows) == 3  # one layer x 3 backends
    assert fit.score(fit.MODEL, rows)[0] < 3
    model = fit.fit(rows, fit.MODEL, restarts=2)
    assert fit.score(model, rows)[0] == 3
    for table, key, (low, high) in fit.parameters(model, set(model.mac_rate)):
        assert low <= table[key] <= high, key


def test_fit_script_reports_held_out_runs(tmp_path):
    train, held_out = tmp_path / "a.json", tmp_path / "b.json"
    synthetic_run(train, {"N=1 C=8 M=4 in=6x6 k=4 s=2 p=1": "col2im"})
    synthetic_run(held_out, {"N=1 C=8 M=4 in=6x6 k=2 s=2 p=0": "subpixel"})
    run = subprocess.run(
        [sys.executable, str(BENCH / "fit_cost_model.py"), str(train), "--check", str(held_out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "mac_rate={" in run.stdout
    assert "fitted model, held-out runs: static pick within 10% of the best on" in run.stdout


def test_a_gpu_run_fits_tables_of_its_own_and_leaves_the_cpu_ones(tmp_path):
    """Measurements on a device fit the "backend:device" tables (a first fit starts them from the
    backend's CPU tables, within a GPU's bounds); the CPU tables, which that run does not measure, stay."""
    import copy

    fit = load("fit_cost_model")
    run = tmp_path / "gpu.json"
    synthetic_run(run, {"N=1 C=8 M=4 in=6x6 k=4 s=2 p=1": "zero-insertion"})
    data = json.loads(run.read_text())
    for layer in data["layers"]:
        layer["measurements"] = [dict(m, device="cuda") for m in layer["measurements"] if m["backend"] == "torch"]
    run.write_text(json.dumps(data))
    rows = fit.observations([str(run)])
    assert [key for _, key, _, _ in rows] == ["torch:cuda"]
    cpu_only = copy.deepcopy(fit.MODEL)
    for name in ("mac_rate", "bandwidth", "memory_bandwidth", "cache_bytes", "op_overhead"):
        del getattr(cpu_only, name)["torch:cuda"]
    start = fit.with_tables_for(cpu_only, {"torch:cuda"})
    assert set(start.mac_rate["torch:cuda"]) == set(cpu_only.mac_rate["torch"])
    model = fit.fit(rows, start, restarts=1)
    assert fit.score(model, rows)[0] == 1
    for name in ("mac_rate", "bandwidth", "memory_bandwidth"):
        assert getattr(model, name)["torch"] == getattr(cpu_only, name)["torch"]
    for table, key, (low, high) in fit.parameters(model, {"torch:cuda"}):
        assert low <= table[key] <= high, key


def test_report_shows_intervals_and_tells_ties_from_losses(tmp_path, capsys):
    """auto 0.90x (met), 1.03x with 1.00x inside its interval (a tie) and 1.08x beyond it (slower)."""

    def layer(name: str, torch_ratio: float, interval: list[float]) -> dict:
        def m(strategy: str, backend: str, seconds: float, **extra) -> dict:
            return dict(
                strategy=strategy, backend=backend, label=f"{strategy}/{backend}", status="ok", median_s=seconds,
                peak_fraction=0.5, **extra,
            )  # fmt: skip

        return {
            "name": name,
            "useful_macs": 10**9,
            "measurements": [
                m("native", "torch", 1e-3),
                m("native", "onnx", 2e-3),
                m("auto", "torch", torch_ratio * 1e-3, vs_torch_native_interval=interval),
                m("auto", "onnx", 1e-3, vs_onnx_native_interval=[0.45, 0.55]),
                m("subpixel", "numpy", 3e-3),
            ],
        }

    run = tmp_path / "run.json"
    layers = [layer("a", 0.90, [0.85, 0.95]), layer("b", 1.03, [0.99, 1.07]), layer("c", 1.08, [1.05, 1.11])]
    run.write_text(json.dumps({"peak_gflops": {"peak": 400.0}, "layers": layers}))
    load("report").main(str(run))
    out = capsys.readouterr().out
    assert "| b | 1.000 | 1.000 | 2.000 | 1.03x (0.99-1.07) | 0.50x (0.45-0.55) |" in out
    assert "auto/torch <= 1.00x on 1/3 layers, auto/onnx <= 1.00x on 3/3" in out
    assert "auto/torch vs torch above 1.00x: 1 with 1.00x inside the 95% interval" in out
    assert "1 slower beyond it" in out
    assert "auto/onnx vs ORT above 1.00x" not in out


def test_report_measures_the_same_graph_timed_twice(capsys):
    """auto and the strategy it picked are one graph compiled twice: their ratio is the run's own noise."""
    report = load("report")

    def m(strategy: str, backend: str, seconds: float) -> dict:
        return {"strategy": strategy, "backend": backend, "label": f"{strategy}/{backend}", "status": "ok",
                "median_s": seconds}  # fmt: skip

    data = {
        "layers": [
            {"name": "a", "auto_choice": {"torch": "subpixel", "onnx": "col2im, subpixel"},
             "measurements": [m("auto", "torch", 1.08), m("subpixel", "torch", 1.0), m("auto", "onnx", 1.0),
                              m("col2im", "onnx", 1.0)]},
            {"name": "b", "auto_choice": {"torch": "col2im"},
             "measurements": [m("auto", "torch", 0.97), m("col2im", "torch", 1.0)]},
        ]
    }  # fmt: skip
    assert [(n, b, round(r, 2)) for n, b, r in report.same_graph_ratios(data)] == [
        ("a", "torch", 1.08),
        ("b", "torch", 0.97),
    ]  # a graph of two picks (several nodes) has no single twin
    report.print_same_graph_agreement(data)
    out = capsys.readouterr().out
    assert "within 5% on 1/2 layer x backend cases, within 10% on 2; widest: a torch 1.08x, b torch 0.97x." in out
