"""The static cost model `auto` chooses with: estimated seconds from a strategy's cost figures.

    time = executed_macs / mac_rate[backend][strategy] + bytes / bandwidth + ops · op_overhead[backend]
           (+ weight_bytes / reorder_rate for PyTorch convolutions)

The rates are rough, from measurements on a 2-core AVX-512 machine (see PERF-NOTES); what matters
for a choice is their ratio between strategies, not their absolute value. A strategy not in a
backend's table uses that backend's "default" rate. PyTorch's CPU convolutions in NCHW reorder their
weights into oneDNN's blocked layout on every call, so on that backend a Conv-based lowering also
pays for its weight bytes; onnxruntime packs weights once, when the session is made. The numbers
were fitted to a `lowering bench` run on that machine (static pick within 10% of the measured best
on most layers; `lowering bench` reports the share).
"""

from __future__ import annotations

from .strategy import Cost

GIGA = 1e9

# multiply-adds per second
MAC_RATE: dict[str, dict[str, float]] = {
    "torch": {"default": 60 * GIGA, "matrix": 40 * GIGA, "col2im": 50 * GIGA, "zero-insertion": 60 * GIGA},
    "onnx": {"default": 50 * GIGA, "matrix": 40 * GIGA, "col2im": 60 * GIGA, "zero-insertion": 50 * GIGA},
    "numpy": {"default": 25 * GIGA, "matrix": 60 * GIGA, "col2im": 60 * GIGA, "zero-insertion": 25 * GIGA},
}
BANDWIDTH = 8 * GIGA  # bytes per second through intermediates (written and read back)
OP_OVERHEAD = {"torch": 4e-6, "onnx": 6e-6, "numpy": 3e-6}
WEIGHT_REORDER_RATE = {"torch": 4 * GIGA}  # bytes per second, per call, for Conv-based strategies
CONV_BASED = ("zero-insertion", "subpixel")


def estimate_seconds(cost: Cost, backend: str) -> float:
    rates = MAC_RATE.get(backend, MAC_RATE["onnx"])
    rate = rates.get(cost.strategy, rates["default"])
    reorder = WEIGHT_REORDER_RATE.get(backend)
    weights = cost.weight_bytes / reorder if reorder and cost.strategy in CONV_BASED else 0.0
    return (
        cost.executed_macs / rate
        + 2 * cost.largest_intermediate_bytes / BANDWIDTH
        + cost.ops * OP_OVERHEAD.get(backend, 5e-6)
        + weights
    )
