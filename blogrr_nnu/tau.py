"""Per-case thresholds: what the map threshold networks see, what they are trained towards, how they are fitted.

BLOGRR's threshold network T gives every case its own tau on its anomaly map A. Measured on the demo
(docs/training.md, ``blogrr_threshold_targets``): the best threshold of a case moves with the *level* of its
map, above all with how bright the lesion's errors are against the background (a bright lesion's errors spill
into the tissue around it, so its labelled edge lies higher), and one global threshold misses that. So a map T
(:class:`~blogrr_nnu.networks.MapStatsThresholdNet`) sees the case's map on a log scale -- the default
``contrast`` T its half-contrast threshold (:func:`half_contrast_threshold`, :func:`contrast_features`), the
``stats`` T three in-brain quantiles (:func:`map_features`) -- and is fitted, once per upper loop, to a per-case
target threshold tau_P read off the case's pseudo-label (:func:`target_threshold`):

- **report target** (``pseudo_report``): the report's stated *size*, read two ways and combined
  (:func:`report_threshold`, the geometric mean): as diameters -- the lesion is the connected part of
  ``A > tau`` that reaches into the report's region (the atlas regions it names), and tau is where that part
  has the stated diameters (geometric mean of the three extents, sorted, so axis order and orientation do not
  matter; :func:`report_size_threshold`) -- and as a volume, ABC/3 flagged brain voxels
  (:func:`report_volume_threshold`). A report region alone (a whole lobe) would pull tau down until the lobe is
  filled: its Dice-optimal threshold does not track the truth.
- **image targets** (``pseudo_gmm``, ``pseudo_fused``): the exact Dice-optimal threshold of A against the
  pseudo-label (:func:`dice_optimal_threshold`).

Cases without a usable target (no stated size, an empty pseudo-label, a size no threshold can match) are
left out of the fit, and the fit is a robust (Huber) regression on log tau, so a few wrong targets do not
drag it (:func:`fit_threshold_regression`).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

# In-brain quantiles of the anomaly map that T sees (log scale): the background level (90 %), the tail
# (99.9 %) and the peak (the maximum). Chosen on the demo's training-fold labels only, by leave-one-out
# over the 24 tumour training cases (docs/training.md): more quantiles or a hidden layer overfit ~20 cases.
FEATURE_QUANTILES = (0.90, 0.999, 1.0)
# Search range of the report-size target, as in-brain quantiles of A: a matched size outside it is not a
# lesion the map shows (the target is then left out).
SIZE_SEARCH_QUANTILES = (0.80, 0.9995)
_LOG_FLOOR = 1e-6


def map_features(amap: torch.Tensor | np.ndarray, brain: torch.Tensor | np.ndarray,
                 quantiles: Sequence[float] = FEATURE_QUANTILES) -> torch.Tensor:
    """Log in-brain quantiles of an anomaly map.

    Args:
        amap: ``(1, *S)`` or ``(*S)`` anomaly map.
        brain: brain mask of the same shape.
        quantiles: which (default :data:`FEATURE_QUANTILES`, what T sees; others for
            ``blogrr_threshold_targets --feature_study``).

    Returns:
        ``(len(quantiles),)`` float32 (log of each quantile; a case without brain gives the floor).
    """
    a = torch.as_tensor(amap).reshape(-1).cpu()
    b = torch.as_tensor(brain).reshape(-1).cpu() > 0
    v = a[b].double().numpy()
    if v.size == 0:
        return torch.full((len(quantiles),), math.log(_LOG_FLOOR))
    q = np.quantile(v, quantiles)
    return torch.from_numpy(np.log(np.maximum(q, _LOG_FLOOR))).float()


# Where between the background level and the lesion's level a lesion's edge lies on the anomaly map: half-way, as the
# 50 % isocontour of a symmetric blur (the convention of fixed-fraction thresholds in PET, e.g. 50 % of the contrast).
# A label-free constant; T (contrast model) then scales the resulting threshold by what the reports' sizes say.
HALF_CONTRAST = 0.5


def half_contrast_threshold(amap, brain, *, fraction: float = HALF_CONTRAST, max_iterations: int = 50,
                            tol: float = 1e-4) -> float:
    """A case's own threshold half-way between its background and its brightest lesion (a fixed point).

    With ``B`` the median of the in-brain map (the background: a lesion covers a few percent of the brain) and
    ``L(t)`` the mean of the largest connected component of ``(A > t) & brain``, iterate
    ``t <- B + fraction (L(t) - B)`` until it moves less than ``tol``, starting from the same fraction of the peak
    (``L`` = the maximum, the classic fixed-fraction-of-maximum rule); on the demo's training maps the fixed point
    was the same from every start tried (the in-brain 99th, 99.9th, 99.99th percentile, half the maximum). It follows each
    lesion's own contrast: a bright lesion's errors spill further into the tissue around it, and its edge (the
    label's) lies at a higher threshold, which the map's global quantiles do not tell apart from a large lesion.

    Args:
        amap, brain: arrays of one shape (``(1, *S)`` or ``(*S)``).
        fraction: position of the edge between background (0) and lesion level (1).

    Returns:
        The threshold (the start value when nothing lies above it, as on a flat map; a small positive floor
            when the brain is empty).

    Example:
        >>> a = np.zeros((20, 20, 20)); a[5:10, 5:10, 5:10] = 4.0; a[a == 0] = 1.0
        >>> half_contrast_threshold(a, np.ones_like(a))  # background 1, lesion 4: half-way
        2.5
    """
    a = np.asarray(amap, np.float64)
    b = np.asarray(brain) > 0
    if a.shape != b.shape:
        raise ValueError(f"amap and brain must share one shape, got {a.shape}, {b.shape}")
    v = a[b]
    if v.size == 0:
        return _LOG_FLOOR
    background = float(np.median(v))
    t = background + fraction * (float(v.max()) - background)
    for _ in range(int(max_iterations)):
        lab, n = ndimage.label((a > t) & b)
        if n == 0:
            break
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        level = float(a[lab == int(np.argmax(sizes))].mean())
        new = background + fraction * (level - background)
        if abs(new - t) < tol:
            t = new
            break
        t = new
    return max(t, _LOG_FLOOR)


def contrast_features(amap: torch.Tensor | np.ndarray, brain: torch.Tensor | np.ndarray) -> torch.Tensor:
    """What the contrast T sees: ``(1,)`` float32, the log of :func:`half_contrast_threshold`."""
    a = torch.as_tensor(amap).detach().cpu().numpy()
    b = torch.as_tensor(brain).detach().cpu().numpy()
    return torch.tensor([math.log(half_contrast_threshold(a, b))], dtype=torch.float32)


#: T's inputs per map model (:data:`blogrr_nnu.networks.MAP_THRESHOLD_MODELS`): a function of (amap, brain) and its length
CASE_FEATURES = {"contrast": (contrast_features, 1), "stats": (map_features, len(FEATURE_QUANTILES))}


def case_features(model: str, amap, brain) -> torch.Tensor:
    """T's input vector of one case for a map model (``"contrast"`` or ``"stats"``)."""
    return CASE_FEATURES[model][0](amap, brain)


def dice_optimal_threshold(amap, target, brain) -> tuple[float, float] | None:
    """The exact threshold t that maximises Dice of ``(A > t) & brain`` against ``target``.

    Every distinct in-brain value is a candidate (Dice only changes there): values are sorted once, Dice
    of flagging the k highest is ``2 TP_k / (k + |target|)``, and t is set halfway below the k-th value.

    Args:
        amap, target, brain: arrays of one shape (``target``, ``brain`` boolean-like).

    Returns:
        ``(t, Dice at t)``, or ``None`` when the target is empty inside the brain.
    """
    raw = np.asarray(amap)
    # the map is later compared in its own precision (NumPy casts a Python float to a float32 array's type)
    dt = raw.dtype.type if np.issubdtype(raw.dtype, np.floating) else np.float64
    a = raw.astype(np.float64).reshape(-1)
    b = np.asarray(brain).reshape(-1) > 0
    t = np.asarray(target).reshape(-1)[b] > 0
    v = a[b]
    n_t = int(t.sum())
    if n_t == 0:
        return None
    order = np.argsort(-v, kind="stable")
    vs, ts = v[order], t[order]
    tp = np.cumsum(ts)
    k = np.arange(1, vs.size + 1)
    # only cut where the next value differs (ties are flagged together)
    cut = np.r_[vs[:-1] > vs[1:], True]
    dice = np.where(cut, 2.0 * tp / (k + n_t), -1.0)
    i = int(np.argmax(dice))
    below = float(vs[i + 1]) if i + 1 < vs.size else float(np.nextafter(dt(vs[i]), dt(-np.inf)))
    mid = 0.5 * (float(vs[i]) + below)
    if not dt(below) < dt(mid) < dt(vs[i]):  # two values one step apart in the map's precision: cut at the lower
        mid = below
    return float(mid), float(dice[i])


def report_diameters(size_mm: Sequence[float] | None) -> np.ndarray | None:
    """Three diameters (mm, sorted, largest first) from a report's stated size (1-3 values)."""
    if not size_mm:
        return None
    d = np.sort(np.asarray([float(s) for s in size_mm][:3], np.float64))[::-1]
    if d.size == 1:
        d = np.repeat(d, 3)
    elif d.size == 2:
        d = np.append(d, d.mean())
    return d if np.all(d > 0) else None


def _lesion_extent(above: np.ndarray, region: np.ndarray, spacing: np.ndarray) -> float:
    """Geometric mean extent (mm) of the connected part of ``above`` reaching furthest into ``region``."""
    lab, n = ndimage.label(above)
    if n == 0:
        return 0.0
    overlap = np.bincount(lab[region].ravel(), minlength=n + 1)[1:]
    if overlap.max() == 0:
        return 0.0
    idx = np.argwhere(lab == int(np.argmax(overlap)) + 1)
    ext = (idx.max(0) - idx.min(0) + 1) * spacing
    return float(np.exp(np.mean(np.log(ext))))


def report_size_threshold(amap, brain, region, size_mm, spacing, *, iterations: int = 24) -> float | None:
    """Threshold at which the lesion the report points at has the size the report states.

    The lesion at threshold t is the connected component of ``(A > t) & brain`` that overlaps the report
    region most; its extents grow as t falls, so the t whose geometric-mean extent equals the geometric mean
    of the reported diameters is found by bisection over the in-brain values between
    :data:`SIZE_SEARCH_QUANTILES`.

    Args:
        amap, brain, region: arrays of one shape ``(*S)`` (``region``: the report's atlas regions).
        size_mm: the report's stated size (1-3 diameters), or ``None``.
        spacing: voxel size (mm) per axis of the arrays.

    Returns:
        The threshold, or ``None`` (no size, no region, or a size the map cannot match in the search range).
    """
    d = report_diameters(size_mm)
    a = np.asarray(amap, np.float64)
    b = np.asarray(brain) > 0
    r = (np.asarray(region) > 0) & b
    if a.shape != b.shape or r.shape != b.shape:
        raise ValueError(f"amap, brain and region must share one shape, got {a.shape}, {b.shape}, {r.shape}")
    if d is None or not r.any():
        return None
    want = float(np.exp(np.mean(np.log(d))))
    sp = np.asarray(spacing, np.float64)
    vals = np.sort(a[b])
    # label only around the region: the lesion touches it and, at the matched size, reaches at most the largest
    # reported diameter beyond it (at 1 mm, labelling the whole brain ~20 times per case costs seconds)
    idx = np.argwhere(r)
    pad = np.ceil(d[0] / sp).astype(int) + 1
    lo_c, hi_c = np.maximum(idx.min(0) - pad, 0), np.minimum(idx.max(0) + pad + 1, a.shape)
    crop = tuple(slice(int(x), int(y)) for x, y in zip(lo_c, hi_c))
    a, b, r = a[crop], b[crop], r[crop]
    lo_q, hi_q = (int(q * (vals.size - 1)) for q in SIZE_SEARCH_QUANTILES)
    lo, hi = lo_q, hi_q  # indices into vals; extent at vals[lo] is the largest of the range

    def ext(i: int) -> float:
        return _lesion_extent((a > vals[i]) & b, r, sp)

    if ext(lo) < want or ext(hi) > want:
        return None
    while hi - lo > 1 and iterations > 0:  # invariant: ext(lo) >= want > ext(hi) (up to the last step)
        mid = (lo + hi) // 2
        if ext(mid) >= want:
            lo = mid
        else:
            hi = mid
        iterations -= 1
    return float(vals[lo])


# A report's diameters as a volume: ABC/3 (the product of the three diameters over 3), the estimate published for
# irregular lesions (Huttner et al., Stroke 2006: ABC/2, the ellipsoid, overestimates irregular haemorrhages). A
# label-free rule, not fitted here; one of the two readings of the report target (:func:`report_threshold`).
REPORT_VOLUME_FACTOR = 1.0 / 3.0


def report_volume_threshold(amap, brain, size_mm, spacing, *, factor: float = REPORT_VOLUME_FACTOR) -> float | None:
    """Threshold at which the flagged in-brain volume equals the volume the report's diameters state (ABC/3).

    Unlike :func:`report_size_threshold` it counts every flagged voxel (not the component in the report's region):
    the threshold is the in-brain value with that many voxels above it, so it needs no search.

    Args:
        amap, brain: arrays of one shape; size_mm: the report's 1-3 diameters; spacing: voxel size (mm) per axis.
        factor: volume = factor x d1 x d2 x d3.

    Returns:
        The threshold, or ``None`` (no size, or a volume outside :data:`SIZE_SEARCH_QUANTILES` of the brain).

    Example:
        >>> a = np.arange(1000.0).reshape(10, 10, 10)  # 27 voxels lie above 972
        >>> report_volume_threshold(a, np.ones_like(a), [3.0, 3.0, 3.0], (1.0, 1.0, 1.0), factor=1.0)
        972.0
        >>> report_volume_threshold(a, np.ones_like(a), [6.0, 6.0, 6.0], (1.0, 1.0, 1.0), factor=1.0) is None  # > 20 %
        True
    """
    d = report_diameters(size_mm)
    if d is None:
        return None
    vals = np.sort(np.asarray(amap, np.float64)[np.asarray(brain) > 0])
    want = int(round(factor * float(np.prod(d)) / float(np.prod(np.asarray(spacing, np.float64)))))
    j = vals.size - 1 - want  # vals[j] has `want` values above it (ties aside)
    lo_q, hi_q = (int(q * (vals.size - 1)) for q in SIZE_SEARCH_QUANTILES)
    if want < 1 or not lo_q <= j <= hi_q:
        return None
    return float(vals[j])


def report_threshold(amap, brain, region, size_mm, spacing) -> float | None:
    """The report target: geometric mean of :func:`report_size_threshold` and :func:`report_volume_threshold`.

    Two readings of one stated size with different errors (the diameters' extent is set by the lesion's farthest
    voxels, the volume by all flagged voxels); their mean tracks the labels' best thresholds better than either
    reading's worst (docs/training.md). Where only one reading exists it is used.

    Returns:
        The threshold, or ``None`` (no stated size, or neither reading matches).
    """
    vals = [t for t in (report_size_threshold(amap, brain, region, size_mm, spacing),
                        report_volume_threshold(amap, brain, size_mm, spacing)) if t is not None and t > 0]
    return float(np.exp(np.mean(np.log(vals)))) if vals else None


def target_threshold(amap, brain, target, source: str, *, size_mm=None, spacing=None) -> float | None:
    """tau_P of one case for a pseudo-label source (module docstring).

    Args:
        amap, brain, target: ``(*S)`` (or ``(1, *S)``) arrays; ``target`` is the case's pseudo-label (for the
            report source: the report's region).
        source: seg channel name, ``"pseudo_report"``, ``"pseudo_gmm"`` or ``"pseudo_fused"``.
        size_mm, spacing: the report's stated size and the voxel size (report source only).
    """
    a, b, t = (np.asarray(x)[0] if np.ndim(x) == 4 else np.asarray(x) for x in (amap, brain, target))
    if source == "pseudo_report":
        return report_threshold(a, b, t, size_mm, spacing)
    best = dice_optimal_threshold(a, t, b)
    return None if best is None else best[0]


# The contrast T's slope prior, one per kind of map T is fitted on. Plain maps: log tau*_GT against log half-contrast
# threshold has slope 0.52 / 0.70 / 0.56 on the fold-0 training labels of the demo's three seeds (501, 502, 503; DAE
# maps; ``blogrr_threshold_targets`` prints it), while the slopes fitted to the report target on the same 19 cases
# scatter from 0.42 to 0.84 (the target's noise on few cases): too flat compresses T's taus, too steep overshoots. The
# fit is pulled towards the mean of the three with the weight of SLOPE_PRIOR_CASES cases, as many as each seed's fold
# had: on ~20 cases the slope lands half-way between the data's and the prior's for squared errors (nearer the prior
# when most residuals lie in the Huber loss's linear arm, as on the demo), on a dataset ten times larger the data
# decide. Normative maps (minus the healthy training cases' mean map, BLOGRR's default): the same rule on the same
# cases (``blogrr_threshold_targets --normative``) gives 0.85 / 0.90 / 0.60, mean 0.78; with it T's leave-one-out
# taus on the default run's own maps are calibrated on the training labels on average (slope of log tau*_GT on log
# tau_T 1.13 / 1.18 / 0.76, against 1.42 / 1.48 / 0.94 with the plain maps' 0.59, too flat on two seeds of three;
# geometric mean over seven training sets 0.99 against 1.24). Chosen on training labels
# (docs/training.md), never on test labels.
CONTRAST_SLOPE_PRIOR = 0.59
NORMATIVE_CONTRAST_SLOPE_PRIOR = 0.78
SLOPE_PRIOR_CASES = 19
#: slope priors per (map model, normative maps); models without one are fitted freely
SLOPE_PRIORS = {("contrast", False): CONTRAST_SLOPE_PRIOR, ("contrast", True): NORMATIVE_CONTRAST_SLOPE_PRIOR}


def slope_prior(model: str, normative: bool = False) -> float | None:
    """The slope prior of a map threshold network ``model`` fitted on plain or normative maps (``None``: none)."""
    return SLOPE_PRIORS.get((model, bool(normative)))


def fit_threshold_regression(net: torch.nn.Module, optimizer: torch.optim.Optimizer, features: torch.Tensor,
                             targets: torch.Tensor, steps: int, *, delta: float = 0.1, slope_prior: float | None = None,
                             prior_weight: float | None = None) -> float:
    """Fit T's log tau to the targets: full-batch Huber regression, ``steps`` optimiser steps.

    With a slope prior ``s0`` (one-feature linear T only) the loss gains ``prior_weight`` times the same Huber loss
    of ``(s - s0) (x_i - mean x)`` over the cases, as if every case came ``prior_weight`` times more with a target on
    the line of slope ``s0`` through T's own centre (a g-prior on the slope): the slope lands between the data's and
    the prior's (half-way at weight 1 when both terms are alike; nearer the prior when the data's residuals lie in the
    Huber loss's linear arm), the intercept is the data's. The default weight is
    ``SLOPE_PRIOR_CASES / N``: the prior is worth a fixed number of cases, so it fades as the data grow.

    Args:
        net: a :class:`~blogrr_nnu.networks.MapStatsThresholdNet` (its normalisation is set from ``features``).
        features: ``(N, F)``; targets: ``(N,)`` positive thresholds.
        delta: Huber's transition in log units (0.1: errors beyond ~10 % count linearly, so an outlier
            target pulls no harder than a case 10 % off).
        slope_prior: ``s0``, the prior slope of log tau on the (log) feature, or ``None`` (a free fit).
        prior_weight: how many copies of the cases the prior counts as (default ``SLOPE_PRIOR_CASES / N``).

    Returns:
        The final loss (data term).

    Raises:
        ValueError: a slope prior for a net that is not linear in one feature.
    """
    net.set_normalisation(features)
    y = torch.log(targets.clamp_min(_LOG_FLOOR))
    if slope_prior is not None and fitted_slope(net) is None:
        raise ValueError("a slope prior needs a linear threshold network on one feature")
    if prior_weight is None:
        prior_weight = SLOPE_PRIOR_CASES / max(int(features.shape[0]), 1)
    pull = slope_prior is not None and prior_weight > 0
    if pull:  # the centred, scaled feature and the prior's weight in those units are fixed for the whole fit
        z = (features[:, 0] - net.feature_mean[0]) / net.feature_scale[0]
        w0 = slope_prior * net.feature_scale[0]
    loss = torch.zeros(())
    for _ in range(int(steps)):
        loss = torch.nn.functional.huber_loss(net.log_tau(features), y, delta=delta)
        total = loss
        if pull:
            dev = (net.head.weight[0, 0] - w0) * z  # (s - s0) (x - mean x)
            total = loss + prior_weight * torch.nn.functional.huber_loss(dev, torch.zeros_like(dev), delta=delta)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    return float(loss.detach())


def fitted_slope(net: torch.nn.Module) -> float | None:
    """Slope of log tau on the (log) feature of a linear one-feature map T (``None`` for any other T)."""
    head = getattr(net, "head", None)
    if not isinstance(head, torch.nn.Linear) or head.weight.shape[1] != 1:
        return None
    return float(head.weight.detach()[0, 0] / net.feature_scale[0])
