"""Networks: the reconstruction U-Net from the plans and the threshold network.

The reconstruction network is nnU-Net's (dynamic-network-architectures ``PlainConvUNet`` from the
plans) with as many output channels as input channels and no deep supervision. The threshold network
is a compact residual CNN (ResNet-18-like: residual basic blocks, stride-2 stages, global average
pooling, linear head) in 2D or 3D, written here because the reference's torchvision ResNet-18 is 2D
only and torchvision cannot be imported beside the CPU torch build.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


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
        nn.init.zeros_(self.head.weight)
        p = tau_init / tau_max
        nn.init.constant_(self.head.bias, float(torch.log(torch.tensor(p / (1 - p)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> ``(B,)`` thresholds."""
        z = self.pool(self.encoder(x)).flatten(1)
        return self.tau_max * torch.sigmoid(self.head(z)[:, 0])


def build_threshold_network(blogrr: dict, num_channels: int, dim: int, threshold_input: str) -> ThresholdNet:
    """The threshold network of a configuration (plans' ``blogrr`` block), as trainer and predictor build it.

    Args:
        blogrr: the configuration's ``blogrr`` block.
        num_channels: image channels.
        dim: 2 or 3.
        threshold_input: ``"image"`` or ``"image+anomaly"`` (one more input channel).
    """
    if threshold_input not in ("image", "image+anomaly"):
        raise ValueError(f"threshold_input must be 'image' or 'image+anomaly', got {threshold_input!r}")
    t_in = num_channels + (1 if threshold_input == "image+anomaly" else 0)
    tau_max = float(np.mean(blogrr["normalised_range_per_channel"]))
    return ThresholdNet(t_in, dim, blogrr["threshold_net"]["features"], tau_max=tau_max, tau_init=0.05 * tau_max)
