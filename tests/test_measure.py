"""How `lowering bench` times its variants: rounds, each variant in its steady state, runtimes grouped."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import lowering.measure as measure
from lowering.layers import parse_layer
from lowering.reference import evaluate


def measure_fakes(
    monkeypatch, labels: list[str], call: Callable[[str], None], timed: Callable[[str], float], **options
) -> dict[str, int]:
    """Run `measure_layer` on variants that only call back (`call(label)` untimed, `timed(label)` for the
    seconds of a timed call) and return each label's number of timed samples."""
    graph = parse_layer("N=1 C=2 M=2 in=3x3 k=3 s=2 p=1")

    def fake_variants(graph, inputs, strategies, backends, devices, threads, tune):
        expected = evaluate(graph, inputs)
        variants = [
            measure.Variant(
                measure.Measurement(*label.split("/"), "cpu"),
                call=lambda label=label: call(label),
                outputs=lambda: expected,
                timed=lambda label=label: timed(label),
            )
            for label in labels
        ]
        return variants, {}, {}

    monkeypatch.setattr(measure, "build_variants", fake_variants)
    backends = list(dict.fromkeys(label.split("/")[1] for label in labels))
    result = measure.measure_layer(
        "toy", "spec", graph, strategies=[], backends=backends, devices=["cpu"], threads=1, peak_gflops=1.0, **options
    )
    assert all(m.status == "ok" for m in result.measurements)
    return {m.label: m.runs for m in result.measurements}


def test_each_timed_call_follows_an_untimed_one_and_runtimes_run_back_to_back(monkeypatch):
    log: list[tuple[str, str]] = []
    labels = ["native/torch", "a/torch", "native/onnx", "a/onnx", "b/numpy"]
    runs = measure_fakes(
        monkeypatch,
        labels,
        call=lambda label: log.append(("call", label)),
        timed=lambda label: log.append(("timed", label)) or 1e-3,
        budget_s=0.0,
        min_rounds=7,
    )
    assert set(runs.values()) == {7}
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
    clock = {"now": 0.0}
    cost = {"fast/torch": 2**-10, "slow/torch": 2**-4}  # exact in binary: no rounding at the edges
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock["now"])
    runs = measure_fakes(
        monkeypatch,
        list(cost),
        call=lambda label: clock.__setitem__("now", clock["now"] + cost[label]),
        timed=lambda label: cost[label],
        budget_s=400 * 2**-10,
        min_rounds=3,
        max_rounds=150,
    )
    # half the budget each: 100 x (1 + 1) fast calls; the slow one its minimum
    assert runs == {"fast/torch": 100, "slow/torch": 3}


def test_a_variant_with_few_samples_is_timed_across_the_whole_run(monkeypatch):
    """Its samples are spread evenly over the rounds (a slow drift reaches every variant alike), and one
    slow warm-up call does not cut its samples: the estimate is the median of the warm-up calls."""
    clock = {"now": 0.0}
    cost = {"fast/torch": 2**-10, "slow/torch": 2**-5, "hiccup/torch": 2**-10}
    warmups = {"hiccup/torch": 0}
    order: list[str] = []

    def call(label: str) -> None:
        seconds = cost[label]
        if label == "hiccup/torch" and warmups[label] < 3:  # its third warm-up call is 32x slower
            warmups[label] += 1
            seconds *= 32 if warmups[label] == 3 else 1
        clock["now"] += seconds

    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock["now"])
    runs = measure_fakes(
        monkeypatch,
        list(cost),
        call=call,
        timed=lambda label: order.append(label) or cost[label],
        budget_s=1200 * 2**-10,
        min_rounds=4,
        max_rounds=200,
        warmup_s=0.0,
    )
    assert runs["fast/torch"] == runs["hiccup/torch"] == 200 and runs["slow/torch"] == 6
    fast_seen = [order[: i + 1].count("fast/torch") for i, label in enumerate(order) if label == "slow/torch"]
    assert fast_seen[0] <= 200 // 6 + 1 and fast_seen[-1] >= 200 - 200 // 6 - 1  # first and last sixth
    gaps = [b - a for a, b in itertools.pairwise(fast_seen)]
    assert max(gaps) - min(gaps) <= 2  # even, up to where each round's shuffle put the two


