"""A normative anomaly map: the reconstruction errors every healthy brain has, voxel by voxel, on the template grid.

Every case is registered to the template and stored as a crop of one template-aligned grid
(:class:`~blogrr_nnu.spatial.CaseSpace`), so the anomaly maps of healthy cases can be averaged voxel by voxel on that
grid (:func:`mean_map_on_grid`). A case's *normative* map is its map minus that mean on its own crop
(:func:`subtract`): errors every brain has (tissue borders, the ventricles' edges, which R reconstructs less well than
flat tissue) cancel, and what is abnormal in this case stays. ``blogrr_train`` trains BLOGRR on such maps by default (``--maps normative``)
(docs/training.md, "Normative maps"):

- :class:`NormativeMaps` is what a trainer keeps: a recency-weighted mean of the healthy training cases' maps that
  the per-epoch healthy pass computes anyway, and the mean in use, which goes into every checkpoint
  (``normative_map``) so that prediction subtracts exactly what the threshold network was fitted on;
- :class:`NormativeDataset` is nnU-Net's blosc2 dataset with the mean on each case's crop as one more image channel,
  so that a training patch carries its own normative values through the loader's crop and spatial augmentation (the
  lower loop's error tolerance compares R's errors minus the mean with the healthy case's tau).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

from blogrr_nnu.spatial import Crop

# The normative mean weighs each healthy map by how recent it is: its weight shrinks by this factor per epoch, so a
# map from the previous round of the healthy pass (4 epochs ago: it refreshes a quarter of the cases per epoch) weighs
# a quarter of one from this round. R's errors shrink as it trains; a plain mean over all epochs would lag behind them.
DECAY_PER_EPOCH = 0.5 ** 0.5


def mean_map_on_grid(maps: list[np.ndarray], brains: list[np.ndarray], spaces: list) -> np.ndarray:
    """Mean of stored-grid maps over the cases whose brain covers each voxel of the shared template grid (0 where
    none does), float32 ``(X, Y, Z)``; ``spaces``: each case's :class:`~blogrr_nnu.spatial.Crop`,
    :class:`~blogrr_nnu.spatial.CaseSpace` or stored dict. The same sums as a trainer's :class:`NormativeMaps`,
    without the decay."""
    nm = NormativeMaps()
    for a, b, sp in zip(maps, brains, spaces):
        nm.add(Crop.of(sp), np.asarray(a), np.asarray(b) > 0)
    nm.update_mean()
    return nm.mean


def subtract(amap: torch.Tensor, mean_grid: np.ndarray | torch.Tensor, space, brain: torch.Tensor,
             case_id: str = "case") -> torch.Tensor:
    """A ``(1, *S)`` stored-grid map minus the normative mean on the case's crop, inside its ``brain`` ``(1, *S)``
    (outside it stays as it was, 0 for an anomaly map); ``space``: its :class:`~blogrr_nnu.spatial.Crop`,
    :class:`~blogrr_nnu.spatial.CaseSpace` or stored dict. Same shape and dtype."""
    grid = mean_grid.numpy() if isinstance(mean_grid, torch.Tensor) else mean_grid
    shared = Crop.of(space, case_id).to_stored(np.asarray(grid, np.float32), copy=False)
    if tuple(shared.shape) != tuple(amap.shape[1:]):
        raise ValueError(f"{case_id}: its stored grid {tuple(amap.shape[1:])} is not the crop of the normative map "
                         f"{tuple(shared.shape)}; it was preprocessed with other plans than the run")
    return amap - torch.from_numpy(np.ascontiguousarray(shared)).to(amap.dtype)[None] * brain.to(amap.dtype)


class NormativeMaps:
    """A trainer's normative state: a recency-weighted sum of healthy maps on the template grid and the mean in use.

    ``sum`` and ``weight`` (template grid) collect every map the healthy pass records (:meth:`record`), each weighing
    :data:`DECAY_PER_EPOCH` less per epoch since (:meth:`decay`); :meth:`update_mean` sets the mean in use,
    ``sum / weight``. All three go into the checkpoint (:meth:`state`), so a resumed run continues exactly and
    prediction subtracts the mean the threshold network was fitted with.
    """

    def __init__(self):
        self.sum: np.ndarray | None = None  # (X, Y, Z) float64
        self.weight: np.ndarray | None = None
        self.mean: np.ndarray | None = None  # (X, Y, Z) float32: what every map in use has subtracted
        self._crops: dict[str, Crop] = {}

    def _crop(self, case_id: str, stored) -> Crop:
        if case_id not in self._crops:
            self._crops[case_id] = Crop.of(stored, case_id)
        return self._crops[case_id]

    def add(self, crop: Crop, amap: np.ndarray, brain: np.ndarray) -> None:
        """Add one stored-grid map ``(*S)`` inside its boolean ``brain`` ``(*S)`` at weight 1."""
        if self.sum is None:
            self.sum, self.weight = np.zeros(crop.grid_shape), np.zeros(crop.grid_shape)
        self.sum += crop.uncrop(np.where(brain, amap, 0.0).astype(np.float32))
        self.weight += crop.uncrop(brain.astype(np.float32))

    def record(self, case, plain: torch.Tensor) -> None:
        """Add a healthy case's plain map ``(1, *S)`` (inside its brain) at weight 1."""
        self.add(self._crop(case.case_id, case.props.get("case_space")), plain[0].numpy(), case.brain[0].numpy() > 0)

    def decay(self) -> None:
        """One epoch older: every map recorded so far weighs :data:`DECAY_PER_EPOCH` times less."""
        if self.sum is not None:
            self.sum *= DECAY_PER_EPOCH
            self.weight *= DECAY_PER_EPOCH

    def update_mean(self) -> None:
        """The mean in use := ``sum / weight`` (0 where no healthy brain reaches)."""
        if self.sum is not None:
            self.mean = np.where(self.weight > 0, self.sum / np.maximum(self.weight, 1e-12), 0.0).astype(np.float32)

    def subtract(self, case, amap: torch.Tensor) -> torch.Tensor:
        """The case's map minus the mean in use (unchanged before there is one)."""
        if self.mean is None:
            return amap
        return subtract(amap, self.mean, self._crop(case.case_id, case.props.get("case_space")), case.brain,
                        case.case_id)

    def stored(self, case_id: str, props: dict) -> np.ndarray | None:
        """The mean in use on a case's stored crop, a view (None before there is one): the loader copies one patch."""
        if self.mean is None:
            return None
        return self._crop(case_id, props.get("case_space")).to_stored(self.mean, copy=False)

    def state(self) -> dict:
        """Checkpoint entries (tensors): ``normative_map`` (the mean in use) and the sums a resumed run continues."""
        if self.sum is None:
            return {}
        out = {"normative_sum": torch.from_numpy(self.sum), "normative_weight": torch.from_numpy(self.weight)}
        return {**out, **({"normative_map": torch.from_numpy(self.mean)} if self.mean is not None else {})}

    def load_state(self, ckpt: dict) -> None:
        """Restore :meth:`state` (absent entries: nothing recorded yet)."""
        def get(key):
            return None if ckpt.get(key) is None else ckpt[key].cpu().numpy()

        self.sum, self.weight = get("normative_sum"), get("normative_weight")
        mean = get("normative_map")
        self.mean = None if mean is None else mean.astype(np.float32)


