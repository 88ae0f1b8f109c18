"""Networks: the reconstruction U-Net from the plans and the two threshold networks.

The reconstruction network is nnU-Net's (dynamic-network-architectures ``PlainConvUNet`` from the
plans) with as many output channels as input channels and no deep supervision. Threshold networks
(``THRESHOLD_MODELS``):

- ``"contrast"`` (default) and ``"stats"``, :class:`MapStatsThresholdNet` on features of the case's anomaly map
  (:mod:`blogrr_nnu.tau`): ``contrast`` sees the case's half-contrast threshold (half-way between the map's
  background and its brightest lesion), ``stats`` three log quantiles of the map. Both see the map's *level*,
  which is what sets a case's best threshold, and with two or four parameters they can be fitted to ~20 cases
  without overfitting (``MAP_THRESHOLD_MODELS``).
- ``"reference"``, :class:`ThresholdNet`: the reference's design, a compact residual CNN (ResNet-18-like:
  residual basic blocks, stride-2 stages, global average pooling, linear head, sigmoid) in 2D or 3D, written
  here because the reference's torchvision ResNet-18 is 2D only and torchvision cannot be imported beside the
  CPU torch build.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from blogrr_nnu.plans_block import BlogrrBlock
from blogrr_nnu.tau import CASE_FEATURES


def build_reconstruction_network(configuration: dict, num_channels: int) -> nn.Module:
    """The plans' U-Net, ``num_channels`` in and out, deep supervision off."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = configuration["architecture"]
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                  num_channels, num_channels, allow_init=True, deep_supervision=False)


