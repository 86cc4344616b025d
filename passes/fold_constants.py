"""`fold-constants`: compute at compile time every node whose inputs are all constants.

Rule: a node with only constant inputs (initializers or Constant nodes) is evaluated by its
reference semantics and its outputs become initializers of the declared element type. This is
how the weight flips, transposes, slices and reshapes that the lowerings emit are computed once
when the weights are constants, while the same ops stay in the graph when the weights are inputs.
Results above `max_elements` are left as ops, so folding never blows up a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lowering.ir import Graph

from .base import Pass, PassResult, register_pass


@register_pass
@dataclass
class FoldConstants(Pass):
    name = "fold-constants"
    summary = "evaluate nodes whose inputs are all constants"
    max_elements: int = 1 << 26

    def run(self, graph: Graph) -> PassResult:
        folded = 0
        made = []
        for node in list(graph.nodes):
            opdef = node.opdef
            if opdef is None or opdef._reference is None or node.op == "Constant":
                continue
            inputs = [None if v is None else graph.constant_value(v) for v in node.inputs]
            if any(v is not None and a is None for v, a in zip(node.inputs, inputs, strict=True)):
                continue
            if any(v.shape is None or math.prod(v.shape) > self.max_elements for v in node.outputs):  # type: ignore[arg-type]
                continue
            if any(not all(isinstance(d, int) for d in v.shape) for v in node.outputs):  # type: ignore[union-attr]
                continue
            results = opdef.evaluate(node, inputs)
            for value, result in zip(node.outputs, results, strict=True):
                # kept as the reference returns it (often a view: a flipped or transposed weight) until
                # the end, so a chain of weight transforms is copied once, not once per op
                constant = graph.const(np.asarray(result, dtype=value.dtype), hint=value.name, copy=False)
                graph.replace_all_uses_with(value, constant)
                made.append(constant)
            graph.remove_node(node)
            folded += 1
        for constant in made:  # what the graph still reads: C-contiguous, as every backend expects weights
            if constant.uses and not constant.const.flags.c_contiguous:  # type: ignore[union-attr]
                constant.const = np.ascontiguousarray(constant.const)
                constant.const.setflags(write=False)
        return PassResult(graph, folded > 0)
