"""Refit the static cost model's rates (`passes/cost_model.py`) to a `lowering bench --json` run.

    python docs/bench/fit_cost_model.py [RUN.json ...] [--check HELD_OUT.json ...]

Without runs it fits to the runs kept for that in `docs/bench/fit/` and checks on the README's run,
`docs/bench/bench.json`, which the shipped model was not fitted to.

For every layer and backend of the runs it recomputes each `auto` candidate's cost figures, then
searches the rates (coordinate descent over multiplicative steps, from the current model and from
seeded random perturbations of it, within physical bounds) for the model whose static pick is
within 10% of the measured best strategy on the most layers, ties broken by the smallest
geometric-mean cost of the picks. It prints the fitted tables, the share on the fitting runs and the
layers where the pick still misses. Fitting and judging on the same run flatters the model:
`--check` scores it on runs it was not fitted to, which is the figure to trust.
"""

from __future__ import annotations

import copy
import json
import math
import random
import sys
from pathlib import Path

from lowering.geometry import node_geometry
from lowering.layers import parse_layer
from passes.auto import AUTO_MATRIX_BUDGET, candidate_strategies
from passes.cost_model import GIGA, MODEL, CostModel
from passes.strategy import Cost, Declined

STEPS = (0.25, 0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 2.0, 4.0)
BACKENDS = ("torch", "onnx", "numpy", "torch:cuda")  # model keys: a backend, or backend:device off the CPU


def observations(paths: list[str]) -> list[tuple[str, str, list[Cost], dict[str, float]]]:
    """(layer, backend, candidate costs, measured median seconds per strategy) per layer x backend x run."""
    layers = []
    for path in paths:
        with open(path) as handle:
            layers += json.load(handle)["layers"]
    rows = []
    for layer in layers:
        graph = parse_layer(layer["spec"])
        node = graph.nodes_of("ConvTranspose")[0]
        geometry = node_geometry(node)
        costs = []
        for strategy in candidate_strategies(AUTO_MATRIX_BUDGET).values():
            try:
                strategy.check(graph, node, geometry)
            except Declined:
                continue
            costs.append(strategy.cost(graph, node, geometry))
        for key in BACKENDS:
            backend, _, device = key.partition(":")
            measured = {
                m["strategy"]: m["median_s"]
                for m in layer["measurements"]
                if m["status"] == "ok"
                and m["backend"] == backend
                and m.get("device", "cpu") == (device or "cpu")
                and m["strategy"] not in ("native", "native-prepacked", "auto")
            }
            usable = [c for c in costs if c.strategy in measured]
            if usable:
                rows.append((layer["name"], key, usable, measured))
    return rows


def score(model: CostModel, rows) -> tuple[int, float, float]:
    """(layers whose pick is within 10% of the best, − sum of log(pick / best), − sum of log(predicted time
    of the measured best / predicted time of the pick)): larger is better. The last term only breaks ties;
    it is continuous in the rates, so the descent can cross the plateaus the first two leave."""
    hits, loss, margin = 0, 0.0, 0.0
    for _, backend, costs, measured in rows:
        predicted = {c.strategy: model.seconds(c, backend) for c in costs}
        pick = min(predicted, key=predicted.get)
        best = min(predicted, key=measured.get)
        ratio = measured[pick] / measured[best]
        hits += ratio <= 1.1
        loss += math.log(ratio)
        margin += math.log(predicted[best] / predicted[pick])
    return hits, -loss, -margin


# Bounds that keep the fitted figures physical, as (low, high) on the CPU and on a GPU (a model key with
# a device): no strategy multiplies faster than the machine's peak allows with some slack (about 190 G
# multiply-adds/s on the 2-core CPU; tens of T on an H100), moves bytes faster than its caches, or
# dispatches an op in less than a microsecond. Without them the search overfits with absurd values.
BOUNDS = {
    "mac_rate": ((1 * GIGA, 250 * GIGA), (1 * GIGA, 6e4 * GIGA)),
    "bandwidth": ((0.5 * GIGA, 50 * GIGA), (1 * GIGA, 3e3 * GIGA)),
    "memory_bandwidth": ((0.2 * GIGA, 20 * GIGA), (1 * GIGA, 3e3 * GIGA)),
    "cache_bytes": ((1e6, 64e6), (1e6, 1e8)),
    "op_overhead": ((1e-6, 2e-4), (1e-6, 1e-4)),
}


def bounds_of(key: str, rate: str) -> tuple[float, float]:
    """The bounds of one rate of a model key: a GPU's where the key names a device."""
    return BOUNDS[rate][":" in key]


def parameters(model: CostModel, keys: set[str]) -> list[tuple[dict, str, tuple[float, float]]]:
    """Every rate of the model's tables for `keys` as (table, key, bounds), so that a step can scale it in
    place (the tables of backends the runs do not measure stay as they are)."""
    out = []
    for backend in [b for b in model.mac_rate if b in keys]:
        for name in ("mac_rate", "bandwidth", "memory_bandwidth"):
            table = getattr(model, name)[backend]
            out += [(table, key, bounds_of(backend, name)) for key in table]
        for name in ("cache_bytes", "op_overhead"):
            out.append((getattr(model, name), backend, bounds_of(backend, name)))
    return out


