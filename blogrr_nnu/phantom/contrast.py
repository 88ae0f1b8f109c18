"""Subject synthesis, intensity part: T1 / T2 / FLAIR from tissue fractions, confounders, bias, noise.

Relative tissue levels (white matter = 1 in every channel; each level is jittered by +-7 % per
subject, then the whole channel gets a random scanner scale):

========  =====  =====  =====
channel   CSF    GM     WM
========  =====  =====  =====
T1        0.30   0.62   1.00   (mixed 50/50 with the real T1 template for deep-grey texture)
T2        2.60   1.30   1.00   CSF bright, WM darker than GM
FLAIR     0.25   1.18   1.00   CSF suppressed, WM darker than GM
========  =====  =====  =====

Normal FLAIR-bright tissue (the reason plain FLAIR thresholding fails on real scans) is added to
every subject, healthy or not: periventricular caps at the frontal/occipital horns and a thin
ventricular rim, brighter limbic cortex (insula, cingulate, hippocampus, amygdala,
parahippocampal gyrus) and, in about 70 % of subjects, small white-matter hyperintensities.
Iron-rich deep grey nuclei are darker on T2/FLAIR (pallidum most).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blogrr_nnu.phantom.anatomy import physical_points
from blogrr_nnu.image_io import Geometry

CHANNELS = ("T1", "T2", "FLAIR")
BASE_LEVELS = {  # (csf, gm, wm) relative to WM
    "T1": (0.30, 0.62, 1.00),
    "T2": (2.60, 1.30, 1.00),
    "FLAIR": (0.25, 1.18, 1.00),
}
# Hammers labels of limbic cortex, normally a little FLAIR-bright.
LIMBIC = (1, 2, 3, 4, 9, 10, 20, 21, 24, 25, 26, 27, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95)
# Deep grey nuclei: (labels, T2 factor, FLAIR factor); iron makes them darker.
DEEP_GREY = (((42, 43), 0.75, 0.80), ((38, 39), 0.90, 0.92), ((40, 41), 0.92, 0.93))
# Scanner scale per channel (WM value in the written file).
SCANNER_SCALE = {"T1": (450.0, 900.0), "T2": (180.0, 380.0), "FLAIR": (300.0, 700.0)}


@dataclass
class ContrastSpec:
    """Per-subject contrast parameters (all relative to WM = 1 unless said otherwise).

    Attributes:
        levels: channel -> (csf, gm, wm) levels.
        limbic_gain: FLAIR gain of limbic cortex.
        cortex_gains: per-label FLAIR gain of the other cortical regions (index = Hammers label).
        cap_amp: FLAIR increase of periventricular caps; ``rim_amp`` likewise for the rim.
        wmh: list of white-matter hyperintensities ``(centre_mm, radius_mm, flair_amp, t2_amp)``.
        noise: Rician noise std per channel (relative to WM).
        scanner: written WM value per channel.
        bias: per channel, a list of ``(amplitude, fx, fy, fz, phase)`` cosine terms.
    """

    levels: dict[str, tuple[float, float, float]]
    limbic_gain: float
    cortex_gains: np.ndarray
    cap_amp: float
    rim_amp: float
    wmh: list[tuple[tuple[float, float, float], float, float, float]]
    noise: dict[str, float]
    scanner: dict[str, float]
    bias: dict[str, list[tuple[float, float, float, float, float]]]

    def summary(self) -> dict:
        """JSON-ready summary for the case's metadata."""
        return {
            "levels": {k: list(v) for k, v in self.levels.items()},
            "limbic_gain": self.limbic_gain, "cap_amp": self.cap_amp, "rim_amp": self.rim_amp,
            "n_wmh": len(self.wmh), "noise": self.noise, "scanner": self.scanner,
        }


def sample_contrast(rng: np.random.Generator, maps: dict[str, np.ndarray], geometry: Geometry) -> ContrastSpec:
    """Draw a subject's contrast, confounders, bias field and noise.

    Args:
        rng: the case's generator.
        maps: warped template maps on the native grid (for placing white-matter lesions).
        geometry: the native grid.
    """
    levels = {ch: tuple(float(v * rng.uniform(0.93, 1.07)) if i < 2 else 1.0 for i, v in enumerate(lv))
              for ch, lv in BASE_LEVELS.items()}
    cortex_gains = rng.uniform(0.96, 1.05, size=256)
    wmh = []
    if rng.random() < 0.7:
        candidates = np.argwhere((maps["wm"] > 0.85) & (maps["mask"] > 0.5))
        pts = physical_points_of(candidates, geometry)
        for _ in range(1 + rng.poisson(6)):
            centre = pts[rng.integers(len(pts))]
            wmh.append((tuple(float(c) for c in centre), float(rng.uniform(1.5, 4.5)),
                        float(rng.uniform(0.4, 0.9)), float(rng.uniform(0.4, 1.0))))
    bias = {ch: [(float(rng.uniform(0.02, 0.06)), *map(float, rng.uniform(-1.0, 1.0, 3)), float(rng.uniform(0, 2 * np.pi)))
                 for _ in range(4)] for ch in CHANNELS}
    return ContrastSpec(
        levels=levels,
        limbic_gain=float(rng.uniform(1.04, 1.18)),
        cortex_gains=cortex_gains,
        cap_amp=float(rng.uniform(0.3, 0.9)),
        rim_amp=float(rng.uniform(0.05, 0.3)),
        wmh=wmh,
        noise={ch: float(rng.uniform(0.02, 0.045)) for ch in CHANNELS},
        scanner={ch: float(rng.uniform(*SCANNER_SCALE[ch])) for ch in CHANNELS},
        bias=bias,
    )


