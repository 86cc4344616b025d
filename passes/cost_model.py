"""The static cost model `auto` chooses with: estimated seconds from a strategy's cost figures.

    time = executed_macs / mac_rate[backend][strategy] + bytes / bandwidth + ops · op_overhead[backend]

The rates are rough, from measurements on a 2-core AVX-512 machine (see PERF-NOTES); what matters
for a choice is their ratio between strategies, not their absolute value. A strategy not in a
backend's table uses that backend's "default" rate.
"""

from __future__ import annotations

from .strategy import Cost

GIGA = 1e9

# multiply-adds per second
MAC_RATE: dict[str, dict[str, float]] = {
    "torch": {"default": 60 * GIGA, "matrix": 40 * GIGA, "col2im": 50 * GIGA, "zero-insertion": 60 * GIGA},
    "onnx": {"default": 50 * GIGA, "matrix": 40 * GIGA, "col2im": 45 * GIGA, "zero-insertion": 50 * GIGA},
    "numpy": {"default": 25 * GIGA, "matrix": 60 * GIGA, "col2im": 60 * GIGA, "zero-insertion": 25 * GIGA},
}
BANDWIDTH = 8 * GIGA  # bytes per second through intermediates (written and read back)
OP_OVERHEAD = {"torch": 4e-6, "onnx": 6e-6, "numpy": 3e-6}


def estimate_seconds(cost: Cost, backend: str) -> float:
    rates = MAC_RATE.get(backend, MAC_RATE["onnx"])
    rate = rates.get(cost.strategy, rates["default"])
    return (
        cost.executed_macs / rate
        + 2 * cost.largest_intermediate_bytes / BANDWIDTH
        + cost.ops * OP_OVERHEAD.get(backend, 5e-6)
    )
