"""The static cost model `auto` chooses with: estimated seconds from a strategy's cost figures.

    time = executed_macs / mac_rate[backend][strategy]
           + moved bytes within cache_bytes[backend] / bandwidth[backend][strategy]
           + moved bytes beyond it / memory_bandwidth[backend][strategy]
           + ops · op_overhead[backend],      moved bytes = 2 · largest_intermediate_bytes

The rates are effective figures, not hardware facts: they were fitted to one `lowering bench` run on
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


# fitted by docs/bench/fit_cost_model.py to two `lowering bench` runs on the 2-core machine (see the README)
MODEL = CostModel(
    mac_rate={
        "torch": {
            "default": 43 * GIGA,
            "zero-insertion": 110 * GIGA,
            "matrix": 250 * GIGA,
            "col2im": 234 * GIGA,
            "subpixel": 62.5 * GIGA,
            "subpixel-fused": 129 * GIGA,
        },
        "onnx": {
            "default": 250 * GIGA,
            "zero-insertion": 80.8 * GIGA,
            "matrix": 250 * GIGA,
            "col2im": 185 * GIGA,
            "subpixel": 125 * GIGA,
            "subpixel-fused": 122 * GIGA,
        },
        "numpy": {
            "default": 44.5 * GIGA,
            "zero-insertion": 16.6 * GIGA,
            "matrix": 123 * GIGA,
            "col2im": 19.2 * GIGA,
            "subpixel": 3.81 * GIGA,
            "subpixel-fused": 19.3 * GIGA,
        },
    },
    bandwidth={
        "torch": {
            "default": 3.92 * GIGA,
            "subpixel": 1.09 * GIGA,
            "zero-insertion": 1.23 * GIGA,
            "matrix": 1.12 * GIGA,
            "col2im": 0.845 * GIGA,
            "subpixel-fused": 1.26 * GIGA,
        },
        "onnx": {
            "default": 50 * GIGA,
            "subpixel": 50 * GIGA,
            "zero-insertion": 29.9 * GIGA,
            "matrix": 23.1 * GIGA,
            "col2im": 5.25 * GIGA,
            "subpixel-fused": 50 * GIGA,
        },
        "numpy": {
            "default": 15.8 * GIGA,
            "subpixel": 1.26 * GIGA,
            "zero-insertion": 4.8 * GIGA,
            "matrix": 3.3 * GIGA,
            "col2im": 48 * GIGA,
            "subpixel-fused": 7.27 * GIGA,
        },
    },
    memory_bandwidth={
        "torch": {
            "default": 4.1 * GIGA,
            "matrix": 4.63 * GIGA,
            "subpixel": 2.81 * GIGA,
            "subpixel-fused": 0.289 * GIGA,
            "zero-insertion": 6.13 * GIGA,
            "col2im": 4.26 * GIGA,
        },
        "onnx": {
            "default": 20 * GIGA,
            "matrix": 20 * GIGA,
            "subpixel": 20 * GIGA,
            "subpixel-fused": 16.3 * GIGA,
            "zero-insertion": 20 * GIGA,
            "col2im": 12.9 * GIGA,
        },
        "numpy": {
            "default": 1.98 * GIGA,
            "matrix": 8.59 * GIGA,
            "subpixel": 20 * GIGA,
            "subpixel-fused": 7.7 * GIGA,
            "zero-insertion": 11.5 * GIGA,
            "col2im": 1.88 * GIGA,
        },
    },
    cache_bytes={"torch": 2.2e07, "onnx": 7.66e06, "numpy": 4.07e06},
    op_overhead={"torch": 1.55e-05, "onnx": 3.27e-05, "numpy": 1.01e-05},
)


def estimate_seconds(cost: Cost, backend: str) -> float:
    """Estimated seconds per call of a lowering with these cost figures on `backend`."""
    return MODEL.seconds(cost, backend)
