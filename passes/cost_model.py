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
        """`backend` is a backend ("torch") or a backend on a device ("torch:cuda"); a device without
        tables of its own uses its backend's, a backend without tables onnxruntime's."""
        if backend not in self.mac_rate:
            backend = backend.partition(":")[0]
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


# fitted by docs/bench/fit_cost_model.py to docs/bench/fit/run*.json, two `lowering bench` runs on the 2-core machine;
# the "torch:cuda" tables (PyTorch on a GPU) to docs/bench/fit/gpu*_b*.json, two runs on an H100
MODEL = CostModel(
    mac_rate={
        "torch": {
            "default": 20 * GIGA,
            "zero-insertion": 1 * GIGA,
            "matrix": 250 * GIGA,
            "col2im": 36.8 * GIGA,
            "subpixel": 4.52 * GIGA,
            "subpixel-fused": 25.9 * GIGA,
        },
        "onnx": {
            "default": 54.6 * GIGA,
            "zero-insertion": 20.6 * GIGA,
            "matrix": 26.5 * GIGA,
            "col2im": 12.8 * GIGA,
            "subpixel": 66.8 * GIGA,
            "subpixel-fused": 81.5 * GIGA,
        },
        "numpy": {
            "default": 199 * GIGA,
            "zero-insertion": 2.6 * GIGA,
            "matrix": 250 * GIGA,
            "col2im": 1.6 * GIGA,
            "subpixel": 1 * GIGA,
            "subpixel-fused": 1.57 * GIGA,
        },
        "torch:cuda": {
            "default": 1310 * GIGA,
            "zero-insertion": 2260 * GIGA,
            "matrix": 60000 * GIGA,
            "col2im": 60000 * GIGA,
            "subpixel": 245 * GIGA,
            "subpixel-fused": 540 * GIGA,
        },
    },
    bandwidth={
        "torch": {
            "default": 1.93 * GIGA,
            "subpixel": 0.5 * GIGA,
            "zero-insertion": 5.28 * GIGA,
            "matrix": 1.06 * GIGA,
            "col2im": 0.6 * GIGA,
            "subpixel-fused": 6.72 * GIGA,
        },
        "onnx": {
            "default": 50 * GIGA,
            "subpixel": 50 * GIGA,
            "zero-insertion": 13.1 * GIGA,
            "matrix": 8.62 * GIGA,
            "col2im": 50 * GIGA,
            "subpixel-fused": 5.06 * GIGA,
        },
        "numpy": {
            "default": 29 * GIGA,
            "subpixel": 0.5 * GIGA,
            "zero-insertion": 50 * GIGA,
            "matrix": 0.5 * GIGA,
            "col2im": 3.99 * GIGA,
            "subpixel-fused": 16.3 * GIGA,
        },
        "torch:cuda": {
            "default": 958 * GIGA,
            "subpixel": 3000 * GIGA,
            "zero-insertion": 176 * GIGA,
            "matrix": 21.9 * GIGA,
            "col2im": 3000 * GIGA,
            "subpixel-fused": 42.8 * GIGA,
        },
    },
    memory_bandwidth={
        "torch": {
            "default": 3.02 * GIGA,
            "matrix": 0.309 * GIGA,
            "subpixel": 1.51 * GIGA,
            "subpixel-fused": 1 * GIGA,
            "zero-insertion": 8.86 * GIGA,
            "col2im": 0.2 * GIGA,
        },
        "onnx": {
            "default": 0.2 * GIGA,
            "matrix": 12.8 * GIGA,
            "subpixel": 20 * GIGA,
            "subpixel-fused": 18.3 * GIGA,
            "zero-insertion": 14.9 * GIGA,
            "col2im": 6.28 * GIGA,
        },
        "numpy": {
            "default": 0.211 * GIGA,
            "matrix": 0.512 * GIGA,
            "subpixel": 20 * GIGA,
            "subpixel-fused": 20 * GIGA,
            "zero-insertion": 10 * GIGA,
            "col2im": 0.572 * GIGA,
        },
        "torch:cuda": {
            "default": 1390 * GIGA,
            "matrix": 830 * GIGA,
            "subpixel": 63.2 * GIGA,
            "subpixel-fused": 3000 * GIGA,
            "zero-insertion": 16.3 * GIGA,
            "col2im": 1.2 * GIGA,
        },
    },
    cache_bytes={"torch": 3.23e06, "onnx": 1.64e06, "numpy": 2.94e06, "torch:cuda": 8.93e06},
    op_overhead={"torch": 1.49e-05, "onnx": 0.000164, "numpy": 1.34e-06, "torch:cuda": 4.92e-05},
)


def estimate_seconds(cost: Cost, backend: str, device: str = "cpu") -> float:
    """Estimated seconds per call of a lowering with these cost figures on `backend` and `device` (the
    device's own rates where the model has them, fitted on its own runs; else the CPU's)."""
    return MODEL.seconds(cost, backend if device == "cpu" else f"{backend}:{device}")
