"""Refit the static cost model's rates (`passes/cost_model.py`) to a `lowering bench --json` run.

    python docs/bench/fit_cost_model.py docs/bench/bench.json

For every layer and backend of the run it recomputes each `auto` candidate's cost figures, then
searches the rates (coordinate descent over multiplicative steps, a few sweeps) for the model whose
static pick is within 10% of the measured best strategy on the most layers, ties broken by the
smallest geometric-mean cost of the picks. It prints the fitted tables, the share before and after,
and the layers where the pick still misses. Fitting and judging on the same run flatters the model;
check a fitted model on a second run before trusting the share.
"""

from __future__ import annotations

import copy
import json
import math
import sys

from lowering.geometry import node_geometry
from lowering.layers import parse_layer
from passes.auto import AUTO_MATRIX_BUDGET, candidate_strategies
from passes.cost_model import GIGA, MODEL, CostModel
from passes.strategy import Cost, Declined

STEPS = (0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 2.0)
BACKENDS = ("torch", "onnx", "numpy")


def observations(path: str) -> list[tuple[str, str, list[Cost], dict[str, float]]]:
    """(layer, backend, candidate costs, measured median seconds per strategy) for each layer x backend."""
    with open(path) as handle:
        data = json.load(handle)
    rows = []
    for layer in data["layers"]:
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
        for backend in BACKENDS:
            measured = {
                m["strategy"]: m["median_s"]
                for m in layer["measurements"]
                if m["status"] == "ok" and m["backend"] == backend and m["strategy"] not in ("native", "auto")
            }
            usable = [c for c in costs if c.strategy in measured]
            if usable:
                rows.append((layer["name"], backend, usable, measured))
    return rows


def score(model: CostModel, rows) -> tuple[int, float]:
    """(layers whose pick is within 10% of the best, − sum of log(pick / best)): larger is better."""
    hits, loss = 0, 0.0
    for _, backend, costs, measured in rows:
        pick = min(costs, key=lambda c: model.seconds(c, backend)).strategy
        ratio = measured[pick] / min(measured[c.strategy] for c in costs)
        hits += ratio <= 1.1
        loss += math.log(ratio)
    return hits, -loss


def parameters(model: CostModel) -> list[tuple[dict, str]]:
    """Every rate of the model as (table, key), so that a step can scale it in place."""
    out = []
    for backend, rates in model.mac_rate.items():
        out += [(rates, key) for key in rates]
        out += [(model.bandwidth, backend), (model.op_overhead, backend)]
    return out


def fit(rows, start: CostModel, sweeps: int = 4) -> CostModel:
    model = copy.deepcopy(start)
    names = {c.strategy for _, _, costs, _ in rows for c in costs}
    for rates in model.mac_rate.values():  # a rate per candidate, starting from the backend's default
        for name in names:
            rates.setdefault(name, rates["default"])
    best = score(model, rows)
    for _ in range(sweeps):
        for table, key in parameters(model):
            base = table[key]
            for step in STEPS:
                table[key] = base * step
                trial = score(model, rows)
                if trial > best:
                    best, base = trial, table[key]
            table[key] = base
    return model


def show(model: CostModel) -> str:
    def rate(v: float) -> str:
        return f"{v / GIGA:.0f} * GIGA"

    lines = ["mac_rate={"]
    for backend, rates in model.mac_rate.items():
        inner = ", ".join(f'"{k}": {rate(v)}' for k, v in rates.items())
        lines.append(f'    "{backend}": {{{inner}}},')
    lines.append("},")
    lines.append("bandwidth={" + ", ".join(f'"{k}": {rate(v)}' for k, v in model.bandwidth.items()) + "},")
    lines.append("op_overhead={" + ", ".join(f'"{k}": {v:.0e}' for k, v in model.op_overhead.items()) + "},")
    return "\n".join(lines)


def main(path: str) -> None:
    rows = observations(path)
    before = score(MODEL, rows)
    model = fit(rows, MODEL)
    after = score(model, rows)
    print(show(model))
    print(f"\nstatic pick within 10% of the best: {before[0]}/{len(rows)} before, {after[0]}/{len(rows)} after")
    for backend in BACKENDS:
        mine = [r for r in rows if r[1] == backend]
        print(f"  {backend}: {score(model, mine)[0]}/{len(mine)}")
    for name, backend, costs, measured in rows:
        pick = min(costs, key=lambda c: model.seconds(c, backend)).strategy
        best = min((c.strategy for c in costs), key=measured.__getitem__)
        if measured[pick] > 1.1 * measured[best]:
            print(f"  miss: {name} on {backend}: picks {pick} ({measured[pick] / measured[best]:.2f}x {best})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/bench/bench.json")
