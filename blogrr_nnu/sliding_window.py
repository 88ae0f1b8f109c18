"""Sliding-window reconstruction with Gaussian blending, in fp32 with the network's own channel count.

nnU-Net's ``nnUNetPredictor`` buffers logits as fp16 with ``num_segmentation_heads`` channels; a
reconstruction differs from fp32 by up to 0.2 that way (DESIGN.md section 6), so the stitching is
done here, reusing nnU-Net's tile placement (``compute_steps_for_sliding_window``) and Gaussian
importance map (``compute_gaussian``). As in MONAI's ``sliding_window_inference`` the network is any
callable, and the device that runs windows is separate from the device that stitches them.
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np
import torch
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

from blogrr_nnu import amp


def _pad_to(image: torch.Tensor, min_shape: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad the spatial axes of ``(C, *spatial)`` up to ``min_shape`` (centred); returns the crop back."""
    spatial = image.shape[1:]
    pads, crop = [], [slice(None)]
    for size, want in zip(spatial, min_shape):
        extra = max(0, int(want) - int(size))
        lo = extra // 2
        pads.append((lo, extra - lo))
        crop.append(slice(lo, lo + int(size)))
    flat = [p for pair in reversed(pads) for p in pair]
    return (torch.nn.functional.pad(image, flat) if any(flat) else image), tuple(crop)


@torch.inference_mode()
def sliding_window_reconstruct(
    network: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile_size: Sequence[int],
    *,
    tile_step_size: float = 0.5,
    use_gaussian: bool = True,
    mirror_axes: Sequence[int] | None = None,
    window_device: torch.device | str = "cpu",
    stitch_device: torch.device | str = "cpu",
    out_channels: int | None = None,
    autocast: bool = False,
) -> torch.Tensor:
    """Apply ``network`` to overlapping tiles of ``image`` and blend the outputs.

    Args:
        network: maps ``(1, C, *tile_size)`` to ``(1, C_out, *tile_size)``.
        image: ``(C, Z, X, Y)`` volume (any dtype; used as float32).
        tile_size: 3 values for 3D tiles, or 2 for 2D networks (then each axial slice ``image[:, z]``
            is processed on its own, as nnU-Net's 2D configurations do).
        tile_step_size: step between tiles as a fraction of the tile (0 < s <= 1; 0.5 = half overlap).
        use_gaussian: weight each tile by nnU-Net's Gaussian importance map (else uniform weights).
        mirror_axes: spatial axes (0-based, of the tile) to mirror for test-time augmentation; the
            outputs of all mirror combinations are averaged.
        window_device: where the network runs.
        stitch_device: where the fp32 sums live (CPU keeps GPU memory free for large volumes).
        out_channels: channels of the output (default: as many as the input).
        autocast: run the network under fp16 autocast on a CUDA ``window_device`` (as nnU-Net's predictor does;
            no effect elsewhere); each window's output is stitched in fp32 all the same.

    Returns:
        ``(C_out, Z, X, Y)`` float32 on ``stitch_device``.

    Example:
        >>> x = torch.rand(3, 20, 30, 25)
        >>> rec = sliding_window_reconstruct(lambda t: t, x, (16, 16, 16))  # an identity "network"
        >>> bool(torch.allclose(rec, x, atol=1e-6))  # overlapping Gaussian-weighted tiles stitch back to x
        True
    """
    if image.ndim != 4:
        raise ValueError(f"expected a (C, Z, X, Y) volume, got shape {tuple(image.shape)}")
    if not 0 < tile_step_size <= 1:
        raise ValueError(f"tile_step_size must be in (0, 1], got {tile_step_size}")
    tile = tuple(int(t) for t in tile_size)
    c_out = out_channels or image.shape[0]
    x = image.to(torch.float32)
    if len(tile) == 2:
        slices = [_reconstruct(network, x[:, z], tile, tile_step_size, use_gaussian, mirror_axes, window_device,
                               stitch_device, c_out, autocast) for z in range(x.shape[1])]
        return torch.stack(slices, dim=1)
    if len(tile) != 3:
        raise ValueError(f"tile_size must have 2 or 3 values, got {tile}")
    return _reconstruct(network, x, tile, tile_step_size, use_gaussian, mirror_axes, window_device, stitch_device, c_out,
                        autocast)


