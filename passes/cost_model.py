"""The static cost model `auto` chooses with: estimated seconds from a strategy's cost figures.

    time = executed_macs / mac_rate[backend][strategy]
           + moved bytes within cache_bytes[backend] / bandwidth[backend][strategy]
           + moved bytes beyond it / memory_bandwidth[backend][strategy]
           + ops · op_overhead[backend],      moved bytes = 2 · largest_intermediate_bytes

The rates are effective figures, not hardware facts: they were fitted to two `lowering bench` runs on
a 2-core AVX-512 machine by `docs/bench/fit_cost_model.py` (which prints the tables below from a
bench JSON file), so that the static pick is within 10% of the measured best on as many layers as
possible. What matters for a choice is their ratio between strategies, not their absolute value. A
strategy not in a backend's table uses that backend's "default" rate; a backend not in the tables
uses onnxruntime's. Bandwidth is per strategy too: moving the same bytes costs very different time in
a pixel shuffle of a blocked oneDNN result and in a fold of a contiguous column buffer, and bytes
that stay in cache move several times faster than bytes that go to memory. Refit when a backend's code
generation changes.
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
    bandwidth: dict[str, dict[str, float]] = field(default_factory=dict)  # while the bytes fit in cache
    memory_bandwidth: dict[str, dict[str, float]] = field(default_factory=dict)  # for the bytes beyond it
    cache_bytes: dict[str, float] = field(default_factory=dict)
    op_overhead: dict[str, float] = field(default_factory=dict)

    def seconds(self, cost: Cost, backend: str) -> float:
        backend = backend if backend in self.mac_rate else "onnx"
        moved = 2 * cost.largest_intermediate_bytes  # written once, read once
        cached = min(moved, self.cache_bytes[backend])
        return (
            cost.executed_macs / _rate(self.mac_rate[backend], cost.strategy)
            + cached / _rate(self.bandwidth[backend], cost.strategy)
            + (moved - cached) / _rate(self.memory_bandwidth[backend], cost.strategy)
            + cost.ops * self.op_overhead[backend]
        )


def _rate(table: dict[str, float], strategy: str) -> float:
    return table.get(strategy, table["default"])


# fitted by docs/bench/fit_cost_model.py to docs/bench/fit/run*.json, two `lowering bench` runs on the 2-core machine
MODEL = CostModel(
    mac_rate={
        "torch": {
            "default": 6.94 * GIGA,
            "zero-insertion": 5.99 * GIGA,
            "matrix": 103 * GIGA,
            "col2im": 75.1 * GIGA,
            "subpixel": 202 * GIGA,
            "subpixel-fused": 250 * GIGA,
        },
        "onnx": {
            "default": 67.8 * GIGA,
            "zero-insertion": 13.4 * GIGA,
            "matrix": 64.3 * GIGA,
            "col2im": 87.5 * GIGA,
            "subpixel": 175 * GIGA,
            "subpixel-fused": 6.38 * GIGA,
        },
        "numpy": {
            "default": 250 * GIGA,
            "zero-insertion": 2.3 * GIGA,
            "matrix": 112 * GIGA,
            "col2im": 5.47 * GIGA,
            "subpixel": 1 * GIGA,
            "subpixel-fused": 5.5 * GIGA,
        },
    },
    bandwidth={
        "torch": {
            "default": 5.68 * GIGA,
            "subpixel": 0.839 * GIGA,
            "zero-insertion": 8.55 * GIGA,
            "matrix": 3.83 * GIGA,
            "col2im": 0.5 * GIGA,
            "subpixel-fused": 2.07 * GIGA,
        },
        "onnx": {
            "default": 50 * GIGA,
            "subpixel": 0.5 * GIGA,
            "zero-insertion": 22.1 * GIGA,
            "matrix": 50 * GIGA,
            "col2im": 4.77 * GIGA,
            "subpixel-fused": 7.77 * GIGA,
        },
        "numpy": {
            "default": 15.9 * GIGA,
            "subpixel": 12.2 * GIGA,
            "zero-insertion": 23.9 * GIGA,
            "matrix": 0.795 * GIGA,
            "col2im": 50 * GIGA,
            "subpixel-fused": 2.86 * GIGA,
        },
    },
    memory_bandwidth={
        "torch": {
            "default": 3.2 * GIGA,
            "matrix": 0.353 * GIGA,
            "subpixel": 2.56 * GIGA,
            "subpixel-fused": 3.24 * GIGA,
            "zero-insertion": 1.78 * GIGA,
            "col2im": 0.361 * GIGA,
        },
        "onnx": {
            "default": 5.1 * GIGA,
            "matrix": 13.9 * GIGA,
            "subpixel": 0.669 * GIGA,
            "subpixel-fused": 20 * GIGA,
            "zero-insertion": 20 * GIGA,
            "col2im": 1.39 * GIGA,
        },
        "numpy": {
            "default": 0.736 * GIGA,
            "matrix": 4.9 * GIGA,
            "subpixel": 20 * GIGA,
            "subpixel-fused": 14.7 * GIGA,
            "zero-insertion": 20 * GIGA,
            "col2im": 2.63 * GIGA,
        },
    },
    cache_bytes={"torch": 2.52e06, "onnx": 1.66e06, "numpy": 2.21e06},
    op_overhead={"torch": 6.47e-05, "onnx": 3.93e-05, "numpy": 1.63e-05},
)


def estimate_seconds(cost: Cost, backend: str) -> float:
    """Estimated seconds per call of a lowering with these cost figures on `backend`."""
    return MODEL.seconds(cost, backend)
