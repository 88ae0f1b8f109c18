"""Image-based pseudo-labels: per-case Gaussian mixtures judged against a model of healthy brains, and
the fusion with the report's regions.

**GMM pseudo-label** (CGC's starting point, "GMM w/ threshold"): for one case, a Gaussian mixture
(``n_components``, full covariance) is fitted to the multi-channel normalised intensities of its
brain voxels. Which components are tumour is decided against what we know and the reference did not
have: a Gaussian mixture of *healthy* brains (:class:`HealthyModel`, fitted once per dataset on voxels
of the healthy training cases). A voxel is *atypical* when its log-likelihood under the healthy model is
below the ``quantile`` (default 1 %) of healthy voxels' own log-likelihoods. A case component is tumour
when at least ``min_atypical_fraction`` (default 0.5) of its voxels are atypical: every component of a
healthy case is mostly typical, so a healthy case gets (almost) nothing. The union of tumour
components, opened once and stripped of components below ``min_component_ml``, is the pseudo-label.

**Fusion** (:func:`fuse_report_and_image`): the report says *where* (a lobe: large, coarse), the image
says *what looks abnormal* (tight, fooled by normal bright tissue). The fused label is what looks
abnormal (atypical for healthy brains, or GMM tumour) inside the report region grown by a margin
(default 12 mm), capped at the volume the report states (an ellipsoid of the reported diameters), most
atypical voxels first. It never leaves the grown report region.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

DEFAULT_QUANTILE = 0.01
DEFAULT_CASE_COMPONENTS = 5
DEFAULT_HEALTHY_COMPONENTS = 6
DEFAULT_MIN_ATYPICAL_FRACTION = 0.5
DEFAULT_MIN_COMPONENT_ML = 0.5
MAX_FIT_VOXELS = 40000
# Growth of the report region for fusion: tumours reach beyond the lobes a report names, and an affine
# registration to the atlas is off by some mm at region borders. The one constant of the fused label chosen
# with labels, on training labels only: `blogrr_pseudo_labels -d 501 --margin_sweep 0 6 12 18 24 30 -f 0` (the 19
# labelled tumour training cases of the demo's fold 0) gave fused Dice 0.765 / 0.829 / 0.839 / 0.831 / 0.824 /
# 0.818, best at 12 mm (docs/pseudo_labels.md).
DEFAULT_FUSION_MARGIN_MM = 12.0


@dataclass
class HealthyModel:
    """Gaussian mixture of normalised healthy brain intensities (``C`` channels).

    Attributes:
        weights: ``(K,)``; means: ``(K, C)``; covariances: ``(K, C, C)``.
        loglik_threshold: log-likelihood below which a voxel is atypical (the ``quantile`` of healthy voxels).
        quantile: that quantile.
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    loglik_threshold: float
    quantile: float

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """Per-row log-likelihood of ``x`` ``(N, C)`` under the mixture."""
        x = np.asarray(x, np.float64)
        out = np.empty((x.shape[0], len(self.weights)))
        for k, (w, mu, cov) in enumerate(zip(self.weights, self.means, self.covariances)):
            chol = np.linalg.cholesky(cov)
            z = np.linalg.solve(chol, (x - mu).T)
            logdet = 2.0 * np.log(np.diag(chol)).sum()
            out[:, k] = np.log(w) - 0.5 * ((z ** 2).sum(0) + logdet + x.shape[1] * np.log(2 * np.pi))
        m = out.max(1, keepdims=True)
        return (m + np.log(np.exp(out - m).sum(1, keepdims=True)))[:, 0]

    def to_dict(self) -> dict:
        return {"weights": self.weights.tolist(), "means": self.means.tolist(),
                "covariances": self.covariances.tolist(), "loglik_threshold": float(self.loglik_threshold),
                "quantile": float(self.quantile)}

    @classmethod
    def from_dict(cls, d: dict) -> "HealthyModel":
        return cls(np.asarray(d["weights"], float), np.asarray(d["means"], float), np.asarray(d["covariances"], float),
                   float(d["loglik_threshold"]), float(d["quantile"]))


