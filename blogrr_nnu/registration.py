"""Affine registration of a case to the MNI template, and warping between case and template space.

One convention everywhere: a case is registered with the case as *fixed* image and the template as
*moving* image, so the resulting ITK transform maps **case physical points to template physical
points** (``case_to_template``). That is the transform ITK's resampler wants to bring a template-space
image (atlas, report mask) onto a case grid; its inverse brings a case onto a template-aligned grid.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from blogrr_nnu import atlas
from blogrr_nnu.image_io import Geometry, array_to_sitk, sitk_to_array
from blogrr_nnu.metrics import dice  # noqa: F401  (re-exported: registration quality is a Dice)

logger = logging.getLogger(__name__)

# Voxels of the 0.5 mm T1 template above this value are brain (the template is skull-stripped
# and scaled to [0, 1]; CSF is ~0.1-0.2 there, background exactly 0).
TEMPLATE_BRAIN_THRESHOLD = 0.05


@dataclass(frozen=True)
class RegistrationResult:
    """Outcome of :func:`register_to_template`.

    Attributes:
        case_to_template: affine ITK transform mapping case LPS points to template LPS points.
        metric: final Mattes mutual-information value (more negative is better).
        brain_dice: Dice between the case's non-zero (brain) mask and the template brain mask warped
            onto the case grid; a quality score that does not depend on intensities (>= 0.9 is good).
        iterations: optimizer iterations at the finest level.
    """

    case_to_template: sitk.AffineTransform
    metric: float
    brain_dice: float
    iterations: int

    def to_dict(self) -> dict:
        """JSON-serialisable form (see :func:`transform_to_dict`)."""
        return {"case_to_template": transform_to_dict(self.case_to_template), "metric": self.metric,
                "brain_dice": self.brain_dice, "iterations": self.iterations}


def transform_to_dict(transform: sitk.AffineTransform) -> dict:
    """Matrix (3x3, row-major), translation and centre of an affine transform, as plain lists."""
    return {"matrix": list(transform.GetMatrix()), "translation": list(transform.GetTranslation()),
            "center": list(transform.GetCenter())}


def transform_from_dict(data: dict) -> sitk.AffineTransform:
    """Inverse of :func:`transform_to_dict`."""
    t = sitk.AffineTransform(3)
    t.SetMatrix([float(v) for v in data["matrix"]])
    t.SetTranslation([float(v) for v in data["translation"]])
    t.SetCenter([float(v) for v in data["center"]])
    return t


def _smooth_downsample(image: sitk.Image, spacing: float) -> sitk.Image:
    """Anti-aliased resampling of a template-space image to isotropic ``spacing`` mm."""
    sigma = max(0.0, (spacing - image.GetSpacing()[0]) / 2.0)
    smoothed = sitk.SmoothingRecursiveGaussian(image, sigma) if sigma > 0 else image
    size = [int(round(sz * sp / spacing)) for sz, sp in zip(image.GetSize(), image.GetSpacing())]
    return sitk.Resample(smoothed, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), [spacing] * 3,
                         image.GetDirection(), 0.0, sitk.sitkFloat32)


@functools.lru_cache(maxsize=4)
def template_t1(spacing: float = 2.0) -> sitk.Image:
    """The skull-stripped T1 template at isotropic ``spacing`` mm (cached)."""
    arr, geo = atlas.load_t1_template()
    image = _smooth_downsample(array_to_sitk(arr, geo), spacing)
    # Gaussian tails leave tiny non-zero values far outside the brain; keep the background exactly
    # zero, as in a skull-stripped case, so that "non-zero" means "brain" on both sides.
    return sitk.Mask(image, sitk.Cast(image > TEMPLATE_BRAIN_THRESHOLD, sitk.sitkUInt8))


def template_brain_mask(spacing: float = 2.0) -> sitk.Image:
    """Binary brain mask of the template at ``spacing`` mm (uint8)."""
    return sitk.Cast(template_t1(spacing) > TEMPLATE_BRAIN_THRESHOLD, sitk.sitkUInt8)


def warp_to_case(template_image: sitk.Image, case_geometry: Geometry, case_to_template: sitk.Transform,
                 *, nearest: bool = True, default: float = 0.0) -> sitk.Image:
    """Resample a template-space image onto a case grid.

    Args:
        template_image: image in template space (e.g. an atlas label map or a report mask).
        case_geometry: the case's grid.
        case_to_template: transform from :func:`register_to_template`.
        nearest: nearest-neighbour (labels) instead of linear interpolation.
        default: value outside the template image.
    """
    ref = case_geometry.apply_to(sitk.Image([int(s) for s in case_geometry.shape], sitk.sitkUInt8))
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(template_image, ref, case_to_template, interp, default, template_image.GetPixelID())


def warp_to_template(case_image: sitk.Image, template_geometry: Geometry, case_to_template: sitk.AffineTransform,
                     *, nearest: bool = False, default: float = 0.0) -> sitk.Image:
    """Resample a case-space image onto a template-aligned grid (inverse of :func:`warp_to_case`)."""
    ref = template_geometry.apply_to(sitk.Image([int(s) for s in template_geometry.shape], sitk.sitkUInt8))
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(case_image, ref, case_to_template.GetInverse(), interp, default, case_image.GetPixelID())


def register_to_template(image: np.ndarray, geometry: Geometry, *, template_spacing: float = 2.0,
                         seed: int = 0, iterations: int = 200) -> RegistrationResult:
    """Affine registration of one skull-stripped case (usually its T1 channel) to the MNI T1 template.

    Mattes mutual information (so T2/FLAIR channels also work), moments-based initialisation,
    three resolution levels, regular-step gradient descent with physical-shift scaling. The metric is
    computed on a seeded random 20% sample, single-threaded, so the same input gives the same result.

    Args:
        image: ``(X, Y, Z)`` intensities, zero outside the brain.
        geometry: the case's grid.
        template_spacing: the template is used at this isotropic spacing (mm); 2 mm is enough for an affine.
        seed: seed of the metric sampling.
        iterations: optimizer iterations per level.

    Returns:
        A :class:`RegistrationResult` with the transform and two quality scores.

    Raises:
        ValueError: the image is empty.
    """
    if not np.any(image):
        raise ValueError("cannot register an empty image (all zero)")
    # Multi-threaded ITK sums (moments, metric) add in a thread-dependent order: two runs on the same
    # input differed by ~1e-8 in the transform (measured). One thread makes registration reproducible;
    # parallelism comes from registering several cases at once (-np) instead.
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        return _register(image, geometry, template_spacing, seed, iterations)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _register(image: np.ndarray, geometry: Geometry, template_spacing: float, seed: int,
              iterations: int) -> RegistrationResult:
    fixed = sitk.Cast(array_to_sitk(np.asarray(image, np.float32), geometry), sitk.sitkFloat32)
    moving = template_t1(template_spacing)
    fixed_mask = sitk.Cast(fixed != 0, sitk.sitkUInt8)
    # Moments on the binary masks align brain centres even when intensity scales differ wildly.
    init = sitk.CenteredTransformInitializer(sitk.Cast(fixed_mask, sitk.sitkFloat32),
                                             sitk.Cast(template_brain_mask(template_spacing), sitk.sitkFloat32),
                                             sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    # SimpleITK reads a sampling seed of 0 as "seed from the clock": shift seeds into 1..2^31-1.
    reg.SetMetricSamplingPercentage(0.2, int(seed) % (2**31 - 2) + 1)
    reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=iterations,
                                                 gradientMagnitudeTolerance=1e-6, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(init, inPlace=False)
    final = reg.Execute(fixed, moving)
    affine = sitk.AffineTransform(final.GetNthTransform(0) if isinstance(final, sitk.CompositeTransform) else final)
    warped = warp_to_case(template_brain_mask(template_spacing), geometry, affine, nearest=True)
    quality = dice(sitk_to_array(warped) > 0, image != 0)
    result = RegistrationResult(affine, float(reg.GetMetricValue()), quality, int(reg.GetOptimizerIteration()))
    logger.info("registered: metric %.4f, brain Dice %.3f, %d iterations", result.metric, quality, result.iterations)
    return result
