"""Subject synthesis, geometry part: a scanner-like native grid and the subject-to-template transform.

A phantom subject lives on its own *native* grid (isotropic, centred on the scanner origin, LPS
or RAS-stored directions). Its anatomy is the template brain pulled back through

    q = Affine( BSpline( Mass(p) ) )          p: native LPS mm, q: template LPS mm

* ``Affine``: head pose (a few degrees of rotation, a few mm of offset) and brain size (the MNI
  brain is larger than an average adult brain, so subjects are shrunk by 3-14 %),
* ``BSpline``: a smooth random deformation (coarse control grid, 1-2.5 mm displacement std),
* ``Mass``: the tumour's mass effect, a radial field that pushes tissue away from the lesion centre
  (identity for healthy subjects).

The three parts are plain numbers (:class:`SubjectSpec`), stored per case in ``phantom_meta`` so any
code can rebuild the exact transform with :func:`subject_transform` (the tests do).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from blogrr_nnu.image_io import Geometry
from blogrr_nnu.phantom.template import STACK_CHANNELS, TemplateModel

# Field of view of the native grid (mm, X/Y/Z): the shrunken brain (at most ~140 x 175 x 150 mm)
# plus pose and deformation margins.
FOV_MM = (168.0, 204.0, 172.0)
BSPLINE_MESH = 4
RAS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
LPS_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass
class MassEffect:
    """Radial mass effect ``m(p) = -amplitude * exp(-|p-c|^2 / (2 sigma^2)) * (p - c)``.

    ``p + m(p)`` stays one-to-one for ``amplitude < 1``: the radial derivative is
    ``1 - amplitude (1 - x^2) exp(-x^2/2) >= 1 - amplitude``. Tissue that was at distance ``r``
    from the centre ends up further out; the largest shift is ``amplitude * sigma * exp(-1/2)``.

    Attributes:
        centre: lesion centre, native LPS mm (a fixed point of the map).
        amplitude: compression at the centre, 0..0.7.
        sigma: width of the effect, mm.
    """

    centre: tuple[float, float, float]
    amplitude: float
    sigma: float

    def shift_at(self, distance_mm: float) -> float:
        """Displacement (mm) of tissue whose final position is ``distance_mm`` from the centre."""
        return self.amplitude * distance_mm * math.exp(-(distance_mm ** 2) / (2 * self.sigma ** 2))


@dataclass
class SubjectSpec:
    """Everything that defines a subject's geometry and its map to template space.

    Attributes:
        geometry: the native grid.
        affine: 4x4 matrix, native LPS mm -> template LPS mm (applied last).
        scale: brain size relative to the template (per axis, before rotation).
        rotation: 3x3 rotation part of ``affine`` (anatomical axes in native mm).
        bspline: BSpline coefficients (``3 * (mesh + 3)^3`` values, mm) on the native domain.
        mass: the tumour's mass effect, or ``None``.
    """

    geometry: Geometry
    affine: np.ndarray
    scale: tuple[float, float, float]
    rotation: np.ndarray
    bspline: list[float]
    mass: MassEffect | None = None

    def to_meta(self) -> dict:
        """JSON-ready dict (floats round-trip exactly through ``json``)."""
        g = self.geometry
        return {
            "geometry": {"spacing": list(g.spacing), "origin": list(g.origin),
                         "direction": list(g.direction), "shape": list(g.shape)},
            "affine_native_to_template": self.affine.tolist(),
            "scale": list(self.scale),
            "rotation": self.rotation.tolist(),
            "bspline_mesh": BSPLINE_MESH,
            "bspline_parameters": list(self.bspline),
            "mass_effect": None if self.mass is None else {
                "centre": list(self.mass.centre), "amplitude": self.mass.amplitude, "sigma": self.mass.sigma},
        }

    @classmethod
    def from_meta(cls, meta: dict) -> "SubjectSpec":
        """Inverse of :meth:`to_meta` (accepts the whole per-case meta dict or its ``subject`` part)."""
        meta = meta.get("subject", meta)
        g = meta["geometry"]
        geometry = Geometry(tuple(g["spacing"]), tuple(g["origin"]), tuple(g["direction"]), tuple(g["shape"]))
        m = meta.get("mass_effect")
        mass = None if m is None else MassEffect(tuple(m["centre"]), float(m["amplitude"]), float(m["sigma"]))
        return cls(geometry, np.asarray(meta["affine_native_to_template"], float), tuple(meta["scale"]),
                   np.asarray(meta["rotation"], float), list(meta["bspline_parameters"]), mass)


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def native_geometry(rng: np.random.Generator, spacing: float) -> Geometry:
    """A scanner-like grid: isotropic ``spacing``, FOV :data:`FOV_MM` (+- 1 voxel), centred on 0.

    About a third of the cases are stored RAS-first (direction ``diag(-1, -1, 1)``, as many NIfTI
    converters write them) so downstream code cannot get away with ignoring the direction.
    """
    shape = np.round(np.asarray(FOV_MM) / spacing).astype(int) + rng.integers(-1, 2, size=3)
    direction = RAS_DIRECTION if rng.random() < 0.3 else LPS_DIRECTION
    half = (shape - 1) / 2.0 * spacing
    origin = -np.asarray(direction).reshape(3, 3) @ half
    return Geometry((float(spacing),) * 3, tuple(float(o) for o in origin), direction,
                    tuple(int(s) for s in shape))


def _reference(geometry: Geometry) -> sitk.Image:
    ref = sitk.Image([int(s) for s in geometry.shape], sitk.sitkUInt8)
    return geometry.apply_to(ref)


def sample_subject(rng: np.random.Generator, spacing: float, model: TemplateModel) -> SubjectSpec:
    """Draw a healthy subject's grid, pose, size and smooth deformation.

    Args:
        rng: the case's generator.
        spacing: native voxel size, mm.
        model: the template model (for the template brain centre).
    """
    geometry = native_geometry(rng, spacing)
    size = rng.uniform(0.86, 0.97)
    scale = size * rng.uniform(0.97, 1.03, size=3)
    rot = _rotation(rng.uniform([-6, -4, -5], [6, 4, 5]))
    head_centre = rng.uniform(-5.0, 5.0, size=3)  # where the brain sits in the scanner
    m = rot @ np.diag(1.0 / scale)
    affine = np.eye(4)
    affine[:3, :3] = m
    affine[:3, 3] = np.asarray(model.brain_centre) - m @ head_centre
    n_params = 3 * (BSPLINE_MESH + 3) ** 3
    bspline = (rng.normal(0.0, 1.0, size=n_params) * rng.uniform(1.0, 2.5)).tolist()
    return SubjectSpec(geometry, affine, tuple(float(s) for s in scale), rot, bspline)


def _mass_transform(mass: MassEffect, geometry: Geometry) -> sitk.Transform:
    pts = _physical_points(geometry)  # (X, Y, Z, 3)
    d = pts - np.asarray(mass.centre)
    r2 = np.sum(d * d, axis=-1, keepdims=True)
    field = -mass.amplitude * np.exp(-r2 / (2 * mass.sigma ** 2)) * d
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(field, (2, 1, 0, 3))), isVector=True)
    geometry.apply_to(img)
    return sitk.DisplacementFieldTransform(sitk.Cast(img, sitk.sitkVectorFloat64))


def _physical_points(geometry: Geometry) -> np.ndarray:
    """``(X, Y, Z, 3)`` LPS mm of every voxel centre."""
    idx = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in geometry.shape], indexing="ij"), -1)
    a = geometry.affine_lps()
    return idx @ a[:3, :3].T + a[:3, 3]


def subject_transform(spec: SubjectSpec, *, with_mass: bool = True) -> sitk.Transform:
    """The native -> template map ``Affine(BSpline(Mass(p)))`` as one SimpleITK transform.

    ``TransformPoint(p)`` gives the template point of native point ``p``; it is the transform that
    ``sitk.Resample`` needs to pull template-space images onto the native grid.
    """
    aff = sitk.AffineTransform(3)
    aff.SetMatrix(spec.affine[:3, :3].ravel().tolist())
    aff.SetTranslation(spec.affine[:3, 3].tolist())
    bsp = sitk.BSplineTransformInitializer(_reference(spec.geometry), [BSPLINE_MESH] * 3, 3)
    bsp.SetParameters(list(spec.bspline))
    parts = [aff, bsp]
    if with_mass and spec.mass is not None and spec.mass.amplitude > 0:
        parts.append(_mass_transform(spec.mass, spec.geometry))
    return sitk.CompositeTransform(parts)


def _dense(spec: SubjectSpec, with_mass: bool) -> sitk.Transform:
    # One dense field is much faster to resample through than the composite with a BSpline.
    g = spec.geometry
    field = sitk.TransformToDisplacementField(subject_transform(spec, with_mass=with_mass), sitk.sitkVectorFloat64,
                                              [int(s) for s in g.shape], g.origin, g.spacing, g.direction)
    return sitk.DisplacementFieldTransform(field)


def warp_template(model: TemplateModel, spec: SubjectSpec, *, with_mass: bool = True
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Pull the template model onto the subject's native grid.

    Returns:
        ``(maps, hammers)``: ``maps`` holds each :data:`STACK_CHANNELS` entry as an ``(X, Y, Z)``
        float32 array (linear interpolation); ``hammers`` is ``(X, Y, Z)`` uint8 (nearest neighbour).
    """
    transform = _dense(spec, with_mass)
    ref = _reference(spec.geometry)
    vec = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(model.stack, (3, 2, 1, 0))), isVector=True)
    model.geometry.apply_to(vec)
    out = sitk.GetArrayFromImage(sitk.Resample(vec, ref, transform, sitk.sitkLinear, 0.0))  # (Z, Y, X, C)
    stack = np.transpose(out, (3, 2, 1, 0)).astype(np.float32)
    maps = {name: np.ascontiguousarray(stack[i]) for i, name in enumerate(STACK_CHANNELS)}
    hm = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(model.hammers, (2, 1, 0))))
    model.hammers_geometry.apply_to(hm)
    hammers = sitk.GetArrayFromImage(sitk.Resample(hm, ref, transform, sitk.sitkNearestNeighbor, 0))
    return maps, np.ascontiguousarray(np.transpose(hammers, (2, 1, 0))).astype(np.uint8)


def physical_points(geometry: Geometry) -> np.ndarray:
    """``(X, Y, Z, 3)`` native LPS mm of every voxel centre."""
    return _physical_points(geometry)