def brain_samples(image: np.ndarray, brain: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` random brain voxels of ``image`` ``(C, *S)`` as ``(n, C)`` (seeded)."""
    x = np.asarray(image)[:, np.asarray(brain) > 0].T
    if len(x) > n:
        x = x[np.random.default_rng(seed).choice(len(x), n, replace=False)]
    return np.ascontiguousarray(x, np.float64)


def fit_healthy_model(samples: np.ndarray, n_components: int = DEFAULT_HEALTHY_COMPONENTS,
                      quantile: float = DEFAULT_QUANTILE, seed: int = 0) -> HealthyModel:
    """Fit the healthy mixture to ``samples`` ``(N, C)`` pooled from healthy cases.

    Raises:
        ValueError: too few samples for the number of components.
    """
    from sklearn.mixture import GaussianMixture

    samples = np.asarray(samples, np.float64)
    if len(samples) < 20 * n_components:
        raise ValueError(f"{len(samples)} healthy voxels are too few for {n_components} mixture components; "
                         "add healthy cases or lower n_components")
    gmm = GaussianMixture(n_components, covariance_type="full", random_state=seed, reg_covar=1e-4).fit(samples)
    model = HealthyModel(gmm.weights_, gmm.means_, gmm.covariances_, 0.0, quantile)
    model.loglik_threshold = float(np.quantile(model.log_likelihood(samples), quantile))
    return model


def remove_small_components(mask: np.ndarray, spacing, min_component_ml: float) -> tuple[np.ndarray, int]:
    """Drop 26-connected (8 in 2D) components smaller than ``min_component_ml``.

    Returns:
        ``(mask, number of components removed)``; ``min_component_ml <= 0`` keeps everything.
    """
    mask = np.asarray(mask, bool)
    if min_component_ml <= 0 or not mask.any():
        return mask, 0
    labels, _ = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    sizes = np.bincount(labels.ravel())[1:] * float(np.prod(spacing)) / 1000.0
    keep = np.concatenate([[False], sizes >= min_component_ml])
    return keep[labels], int((~keep[1:]).sum())


def _clean(mask: np.ndarray, spacing, min_component_ml: float) -> np.ndarray:
    mask = ndimage.binary_opening(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))
    return remove_small_components(mask, spacing, min_component_ml)[0]


def gmm_pseudo_label(image: np.ndarray, brain: np.ndarray, healthy: HealthyModel, spacing, *,
                     n_components: int = DEFAULT_CASE_COMPONENTS,
                     min_atypical_fraction: float = DEFAULT_MIN_ATYPICAL_FRACTION,
                     min_component_ml: float = DEFAULT_MIN_COMPONENT_ML, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Tumour components of a per-case mixture (module docstring).

    Args:
        image: ``(C, *S)`` normalised intensities.
        brain: ``(*S)`` brain mask.
        healthy: the dataset's :class:`HealthyModel`.
        spacing: voxel size (mm) of the spatial axes.

    Returns:
        ``(mask (*S) uint8, info)`` with each component's mean, weight and atypical fraction.
    """
    from sklearn.mixture import GaussianMixture

    brain = np.asarray(brain) > 0
    x = np.asarray(image)[:, brain].T.astype(np.float64)
    mask = np.zeros(brain.shape, bool)
    if len(x) < 20 * n_components:
        return mask.astype(np.uint8), {"components": [], "tumour_components": []}
    fit = x if len(x) <= MAX_FIT_VOXELS else x[np.random.default_rng(seed).choice(len(x), MAX_FIT_VOXELS, replace=False)]
    gmm = GaussianMixture(n_components, covariance_type="full", random_state=seed, reg_covar=1e-4).fit(fit)
    labels = gmm.predict(x)
    atypical = healthy.log_likelihood(x) < healthy.loglik_threshold
    comps, tumour = [], []
    for k in range(n_components):
        member = labels == k
        frac = float(atypical[member].mean()) if member.any() else 0.0
        comps.append({"mean": gmm.means_[k].round(3).tolist(), "weight": float(member.mean()), "atypical_fraction": frac})
        if frac >= min_atypical_fraction:
            tumour.append(k)
    mask[brain] = np.isin(labels, tumour)
    mask = _clean(mask, spacing, min_component_ml) & brain
    return mask.astype(np.uint8), {"components": comps, "tumour_components": tumour,
                                   "volume_ml": float(mask.sum() * np.prod(spacing) / 1000.0)}


def atypicality_map(image: np.ndarray, brain: np.ndarray, healthy: HealthyModel, sigma_voxels: float = 0.5) -> np.ndarray:
    """``(*S)`` float32: how far below the healthy threshold each brain voxel's log-likelihood lies
    (``threshold - loglik``, smoothed with a Gaussian of ``sigma_voxels``; 0 outside the brain)."""
    brain = np.asarray(brain) > 0
    out = np.zeros(brain.shape, np.float32)
    out[brain] = healthy.loglik_threshold - healthy.log_likelihood(np.asarray(image)[:, brain].T)
    if sigma_voxels > 0:
        out = ndimage.gaussian_filter(out, sigma_voxels) * brain
    return out


def ellipsoid_volume_ml(size_mm) -> float | None:
    """Volume of the ellipsoid with the reported diameters (one value: a sphere; two: the third is their mean)."""
    if not size_mm:
        return None
    d = [float(v) for v in size_mm][:3]
    if len(d) == 1:
        d = d * 3
    elif len(d) == 2:
        d.append(sum(d) / 2)
    return float(np.pi / 6.0 * d[0] * d[1] * d[2] / 1000.0)


def fuse_report_and_image(report: np.ndarray | None, gmm: np.ndarray, atypicality: np.ndarray, spacing,
                          report_volume_ml: float | None = None, *, margin_mm: float = DEFAULT_FUSION_MARGIN_MM,
                          brain: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Fused pseudo-label (module docstring); never outside the report region grown by ``margin_mm``.

    Candidates are the voxels that look abnormal (atypical for healthy brains, or in the GMM label) inside
    the report region dilated by ``margin_mm``. With a reported size, at most the reported volume of them
    is kept, the most atypical first. When fewer than 10 % of the reported volume (1 ml without a size)
    look abnormal there, the image has nothing to add and the report region itself is returned.

    Args:
        report: ``(*S)`` report region, or ``None`` when the case has no usable report (then the GMM label
            is returned, with a note).
        gmm: ``(*S)`` GMM pseudo-label.
        atypicality: ``(*S)`` from :func:`atypicality_map` (> 0: atypical).
        spacing: voxel size in mm.
        report_volume_ml: volume stated by the report (e.g. :func:`ellipsoid_volume_ml`), or ``None``.
        margin_mm: growth of the report region (registration and atlas-boundary tolerance; 0 = none).
        brain: ``(*S)`` brain mask that bounds the grown region (default: no bound).

    Returns:
        ``(mask uint8, info)``.
    """
    gmm = np.asarray(gmm) > 0
    voxel_ml = float(np.prod(spacing)) / 1000.0
    if report is None or not np.any(report):
        return gmm.astype(np.uint8), {"source": "gmm (no report region)", "volume_ml": float(gmm.sum() * voxel_ml)}
    region = np.asarray(report) > 0
    if margin_mm > 0:
        # a distance-based ball (anisotropic voxels included), not repeated 6-neighbour dilation
        dist = ndimage.distance_transform_edt(~region, sampling=[float(sp) for sp in spacing])
        region = dist <= margin_mm
    if brain is not None:
        region &= np.asarray(brain) > 0
    candidates = ((np.asarray(atypicality) > 0) | gmm) & region
    floor = 0.1 * report_volume_ml if report_volume_ml else 1.0
    if candidates.sum() * voxel_ml < floor:
        out = np.asarray(report) > 0
        return out.astype(np.uint8), {"source": "report region (too little looks abnormal inside it)",
                                      "volume_ml": float(out.sum() * voxel_ml)}
    out = candidates
    source = "abnormal-looking voxels inside the report region (+ margin)"
    if report_volume_ml:
        n = int(round(report_volume_ml / voxel_ml))
        if 0 < n < candidates.sum():
            scores = np.where(candidates, atypicality, -np.inf).ravel()
            out = np.zeros(candidates.size, bool)
            out[np.argpartition(-scores, n - 1)[:n]] = True
            out = out.reshape(candidates.shape) & candidates
            source += ", capped at the reported volume"
    return out.astype(np.uint8), {"source": source, "volume_ml": float(out.sum() * voxel_ml),
                                  "report_volume_ml": report_volume_ml, "margin_mm": margin_mm}