def _reconstruct(network, x: torch.Tensor, tile: tuple[int, ...], step: float, use_gaussian: bool,
                 mirror_axes, window_device, stitch_device, c_out: int, autocast: bool = False) -> torch.Tensor:
    padded, crop = _pad_to(x, tile)
    if torch.device(stitch_device).type != "cpu":  # stitching on the GPU: one copy of the volume, not one per window
        padded = padded.to(window_device)
    spatial = tuple(padded.shape[1:])
    steps = compute_steps_for_sliding_window(spatial, tile, step)
    if use_gaussian:
        weight = compute_gaussian(tile, sigma_scale=1.0 / 8, value_scaling_factor=1.0, dtype=torch.float32,
                                  device=torch.device(stitch_device))
    else:
        weight = torch.ones(tile, dtype=torch.float32, device=stitch_device)
    acc = torch.zeros((c_out, *spatial), dtype=torch.float32, device=stitch_device)
    norm = torch.zeros(spatial, dtype=torch.float32, device=stitch_device)
    flips = [()]
    if mirror_axes:
        axes = [int(a) + 2 for a in mirror_axes]
        flips = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    for start in itertools.product(*steps):
        region = tuple(slice(s, s + t) for s, t in zip(start, tile))
        window = padded[(slice(None), *region)][None].to(window_device)
        out = None
        for axes in flips:
            inp = torch.flip(window, axes) if axes else window
            with amp.autocast(window_device, autocast):
                pred = network(inp)
            pred = pred.float()  # fp16 under autocast: mirrored outputs are summed in fp32
            pred = torch.flip(pred, axes) if axes else pred
            out = pred if out is None else out + pred
        out = (out / len(flips))[0].to(stitch_device, torch.float32)
        acc[(slice(None), *region)] += out * weight
        norm[region] += weight
    return (acc / norm)[crop]


def tile_count(shape: Sequence[int], tile_size: Sequence[int], tile_step_size: float = 0.5) -> int:
    """Number of windows :func:`sliding_window_reconstruct` runs on a ``(Z, X, Y)`` volume."""
    tile = tuple(int(t) for t in tile_size)
    if len(tile) == 2:
        return int(shape[0]) * tile_count(shape[1:], tile, tile_step_size) if len(shape) == 3 else \
            int(np.prod([len(s) for s in compute_steps_for_sliding_window(
                tuple(max(a, b) for a, b in zip(shape, tile)), tile, tile_step_size)]))
    padded = tuple(max(int(a), b) for a, b in zip(shape, tile))
    return int(np.prod([len(s) for s in compute_steps_for_sliding_window(padded, tile, tile_step_size)]))


def inference_tile_size(shape: Sequence[int], patch_size: Sequence[int], strides: Sequence[Sequence[int]],
                        max_voxel_factor: float = 2.0) -> tuple[int, ...]:
    """The tile used on a whole case: the case itself when it fits, else the training patch.

    A fully convolutional U-Net can run on any input whose size its strides divide. When the whole case,
    padded up to such a size, has at most ``max_voxel_factor`` times the voxels of the training patch,
    one pass over it costs far less than overlapping patches (measured on the demo's 3d_cpu cases, 53x47x60
    with patch 48x48x56: 1 window of 56x48x64 instead of 4 of 48x48x56, 3x fewer voxels), and its memory
    (one sample, no gradients) stays below a training step's. Larger cases use sliding windows of the patch.

    Args:
        shape: spatial shape of the case (``(Z, X, Y)``, or ``(X, Y)`` of a slice for 2D networks).
        patch_size: the configuration's patch.
        strides: the network's per-stage strides (plans ``arch_kwargs['strides']``).
        max_voxel_factor: largest whole-case size, in patch volumes.

    Returns:
        The tile size (same length as ``patch_size``).

    Example:
        >>> inference_tile_size((53, 47, 60), (48, 48, 56), [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
        (56, 48, 64)
    """
    patch = [int(p) for p in patch_size]
    spatial = [int(s) for s in shape][-len(patch):]
    divisor = [int(np.prod([s[a] for s in strides])) for a in range(len(patch))]
    whole = [max(p if s <= p else int(np.ceil(s / d) * d), 1) for s, p, d in zip(spatial, patch, divisor)]
    # an axis shorter than the patch keeps the patch length (the image is padded, as nnU-Net does)
    if np.prod(whole) <= max_voxel_factor * np.prod(patch):
        return tuple(whole)
    return tuple(patch)
