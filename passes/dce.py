"""`dce`: dead-code elimination.

Rule: a node none of whose outputs is used (by a node or as a graph output) is removed; then every
initializer nothing uses. Repeats until nothing changes (removal exposes more dead nodes).
"""

from __future__ import annotations

from dataclasses import dataclass

from lowering.ir import Graph

from .base import Pass, PassResult, register_pass


@register_pass
@dataclass
class DeadCodeElimination(Pass):
    name = "dce"
    summary = "remove nodes and constants whose results nothing uses"

    def run(self, graph: Graph) -> PassResult:
        outputs = {id(v) for v in graph.outputs}
        removed = 0
        for node in reversed(list(graph.nodes)):
            if all(not v.uses and id(v) not in outputs for v in node.outputs):
                graph.remove_node(node)
                removed += 1
        for value in list(graph.initializers.values()):
            if not value.uses and id(value) not in outputs:
                graph.remove_initializer(value)
                removed += 1
        return PassResult(graph, removed > 0)