def physical_points_of(indices: np.ndarray, geometry: Geometry) -> np.ndarray:
    """LPS mm of voxel ``indices`` ``(N, 3)``."""
    a = geometry.affine_lps()
    return indices @ a[:3, :3].T + a[:3, 3]


def _blob(points: np.ndarray, centre, radius: float) -> np.ndarray:
    d2 = np.sum((points - np.asarray(centre)) ** 2, axis=-1)
    return np.exp(-d2 / (radius ** 2))


def tissue_images(maps: dict[str, np.ndarray], hammers: np.ndarray, spec: ContrastSpec,
                  geometry: Geometry) -> dict[str, np.ndarray]:
    """Noise-free healthy-tissue images, relative units (WM = 1).

    Args:
        maps: warped template maps ``(X, Y, Z)`` (see :data:`~blogrr_nnu.phantom.template.STACK_CHANNELS`).
        hammers: warped Hammers labels ``(X, Y, Z)``.
        spec: the subject's contrast.
        geometry: the native grid.

    Returns:
        channel -> ``(X, Y, Z)`` float32 image (zero outside the brain mask).
    """
    gm, wm, csf, mask = maps["gm"], maps["wm"], maps["csf"], maps["mask"]
    total = np.maximum(gm + wm + csf, 1e-6)
    gm, wm, csf = gm / total, wm / total, csf / total  # fractions after interpolation
    gains = spec.cortex_gains.copy()
    gains[list(LIMBIC)] = spec.limbic_gain
    gains[0] = 1.0
    flair_gm = gains[hammers].astype(np.float32)
    out = {}
    for ch in CHANNELS:
        c, g, w = spec.levels[ch]
        img = csf * c + gm * g * (flair_gm if ch == "FLAIR" else 1.0) + wm * w
        if ch != "T1":
            for labels, f_t2, f_flair in DEEP_GREY:
                img = np.where(np.isin(hammers, labels), img * (f_t2 if ch == "T2" else f_flair), img)
        out[ch] = img
    # Real T1 template: remap its (csf, gm, wm) ~ (0.35, 0.73, 0.96) onto this subject's levels.
    c, g, w = spec.levels["T1"]
    t1_tpl = np.interp(maps["t1"], [0.0, 0.35, 0.73, 0.96, 1.0], [0.0, c, g, w, w * 1.02])
    out["T1"] = 0.5 * out["T1"] + 0.5 * t1_tpl

    # Normal FLAIR-bright tissue around the ventricles (in white matter, where caps are seen).
    peri = (spec.cap_amp * maps["caps"] + spec.rim_amp * maps["rim"]) * np.clip(wm + 0.3 * gm, 0, 1)
    out["FLAIR"] = out["FLAIR"] + peri
    out["T2"] = out["T2"] + 0.5 * peri
    if spec.wmh:
        pts = physical_points(geometry)
        for centre, radius, a_flair, a_t2 in spec.wmh:
            b = _blob(pts, centre, radius) * wm
            out["FLAIR"] = out["FLAIR"] + a_flair * b
            out["T2"] = out["T2"] + a_t2 * b
            out["T1"] = out["T1"] * (1.0 - 0.12 * b)
    inside = mask > 0.5
    return {ch: np.where(inside, img, 0.0).astype(np.float32) for ch, img in out.items()}


def bias_field(terms: list[tuple[float, float, float, float, float]], geometry: Geometry) -> np.ndarray:
    """Smooth multiplicative field ``exp(sum_k a_k cos(2 pi f_k . x / FOV + phi_k))``, ``(X, Y, Z)``."""
    pts = physical_points(geometry) / 200.0  # one cycle per ~200 mm at |f| = 1
    log_b = np.zeros(geometry.shape, dtype=np.float64)
    for amp, fx, fy, fz, phase in terms:
        log_b += amp * np.cos(2 * np.pi * (pts @ np.array([fx, fy, fz])) + phase)
    return np.exp(log_b).astype(np.float32)


def finish(images: dict[str, np.ndarray], mask: np.ndarray, spec: ContrastSpec, geometry: Geometry,
           rng: np.random.Generator) -> np.ndarray:
    """Bias field, Rician noise, scanner scaling and int16 rounding.

    Args:
        images: channel -> ``(X, Y, Z)`` relative image (lesion already blended in).
        mask: ``(X, Y, Z)`` bool brain mask; everything outside is exactly 0.
        spec: the subject's contrast.
        geometry: the native grid.
        rng: the case's generator (noise).

    Returns:
        ``(3, X, Y, Z)`` int16 array, channels in :data:`CHANNELS` order, >= 1 inside the brain.
    """
    out = np.zeros((len(CHANNELS), *geometry.shape), dtype=np.int16)
    for i, ch in enumerate(CHANNELS):
        img = images[ch] * bias_field(spec.bias[ch], geometry)
        sigma = spec.noise[ch]
        n1 = rng.normal(0.0, sigma, size=img.shape).astype(np.float32)
        n2 = rng.normal(0.0, sigma, size=img.shape).astype(np.float32)
        img = np.sqrt((img + n1) ** 2 + n2 ** 2)  # magnitude images have Rician noise
        val = np.clip(np.round(img * spec.scanner[ch]), 1, 32000)
        out[i] = np.where(mask, val, 0).astype(np.int16)
    return out
