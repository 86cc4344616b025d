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
            "default": 14.9 * GIGA,
            "zero-insertion": 27.4 * GIGA,
            "matrix": 250 * GIGA,
            "col2im": 177 * GIGA,
            "subpixel": 75 * GIGA,
            "subpixel-fused": 97.4 * GIGA,
        },
        "onnx": {
            "default": 9.59 * GIGA,
            "zero-insertion": 15 * GIGA,
            "matrix": 38 * GIGA,
            "col2im": 73 * GIGA,
            "subpixel": 155 * GIGA,
            "subpixel-fused": 126 * GIGA,
        },
        "numpy": {
            "default": 95.1 * GIGA,
            "zero-insertion": 1 * GIGA,
            "matrix": 250 * GIGA,
            "col2im": 3.4 * GIGA,
            "subpixel": 2 * GIGA,
            "subpixel-fused": 3.5 * GIGA,
        },
    },
    bandwidth={
        "torch": {
            "default": 4.83 * GIGA,
            "subpixel": 0.5 * GIGA,
            "zero-insertion": 50 * GIGA,
            "matrix": 0.974 * GIGA,
            "col2im": 0.516 * GIGA,
            "subpixel-fused": 0.79 * GIGA,
        },
        "onnx": {
            "default": 50 * GIGA,
            "subpixel": 17.3 * GIGA,
            "zero-insertion": 50 * GIGA,
            "matrix": 13.4 * GIGA,
            "col2im": 20.9 * GIGA,
            "subpixel-fused": 6.59 * GIGA,
        },
        "numpy": {
            "default": 50 * GIGA,
            "subpixel": 0.6 * GIGA,
            "zero-insertion": 50 * GIGA,
            "matrix": 0.5 * GIGA,
            "col2im": 3.7 * GIGA,
            "subpixel-fused": 1.01 * GIGA,
        },
    },
    memory_bandwidth={
        "torch": {
            "default": 1.51 * GIGA,
            "matrix": 0.2 * GIGA,
            "subpixel": 4.41 * GIGA,
            "subpixel-fused": 3.73 * GIGA,
            "zero-insertion": 2.5 * GIGA,
            "col2im": 0.2 * GIGA,
        },
        "onnx": {
            "default": 0.2 * GIGA,
            "matrix": 3.91 * GIGA,
            "subpixel": 3.85 * GIGA,
            "subpixel-fused": 3.44 * GIGA,
            "zero-insertion": 7.5 * GIGA,
            "col2im": 15.6 * GIGA,
        },
        "numpy": {
            "default": 0.42 * GIGA,
            "matrix": 0.451 * GIGA,
            "subpixel": 20 * GIGA,
            "subpixel-fused": 1.12 * GIGA,
            "zero-insertion": 12.8 * GIGA,
            "col2im": 1.21 * GIGA,
        },
    },
    cache_bytes={"torch": 1e06, "onnx": 2.38e06, "numpy": 9.04e06},
    op_overhead={"torch": 0.00017, "onnx": 9.78e-05, "numpy": 2.5e-05},
)


def estimate_seconds(cost: Cost, backend: str) -> float:
    """Estimated seconds per call of a lowering with these cost figures on `backend`."""
    return MODEL.seconds(cost, backend)
