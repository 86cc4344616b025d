"""Every strategy x backend pair against the float64 reference, over the passes' own configurations.

The configurations are those of test_strategies (its hypothesis strategy and its edge-case grid);
here each lowered graph is compiled for NumPy, PyTorch and onnxruntime and run, and its outputs are
compared with `lowering.evaluate` of the UNLOWERED graph. NumPy and PyTorch run float64 graphs
(1e-10); onnxruntime runs float32 (1e-5), as models are deployed.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from test_strategies import EDGE_CASES, EDGE_VARIANTS, VARIANTS, Case, assert_close, cases

import lowering
from lowering import evaluate, lower

BACKENDS = {"numpy": ("float64", 1e-10), "torch": ("float64", 1e-10), "onnx": ("float32", 1e-5)}


def run_case(case: Case, variant: str, backend: str) -> None:
    dtype, tolerance = BACKENDS[backend]
    strategy, options = VARIANTS[variant]
    if strategy == "matrix" and case.weights_as_input:
        return  # refused, and test_strategies checks the refusal
    graph, feeds = dataclasses.replace(case, dtype=dtype).build()
    want = evaluate(graph, feeds)
    extra = {"backend": backend} if strategy == "auto" else {}
    got = lowering.compile(lower(graph, strategy, **options, **extra), backend)(feeds)
    for name, expected in want.items():
        assert_close(got[name], expected, tolerance)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("variant", list(VARIANTS))
@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_random_configurations_on_every_backend(backend: str, variant: str, case: Case) -> None:
    run_case(case, variant, backend)


@pytest.mark.parametrize("weights_as_input", [False, True], ids=["const-w", "input-w"])
@pytest.mark.parametrize("case", EDGE_CASES, ids=[c.label for c in EDGE_CASES])
@pytest.mark.parametrize("variant", EDGE_VARIANTS)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_edge_cases_on_numpy_and_torch(backend: str, variant: str, case: Case, weights_as_input: bool) -> None:
    run_case(dataclasses.replace(case, weights_as_input=weights_as_input), variant, backend)