class _Block(nn.Module):
    """Residual basic block: conv-norm-act-conv-norm + (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, dim: int):
        super().__init__()
        conv = nn.Conv3d if dim == 3 else nn.Conv2d
        norm = nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d
        self.body = nn.Sequential(conv(cin, cout, 3, stride, 1, bias=False), norm(cout, affine=True),
                                  nn.LeakyReLU(0.01, inplace=True), conv(cout, cout, 3, 1, 1, bias=False),
                                  norm(cout, affine=True))
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(conv(cin, cout, 1, stride, bias=False), norm(cout, affine=True)))
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


class ThresholdNet(nn.Module):
    """Image (optionally + anomaly map) -> one threshold per sample.

    ``tau = tau_max * sigmoid(head(features))``: the reference's sigmoid head gives tau in [0, 1] for
    images in [0, 1]; ``tau_max`` (the normalised intensity range) maps that onto our units.

    Args:
        in_channels: input channels (image channels, +1 if the anomaly map is an input).
        dim: 2 or 3.
        features: widths of the stages (each stage: one stride-2 residual block, one stride-1 block).
        tau_max: upper end of the threshold range.
        tau_init: initial threshold (the head's bias is set so that tau starts there).

    Example:
        >>> net = ThresholdNet(3, 3, (8, 16), tau_max=5.0, tau_init=0.5)
        >>> net(torch.zeros(2, 3, 16, 16, 16)).shape
        torch.Size([2])
    """

    def __init__(self, in_channels: int, dim: int, features: Sequence[int] = (16, 32, 64, 128), *,
                 tau_max: float = 1.0, tau_init: float = 0.5):
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        if not 0 < tau_init < tau_max:
            raise ValueError(f"tau_init must lie in (0, tau_max={tau_max}), got {tau_init}")
        layers, cin = [], in_channels
        for f in features:
            layers += [_Block(cin, f, 2, dim), _Block(f, f, 1, dim)]
            cin = f
        self.encoder = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1) if dim == 3 else nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, 1)
        self.tau_max = float(tau_max)
        self.set_constant(tau_init)

    @torch.no_grad()
    def set_constant(self, tau: float) -> None:
        """Make T give ``tau`` for every input: zero head weights, bias at ``logit(tau / tau_max)``.

        The encoder gets no gradient while the head is zero; the reference loop's start (and tests) use it.
        """
        if not 0 < tau < self.tau_max:
            raise ValueError(f"tau must lie in (0, tau_max={self.tau_max}), got {tau}")
        self.head.weight.zero_()
        p = tau / self.tau_max
        self.head.bias.fill_(math.log(p / (1 - p)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> ``(B,)`` thresholds."""
        z = self.pool(self.encoder(x)).flatten(1)
        return self.tau_max * torch.sigmoid(self.head(z)[:, 0])


class MapStatsThresholdNet(nn.Module):
    """Map statistics -> one threshold per case: ``log tau = head((f - mean) / scale)``.

    ``f`` are log in-brain quantiles of the anomaly map (:func:`blogrr_nnu.tau.map_features`). Working on a
    log scale makes the model multiplicative: maps that are uniformly 20 % weaker (a better reconstruction)
    shift every feature by the same amount and tau follows. ``mean`` and ``scale`` are buffers set from the
    training cases before each fit (so they are saved and restored with the weights); no per-sample
    normalisation, which would erase exactly the level that sets tau.

    Args:
        num_features: length of ``f``.
        hidden: width of one hidden layer (0 = linear, the default: more parameters overfit ~20 cases).

    Example:
        >>> net = MapStatsThresholdNet(3)
        >>> net(torch.zeros(2, 3)).shape
        torch.Size([2])
    """

    def __init__(self, num_features: int, hidden: int = 0):
        super().__init__()
        if num_features < 1 or hidden < 0:
            raise ValueError(f"need num_features >= 1 and hidden >= 0, got {num_features}, {hidden}")
        self.head = (nn.Linear(num_features, 1) if hidden == 0 else
                     nn.Sequential(nn.Linear(num_features, hidden), nn.SiLU(), nn.Linear(hidden, 1)))
        self.register_buffer("feature_mean", torch.zeros(num_features))
        self.register_buffer("feature_scale", torch.ones(num_features))

    @torch.no_grad()
    def set_normalisation(self, features: torch.Tensor) -> None:
        """Centre and scale inputs by the mean / std of ``features`` ``(N, F)`` (std 1 when N < 2)."""
        self.feature_mean.copy_(features.mean(0))
        sd = features.std(0) if features.shape[0] > 1 else torch.ones_like(self.feature_scale)
        self.feature_scale.copy_(sd.clamp_min(1e-3))

    def log_tau(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` -> ``(B,)`` log thresholds (what the fit regresses)."""
        return self.head((features - self.feature_mean) / self.feature_scale)[:, 0]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` -> ``(B,)`` thresholds (> 0)."""
        return torch.exp(self.log_tau(features))


THRESHOLD_MODELS = ("contrast", "stats", "reference")
#: threshold models that are a :class:`MapStatsThresholdNet` on map features (fitted by regression, one tau per case):
#: those with a feature function in :data:`blogrr_nnu.tau.CASE_FEATURES`
MAP_THRESHOLD_MODELS = tuple(CASE_FEATURES)


def build_threshold_network(blogrr: dict, num_channels: int, dim: int, threshold_input: str,
                            model: str = "reference") -> nn.Module:
    """The threshold network of a configuration (plans' ``blogrr`` block), as trainer and predictor build it.

    Args:
        blogrr: the configuration's ``blogrr`` block (:class:`~blogrr_nnu.plans_block.BlogrrBlock`, or its dict).
        num_channels: image channels.
        dim: 2 or 3.
        threshold_input: ``"image"`` or ``"image+anomaly"`` (one more input channel; reference model only).
        model: ``"contrast"`` or ``"stats"`` (:class:`MapStatsThresholdNet`) or ``"reference"`` (:class:`ThresholdNet`).
    """
    if model not in THRESHOLD_MODELS:
        raise ValueError(f"threshold model must be one of {', '.join(THRESHOLD_MODELS)}, got {model!r}")
    if model in MAP_THRESHOLD_MODELS:
        return MapStatsThresholdNet(CASE_FEATURES[model][1])
    if threshold_input not in ("image", "image+anomaly"):
        raise ValueError(f"threshold_input must be 'image' or 'image+anomaly', got {threshold_input!r}")
    t_in = num_channels + (1 if threshold_input == "image+anomaly" else 0)
    blogrr = BlogrrBlock.from_dict(blogrr)
    tau_max = float(np.mean(blogrr.normalised_range_per_channel))
    return ThresholdNet(t_in, dim, list(blogrr.threshold_net.features), tau_max=tau_max, tau_init=0.05 * tau_max)