class _WithChannel:
    """A stored case's data ``(C, *S)`` with one more channel, read lazily: crops slice both (nnU-Net's
    ``crop_and_pad_nd`` reads only ``shape`` and one slice)."""

    def __init__(self, data, extra: np.ndarray | None):
        self.data, self.extra = data, extra
        self.shape = (data.shape[0] + 1, *data.shape[1:])
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, slicer):
        spatial = slicer[1:] if isinstance(slicer, tuple) else ()
        part = np.asarray(self.data[(slice(None), *spatial)], np.float32)
        extra = np.zeros((1, *part.shape[1:]), np.float32) if self.extra is None else self.extra[None][(slice(None), *spatial)]
        return np.concatenate([part, extra], 0)[slicer[0] if isinstance(slicer, tuple) else slicer]


class NormativeDataset(nnUNetDatasetBlosc2):
    """nnU-Net's blosc2 dataset with one more image channel: ``normative(case_id, props)`` on the case's crop (zeros
    while it gives None)."""

    def __init__(self, folder: str | Path, identifiers: list[str],
                 normative: Callable[[str, dict], np.ndarray | None]):
        super().__init__(str(folder), identifiers)
        self.normative = normative

    def load_case(self, identifier):
        data, seg, seg_prev, props = super().load_case(identifier)
        return _WithChannel(data, self.normative(identifier, props)), seg, seg_prev, props
