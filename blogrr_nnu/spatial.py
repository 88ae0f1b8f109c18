"""Native case space <-> template-aligned training space, and back, exactly.

Preprocessing brings every case onto a grid aligned with the MNI template (after affine
registration), at the configuration's spacing, cropped to the brain and transposed as nnU-Net does.
:class:`CaseSpace` records every step, so a prediction made on that grid is brought back onto the
native grid of the input (same shape, spacing, origin, direction) by :meth:`CaseSpace.to_native`.

Array orders: native and template grids are ``(X, Y, Z)``; the stored training arrays are
``(C, *transposed)`` with ``transposed = (X, Y, Z)[transpose_forward]`` (default ``[2, 0, 1]``: axial
slices first, so nnU-Net's 2D loader slices axially).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from blogrr_nnu import registration as reg
from blogrr_nnu.image_io import Geometry, array_to_sitk, sitk_to_array

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# The template grid covers the template brain plus this margin (mm) on every side, room for heads
# larger than the template and for small registration errors.
GRID_MARGIN_MM = 15.0


def template_grid(spacing: tuple[float, float, float], margin_mm: float = GRID_MARGIN_MM) -> Geometry:
    """Template-aligned grid (LPS axes, identity direction) covering the template brain plus ``margin_mm``.

    Args:
        spacing: voxel size along X, Y, Z in mm.
        margin_mm: margin around the template brain's bounding box.
    """
    mask = reg.template_brain_mask(2.0)
    arr = sitk_to_array(mask)
    idx = np.argwhere(arr > 0)
    corners = [mask.TransformIndexToPhysicalPoint([int(v) for v in c]) for c in (idx.min(0), idx.max(0))]
    lo = np.minimum(*corners) - margin_mm
    hi = np.maximum(*corners) + margin_mm
    spacing = np.asarray(spacing, float)
    shape = np.ceil((hi - lo) / spacing).astype(int) + 1
    return Geometry(tuple(spacing.tolist()), tuple(lo.tolist()), IDENTITY, tuple(int(s) for s in shape))


def brain_bbox(mask: np.ndarray) -> list[list[int]]:
    """``[[lo, hi), ...]`` per axis of the non-zero voxels of ``mask`` (whole array if empty)."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        return [[0, int(s)] for s in mask.shape]
    return [[int(lo), int(hi) + 1] for lo, hi in zip(idx.min(0), idx.max(0))]


