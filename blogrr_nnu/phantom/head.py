"""A synthetic head around a skull-stripped brain: CSF, skull (tables and marrow), scalp, skin, noisy air.

Real healthy collections (IXI, many hospital exports) come with skull and scalp; our phantom and the
MNI template are brains only. :func:`add_head` wraps a brain in layers at distances from a smooth
intracranial envelope (the brain mask closed and smoothed, so the skull does not follow the sulci):

=========================  ===========  ======  ======  ======  ======
layer (outside envelope)   mm           T1      T2      FLAIR   PD
=========================  ===========  ======  ======  ======  ======
CSF / dura                 0 - 2.5      0.35    2.20    0.25    1.30
inner table (bone)         2.5 - 4.5    0.05    0.05    0.05    0.05
diploe (marrow, fatty)     4.5 - 7.5    1.10    0.90    0.90    1.00
outer table                7.5 - 9.5    0.05    0.05    0.05    0.05
muscle / galea             9.5 - 12     0.60    0.50    0.50    0.70
subcutaneous fat           12 - 16      1.40    1.10    1.20    1.10
skin                       16 - 18      0.70    0.70    0.70    0.80
=========================  ===========  ======  ======  ======  ======

Levels are relative to the median brain intensity of the channel; every thickness is scaled by a
smooth random field (+-20 %), and the air gets Rician noise. The brain's own voxels are not changed,
so the original brain mask is the exact ground truth of a brain extraction.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from blogrr_nnu.image_io import Geometry

# (outer edge in mm beyond the envelope, {channel kind: level relative to the brain median})
LAYERS = (
    (2.5, {"T1": 0.35, "T2": 2.20, "FLAIR": 0.25, "PD": 1.30}),
    (4.5, {"T1": 0.05, "T2": 0.05, "FLAIR": 0.05, "PD": 0.05}),
    (7.5, {"T1": 1.10, "T2": 0.90, "FLAIR": 0.90, "PD": 1.00}),
    (9.5, {"T1": 0.05, "T2": 0.05, "FLAIR": 0.05, "PD": 0.05}),
    (12.0, {"T1": 0.60, "T2": 0.50, "FLAIR": 0.50, "PD": 0.70}),
    (16.0, {"T1": 1.40, "T2": 1.10, "FLAIR": 1.20, "PD": 1.10}),
    (18.0, {"T1": 0.70, "T2": 0.70, "FLAIR": 0.70, "PD": 0.80}),
)
HEAD_MARGIN_MM = LAYERS[-1][0]
AIR_NOISE = 0.02  # Rician noise std of the air, relative to the brain median
ENVELOPE_CLOSING_MM = 8.0
ENVELOPE_SMOOTH_MM = 3.0


def channel_kind(name: str) -> str:
    """Which column of :data:`LAYERS` a channel name uses (T1, T1ce, T1w -> T1; T2, T2w -> T2; ...)."""
    n = name.strip().lower().replace("-", "").replace("_", "")
    if "flair" in n or n == "t2f":
        return "FLAIR"
    if n.startswith("pd"):
        return "PD"
    if n.startswith("t2"):
        return "T2"
    return "T1"


def intracranial_envelope(brain: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Smooth envelope of a brain mask ``(X, Y, Z)``: closed with an ~8 mm ball, smoothed, thresholded."""
    sp = np.asarray(spacing, float)
    r = np.maximum(1, np.round(ENVELOPE_CLOSING_MM / sp)).astype(int)
    pad = [(int(v) + 2, int(v) + 2) for v in r]
    padded = np.pad(brain.astype(bool), pad)
    zz = np.ogrid[tuple(slice(-v, v + 1) for v in r)]
    ball = sum((g * s / ENVELOPE_CLOSING_MM) ** 2 for g, s in zip(zz, sp)) <= 1.0
    closed = ndi.binary_closing(padded, ball)
    closed = ndi.binary_fill_holes(closed)
    smooth = ndi.gaussian_filter(closed.astype(np.float32), ENVELOPE_SMOOTH_MM / sp)
    inner = tuple(slice(p[0], p[0] + n) for p, n in zip(pad, brain.shape))
    return (smooth[inner] >= 0.5) | brain.astype(bool)


def add_head(images: np.ndarray, brain: np.ndarray, geometry: Geometry, channel_names: list[str],
             rng: np.random.Generator) -> np.ndarray:
    """Put skull, scalp and noisy air around a skull-stripped multi-channel brain.

    Args:
        images: ``(C, X, Y, Z)`` intensities, 0 outside the brain; the grid must leave about
            :data:`HEAD_MARGIN_MM` around the brain (layers beyond the grid are cut off).
        brain: ``(X, Y, Z)`` bool brain mask.
        geometry: the grid (its spacing sets the layer thickness in voxels).
        channel_names: one name per channel (decides the layer contrasts, see :func:`channel_kind`).
        rng: generator for the thickness field and the noise.

    Returns:
        ``(C, X, Y, Z)`` float32 head images; voxels inside ``brain`` are unchanged.
    """
    if images.shape[0] != len(channel_names):
        raise ValueError(f"{images.shape[0]} channel(s) but {len(channel_names)} name(s)")
    sp = np.asarray(geometry.spacing, float)
    brain = brain.astype(bool)
    envelope = intracranial_envelope(brain, geometry.spacing)
    dist = ndi.distance_transform_edt(~envelope, sampling=sp)
    # Smooth +-20 % thickness variation: coarse noise, blurred over ~25 mm.
    field = ndi.gaussian_filter(rng.standard_normal(brain.shape).astype(np.float32), 25.0 / sp)
    field = 1.0 + 0.2 * field / max(float(np.abs(field).max()), 1e-6)
    d = dist / field
    out = np.zeros(images.shape, np.float32)
    for c, name in enumerate(channel_names):
        kind = channel_kind(name)
        ref = float(np.median(images[c][brain])) if brain.any() else 1.0
        level = np.zeros(brain.shape, np.float32)
        inner = 0.0
        for outer, levels in LAYERS:
            shell = (d > inner) & (d <= outer)
            if inner == 0.0:
                shell |= envelope  # d is 0 inside the envelope: the sulci and the gap to it are CSF too
            level[shell & ~brain] = levels[kind]
            inner = outer
        level *= 1.0 + 0.05 * rng.standard_normal(brain.shape).astype(np.float32)  # tissue texture
        n1 = rng.normal(0.0, AIR_NOISE, brain.shape).astype(np.float32)
        n2 = rng.normal(0.0, AIR_NOISE, brain.shape).astype(np.float32)
        head = np.sqrt((level + n1) ** 2 + n2 ** 2) * ref
        out[c] = np.where(brain, images[c], head)
    return out
