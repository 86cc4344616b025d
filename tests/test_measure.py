"""How `lowering bench` times its variants: rounds, each variant in its steady state, runtimes grouped."""

from __future__ import annotations

import itertools

import lowering.measure as measure
from lowering.layers import parse_layer
from lowering.reference import evaluate


def test_each_timed_call_follows_an_untimed_one_and_runtimes_run_back_to_back(monkeypatch):
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
                    call=lambda label=m.label: log.append(("call", label)),
                    outputs=lambda: expected,
                    timed=lambda label=m.label: log.append(("timed", label)) or 1e-3,
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
    for previous, (kind, label) in itertools.pairwise(rounds):
        if kind == "timed":  # right after an untimed call of the same variant
            assert previous == ("call", label)
    runtimes = [label.split("/")[1] for kind, label in rounds if kind == "timed"]
    changes = sum(a != b for a, b in itertools.pairwise(runtimes))
    assert changes <= 7 * 3 - 1  # each runtime's variants back to back within a round


def test_each_variant_gets_an_equal_share_of_the_budget(monkeypatch):
    """A slow variant no longer limits a fast one of the same layer to a handful of samples."""
    graph = parse_layer("N=1 C=2 M=2 in=3x3 k=3 s=2 p=1")
    clock = {"now": 0.0}
    cost = {"fast/torch": 2**-10, "slow/torch": 2**-4}  # exact in binary: no rounding at the edges

    def fake_variants(graph, inputs, strategies, backends, devices, threads, tune):
        expected = evaluate(graph, inputs)
        variants = []
        for label in cost:
            strategy, backend = label.split("/")

            def call(label=label):
                clock["now"] += cost[label]

            variants.append(
                measure.Variant(
                    measure.Measurement(strategy, backend, "cpu"),
                    call=call,
                    outputs=lambda: expected,
                    timed=lambda label=label: cost[label],
                )
            )
        return variants, {}, {}

    monkeypatch.setattr(measure, "build_variants", fake_variants)
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock["now"])
    result = measure.measure_layer(
        "toy",
        "spec",
        graph,
        strategies=["fast", "slow"],
        backends=["torch"],
        devices=["cpu"],
        threads=1,
        peak_gflops=1.0,
        budget_s=400 * 2**-10,
        min_rounds=3,
        max_rounds=150,
    )
    runs = {m.label: m.runs for m in result.measurements}
    assert runs == {
        "fast/torch": 100,
        "slow/torch": 3,
    }  # half the budget each: 100 x (1 + 1) fast calls; the slow one its minimum
