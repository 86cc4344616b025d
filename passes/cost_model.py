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
            "default": 8.35 * GIGA,
            "zero-insertion": 3.26 * GIGA,
            "matrix": 71.1 * GIGA,
            "col2im": 250 * GIGA,
            "subpixel": 4.22 * GIGA,
            "subpixel-fused": 30.2 * GIGA,
        },
        "onnx": {
            "default": 18.1 * GIGA,
            "zero-insertion": 73 * GIGA,
            "matrix": 19.7 * GIGA,
            "col2im": 17.3 * GIGA,
            "subpixel": 250 * GIGA,
            "subpixel-fused": 210 * GIGA,
        },
        "numpy": {
            "default": 139 * GIGA,
            "zero-insertion": 1 * GIGA,
            "matrix": 110 * GIGA,
            "col2im": 3.36 * GIGA,
            "subpixel": 1.44 * GIGA,
            "subpixel-fused": 3.41 * GIGA,
        },
    },
    bandwidth={
        "torch": {
            "default": 1.48 * GIGA,
            "subpixel": 0.5 * GIGA,
            "zero-insertion": 4.28 * GIGA,
            "matrix": 1.9 * GIGA,
            "col2im": 0.648 * GIGA,
            "subpixel-fused": 0.5 * GIGA,
        },
        "onnx": {
            "default": 50 * GIGA,
            "subpixel": 3.26 * GIGA,
            "zero-insertion": 4.38 * GIGA,
            "matrix": 6.72 * GIGA,
            "col2im": 50 * GIGA,
            "subpixel-fused": 5.79 * GIGA,
        },
        "numpy": {
            "default": 12.8 * GIGA,
            "subpixel": 0.6 * GIGA,
            "zero-insertion": 50 * GIGA,
            "matrix": 0.715 * GIGA,
            "col2im": 50 * GIGA,
            "subpixel-fused": 5.6 * GIGA,
        },
    },
    memory_bandwidth={
        "torch": {
            "default": 2.21 * GIGA,
            "matrix": 0.2 * GIGA,
            "subpixel": 3.78 * GIGA,
            "subpixel-fused": 2.6 * GIGA,
            "zero-insertion": 4.34 * GIGA,
            "col2im": 0.2 * GIGA,
        },
        "onnx": {
            "default": 0.2 * GIGA,
            "matrix": 8.21 * GIGA,
            "subpixel": 6.45 * GIGA,
            "subpixel-fused": 5.75 * GIGA,
            "zero-insertion": 6.59 * GIGA,
            "col2im": 20 * GIGA,
        },
        "numpy": {
            "default": 0.744 * GIGA,
            "matrix": 0.417 * GIGA,
            "subpixel": 20 * GIGA,
            "subpixel-fused": 1.96 * GIGA,
            "zero-insertion": 6.09 * GIGA,
            "col2im": 2.5 * GIGA,
        },
    },
    cache_bytes={"torch": 1e06, "onnx": 2.56e06, "numpy": 2.89e06},
    op_overhead={"torch": 0.0002, "onnx": 2.22e-05, "numpy": 1e-06},
)


def estimate_seconds(cost: Cost, backend: str) -> float:
    """Estimated seconds per call of a lowering with these cost figures on `backend`."""
    return MODEL.seconds(cost, backend)
