"""How sure a ratio of medians is: a bootstrap interval, and the verdict it allows.

`lowering bench` judges a lowering by the ratio of its median time to a native kernel's median in the
same run. On a sub-millisecond layer the medians of two runs of the very same graph differ by 5-10%, so
a ratio of 1.03x says little on its own: the interval says whether the run could tell the two apart.
Each median is resampled from its own timed calls (the two variants are timed in different calls, not
in pairs), and the interval is the central `confidence` share of the resampled ratios. It measures the
spread of this run's samples only: what differs between two compiled instances of one graph (up to 10%
on small layers; `docs/bench/report.py` prints it) or between runs (the machine's state) it cannot see.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000


def bootstrap_medians(times: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """The medians of `resamples` resamples (with replacement) of `times`: worked out once per variant,
    then shared by every ratio that variant takes part in."""
    if not len(times):
        raise ValueError("bootstrap_medians needs at least one sample")
    values = np.asarray(times, dtype=np.float64)
    picks = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    return np.median(values[picks], axis=1)


def ratio_interval(medians: np.ndarray, reference_medians: np.ndarray, confidence: float = CONFIDENCE) -> tuple:
    """The central `confidence` share of the resampled ratios median / reference median."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    tail = (1 - confidence) / 2
    low, high = np.quantile(medians / reference_medians, [tail, 1 - tail])
    return float(low), float(high)


def median_ratio_interval(
    samples: Sequence[float],
    reference: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile-bootstrap interval of median(samples) / median(reference), each side resampled
    from its own stream (`seed`, `seed` + 1)."""
    if not samples or not reference:
        raise ValueError("median_ratio_interval needs at least one sample on each side")
    return ratio_interval(
        bootstrap_medians(samples, resamples=resamples, seed=seed),
        bootstrap_medians(reference, resamples=resamples, seed=seed + 1),
        confidence,
    )


def verdict(ratio: float, interval: Sequence[float] | None, limit: float = 1.0) -> str:
    """ "met" (ratio <= limit), "tie" (above it, but the interval reaches down to it: this run cannot
    tell the two apart) or "slower" (the whole interval above the limit)."""
    if ratio <= limit:
        return "met"
    return "tie" if interval is not None and interval[0] <= limit else "slower"
