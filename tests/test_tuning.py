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
    assert entry["chosen"] == min(entry["seconds"], key=entry["seconds"].get)
    assert note.splitlines()[0].split(": ", 1)[1].startswith(entry["chosen"])

    again = lowering.lower(graph, "auto", tune=True)
    assert "cached" in again.meta["lowering_notes"][0].splitlines()[0]
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 4, 5, 5)).astype(np.float32)}
    ref = lowering.evaluate(graph, feeds)["y"]
    assert np.abs(lowering.evaluate(again, feeds)["y"] - ref).max() <= 1e-5 * np.abs(ref).max()


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
