"""The differentiable pieces of BLOGRR: coarse noise, anomaly map, soft segmentation and the losses.

Tensors are batched, channel-first: ``(B, C, *spatial)`` with 2 or 3 spatial axes. Intensities are
our normalised units (robust z-scores); the conversion of the reference's constants is in the plans'
``blogrr`` block (docs/plans.md).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def coarse_noise(shape: Sequence[int], grid: Sequence[int], std: Sequence[float], *, roll: bool = True,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Coarse Gaussian noise: drawn on a ``grid``, upsampled (bi/trilinear) to ``shape``, randomly rolled.

    Args:
        shape: ``(B, C, *spatial)`` of the images to corrupt.
        grid: cells per spatial axis (e.g. 16x16 for a 128x128 image in the reference).
        std: noise standard deviation per channel.
        roll: roll each sample by a random offset of up to one cell per axis, so the cell borders do
            not always fall on the same voxels.
        generator: a CPU torch generator (seeded by the caller); the few coarse values are drawn on
            the CPU so that CPU, CUDA and MPS runs draw the same noise.
        device: where the upsampled noise is made.

    Returns:
        Noise tensor of ``shape`` (float32) on ``device``.
    """
    b, c, *spatial = [int(s) for s in shape]
    dims = len(spatial)
    coarse = torch.randn((b, c, *[int(g) for g in grid]), generator=generator)
    coarse = coarse * torch.as_tensor(list(std), dtype=torch.float32).view(1, c, *([1] * dims))
    mode = "trilinear" if dims == 3 else "bilinear"
    noise = F.interpolate(coarse.to(device), size=spatial, mode=mode, align_corners=False)
    if roll:
        cell = [max(1, s // int(g)) for s, g in zip(spatial, grid)]
        shifts = torch.stack([torch.randint(0, cs, (b,), generator=generator) for cs in cell], 1).tolist()
        noise = torch.stack([torch.roll(noise[i], tuple(shifts[i]), tuple(range(1, dims + 1))) for i in range(b)])
    return noise


def gaussian_kernel_1d(sigma: float, radius: int, device=None) -> torch.Tensor:
    """Normalised 1D Gaussian of ``2 * radius + 1`` taps."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / max(float(sigma), 1e-6)) ** 2)
    return k / k.sum()


def smooth(volume: torch.Tensor, sigma: Sequence[float], radius: Sequence[int]) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(B, 1, *spatial)`` with per-axis sigma and radius (voxels).

    Zero padding, as the reference's convolution; the map is restricted to the brain afterwards.
    """
    dims = volume.ndim - 2
    conv = F.conv3d if dims == 3 else F.conv2d
    out = volume
    for axis in range(dims):
        k = gaussian_kernel_1d(sigma[axis], int(radius[axis]), volume.device)
        shape = [1, 1] + [1] * dims
        shape[2 + axis] = k.numel()
        pad = [0] * dims
        pad[axis] = int(radius[axis])
        out = conv(out, k.view(shape), padding=tuple(pad))
    return out


def anomaly_map(image: torch.Tensor, reconstruction: torch.Tensor, brain: torch.Tensor, sigma: Sequence[float],
                radius: Sequence[int]) -> torch.Tensor:
    """A = smooth(mean_c |x - R(x)|), restricted to the brain.

    Args:
        image, reconstruction: ``(B, C, *spatial)``.
        brain: ``(B, 1, *spatial)`` (bool or 0/1).
        sigma, radius: Gaussian sigma and truncation radius per spatial axis, in voxels.

    Returns:
        ``(B, 1, *spatial)`` float32, 0 outside the brain.
    """
    err = (image - reconstruction).abs().mean(1, keepdim=True)
    return smooth(err, sigma, radius) * brain.to(err.dtype)


def soft_segmentation(amap: torch.Tensor, tau: torch.Tensor, steepness: float) -> torch.Tensor:
    """S = sigmoid(k (A - tau)); ``tau`` is ``(B,)`` (per sample) or broadcastable to ``amap``."""
    if tau.ndim == 1:
        tau = tau.view(-1, *([1] * (amap.ndim - 1)))
    return torch.sigmoid(steepness * (amap - tau))


def soft_dice_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                   eps: float = 1e-5) -> torch.Tensor:
    """1 - mean over samples of soft Dice(pred, target) (inside ``mask`` if given)."""
    dims = tuple(range(1, pred.ndim))
    if mask is not None:
        pred, target = pred * mask, target * mask
    inter = (pred * target).sum(dims)
    denom = pred.sum(dims) + target.sum(dims)
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def error_tolerance_term(amap: torch.Tensor, tau: torch.Tensor | None) -> torch.Tensor:
    """Mean of the anomaly map after values below tau are set to zero (tau None = minus infinity).

    On healthy data every voxel above tau is a false positive; this term pushes exactly those down,
    and leaves errors the threshold already tolerates alone.
    """
    if tau is None:
        return amap.mean()
    if tau.ndim == 1:
        tau = tau.view(-1, *([1] * (amap.ndim - 1)))
    return torch.where(amap >= tau, amap, torch.zeros_like(amap)).mean()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """Mean squared error inside the brain (``brain``: ``(B, 1, *spatial)``)."""
    m = brain.to(pred.dtype).expand_as(pred)
    return ((pred - target) ** 2 * m).sum() / m.sum().clamp_min(1.0)


def resize(volume: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Trilinear/bilinear resize of ``(B, C, *spatial)`` to ``size`` (area-like when shrinking)."""
    dims = volume.ndim - 2
    if tuple(volume.shape[2:]) == tuple(size):
        return volume
    mode = "trilinear" if dims == 3 else "bilinear"
    return F.interpolate(volume, size=tuple(int(s) for s in size), mode=mode, align_corners=False,
                         antialias=False) if dims == 3 else F.interpolate(volume, size=tuple(int(s) for s in size),
                                                                            mode=mode, align_corners=False, antialias=True)


def best_threshold(amap: np.ndarray, target: np.ndarray, candidates: np.ndarray) -> tuple[float, float]:
    """The candidate threshold with the highest hard Dice of ``amap > t`` vs ``target`` (oracle helper)."""
    t = np.asarray(target, bool)
    best = (float(candidates[0]), -1.0)
    for c in candidates:
        p = amap > c
        d = 2 * np.logical_and(p, t).sum() / max(p.sum() + t.sum(), 1)
        if d > best[1]:
            best = (float(c), float(d))
    return best
