"""Whole preprocessed cases in memory, and the per-case quantities of the upper loop.

The lower loop reads random patches through nnU-Net's data loader; the upper loop and validation
need whole brains: the image, its brain mask, the pseudo-label and (for evaluation only) the ground
truth, plus the anomaly map of the frozen reconstruction network.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import blosc2
import numpy as np
import torch

from blogrr_nnu import anomaly as A
from blogrr_nnu.plans_block import BlogrrBlock
from blogrr_nnu.sliding_window import inference_tile_size, sliding_window_reconstruct


@dataclass
class WholeCase:
    """One preprocessed case.

    Attributes:
        case_id: id.
        data: ``(C, *S)`` float32 normalised image (``S`` = stored spatial shape).
        brain: ``(1, *S)`` bool.
        target: ``(1, *S)`` float32 pseudo-label used by the upper loop (zeros if the case has none).
        label: ``(1, *S)`` bool ground truth, or ``None`` (evaluation only, never training).
        props: the preprocessed properties.
    """

    case_id: str
    data: torch.Tensor
    brain: torch.Tensor
    target: torch.Tensor
    label: torch.Tensor | None
    props: dict


def read_stored_case(folder: Path, case_id: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(data (C, *S), seg (K, *S), props)`` of one case of a preprocessed configuration folder, as stored
    (``props["seg_channels"]`` names the seg channels in their stored order). The one reader of the files."""
    folder = Path(folder)
    data = blosc2.open(str(folder / f"{case_id}.b2nd"), mode="r")[:]
    seg = blosc2.open(str(folder / f"{case_id}_seg.b2nd"), mode="r")[:]
    with open(folder / f"{case_id}.pkl", "rb") as fh:
        props = pickle.load(fh)
    return data, seg, props


def load_whole_case(folder: Path, case_id: str, target_channel: str = "pseudo_report") -> WholeCase:
    """Read one case of a preprocessed configuration folder."""
    data, seg, props = read_stored_case(folder, case_id)
    names = props["seg_channels"]
    if target_channel not in names:
        raise ValueError(f"{case_id}: pseudo-label {target_channel!r} was not preprocessed (have {names}); "
                         "re-run blogrr_plan_and_preprocess with that source")
    label = seg[names.index("label")]
    return WholeCase(
        case_id=case_id,
        data=torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)),
        brain=torch.from_numpy(seg[names.index("brain")][None] > 0),
        target=torch.from_numpy((seg[names.index(target_channel)][None] > 0).astype(np.float32)),
        label=None if (label < 0).all() else torch.from_numpy(label[None] > 0),
        props=props,
    )


def case_anomaly_map(network, case: WholeCase, patch_size, blogrr: dict, device: torch.device,
                     tile_step_size: float = 0.5, mirror_axes=None, strides=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction and anomaly map of a whole case (frozen network), on the CPU.

    Args:
        strides: the network's strides; given, a case that fits in twice the patch runs as one window
            (:func:`~blogrr_nnu.sliding_window.inference_tile_size`), else sliding windows of the patch.

    Returns:
        ``(reconstruction (C, *S), anomaly map (1, *S))``.
    """
    tile = patch_size if strides is None else inference_tile_size(case.data.shape[1:], patch_size, strides)
    rec = sliding_window_reconstruct(network, case.data, tile, tile_step_size=tile_step_size,
                                     window_device=device, stitch_device="cpu", mirror_axes=mirror_axes)
    return rec, anomaly_from_reconstruction(case, rec, blogrr)


def anomaly_from_reconstruction(case: WholeCase, rec: torch.Tensor, blogrr: dict) -> torch.Tensor:
    """Anomaly map ``(1, *S)`` of a case from its reconstruction ``(C, *S)`` (smoothing from the plans)."""
    dims = case.data.ndim - 1
    b = BlogrrBlock.from_dict(blogrr)
    return A.anomaly_map(case.data[None], rec[None], case.brain[None], _sigma(b, dims), _radius(b, dims))[0]


def _sigma(blogrr: BlogrrBlock, dims: int) -> list[float]:
    s = list(blogrr.anomaly_sigma_voxels)
    return s if len(s) == dims else [s[0]] * (dims - len(s)) + s  # 2D configs: smooth slice-wise only


def _radius(blogrr: BlogrrBlock, dims: int) -> list[int]:
    r = list(blogrr.anomaly_kernel_radius_voxels)
    return r if len(r) == dims else [0] * (dims - len(r)) + r
