"""Threshold selection on voxel maps (anomaly maps, intensities): label-free rules, oracles, Dice curves.

A "map" is a native-grid volume whose voxels are segmented as ``map > t``. Everything here works on
sorted in-brain values, so a whole Dice-versus-threshold curve of a case costs two ``searchsorted``
calls instead of one thresholding per candidate. The Dice convention is that of
:func:`blogrr_nnu.metrics.binary_metrics` (both empty: 1), so a curve value equals what
``blogrr_evaluate`` reports for the mask written at that threshold.

Rules (docs/benchmark.md):

- ``percentile(healthy, q)``: the q-th percentile of all in-brain voxels of held-out healthy cases,
  pooled (bigger brains weigh more);
- ``fpr_threshold(healthy, rate)``: the threshold at which the mean over healthy cases of the fraction of
  brain voxels above it is ``rate`` (every case weighs the same);
- ``best_global``: the one threshold that maximises mean Dice over the test cases (an oracle);
- ``per_case_oracle``: for every case the threshold that maximises its own Dice (the ceiling of any
  threshold learner on these maps).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class CaseValues:
    """One case's map, reduced to what Dice curves need.

    Attributes:
        values: sorted float64 map values of the voxels that can ever be above a candidate (``> floor``).
        target_values: sorted map values of the reference's foreground voxels (all of them).
        n_target: foreground voxel count of the reference.
    """

    values: np.ndarray
    target_values: np.ndarray

    @property
    def n_target(self) -> int:
        return int(self.target_values.size)

    @classmethod
    def from_arrays(cls, amap: np.ndarray, target: np.ndarray | None = None, floor: float = -np.inf) -> "CaseValues":
        """``amap`` (any shape); ``target`` boolean-like of the same shape (None: healthy, no foreground).

        Voxels ``<= floor`` are dropped: no candidate threshold at or above ``floor`` ever counts them.
        """
        v = np.asarray(amap, np.float64).ravel()
        t = np.zeros(0) if target is None else np.sort(v[np.asarray(target).ravel() > 0])
        return cls(np.sort(v[v > floor]), t)

    def above(self, thresholds: np.ndarray) -> np.ndarray:
        """Number of voxels ``> t`` for every threshold."""
        return self.values.size - np.searchsorted(self.values, thresholds, side="right")

    def dice(self, thresholds: np.ndarray) -> np.ndarray:
        """Dice of ``map > t`` against the reference, for every threshold (float64)."""
        thresholds = np.asarray(thresholds, np.float64)
        pos = self.above(thresholds)
        tp = self.n_target - np.searchsorted(self.target_values, thresholds, side="right")
        denom = pos + self.n_target
        return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 1.0)


def dice_matrix(cases: Sequence[CaseValues], thresholds: np.ndarray) -> np.ndarray:
    """``(cases, thresholds)`` Dice."""
    return np.stack([c.dice(thresholds) for c in cases]) if cases else np.zeros((0, len(thresholds)))


def candidate_grid(cases: Sequence[CaseValues], n: int = 256, low: float | None = None, upper_percentile: float = 99.95,
                   extra: Sequence[float] = ()) -> np.ndarray:
    """Evenly spaced candidates from ``low`` (default: the lowest in-brain value) to the highest per-case
    ``upper_percentile`` of in-brain values, plus ``extra`` (e.g. label-free thresholds, learned taus), sorted."""
    vals = [c.values for c in cases if c.values.size]
    if not vals:
        raise ValueError("no in-brain voxels in any case")
    lo = min(float(v[0]) for v in vals) if low is None else float(low)
    hi = max(float(np.percentile(v, upper_percentile)) for v in vals)
    grid = np.linspace(lo, max(hi, lo + 1e-6), n)
    return np.unique(np.concatenate([grid, np.asarray(list(extra), np.float64)]))


def best_global(dice: np.ndarray, thresholds: np.ndarray) -> tuple[float, int]:
    """The threshold with the highest mean Dice (first of equals) and its index."""
    i = int(np.argmax(dice.mean(0)))
    return float(thresholds[i]), i


def per_case_oracle(dice: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Every case's own best threshold ``(cases,)``."""
    return thresholds[np.argmax(dice, axis=1)]


def percentile(healthy: Sequence[CaseValues], q: float) -> float:
    """q-th percentile of the pooled in-brain values of healthy cases."""
    pooled = np.concatenate([c.values for c in healthy]) if healthy else np.zeros(0)
    if pooled.size == 0:
        raise ValueError("no healthy in-brain voxels to set a threshold on")
    return float(np.percentile(pooled, q))


def false_positive_rate(healthy: Sequence[CaseValues], t: float) -> float:
    """Mean over healthy cases of the fraction of their in-brain voxels above ``t``."""
    return float(np.mean([c.above(np.asarray([t]))[0] / max(c.values.size, 1) for c in healthy]))


def fpr_threshold(healthy: Sequence[CaseValues], rate: float, iterations: int = 64) -> float:
    """The lowest threshold whose mean per-case false-positive rate on healthy cases is ``<= rate`` (bisection)."""
    if not 0 < rate < 1:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    if not healthy or not any(c.values.size for c in healthy):
        raise ValueError("no healthy in-brain voxels to set a threshold on")
    lo = min(float(c.values[0]) for c in healthy if c.values.size)
    hi = max(float(c.values[-1]) for c in healthy if c.values.size)
    if false_positive_rate(healthy, lo) <= rate:
        return lo
    for _ in range(iterations):  # invariant: fpr(lo) > rate >= fpr(hi)
        mid = 0.5 * (lo + hi)
        if false_positive_rate(healthy, mid) > rate:
            lo = mid
        else:
            hi = mid
    return hi


def wilcoxon_p(ours: Sequence[float], other: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired per-case values (1.0 when all pairs are equal,
    NaN with fewer than two usable pairs)."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(ours, float), np.asarray(other, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 2:
        return float("nan")
    if np.allclose(a, b, rtol=0, atol=1e-12):
        return 1.0
    return float(wilcoxon(a, b).pvalue)
