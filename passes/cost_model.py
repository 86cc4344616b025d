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
            "default": 11.9 * GIGA,
            "zero-insertion": 12.5 * GIGA,
            "matrix": 127 * GIGA,
            "col2im": 250 * GIGA,
            "subpixel": 62.5 * GIGA,
            "subpixel-fused": 162 * GIGA,
        },
        "onnx": {
            "default": 250 * GIGA,
            "zero-insertion": 20.5 * GIGA,
            "matrix": 250 * GIGA,
            "col2im": 250 * GIGA,
            "subpixel": 250 * GIGA,
            "subpixel-fused": 70 * GIGA,
        },
        "numpy": {
            "default": 102 * GIGA,
            "zero-insertion": 6.41 * GIGA,
            "matrix": 30.8 * GIGA,
            "col2im": 9.54 * GIGA,
            "subpixel": 1 * GIGA,
            "subpixel-fused": 9.77 * GIGA,
        },
    },
    bandwidth={
        "torch": {
            "default": 7.18 * GIGA,
            "subpixel": 2.55 * GIGA,
            "zero-insertion": 4 * GIGA,
            "matrix": 2 * GIGA,
            "col2im": 1.17 * GIGA,
            "subpixel-fused": 2.4 * GIGA,
        },
        "onnx": {
            "default": 50 * GIGA,
            "subpixel": 3.12 * GIGA,
            "zero-insertion": 50 * GIGA,
            "matrix": 45.8 * GIGA,
            "col2im": 1.01 * GIGA,
            "subpixel-fused": 22.1 * GIGA,
        },
        "numpy": {
            "default": 4.74 * GIGA,
            "subpixel": 3.42 * GIGA,
            "zero-insertion": 16.4 * GIGA,
            "matrix": 1.91 * GIGA,
            "col2im": 37.2 * GIGA,
            "subpixel-fused": 17.2 * GIGA,
        },
    },
    memory_bandwidth={
        "torch": {
            "default": 1.91 * GIGA,
            "matrix": 1.3 * GIGA,
            "subpixel": 0.8 * GIGA,
            "subpixel-fused": 0.9 * GIGA,
            "zero-insertion": 0.958 * GIGA,
            "col2im": 1.16 * GIGA,
        },
        "onnx": {
            "default": 20 * GIGA,
            "matrix": 20 * GIGA,
            "subpixel": 2.5 * GIGA,
            "subpixel-fused": 15.5 * GIGA,
            "zero-insertion": 20 * GIGA,
            "col2im": 4.74 * GIGA,
        },
        "numpy": {
            "default": 0.588 * GIGA,
            "matrix": 12.7 * GIGA,
            "subpixel": 7.12 * GIGA,
            "subpixel-fused": 4.27 * GIGA,
            "zero-insertion": 20 * GIGA,
            "col2im": 4.39 * GIGA,
        },
    },
    cache_bytes={"torch": 8.31e06, "onnx": 4.87e06, "numpy": 4.5e06},
    op_overhead={"torch": 9.56e-05, "onnx": 0.000121, "numpy": 8.04e-06},
)


def estimate_seconds(cost: Cost, backend: str) -> float:
    """Estimated seconds per call of a lowering with these cost figures on `backend`."""
    return MODEL.seconds(cost, backend)
