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
    for table, key, (low, high) in fit.parameters(model):
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
