"""`lower(graph, strategy=...)`: the one call that rewrites every ConvTranspose of a graph.

It runs the standard pipeline `canonicalize, <strategy>, fold-constants, dce` on a copy of the
graph (the caller's graph is never modified), verifying after each pass. With `fold_bn=True`, and
always for `auto`, `fold-batchnorm` runs before the lowering, so each Conv / ConvTranspose followed
by an inference-mode BatchNormalization is lowered as one convolution with adjusted weights.
"""

from __future__ import annotations

from typing import Any

from .errors import LoweringError
from .ir import Graph


def strategy_names() -> list[str]:
    from passes import STRATEGIES

    return list(STRATEGIES)


def pipeline_for(strategy: str, *, fold_bn: bool = False) -> str:
    """The standard pipeline of `strategy`; `auto` always folds BatchNormalization first."""
    fold = "fold-batchnorm," if fold_bn or strategy == "auto" else ""
    return f"canonicalize,{fold}{strategy},fold-constants,dce"


def lower(
    graph: Graph,
    strategy: str = "auto",
    *,
    verify: bool = True,
    print_after_all: bool = False,
    pipeline: str | None = None,
    fold_bn: bool = False,
    **options: Any,
):
    """Return a copy of `graph` with every ConvTranspose lowered by `strategy`.

    `options` go to every pass of the pipeline that has a field of that name (e.g.
    `budget_bytes=` for matrix, `form=` for subpixel, `backend=` for auto). `pipeline` replaces
    the standard pipeline by a comma-separated list of pass names. `fold_bn` folds each
    BatchNormalization into the convolution before it first (`auto` always does); with `pipeline`
    it puts `fold-batchnorm` in front of the given passes. The returned graph carries the run's
    notes (auto's explanations, BatchNormalizations left unfolded) in `graph.meta["lowering_notes"]`.
    """
    from passes import STRATEGIES, PassManager, parse_pipeline

    if not isinstance(graph, Graph):
        raise LoweringError(f"lower: expected a lowering.Graph, got {type(graph).__name__}")
    graph.verify()  # a hand-built graph may be broken; say so here rather than deep inside a pass

    if strategy not in STRATEGIES:  # with a pipeline too: a misspelt name is a mistake, not a no-op
        raise LoweringError(f"unknown strategy '{strategy}' (known: {', '.join(STRATEGIES)})")
    if pipeline is None:
        pipeline = pipeline_for(strategy, fold_bn=fold_bn)
    elif fold_bn:
        pipeline = f"fold-batchnorm,{pipeline}"
    passes = parse_pipeline(pipeline, options)
    used = {name for p in passes for name in p.options()}
    unknown = sorted(set(options) - used)
    if unknown:
        raise LoweringError(f"option(s) {', '.join(unknown)} apply to no pass of the pipeline '{pipeline}'")
    result = PassManager(passes, verify=verify, print_after_all=print_after_all).run(graph.copy())
    result.graph.meta["lowering_notes"] = result.notes
    return result.graph