# A GPU's rates against the 2-core CPU's, roughly: where a device's first fit starts from
GPU_START_FACTORS = {"mac_rate": 100.0, "bandwidth": 100.0, "memory_bandwidth": 300.0}


def with_tables_for(model: CostModel, keys: set[str]) -> CostModel:
    """`model` with starting tables for every key it has none of (a device's first fit): its backend's
    CPU tables scaled by GPU_START_FACTORS, for the descent to correct."""
    model = copy.deepcopy(model)
    for key in sorted(keys - set(model.mac_rate)):
        backend = key.partition(":")[0]
        for name, factor in GPU_START_FACTORS.items():
            tables = getattr(model, name)
            low, high = bounds_of(key, name)
            tables[key] = {k: min(high, max(low, v * factor)) for k, v in tables[backend].items()}
        model.cache_bytes[key] = 5e7
        model.op_overhead[key] = 1e-5
    return model


def fit(rows, start: CostModel, restarts: int = 12, seed: int = 0) -> CostModel:
    """The best of a descent from `start` and from `restarts` random perturbations of it (x1/4 to x4)."""
    model = copy.deepcopy(start)
    names = {c.strategy for _, _, costs, _ in rows for c in costs}
    per_strategy = [model.mac_rate, model.bandwidth, model.memory_bandwidth]
    for table in [t for tables in per_strategy for t in tables.values()]:  # per candidate, from the default
        for name in names:
            table.setdefault(name, table["default"])
    rng = random.Random(seed)
    keys = {key for _, key, _, _ in rows}
    best = descend(rows, model, keys)
    for _ in range(restarts):
        trial = copy.deepcopy(model)
        for table, key, (low, high) in parameters(trial, keys):
            table[key] = min(high, max(low, table[key] * 4 ** rng.uniform(-1, 1)))
        trial = descend(rows, trial, keys)
        if score(trial, rows) > score(best, rows):
            best = trial
    return best


def descend(rows, model: CostModel, keys: set[str], sweeps: int = 6) -> CostModel:
    """Coordinate descent in place: scale one rate at a time by each of STEPS, keep what scores better."""
    best = score(model, rows)
    for _ in range(sweeps):
        for table, key, (low, high) in parameters(model, keys):
            base = table[key]
            for step in STEPS:
                table[key] = min(high, max(low, base * step))
                trial = score(model, rows)
                if trial > best:
                    best, base = trial, table[key]
            table[key] = base
    return model


def show(model: CostModel) -> str:
    def rate(v: float) -> str:
        return f"{v / GIGA:.3g} * GIGA"

    lines = []
    for name in ("mac_rate", "bandwidth", "memory_bandwidth"):
        tables = getattr(model, name)
        lines.append(f"{name}={{")
        for backend, rates in tables.items():
            inner = ", ".join(f'"{k}": {rate(v)}' for k, v in rates.items())
            lines.append(f'    "{backend}": {{{inner}}},')
        lines.append("},")
    lines.append("cache_bytes={" + ", ".join(f'"{k}": {v:.3g}' for k, v in model.cache_bytes.items()) + "},")
    lines.append("op_overhead={" + ", ".join(f'"{k}": {v:.3g}' for k, v in model.op_overhead.items()) + "},")
    return "\n".join(lines)


def report(model: CostModel, rows, title: str) -> None:
    per_backend = {b: [r for r in rows if r[1] == b] for b in BACKENDS}
    shares = ", ".join(f"{b} {score(model, mine)[0]}/{len(mine)}" for b, mine in per_backend.items() if mine)
    print(f"{title}: static pick within 10% of the best on {score(model, rows)[0]}/{len(rows)} ({shares})")


def main(paths: list[str], checks: list[str]) -> None:
    rows = observations(paths)
    model = fit(rows, with_tables_for(MODEL, {key for _, key, _, _ in rows}))
    print(show(model) + "\n")
    report(MODEL, rows, "current model, fitting runs")
    report(model, rows, "fitted model, fitting runs")
    if checks:
        held_out = observations(checks)
        report(MODEL, held_out, "current model, held-out runs")
        report(model, held_out, "fitted model, held-out runs")
    for name, backend, costs, measured in rows:
        pick = min(costs, key=lambda c: model.seconds(c, backend)).strategy
        best = min((c.strategy for c in costs), key=measured.__getitem__)
        if measured[pick] > 1.1 * measured[best]:
            print(f"  miss: {name} on {backend}: picks {pick} ({measured[pick] / measured[best]:.2f}x {best})")


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        here = Path(__file__).parent
        held_out = [str(here / "bench.json"), *sorted(str(p) for p in (here / "gpu").glob("bench_cuda_*.json"))]
        args = [*sorted(str(p) for p in (here / "fit").glob("*.json")), "--check", *held_out]
    split = args.index("--check") if "--check" in args else len(args)
    main(args[:split], args[split + 1 :])
