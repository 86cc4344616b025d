"""`auto --tune`: measured choices, cached per layer signature, backend and device."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lowering
from lowering.layers import parse_layer
from passes import tuning


def test_tune_measures_caches_and_stays_correct(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWERING_CACHE_DIR", str(tmp_path))
    graph = parse_layer("N=1 C=4 M=3 in=5x5 k=3 s=2 p=1 op=1")
    lowered = lowering.lower(graph, "auto", tune=True, tune_seconds=0.05)
    (note,) = lowered.meta["lowering_notes"]
    assert "measured" in note.splitlines()[0] and "cached" not in note.splitlines()[0]
    cache = json.loads((tmp_path / "tune.json").read_text())
    (entry,) = cache.values()
    seconds = entry["seconds"]
    assert entry["fastest"] == min(seconds, key=seconds.get)
    static = note.splitlines()[0].split("static model: ")[1].split(";")[0].rstrip(")")
    chosen = note.splitlines()[0].split(": ", 1)[1].split(" ")[0]
    if seconds[static] > 1.1 * seconds[entry["fastest"]]:
        assert chosen == entry["fastest"]
    else:  # within the margin the static model's pick stays
        assert chosen == static

    again = lowering.lower(graph, "auto", tune=True)
    assert "cached" in again.meta["lowering_notes"][0].splitlines()[0]
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 4, 5, 5)).astype(np.float32)}
    ref = lowering.evaluate(graph, feeds)["y"]
    assert np.abs(lowering.evaluate(again, feeds)["y"] - ref).max() <= 1e-5 * np.abs(ref).max()


def test_a_measurement_overrules_the_static_pick_only_by_more_than_the_margin():
    seconds = {"subpixel-fused": 1.00, "col2im": 0.95, "subpixel": 1.30}
    assert tuning.measured_choice(seconds, "subpixel-fused") == "subpixel-fused"  # 5% faster: noise
    assert tuning.measured_choice(seconds, "subpixel") == "col2im"  # 37% faster
    assert tuning.measured_choice(seconds, "subpixel-fused", margin=0.0) == "col2im"
    assert tuning.measured_choice(seconds, "zero-insertion") == "col2im"  # the static pick did not run
    assert tuning.OVERRIDE_MARGIN == 0.10


def test_a_negative_margin_is_refused_by_name():
    from lowering.errors import LoweringError

    graph = parse_layer("N=1 C=4 M=3 in=5x5 k=3 s=2 p=1")
    with pytest.raises(LoweringError, match=r"auto: tune_margin must be a share >= 0 \(0\.1: 10% faster\), got -0\.5"):
        lowering.lower(graph, "auto", tune_margin=-0.5)


def test_explain_names_the_fastest_candidate_the_margin_kept_out():
    from passes.auto import Decision
    from passes.strategy import Cost

    costs = [(Cost(name, 1, 1, 0, 0, 1), seconds) for name, seconds in (("subpixel-fused", 1e-3), ("col2im", 2e-3))]
    measured = {"subpixel-fused": 1.0e-3, "col2im": 0.95e-3}
    decision = Decision("ct", "subpixel-fused", costs, {}, measured=measured, margin=0.10)
    assert decision.explain().splitlines()[0] == (
        "ct: subpixel-fused (measured; static model: subpixel-fused; fastest measured: col2im, within 10%)"
    )


def test_signature_separates_backends_and_layers():
    graph = parse_layer("N=1 C=4 M=3 in=5x5 k=3 s=2 p=1")
    other = parse_layer("N=1 C=4 M=3 in=5x5 k=3 s=2 p=0")
    node, other_node = graph.nodes[0], other.nodes[0]
    geometry = lowering.node_geometry(node)
    keys = {
        tuning.signature(graph, node, geometry, "onnx", "cpu"),
        tuning.signature(graph, node, geometry, "torch", "cpu"),
        tuning.signature(other, other_node, lowering.node_geometry(other_node), "onnx", "cpu"),
    }
    assert len(keys) == 3


def test_a_changed_lowering_invalidates_cached_timings(monkeypatch):
    """The signature carries a fingerprint of the project's source: timings of old code are not reused."""
    graph = parse_layer("N=1 C=4 M=3 in=5x5 k=3 s=2 p=1")
    node = graph.nodes[0]
    geometry = lowering.node_geometry(node)
    before = tuning.signature(graph, node, geometry, "onnx", "cpu")
    assert json.loads(before)["versions"]["source"] == tuning.source_fingerprint()
    monkeypatch.setattr(tuning, "source_fingerprint", lambda: "edited")
    assert tuning.signature(graph, node, geometry, "onnx", "cpu") != before


def test_lower_tune_restarts_in_the_bench_environment(tmp_path, monkeypatch):
    """`lowering lower --tune` measures, so like `lowering bench` it restarts once with BENCH_ENV
    (spinning OpenMP workers and page-faulting allocations skew what it would measure)."""
    import os

    from lowering.cli import main
    from lowering.cli_bench import BENCH_ENV

    for key in (*BENCH_ENV, "LOWERING_BENCH_ENV"):
        monkeypatch.delenv(key, raising=False)
    restarts: list[dict[str, str]] = []

    def execve(path, argv, env):
        restarts.append(env)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", execve)
    out = tmp_path / "tuned.onnx"
    with pytest.raises(SystemExit):
        main(["lower", "--example", "dcgan", "--tune", "-o", str(out)])
    (env,) = restarts
    assert all(env[key] == value for key, value in BENCH_ENV.items()) and env["LOWERING_BENCH_ENV"] == "1"
    assert not out.exists()  # nothing written before the restart


def test_a_cached_candidate_declined_here_is_not_picked(tmp_path, monkeypatch):
    # measured at opset 18, where the sparse matrix form runs and wins; at opset 13 it cannot be written
    monkeypatch.setenv("LOWERING_CACHE_DIR", str(tmp_path))
    graph = parse_layer("N=1 C=8 M=4 in=8x8 k=4 s=2 p=1")
    lowering.lower(graph, "auto", tune=True, tune_seconds=0.02)
    cache = json.loads((tmp_path / "tune.json").read_text())
    for entry in cache.values():  # make the matrix form the clear winner of the cached measurement
        entry["seconds"] = {name: 1.0 for name in entry["seconds"]} | {"matrix": 1e-6}
        entry["fastest"] = "matrix"
    (tmp_path / "tune.json").write_text(json.dumps(cache))
    assert any(n.op == "SparseMatMul" for n in lowering.lower(graph, "auto", tune=True).nodes)
    lowered = lowering.lower(graph, "auto", tune=True, opset=13)
    assert "cached" in lowered.meta["lowering_notes"][0].splitlines()[0]
    assert not any(n.op == "SparseMatMul" for n in lowered.nodes)
