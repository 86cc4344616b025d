"""Bounded fuzzing of the front door (issue: nothing crashes or hangs on bad input).

Mutated ONNX bytes and random (often invalid) ConvTranspose attributes go through `from_onnx`,
every lowering and onnxruntime; each outcome must be a success that matches the float64 reference
or a clean one-line refusal (`lowering.fuzz.check_model_bytes` is the oracle). `lowering fuzz
--seconds N` runs the same search for longer; whatever it finds goes to tests/fuzz_regressions/,
which the last test replays.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowering.fuzz import attribute_variants, check_model_bytes, mutate_bytes, seed_model

SEED = seed_model().SerializeToString()
REGRESSIONS = sorted((Path(__file__).parent / "fuzz_regressions").glob("*.onnx"))


def test_the_seed_model_runs_cleanly():
    assert check_model_bytes(SEED).kind == "ok"


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), edits=st.integers(1, 6))
def test_mutated_bytes_are_handled(seed, edits):
    outcome = check_model_bytes(mutate_bytes(SEED, random.Random(seed), edits))
    assert outcome.kind != "finding", outcome.detail


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_random_attributes_are_handled(seed):
    model = next(attribute_variants(random.Random(seed)))
    outcome = check_model_bytes(model.SerializeToString())
    assert outcome.kind != "finding", outcome.detail


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.stem for p in REGRESSIONS])
def test_saved_findings_stay_fixed(path):
    outcome = check_model_bytes(path.read_bytes())
    assert outcome.kind != "finding", outcome.detail
