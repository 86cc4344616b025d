"""The static cost model `auto` chooses with: estimated seconds from a strategy's cost figures.

    time = executed_macs / mac_rate[backend][strategy] + 2 · largest_intermediate_bytes / bandwidth[backend][strategy]
           + ops · op_overhead[backend]

The rates are effective figures, not hardware facts: they were fitted to one `lowering bench` run on
a 2-core AVX-512 machine by `docs/bench/fit_cost_model.py` (which prints the tables below from a
bench JSON file), so that the static pick is within 10% of the measured best on as many layers as
possible. What matters for a choice is their ratio between strategies, not their absolute value. A
strategy not in a backend's table uses that backend's "default" rate; a backend not in the tables
uses onnxruntime's. Bandwidth is per strategy too: moving the same bytes costs very different time in
a pixel shuffle of a blocked oneDNN result and in a fold of a contiguous column buffer. Refit when a
backend's code generation changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .strategy import Cost

GIGA = 1e9


@dataclass
class CostModel:
    """Rates per backend: multiply-adds per second and bytes per second through the largest intermediate,
    each per strategy ("default" for the rest), and seconds per emitted op."""

    mac_rate: dict[str, dict[str, float]] = field(default_factory=dict)
    bandwidth: dict[str, dict[str, float]] = field(default_factory=dict)
    op_overhead: dict[str, float] = field(default_factory=dict)

    def seconds(self, cost: Cost, backend: str) -> float:
        backend = backend if backend in self.mac_rate else "onnx"
        rates, bandwidths = self.mac_rate[backend], self.bandwidth[backend]
        return (
            cost.executed_macs / rates.get(cost.strategy, rates["default"])
            + 2 * cost.largest_intermediate_bytes / bandwidths.get(cost.strategy, bandwidths["default"])
            + cost.ops * self.op_overhead[backend]
        )


# fitted by docs/bench/fit_cost_model.py to a `lowering bench` run on the 2-core machine (see the README)
MODEL = CostModel(
    mac_rate={
        "torch": {
            "default": 18 * GIGA,
            "zero-insertion": 98 * GIGA,
            "matrix": 250 * GIGA,
            "col2im": 44 * GIGA,
            "subpixel": 49 * GIGA,
            "subpixel-fused": 125 * GIGA,
        },
        "onnx": {
            "default": 250 * GIGA,
            "zero-insertion": 25 * GIGA,
            "matrix": 250 * GIGA,
            "col2im": 250 * GIGA,
            "subpixel": 250 * GIGA,
            "subpixel-fused": 228 * GIGA,
        },
        "numpy": {
            "default": 31 * GIGA,
            "zero-insertion": 51 * GIGA,
            "matrix": 250 * GIGA,
            "col2im": 135 * GIGA,
            "subpixel": 11 * GIGA,
            "subpixel-fused": 15 * GIGA,
        },
    },
    bandwidth={
        "torch": {
            "default": 3 * GIGA,
            "subpixel": 6 * GIGA,
            "zero-insertion": 1 * GIGA,
            "matrix": 2 * GIGA,
            "col2im": 2 * GIGA,
            "subpixel-fused": 6 * GIGA,
        },
        "onnx": {
            "default": 41 * GIGA,
            "subpixel": 36 * GIGA,
            "zero-insertion": 10 * GIGA,
            "matrix": 18 * GIGA,
            "col2im": 40 * GIGA,
            "subpixel-fused": 50 * GIGA,
        },
        "numpy": {
            "default": 7 * GIGA,
            "subpixel": 2 * GIGA,
            "zero-insertion": 2 * GIGA,
            "matrix": 10 * GIGA,
            "col2im": 2 * GIGA,
            "subpixel-fused": 3 * GIGA,
        },
    },
    op_overhead={"torch": 6e-06, "onnx": 2e-05, "numpy": 6e-05},
)


def estimate_seconds(cost: Cost, backend: str) -> float:
    """Estimated seconds per call of a lowering with these cost figures on `backend`."""
    return MODEL.seconds(cost, backend)
