"""How `lowering bench` times its variants: rounds, and each runtime timed in its own steady state."""

from __future__ import annotations

import itertools

import lowering.measure as measure
from lowering.layers import parse_layer
from lowering.reference import evaluate


def test_rounds_time_each_runtime_back_to_back_after_a_settling_call(monkeypatch):
    graph = parse_layer("N=1 C=2 M=2 in=3x3 k=3 s=2 p=1")
    log: list[tuple[str, str]] = []

    def fake_variants(graph, inputs, strategies, backends, devices, threads, tune):
        expected = evaluate(graph, inputs)
        variants = []
        for strategy, backend in [
            ("native", "torch"),
            ("a", "torch"),
            ("native", "onnx"),
            ("a", "onnx"),
            ("b", "numpy"),
        ]:
            m = measure.Measurement(strategy, backend, "cpu")
            variants.append(
                measure.Variant(
                    m,
                    call=lambda b=backend: log.append(("call", b)),
                    outputs=lambda: expected,
                    timed=lambda b=backend: log.append(("timed", b)) or 1e-3,
                )
            )
        return variants, {}, {}

    monkeypatch.setattr(measure, "build_variants", fake_variants)
    result = measure.measure_layer(
        "toy",
        "spec",
        graph,
        strategies=["a"],
        backends=["torch", "onnx", "numpy"],
        devices=["cpu"],
        threads=1,
        peak_gflops=1.0,
        budget_s=0.0,
        min_rounds=7,
    )
    assert all(m.runs == 7 and m.status == "ok" for m in result.measurements)
    rounds = log[next(i for i, e in enumerate(log) if e[0] == "timed") - 1 :]
    assert sum(kind == "timed" for kind, _ in rounds) == 7 * 5
    for previous, (kind, backend) in itertools.pairwise(rounds):
        if kind == "timed":  # never right after another runtime: after its own settling call or its own variant
            assert previous[1] == backend
    settles = [backend for kind, backend in rounds if kind == "call"]
    assert sorted(settles) == sorted(["torch", "onnx", "numpy"] * 7)  # one per runtime per round
