"""The static cost model `auto` chooses with: estimated seconds from a strategy's cost figures.

    time = executed_macs / mac_rate[backend][strategy] + 2 · largest_intermediate_bytes / bandwidth[backend]
           + ops · op_overhead[backend]

The rates are effective figures, not hardware facts: they were fitted to one `lowering bench` run on
a 2-core AVX-512 machine by `docs/bench/fit_cost_model.py` (which prints the tables below from a
bench JSON file), so that the static pick is within 10% of the measured best on as many layers as
possible. What matters for a choice is their ratio between strategies, not their absolute value. A
strategy not in a backend's table uses that backend's "default" rate; a backend not in the tables
uses onnxruntime's. Refit when a backend's code generation changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .strategy import Cost

GIGA = 1e9


@dataclass
class CostModel:
    """Rates per backend: multiply-adds per second per strategy, bytes per second through the largest
    intermediate, seconds per emitted op."""

    mac_rate: dict[str, dict[str, float]] = field(default_factory=dict)
    bandwidth: dict[str, float] = field(default_factory=dict)
    op_overhead: dict[str, float] = field(default_factory=dict)

    def seconds(self, cost: Cost, backend: str) -> float:
        backend = backend if backend in self.mac_rate else "onnx"
        rates = self.mac_rate[backend]
        rate = rates.get(cost.strategy, rates["default"])
        return (
            cost.executed_macs / rate
            + 2 * cost.largest_intermediate_bytes / self.bandwidth[backend]
            + cost.ops * self.op_overhead[backend]
        )


# fitted by docs/bench/fit_cost_model.py to docs/bench/bench.json
MODEL = CostModel(
    mac_rate={
        "torch": {"default": 65 * GIGA, "zero-insertion": 250 * GIGA, "matrix": 260 * GIGA, "col2im": 65 * GIGA},
        "onnx": {"default": 350 * GIGA, "zero-insertion": 40 * GIGA, "matrix": 390 * GIGA, "col2im": 360 * GIGA},
        "numpy": {"default": 16 * GIGA, "zero-insertion": 17 * GIGA, "matrix": 100 * GIGA, "col2im": 95 * GIGA},
    },
    bandwidth={"torch": 6 * GIGA, "onnx": 16 * GIGA, "numpy": 5 * GIGA},
    op_overhead={"torch": 20e-6, "onnx": 34e-6, "numpy": 74e-6},
)


def estimate_seconds(cost: Cost, backend: str) -> float:
    """Estimated seconds per call of a lowering with these cost figures on `backend`."""
    return MODEL.seconds(cost, backend)
