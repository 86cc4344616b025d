"""`auto`: lower each ConvTranspose with the strategy the static cost model expects to be fastest.

For every node it asks each candidate strategy for its `Cost` (strategies that would decline,
e.g. `matrix` above its budget, drop out), estimates seconds for the target backend with
`cost_model.estimate_seconds`, and rewrites with the cheapest. It always lowers: the result never
contains a ConvTranspose. `decisions` keeps, per node, every candidate's figures, which is what
`--explain` prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lowering.backends.onnx import MIN_OPSET_FOR, target_opset
from lowering.errors import LoweringError
from lowering.geometry import ConvTransposeGeometry, node_geometry
from lowering.ir import Graph, Node

from . import tuning
from .base import PassResult, register_pass
from .cost_model import estimate_seconds
from .matrix import DEFAULT_BUDGET, MatrixLowering
from .strategy import STRATEGIES, Cost, Declined, LoweringStrategy

BACKENDS = ("onnx", "torch", "numpy")
DEVICES = ("cpu", "cuda")
AUTO_MATRIX_BUDGET = 4 << 20  # an explicit F^T is only worth it when tiny


@dataclass
class Decision:
    node: str
    chosen: str
    candidates: list[tuple[Cost, float]]  # (cost, estimated seconds), cheapest first
    declined: dict[str, str]
    measured: dict[str, float] | None = None  # with --tune: median seconds per candidate
    cached: bool = False
    margin: float = 0.0  # with --tune: how much faster than the static pick a candidate had to measure

    @property
    def static_choice(self) -> str:
        return self.candidates[0][0].strategy

    def explain(self) -> str:
        how = ""
        if self.measured is not None:
            fastest = min(self.measured, key=self.measured.__getitem__)
            kept = f"; fastest measured: {fastest}, within {self.margin:.0%}" if fastest != self.chosen else ""
            how = f" (measured{', cached' if self.cached else ''}; static model: {self.static_choice}{kept})"
        lines = [f"{self.node}: {self.chosen}{how}"]
        for cost, seconds in self.candidates:
            mark = "*" if cost.strategy == self.chosen else " "
            measured = ""
            if self.measured is not None:
                took = self.measured.get(cost.strategy)
                measured = "  measured      -   " if took is None else f"  measured {took * 1e3:9.3f} ms"
            lines.append(
                f"  {mark} {cost.strategy:<15} est {seconds * 1e3:9.3f} ms{measured}  "
                f"useful {cost.useful_macs:>14,} MACs  executed {cost.executed_macs:>14,}  "
                f"largest intermediate {cost.largest_intermediate_bytes:>12,} B  "
                f"weights {cost.weight_bytes:>11,} B  {cost.detail}"
            )
        for strategy, reason in self.declined.items():
            lines.append(f"    {strategy:<15} declined: {reason}")
        return "\n".join(lines)


def _onnx_matrix_gap(strategy: LoweringStrategy, node: Node, g: ConvTransposeGeometry, opset: int) -> str | None:
    if not isinstance(strategy, MatrixLowering) or not strategy.is_sparse(node, g):
        return None  # the dense form is a MatMul, which every opset and type has
    if node.inputs[0].dtype == "float16":
        return "onnxruntime has no float16 ScatterND kernel"
    return _opset_gap("ScatterND", opset)


def _onnx_col2im_gap(strategy: LoweringStrategy, node: Node, g: ConvTransposeGeometry, opset: int) -> str | None:
    return _opset_gap("Col2Im", opset)


def _opset_gap(op: str, opset: int) -> str | None:
    needed = MIN_OPSET_FOR[op]
    return f"its {op} needs opset >= {needed}, the target is {opset}" if opset < needed else None


# (strategy, backend) -> why the graph the strategy writes for a node cannot run there (else None): an
# op the target opset lacks, or a kernel the runtime lacks; auto must not pick it
RUNTIME_GAPS: dict[tuple[str, str], Callable[[LoweringStrategy, Node, ConvTransposeGeometry, int], str | None]] = {
    ("matrix", "onnx"): _onnx_matrix_gap,
    ("col2im", "onnx"): _onnx_col2im_gap,
}


def candidate_strategies(budget_bytes: int) -> dict[str, LoweringStrategy]:
    """Every registered strategy's `for_auto` configuration except auto itself."""
    return {name: cls.for_auto(budget_bytes) for name, cls in STRATEGIES.items() if name != "auto"}