def test_samples_by_spreads_evenly():
    for wanted, rounds in [(1, 1), (3, 10), (7, 7), (5, 200)]:
        taken = [
            measure._samples_by(i + 1, wanted, rounds) - measure._samples_by(i, wanted, rounds) for i in range(rounds)
        ]
        assert set(taken) <= {0, 1} and sum(taken) == wanted


def test_auto_and_the_natives_get_three_shares_of_the_budget(monkeypatch):
    """Their medians decide the bench's verdicts, so they get more samples than the other strategies."""
    clock = {"now": 0.0}
    step = 2**-10
    labels = ["native/torch", "auto/torch", "subpixel/torch"]
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock["now"])
    runs = measure_fakes(
        monkeypatch,
        labels,
        call=lambda label: clock.__setitem__("now", clock["now"] + step),
        timed=lambda label: step,
        budget_s=700 * step,  # 7 shares of 100 steps: 50 timed (+ 50 untimed) calls a share
        min_rounds=3,
        max_rounds=500,
    )
    assert runs == {"native/torch": 150, "auto/torch": 150, "subpixel/torch": 50}


def test_ratios_to_the_natives_come_with_their_intervals(monkeypatch):
    clock = {"now": 0.0}
    seconds = {"native/torch": 2**-10, "native/onnx": 2**-9, "auto/torch": 2**-11}
    noise = itertools.cycle([0.98, 1.0, 1.02, 1.01, 0.99])

    def result():
        monkeypatch.setattr(measure.time, "perf_counter", lambda: clock["now"])
        graph = parse_layer("N=1 C=2 M=2 in=3x3 k=3 s=2 p=1")

        def fake_variants(graph, inputs, strategies, backends, devices, threads, tune):
            expected = evaluate(graph, inputs)
            return (
                [
                    measure.Variant(
                        measure.Measurement(*label.split("/"), "cpu"),
                        call=lambda label=label: clock.__setitem__("now", clock["now"] + seconds[label]),
                        outputs=lambda: expected,
                        timed=lambda label=label: seconds[label] * next(noise),
                    )
                    for label in seconds
                ],
                {},
                {},
            )

        monkeypatch.setattr(measure, "build_variants", fake_variants)
        return measure.measure_layer(
            "toy",
            "s",
            graph,
            strategies=[],
            backends=["torch", "onnx"],
            devices=["cpu"],
            threads=1,
            peak_gflops=1.0,
            budget_s=0.1,
        )

    by = {m.label: m for m in result().measurements}
    auto = by["auto/torch"]
    low, high = auto.vs_torch_native_interval
    assert low <= auto.vs_torch_native <= high and low > 0.45 and high < 0.55  # about half, with 2% noise
    low, high = auto.vs_onnx_native_interval
    assert low <= auto.vs_onnx_native <= high and low > 0.22 and high < 0.28
    assert by["native/torch"].vs_torch_native == 1.0


def test_the_summary_tells_ties_from_losses_and_skips_layers_without_a_native(capsys):
    from lowering.cli_bench import summarize

    def layer(name: str, ratio: float, interval: list[float] | None) -> measure.LayerResult:
        native = measure.Measurement("native", "torch", "cpu", median_s=1e-3, vs_torch_native=1.0)
        auto = measure.Measurement(
            "auto", "torch", "cpu", median_s=ratio * 1e-3, vs_torch_native=ratio, vs_torch_native_interval=interval
        )
        return measure.LayerResult(name, "spec", 1, [1], [1], measurements=[native, auto])

    results = [
        layer("fast", 0.9, [0.85, 0.95]),
        layer("tie", 1.03, [0.98, 1.08]),
        layer("slow", 1.1, [1.05, 1.15]),
        layer("no-native", float("nan"), None),
    ]
    summary = summarize(results)
    assert summary["verdicts"]["auto_torch_vs_torch"] == {"met": 1, "tie": 1, "slower": 1}
    assert summary["layers"]["tie"]["auto_torch_vs_torch_interval"] == [0.98, 1.08]
    out = capsys.readouterr().out
    assert "auto/torch vs torch native: <= 1.00x on 1/3 layers" in out
    assert "1.03x (0.98-1.08)" in out
