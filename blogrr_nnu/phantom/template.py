"""Template-space model of a healthy brain, built once per process from the deepmriprep data.

Everything the phantom needs in MNI template space (LPS mm) is prepared here on the 1.5 mm grid of
the tissue maps: tissue fractions (GM, WM, CSF) that sum to one inside the brain, a brain mask, the
real T1 template (for realistic T1 texture) and two maps of normal FLAIR-bright tissue around the
lateral ventricles (frontal/occipital "caps" and a thin periventricular rim). The Hammers atlas is
kept at its own 1 mm grid and resampled with nearest neighbour.

Measured on deepmriprep 0.3.0 (brain mask = filled ``gm + wm > 0.3``): brain 1784 ml, GM 863 ml,
WM 748 ml, CSF inside the mask 174 ml. The MNI brain is larger than an average adult brain; the
subject transform shrinks it (see :mod:`blogrr_nnu.phantom.anatomy`).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from blogrr_nnu import atlas
from blogrr_nnu.image_io import Geometry, array_to_sitk, sitk_to_array

logger = logging.getLogger(__name__)

# Order of the channels of :attr:`TemplateModel.stack`.
STACK_CHANNELS = ("gm", "wm", "csf", "mask", "t1", "caps", "rim")

# Hammers labels of the lateral ventricles without temporal horns (R, L) and of all ventricles.
LATERAL_VENTRICLES = (45, 46)
VENTRICLES = (45, 46, 47, 48, 49)


@dataclass(frozen=True)
class TemplateModel:
    """Healthy-brain model in template space.

    Attributes:
        stack: ``(C, X, Y, Z)`` float32 maps in the order of :data:`STACK_CHANNELS` on ``geometry``.
        geometry: the 1.5 mm grid of the tissue maps.
        hammers: ``(X, Y, Z)`` uint8 Hammers labels at 1 mm.
        hammers_geometry: geometry of ``hammers``.
        brain_centre: physical centre (LPS mm) of the brain mask's bounding box.
    """

    stack: np.ndarray
    geometry: Geometry
    hammers: np.ndarray
    hammers_geometry: Geometry
    brain_centre: tuple[float, float, float]

    def channel(self, name: str) -> np.ndarray:
        """One map of :attr:`stack` by name, ``(X, Y, Z)``."""
        return self.stack[STACK_CHANNELS.index(name)]


def _horn_maps(hammers: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Periventricular cap and rim weights on the Hammers grid, ``(X, Y, Z)`` float32 in [0, 1].

    Caps: normal FLAIR-bright tissue at the tips of the frontal and occipital horns (the most
    anterior and most posterior fifth of each lateral ventricle). Rim: a thin band along all of
    the lateral ventricles (ependymal / subependymal signal).
    """
    spacing = np.asarray(geometry.spacing)
    y_phys = geometry.origin[1] + np.arange(hammers.shape[1]) * geometry.direction[4] * spacing[1]
    vent_all = np.isin(hammers, VENTRICLES)
    horns = np.zeros_like(vent_all)
    for label in LATERAL_VENTRICLES:
        vent = hammers == label
        ys = y_phys[np.nonzero(vent)[1]]
        lo, hi = np.percentile(ys, [20, 80])
        ytip = (y_phys < lo) | (y_phys > hi)
        horns |= vent & ytip[None, :, None]
    d_horn = ndi.distance_transform_edt(~horns, sampling=spacing)
    d_vent = ndi.distance_transform_edt(~np.isin(hammers, LATERAL_VENTRICLES), sampling=spacing)
    caps = np.exp(-((d_horn / 5.0) ** 2)) * ~vent_all
    rim = np.exp(-((d_vent / 2.0) ** 2)) * ~vent_all
    return caps.astype(np.float32), rim.astype(np.float32)


def resample_to(array: np.ndarray, src: Geometry, dst: Geometry, interpolator=sitk.sitkLinear) -> np.ndarray:
    """``array`` on grid ``src`` resampled onto grid ``dst`` (world coordinates, identity transform, 0 outside)."""
    ref = sitk.Image([int(s) for s in dst.shape], sitk.sitkUInt8)
    dst.apply_to(ref)
    out = sitk.Resample(array_to_sitk(array, src), ref, sitk.Transform(), interpolator, 0.0)
    return sitk_to_array(out)


@functools.lru_cache(maxsize=4)
def template_model(smooth_mm: float = 0.0) -> TemplateModel:
    """Build (once per process and smoothing) the template-space brain model.

    Args:
        smooth_mm: extra Gaussian blur (sigma, mm) of the continuous maps, so that sampling them
            onto a coarse subject grid (e.g. 4 mm) does not alias.

    Returns:
        The cached :class:`TemplateModel`.
    """
    maps, geo = atlas.load_tissue_maps()
    gm, wm = maps[0].astype(np.float64), maps[1].astype(np.float64)
    # GM + WM reach 1.31 in the deepmriprep maps: rescale where they exceed one so fractions add up.
    total = gm + wm
    scale = 1.0 / np.maximum(total, 1.0)
    gm, wm = gm * scale, wm * scale
    mask = ndi.binary_fill_holes(total > 0.3)
    # Also close holes per axial slice (basal cisterns open to the outside in 3D): skull-stripping
    # tools keep them inside the brain mask, as CSF.
    for z in range(mask.shape[2]):
        mask[:, :, z] = ndi.binary_fill_holes(mask[:, :, z])
    # "rest" includes background, so CSF is what GM and WM leave inside the brain mask.
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * mask

    t1_arr, t1_geo = atlas.load_t1_template()
    t1_img = sitk.SmoothingRecursiveGaussian(array_to_sitk(t1_arr, t1_geo), 0.6)
    ref = sitk.Image([int(s) for s in geo.shape], sitk.sitkUInt8)
    geo.apply_to(ref)
    t1 = sitk_to_array(sitk.Resample(t1_img, ref, sitk.Transform(), sitk.sitkLinear, 0.0))

    hammers, hgeo = atlas.load_hammers()
    caps_h, rim_h = _horn_maps(hammers, hgeo)
    caps = resample_to(caps_h, hgeo, geo)
    rim = resample_to(rim_h, hgeo, geo)

    stack = np.stack([gm, wm, csf, mask.astype(np.float64), t1, caps, rim]).astype(np.float32)
    if smooth_mm > 0:
        sigma = smooth_mm / np.asarray(geo.spacing)
        stack = np.stack([ndi.gaussian_filter(c, sigma) for c in stack]).astype(np.float32)

    idx = np.argwhere(mask)
    centre_idx = (idx.min(0) + idx.max(0)) / 2.0
    centre = geo.affine_lps() @ np.append(centre_idx, 1.0)
    v = float(np.prod(geo.spacing)) / 1000.0
    logger.debug("template model: brain %.0f ml, GM %.0f, WM %.0f, CSF %.0f", mask.sum() * v,
                 (gm * mask).sum() * v, (wm * mask).sum() * v, csf.sum() * v)
    return TemplateModel(stack=stack, geometry=geo, hammers=hammers, hammers_geometry=hgeo,
                         brain_centre=tuple(float(c) for c in centre[:3]))


def smoothing_for_spacing(spacing: float) -> float:
    """Extra template blur (sigma, mm) for a subject grid of ``spacing`` mm (0 up to 2 mm)."""
    # The maps are already at 1.5 mm; only coarser grids need anti-aliasing.
    return round(max(0.0, 0.45 * spacing - 0.9), 3)
