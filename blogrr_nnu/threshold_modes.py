"""How a trained threshold network turns one whole case into its tau: the one place trainer and predictor share.

A :class:`ThresholdMode` is fixed by the threshold model and the configuration:

| model | configuration | T sees | tau |
|---|---|---|---|
| ``contrast`` (default) | any | the log half-contrast threshold of the case's anomaly map (:func:`blogrr_nnu.tau.contrast_features`) | one per case |
| ``stats`` | any | log quantiles of the case's anomaly map (:func:`blogrr_nnu.tau.map_features`) | one per case |
| ``reference`` | 3D | the whole case (image, optionally + anomaly map) resampled to ``threshold_net.input_size`` | one per case |
| ``reference`` | 2D | every axial slice, resampled | one per slice (the reference), or their mean over brain slices (``per_case_2d``) |

The training procedures of the two models differ (:mod:`blogrr_nnu.trainers.upper_loop`); what a case's tau is,
once T is trained, is decided here only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from blogrr_nnu import anomaly as A
from blogrr_nnu.plans_block import BlogrrBlock
from blogrr_nnu.networks import MAP_THRESHOLD_MODELS
from blogrr_nnu.tau import case_features


def threshold_input(data: torch.Tensor, amap: torch.Tensor | None, size, per_slice: bool) -> torch.Tensor:
    """Input of the reference threshold network for one case.

    Args:
        data: ``(C, Z, X, Y)`` image.
        amap: ``(1, Z, X, Y)`` anomaly map, or ``None`` when the network sees the image only.
        size: the plans' ``threshold_net.input_size`` (3 values, or 2 for per-slice 2D).
        per_slice: 2D configuration: one input per axial slice.

    Returns:
        ``(1, C', *size)`` for a whole case, or ``(Z, C', *size)`` per slice.
    """
    x = data if amap is None else torch.cat([data, amap], 0)
    if per_slice:
        return A.resize(x.permute(1, 0, 2, 3), size)
    return A.resize(x[None], size)


def resize_mask(mask: torch.Tensor, size, per_slice: bool) -> torch.Tensor:
    """Bring a ``(1, Z, X, Y)`` mask or map to the threshold network's resolution (values in [0, 1] stay soft)."""
    m = mask.float()
    return A.resize(m.permute(1, 0, 2, 3), size) if per_slice else A.resize(m[None], size)


def slice_mean_tau(slice_taus: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """One tau per case from per-slice taus: their mean over the slices that hold brain.

    Args:
        slice_taus: ``(Z,)`` one tau per axial slice.
        brain: ``(1, Z, X, Y)`` or ``(Z, 1, H, W)`` brain mask (at any in-plane resolution).

    Returns:
        ``(1,)``.
    """
    b = brain.reshape(brain.shape[0] * brain.shape[1], -1) if brain.shape[0] != slice_taus.shape[0] else brain.reshape(
        slice_taus.shape[0], -1)
    has = (b > 0).any(1).to(slice_taus.dtype)
    if has.sum() == 0:
        return slice_taus.mean().reshape(1)
    return ((slice_taus * has).sum() / has.sum()).reshape(1)


@dataclass(frozen=True)
class ThresholdMode:
    """What T sees of a case and what tau it gives (module docstring).

    Attributes:
        model: ``"contrast"``, ``"stats"`` or ``"reference"``.
        threshold_input: ``"image"`` or ``"image+anomaly"`` (reference model).
        input_size: the plans' ``threshold_net.input_size`` (reference model).
        t_slices: the reference model on a 2D configuration: T sees axial slices.
        per_slice: one tau per slice (reference model, 2D, not ``per_case_2d``).
    """

    model: str
    threshold_input: str
    input_size: tuple[int, ...]
    t_slices: bool
    per_slice: bool

    @classmethod
    def create(cls, model: str, dim: int, blogrr: dict, *, threshold_input: str = "image+anomaly",
               per_case_2d: bool = False) -> "ThresholdMode":
        """The mode of a threshold model on a configuration of ``dim`` spatial axes (``blogrr``: its plans block)."""
        t_slices = model == "reference" and dim == 2
        return cls(model, threshold_input, tuple(BlogrrBlock.from_dict(blogrr).threshold_net.input_size), t_slices,
                   t_slices and not per_case_2d)

    def inputs(self, data: torch.Tensor, brain: torch.Tensor, amap: torch.Tensor) -> torch.Tensor:
        """T's input for a whole case: ``(1, F)`` features, ``(1, C', *size)`` or ``(Z, C', *size)``.

        Args:
            data: ``(C, *S)`` image; brain: ``(1, *S)``; amap: ``(1, *S)`` its anomaly map.
        """
        if self.model in MAP_THRESHOLD_MODELS:
            return case_features(self.model, amap, brain)[None]
        return threshold_input(data, amap if self.threshold_input == "image+anomaly" else None, self.input_size,
                               self.t_slices)

    def tau(self, net: torch.nn.Module, inputs: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
        """tau of a whole case from its :meth:`inputs`: ``(1,)``, or ``(Z,)`` per slice."""
        tau = net(inputs)
        if self.t_slices and not self.per_slice:
            tau = slice_mean_tau(tau, brain)
        return tau

    def case_tau(self, net: torch.nn.Module, data: torch.Tensor, brain: torch.Tensor, amap: torch.Tensor,
                 device: torch.device | str = "cpu") -> torch.Tensor:
        """tau of one case on the CPU (``net`` in eval mode, no gradient): ``(1,)`` or ``(Z,)``."""
        with torch.no_grad():
            return self.tau(net, self.inputs(data, brain, amap).to(device), brain.to(device)).float().cpu()

    def constant(self, value: float, amap: torch.Tensor) -> torch.Tensor:
        """A fixed threshold in this mode's shape for a ``(1, Z, X, Y)`` map: ``(Z,)`` per slice, else ``(1,)``."""
        return torch.full((amap.shape[1] if self.per_slice else 1,), float(value))

    def shaped(self, tau: torch.Tensor) -> torch.Tensor:
        """tau broadcastable against a ``(1, Z, X, Y)`` map: ``(1, Z, 1, 1)`` per slice, else ``(1, 1, 1, 1)``."""
        if not self.per_slice and tau.numel() != 1:
            raise ValueError(f"one tau per case expected, got {tau.numel()}")
        return tau.view(1, -1, 1, 1) if self.per_slice else tau.reshape(1, 1, 1, 1)
