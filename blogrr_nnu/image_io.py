"""Reading and writing 3D medical images with their geometry.

Arrays in this package are indexed ``(X, Y, Z)`` (ITK index order, the transpose of
SimpleITK's ``(Z, Y, X)`` numpy view); multi-channel cases are ``(C, X, Y, Z)``.
Geometry follows ITK conventions: physical points are LPS millimetres.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a 3D image in physical (LPS, mm) space.

    Attributes:
        spacing: voxel size along X, Y, Z in mm.
        origin: physical position of voxel (0, 0, 0).
        direction: 3x3 direction cosines, row-major (ITK ``GetDirection`` order).
        shape: number of voxels along X, Y, Z.
    """

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    shape: tuple[int, int, int]

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> "Geometry":
        """Geometry of a 3D SimpleITK image."""
        return cls(
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
            shape=tuple(int(s) for s in image.GetSize()),
        )

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Copy spacing, origin and direction onto ``image`` (in place) and return it."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping voxel index (X, Y, Z, 1) to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = np.asarray(self.direction).reshape(3, 3) * np.asarray(self.spacing)[None, :]
        m[:3, 3] = self.origin
        return m

    def close_to(self, other: "Geometry", tol: float = 1e-4) -> bool:
        """True when both grids are the same up to ``tol`` (mm, or unitless for direction)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=max(tol, 1e-3))
            and np.allclose(self.direction, other.direction, atol=tol)
        )


def array_to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """Wrap an ``(X, Y, Z)`` array as a SimpleITK image with ``geometry``."""
    if array.ndim != 3:
        raise ValueError(f"expected a 3D (X, Y, Z) array, got shape {array.shape}")
    if tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(f"array shape {array.shape} does not match geometry shape {geometry.shape}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    return geometry.apply_to(image)


def sitk_to_array(image: sitk.Image) -> np.ndarray:
    """``(X, Y, Z)`` numpy view of a 3D SimpleITK image (copied, C-contiguous)."""
    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a 3D image.

    Args:
        path: a NIfTI (or any SimpleITK-readable) file.

    Returns:
        The voxel array ``(X, Y, Z)`` in the file's dtype and its :class:`Geometry`.

    Raises:
        ValueError: the file cannot be read or is not a scalar 3D image.
    """
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:  # SimpleITK raises RuntimeError with a long ITK trace
        raise ValueError(f"{path}: cannot be read as an image ({str(exc).strip().splitlines()[-1]})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"{path}: expected a scalar 3D image, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel"
        )
    return sitk_to_array(image), Geometry.from_sitk(image)


def read_geometry(path: str | os.PathLike) -> tuple[Geometry, int]:
    """Geometry and dimension of an image from its header only (no voxel data is read).

    Returns:
        ``(geometry, ndim)``; for images that are not 3D the geometry holds the first three axes.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ValueError(f"{path}: cannot be read as an image ({str(exc).strip().splitlines()[-1]})") from None
    ndim = reader.GetDimension()
    size = tuple(int(s) for s in reader.GetSize())
    spacing = tuple(float(s) for s in reader.GetSpacing())
    origin = tuple(float(o) for o in reader.GetOrigin())
    direction = np.asarray(reader.GetDirection()).reshape(ndim, ndim)[:3, :3] if ndim >= 3 else np.eye(3)
    pad = lambda t, v: tuple(list(t[:3]) + [v] * (3 - len(t[:3])))  # noqa: E731
    geometry = Geometry(pad(spacing, 1.0), pad(origin, 0.0), tuple(direction.ravel().tolist()), pad(size, 1))
    return geometry, ndim


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Write a file atomically: ``write(tmp_path)`` then rename over ``path``.

    A killed process leaves either the old file or none, never half a file. The temporary name
    keeps the final suffix (e.g. ``.nii.gz``) so writers that infer the format from it work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def publish_folder(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move a fully written folder into place, replacing ``final`` if it exists.

    Datasets are assembled in a hidden sibling folder and renamed at the end, so a killed run leaves
    either the old folder or the new one, never half of one (the old one is removed only after the rename).
    """
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    return final


def write_image(path: str | os.PathLike, array: np.ndarray, geometry: Geometry) -> Path:
    """Atomically write an ``(X, Y, Z)`` array with ``geometry`` (compressed if the name ends .gz)."""
    image = array_to_sitk(array, geometry)
    return atomic_write(path, lambda tmp: sitk.WriteImage(image, tmp, useCompression=str(path).endswith(".gz")))