@dataclass(frozen=True)
class Crop:
    """Where a case's stored array lies on the template grid: all a normative map needs of its
    :class:`CaseSpace`, which crops and uncrops through it (no registration transform, so no SimpleITK: the GPU check
    reads a normative run's mean map without it).
    """

    grid_shape: tuple[int, int, int]
    bbox: tuple[tuple[int, int], ...]
    transpose_forward: tuple[int, int, int]

    @classmethod
    def of(cls, space: "Crop | CaseSpace | dict | None", case_id: str = "case") -> "Crop":
        """From a :class:`CaseSpace` or its stored ``case_space`` dict.

        Raises:
            ValueError: the case was preprocessed without its case space.
        """
        if isinstance(space, Crop):
            return space
        if isinstance(space, CaseSpace):
            return space.crop
        if not space:
            raise ValueError(f"{case_id}: preprocessed without its case space, which a normative map needs "
                             "(re-run blogrr_plan_and_preprocess)")
        return cls(tuple(int(v) for v in space["grid"]["shape"]), tuple(tuple(map(int, b)) for b in space["bbox"]),
                   tuple(int(i) for i in space["transpose_forward"]))

    def to_stored(self, grid_array: np.ndarray, copy: bool = True) -> np.ndarray:
        """Template grid ``(X, Y, Z)`` -> the case's stored (cropped, transposed) array; ``copy=False``: a view."""
        if tuple(grid_array.shape) != self.grid_shape:
            raise ValueError(f"array shape {tuple(grid_array.shape)} is not the grid's {self.grid_shape}")
        (x0, x1), (y0, y1), (z0, z1) = self.bbox
        view = np.transpose(grid_array[x0:x1, y0:y1, z0:z1], self.transpose_forward)
        return np.ascontiguousarray(view) if copy else view

    def uncrop(self, stored: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """The case's stored array -> the template grid, float32, ``fill`` outside its crop."""
        out = np.full(self.grid_shape, fill, dtype=np.float32)
        (x0, x1), (y0, y1), (z0, z1) = self.bbox
        out[x0:x1, y0:y1, z0:z1] = np.transpose(stored, np.argsort(self.transpose_forward))
        return out


@dataclass
class CaseSpace:
    """Everything needed to map between a case's native grid and its preprocessed array.

    Attributes:
        native: the native grid of the case (its channel 0).
        case_to_template: affine transform, case LPS -> template LPS.
        grid: the uncropped template-aligned grid at the configuration's spacing.
        bbox: crop of ``grid`` (``[[lo, hi), ...]`` along X, Y, Z).
        transpose_forward: axis order of the stored arrays relative to ``(X, Y, Z)``.
    """

    native: Geometry
    case_to_template: sitk.AffineTransform
    grid: Geometry
    bbox: list[list[int]]
    transpose_forward: tuple[int, int, int] = (2, 0, 1)

    @property
    def transpose_backward(self) -> tuple[int, int, int]:
        return tuple(int(i) for i in np.argsort(self.transpose_forward))

    @property
    def cropped_shape(self) -> tuple[int, int, int]:
        """Shape of the stored (transposed) spatial array."""
        xyz = [hi - lo for lo, hi in self.bbox]
        return tuple(xyz[i] for i in self.transpose_forward)

    def to_dict(self) -> dict:
        """JSON-serialisable form (plain lists, numbers and strings only)."""
        g = lambda geo: {"spacing": list(geo.spacing), "origin": list(geo.origin),  # noqa: E731
                         "direction": list(geo.direction), "shape": list(geo.shape)}
        return {"native": g(self.native), "grid": g(self.grid), "bbox": self.bbox,
                "case_to_template": reg.transform_to_dict(self.case_to_template),
                "transpose_forward": list(self.transpose_forward)}

    @classmethod
    def from_dict(cls, d: dict) -> "CaseSpace":
        g = lambda x: Geometry(tuple(x["spacing"]), tuple(x["origin"]), tuple(x["direction"]),  # noqa: E731
                               tuple(int(v) for v in x["shape"]))
        return cls(g(d["native"]), reg.transform_from_dict(d["case_to_template"]), g(d["grid"]),
                   [list(map(int, b)) for b in d["bbox"]], tuple(int(i) for i in d["transpose_forward"]))

    # -- native -> training space -------------------------------------------------------------
    def _to_grid(self, array: np.ndarray, *, linear: bool) -> np.ndarray:
        image = array_to_sitk(np.asarray(array, np.float32), self.native)
        out = reg.warp_to_template(image, self.grid, self.case_to_template, nearest=not linear)
        return sitk_to_array(out)

    @property
    def crop(self) -> Crop:
        """Where the stored array lies on :attr:`grid` (what cropping and uncropping need)."""
        return Crop(tuple(int(v) for v in self.grid.shape), tuple(tuple(int(v) for v in b) for b in self.bbox),
                    tuple(int(i) for i in self.transpose_forward))

    def grid_to_stored(self, grid_array: np.ndarray) -> np.ndarray:
        """Full template-aligned grid ``(X, Y, Z)`` -> this case's stored (cropped, transposed) array; the inverse of
        :meth:`uncrop` (e.g. a map shared by every case of a configuration, such as a normative map)."""
        return self.crop.to_stored(grid_array)

    def image_to_training(self, channel: np.ndarray) -> np.ndarray:
        """Native ``(X, Y, Z)`` intensities -> stored (cropped, transposed) float32, linear interpolation."""
        return self.crop.to_stored(self._to_grid(channel, linear=True)).astype(np.float32)

    def mask_to_training(self, mask: np.ndarray) -> np.ndarray:
        """Native binary mask -> stored uint8 mask (linear interpolation of the mask, then >= 0.5).

        Interpolating the mask as a fraction and thresholding at one half keeps its volume when the
        spacing changes, where nearest-neighbour would jitter its border by a voxel.
        """
        return (self.crop.to_stored(self._to_grid(np.asarray(mask, np.float32), linear=True)) >= 0.5).astype(np.uint8)

    # -- training space -> native ---------------------------------------------------------------
    def uncrop(self, stored: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Stored (transposed, cropped) array -> full template-aligned grid ``(X, Y, Z)``."""
        return self.crop.uncrop(stored, fill)

    def to_native(self, stored: np.ndarray, *, linear: bool = True, fill: float = 0.0) -> np.ndarray:
        """Bring a stored array back onto the native grid ``(X, Y, Z)`` of the case.

        Args:
            stored: array in stored order and shape (:attr:`cropped_shape`).
            linear: linear interpolation (soft maps, then threshold) or nearest-neighbour.
            fill: value outside the crop and outside the template grid.

        Returns:
            float32 array with the native grid's shape.
        """
        if tuple(stored.shape) != self.cropped_shape:
            raise ValueError(f"array shape {tuple(stored.shape)} does not match the stored shape {self.cropped_shape}")
        grid_img = array_to_sitk(self.uncrop(stored, fill), self.grid)
        back = reg.warp_to_case(grid_img, self.native, self.case_to_template, nearest=not linear, default=fill)
        return sitk_to_array(back).astype(np.float32)

    def mask_to_native(self, stored_mask: np.ndarray) -> np.ndarray:
        """Stored binary (or soft, in [0, 1]) mask -> native uint8 {0, 1} mask (linear, >= 0.5)."""
        return (self.to_native(np.asarray(stored_mask, np.float32), linear=True) >= 0.5).astype(np.uint8)


def make_case_space(native: Geometry, case_to_template: sitk.AffineTransform, spacing: tuple[float, float, float],
                    brain_native: np.ndarray, transpose_forward: tuple[int, int, int] = (2, 0, 1)) -> CaseSpace:
    """Build the :class:`CaseSpace` of a case: its brain mask decides the crop of the template grid."""
    grid = template_grid(spacing)
    uncropped = CaseSpace(native, case_to_template, grid, [[0, s] for s in grid.shape], (0, 1, 2))
    brain_grid = uncropped.mask_to_training(brain_native)
    return CaseSpace(native, case_to_template, grid, brain_bbox(brain_grid), tuple(transpose_forward))