@register_pass
@dataclass
class AutoLowering(LoweringStrategy):
    name = "auto"
    summary = "per node, the strategy the static cost model expects to be fastest on the target backend"
    backend: str = "onnx"
    matrix_budget: int = AUTO_MATRIX_BUDGET
    tune: bool = False  # measure the candidates on the backend (cached) instead of trusting the model
    device: str = "cpu"
    tune_seconds: float = 0.5
    tune_margin: float = tuning.OVERRIDE_MARGIN  # --tune: how much faster a candidate must measure to win
    opset: int | None = None  # the ONNX opset the result is written at (default: the source model's)
    decisions: list[Decision] = field(default_factory=list, repr=False, init=False)

    def decide(self, graph: Graph, node: Node, geometry: ConvTransposeGeometry) -> tuple[LoweringStrategy, Decision]:
        if self.backend not in BACKENDS:
            raise LoweringError(f"auto: backend must be one of {', '.join(BACKENDS)}, got '{self.backend}'")
        if self.device not in DEVICES:
            raise LoweringError(f"auto: device must be one of {', '.join(DEVICES)}, got '{self.device}'")
        if not self.tune_margin >= 0:
            raise LoweringError(f"auto: tune_margin must be a share >= 0 (0.1: 10% faster), got {self.tune_margin}")
        strategies = candidate_strategies(min(self.matrix_budget, DEFAULT_BUDGET))
        scored: list[tuple[Cost, float]] = []
        declined: dict[str, str] = {}
        for name, strategy in strategies.items():
            try:
                strategy.check(graph, node, geometry)
            except Declined as why:
                declined[name] = str(why).split(": ", 1)[-1]
                continue
            gap = RUNTIME_GAPS.get((name, self.backend))
            why = gap(strategy, node, geometry, self.opset or target_opset(graph)) if gap is not None else None
            if why is not None:
                declined[name] = why
                continue
            cost = strategy.cost(graph, node, geometry)
            scored.append((cost, estimate_seconds(cost, self.backend, self.device)))
        if not scored:
            raise LoweringError(f"{node.label}: no strategy can lower this node ({declined})")
        scored.sort(key=lambda item: item[1])
        chosen = scored[0][0].strategy
        decision = Decision(node.name or node.outputs[0].name, chosen, scored, declined)
        if self.tune:
            decision.measured, decision.cached = self._measured(graph, node, geometry, strategies, scored)
            decision.margin = self.tune_margin
            # a cached measurement may hold candidates declined here (another opset, budget or type)
            allowed = {cost.strategy for cost, _ in scored}
            usable = {name: t for name, t in decision.measured.items() if name in allowed} or {chosen: 0.0}
            decision.chosen = chosen = tuning.measured_choice(usable, chosen, self.tune_margin)
        return strategies[chosen], decision

    def _measured(self, graph, node, geometry, strategies, scored) -> tuple[dict[str, float], bool]:
        key = tuning.signature(graph, node, geometry, self.backend, self.device)
        entry = tuning.load_cache().get(key)
        if entry is not None:
            return entry["seconds"], True
        candidates = {cost.strategy: strategies[cost.strategy] for cost, _ in scored}
        seconds = tuning.measure(graph, node, candidates, self.backend, self.device, self.tune_seconds)
        if not seconds:
            raise LoweringError(f"{node.label}: auto --tune could not run any candidate on {self.backend}")
        tuning.store(key, {"seconds": seconds, "fastest": min(seconds, key=seconds.__getitem__)})
        return seconds, False

    def run(self, graph: Graph) -> PassResult:
        notes = []
        nodes = graph.nodes_of("ConvTranspose")
        for node in nodes:
            geometry = node_geometry(node)
            assert isinstance(geometry, ConvTransposeGeometry)
            strategy, decision = self.decide(graph, node, geometry)
            self.decisions.append(decision)
            notes.append(decision.explain())
            strategy.lower_node(graph, node)
        return PassResult(graph, bool(nodes), notes)


STRATEGIES["auto"] = AutoLowering
