"""`fold-batchnorm`: fold an inference-mode BatchNormalization into the convolution before it.

Rule: `BatchNormalization(Conv(X, W, B), γ, β, μ, σ²)` with every operand but X constant becomes
`Conv(X, W', B')`, and likewise for ConvTranspose, where per output channel m

    s_m = γ_m / sqrt(σ²_m + ε),   W'[m-filter] = s_m · W[m-filter],   B'_m = s_m · (B_m − μ_m) + β_m

(B = 0 when the convolution has no bias). A Conv weight `(M, C/g, k...)` holds output channel m
in row m; a ConvTranspose weight `(C, M/g, k...)` holds output channel `G·M/g + j` in column j of
the rows of group G, so it is scaled per group. The folded constants are computed in float64 and
stored in the weight's element type; the old ones are dropped when nothing else reads them.

It declines, leaving both nodes as they are and saying why in the notes, when the convolution's
output has another reader (or is a graph output), when the weights, bias or statistics are not
constants, or when the BatchNormalization is in training mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowering.ir import Graph, Node, Value

from .base import Pass, PassResult, register_pass

CONVOLUTIONS = ("Conv", "ConvTranspose")


def batchnorm_scale_shift(graph: Graph, bn: Node) -> tuple[np.ndarray, np.ndarray] | str:
    """(s, t) with BatchNormalization(x) = s·x + t per channel, in float64; or why not constant."""
    operands = [graph.constant_value(v) for v in bn.inputs[1:5]]
    names = ("scale", "B", "input_mean", "input_var")
    missing = [name for name, data in zip(names, operands, strict=True) if data is None]
    if missing:
        return f"its {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not constant"
    gamma, beta, mean, var = (np.asarray(a, dtype=np.float64).reshape(-1) for a in operands)  # type: ignore[arg-type]
    scale = gamma / np.sqrt(var + bn.attr("epsilon"))
    return scale, beta - mean * scale


def scale_output_channels(op: str, weight: np.ndarray, scale: np.ndarray, group: int) -> np.ndarray:
    """The weight of `op` with every output channel m multiplied by scale[m], in the weight's dtype: each
    product is computed in float64 and rounded once, in NumPy's buffered chunks rather than through a
    float64 copy of the whole weight (that copy was a third of `auto`'s lowering time on DCGAN)."""
    w = np.asarray(weight)
    spatial = (1,) * (w.ndim - 2)
    out = np.empty_like(w)
    if op == "Conv":  # (M, C/g, k...): output channel m is row m
        return np.multiply(w, scale.reshape(-1, 1, *spatial), out=out, casting="same_kind")
    channels_in, per_group = w.shape[:2]  # (C, M/g, k...): output channel G·M/g + j is column j of group G
    grouped = w.reshape(group, channels_in // group, per_group, *w.shape[2:])
    factors = scale.reshape(group, 1, per_group, *spatial)
    np.multiply(grouped, factors, out=out.reshape(grouped.shape), casting="same_kind")
    return out


def _why_not(graph: Graph, bn: Node) -> str | None:
    x = bn.inputs[0]
    conv = x.producer if x is not None else None
    if conv is None or conv.op not in CONVOLUTIONS:
        return None  # nothing to fold into: not this pass's business
    if bn.attr("training_mode") != 0 or len(bn.outputs) != 1:
        return "it is in training mode"
    if len(x.uses) != 1 or any(v is x for v in graph.outputs):  # type: ignore[union-attr]
        return f"{conv.label}'s output is also read elsewhere"
    if graph.constant_value(conv.inputs[1]) is None:
        return f"{conv.label}'s weight is not constant"
    if conv.input(2) is not None and graph.constant_value(conv.inputs[2]) is None:
        return f"{conv.label}'s bias is not constant"
    return ""


def _drop_if_unused(graph: Graph, values: list[Value | None]) -> None:
    outputs = {id(v) for v in graph.outputs}
    for value in values:
        if value is None or value.uses or id(value) in outputs:
            continue
        if graph.initializers.get(value.name) is value:
            graph.remove_initializer(value)
        elif value.producer is not None and value.producer.op == "Constant":
            graph.remove_node(value.producer)


def fold(graph: Graph, bn: Node) -> None:
    """Fold `bn` into the Conv / ConvTranspose producing its input (the caller has checked it may)."""
    x = bn.inputs[0]
    assert x is not None and x.producer is not None
    conv = x.producer
    scale_shift = batchnorm_scale_shift(graph, bn)
    assert not isinstance(scale_shift, str)
    scale, shift = scale_shift
    weight = np.asarray(graph.constant_value(conv.inputs[1]))
    bias_value = conv.input(2)
    bias = np.zeros(scale.shape) if bias_value is None else np.asarray(graph.constant_value(bias_value), np.float64)
    folded_w = scale_output_channels(conv.op, weight, scale, conv.attr("group"))
    bias_dtype = weight.dtype if bias_value is None else bias_value.dtype
    folded_b = (scale * bias.reshape(-1) + shift).astype(bias_dtype)
    base = conv.name or conv.outputs[0].name
    old = [conv.inputs[1], bias_value, *bn.inputs[1:5]]
    graph.set_input(conv, 1, graph.const(folded_w, f"{base}_w_bn"))
    while len(conv.inputs) < 3:
        conv.inputs.append(None)
    graph.set_input(conv, 2, graph.const(folded_b, f"{base}_b_bn"))
    graph.replace_all_uses_with(bn.outputs[0], x)
    graph.remove_node(bn)
    _drop_if_unused(graph, old)


@register_pass
@dataclass
class FoldBatchNorm(Pass):
    name = "fold-batchnorm"
    summary = "fold an inference-mode BatchNormalization into the Conv or ConvTranspose before it"

    def run(self, graph: Graph) -> PassResult:
        folded = 0
        notes = []
        for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
            reason = _why_not(graph, bn)
            if reason is None:
                continue
            if not reason:
                scale_shift = batchnorm_scale_shift(graph, bn)
                if isinstance(scale_shift, str):
                    reason = scale_shift
            if reason:
                notes.append(f"fold-batchnorm: {bn.label} not folded: {reason}")
                continue
            fold(graph, bn)
            folded += 1
        return PassResult(graph, folded > 0, notes)
