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

# Fitted to one `lowering bench` run on the 2-core machine (docs/bench/bench.json): the figures that
# made the static pick match the measured best most often, rounded. They are effective rates, not
# hardware facts: e.g. zero-insertion's high PyTorch rate says oneDNN runs its stride-1 convolution
# well, and its cost shows up through its executed multiply-adds instead.
MAC_RATE: dict[str, dict[str, float]] = {
    "torch": {"default": 65 * GIGA, "zero-insertion": 250 * GIGA, "matrix": 260 * GIGA, "col2im": 65 * GIGA},
    "onnx": {"default": 350 * GIGA, "zero-insertion": 40 * GIGA, "matrix": 390 * GIGA, "col2im": 360 * GIGA},
    "numpy": {"default": 16 * GIGA, "zero-insertion": 17 * GIGA, "matrix": 100 * GIGA, "col2im": 95 * GIGA},
}
BANDWIDTH = {"torch": 6 * GIGA, "onnx": 16 * GIGA, "numpy": 5 * GIGA}  # bytes/s through intermediates
OP_OVERHEAD = {"torch": 20e-6, "onnx": 34e-6, "numpy": 74e-6}  # seconds per emitted op
WEIGHT_REORDER_RATE = {"torch": 5 * GIGA}  # bytes per second, per call, for Conv-based strategies
CONV_BASED = ("zero-insertion", "subpixel")


def estimate_seconds(cost: Cost, backend: str) -> float:
    rates = MAC_RATE.get(backend, MAC_RATE["onnx"])
    rate = rates.get(cost.strategy, rates["default"])
    reorder = WEIGHT_REORDER_RATE.get(backend)
    weights = cost.weight_bytes / reorder if reorder and cost.strategy in CONV_BASED else 0.0
    return (
        cost.executed_macs / rate
        + 2 * cost.largest_intermediate_bytes / BANDWIDTH.get(backend, 8 * GIGA)
        + cost.ops * OP_OVERHEAD.get(backend, 5e-6)
        + weights
    )
