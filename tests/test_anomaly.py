"""Coarse noise, anomaly map, soft segmentation, losses and the threshold network."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from blogrr_nnu import anomaly as A
from blogrr_nnu.networks import ThresholdNet


def test_coarse_noise_statistics_and_smoothness():
    g = torch.Generator().manual_seed(0)
    n = A.coarse_noise((64, 2, 32, 32), (4, 4), (0.5, 2.0), generator=g)
    assert n.shape == (64, 2, 32, 32)
    # bilinear upsampling shrinks the std a little (interpolated values average two cells); per channel
    # the ratio is what the std asks for
    s0, s1 = n[:, 0].std().item(), n[:, 1].std().item()
    assert s1 / s0 == pytest.approx(4.0, rel=0.1)
    assert 0.3 < s0 < 0.55
    # coarse: neighbouring voxels are almost equal, far apart ones are not correlated
    near = np.corrcoef(n[:, 0, :, :-1].flatten(), n[:, 0, :, 1:].flatten())[0, 1]
    far = np.corrcoef(n[:, 0, :, :16].flatten(), n[:, 0, :, 16:].flatten())[0, 1]
    assert near > 0.9 and abs(far) < 0.1  # white noise: near ~ 0
    # seeded: same generator seed, same noise
    assert torch.equal(n, A.coarse_noise((64, 2, 32, 32), (4, 4), (0.5, 2.0), generator=torch.Generator().manual_seed(0)))


def test_coarse_noise_3d_roll_changes_phase():
    a = A.coarse_noise((1, 1, 16, 16, 16), (2, 2, 2), (1.0,), roll=False, generator=torch.Generator().manual_seed(1))
    b = A.coarse_noise((1, 1, 16, 16, 16), (2, 2, 2), (1.0,), roll=True, generator=torch.Generator().manual_seed(1))
    assert a.shape == b.shape == (1, 1, 16, 16, 16) and not torch.equal(a, b)


def test_anomaly_map_is_zero_outside_brain_and_finds_the_difference():
    x = torch.zeros(1, 2, 20, 20, 20)
    rec = x.clone()
    rec[:, :, 8:12, 8:12, 8:12] = 1.0  # reconstruction error in a 4^3 cube, both channels
    brain = torch.zeros(1, 1, 20, 20, 20)
    brain[:, :, 2:18, 2:18, 2:18] = 1
    amap = A.anomaly_map(x, rec, brain, sigma=(2.0, 2.0, 2.0), radius=(2, 2, 2))
    assert amap.shape == (1, 1, 20, 20, 20)
    assert amap[brain == 0].abs().max() == 0
    assert amap[0, 0, 10, 10, 10] > 0.5 and amap[0, 0, 3, 3, 3] == 0
    # smoothing keeps the total error (away from the borders)
    assert amap.sum().item() == pytest.approx(64.0, rel=1e-4)


def test_soft_segmentation_and_dice():
    amap = torch.tensor([[0.0, 0.2, 0.8, 1.0]]).view(1, 1, 2, 2)
    tau = torch.tensor([0.5])
    s = A.soft_segmentation(amap, tau, steepness=50.0)
    assert torch.allclose(s.flatten(), torch.tensor([0.0, 0.0, 1.0, 1.0]), atol=1e-6)
    target = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 2, 2)
    assert A.soft_dice_loss(s, target).item() == pytest.approx(0.0, abs=1e-4)
    assert A.soft_dice_loss(1 - s, target).item() == pytest.approx(1.0, abs=1e-4)


def test_error_tolerance_term():
    amap = torch.tensor([0.1, 0.2, 0.6, 0.9]).view(1, 1, 2, 2)
    assert A.error_tolerance_term(amap, None).item() == pytest.approx(0.45)
    assert A.error_tolerance_term(amap, torch.tensor([0.5])).item() == pytest.approx((0.6 + 0.9) / 4)


def test_threshold_net_range_and_init():
    net = ThresholdNet(2, 3, (8, 16), tau_max=4.0, tau_init=1.0)
    tau = net(torch.randn(3, 2, 16, 16, 16))
    assert tau.shape == (3,) and torch.allclose(tau, torch.full((3,), 1.0), atol=1e-5)
    net2 = ThresholdNet(2, 2, (8,), tau_max=4.0, tau_init=1.0)
    with torch.no_grad():
        net2.head.bias.fill_(100.0)
    assert net2(torch.randn(2, 2, 8, 8)).max().item() <= 4.0
    with pytest.raises(ValueError):
        ThresholdNet(2, 3, tau_max=1.0, tau_init=2.0)


def test_tau_gradient_moves_toward_best_dice():
    # A known case: anomaly map = distance-like ramp, target = voxels above 0.6. The soft Dice gradient
    # must push tau from 0.2 toward 0.6.
    amap = torch.linspace(0, 1, 1000).view(1, 1, 10, 10, 10)
    target = (amap > 0.6).float()
    tau = torch.tensor([0.2], requires_grad=True)
    opt = torch.optim.Adam([tau], lr=0.01)
    for _ in range(200):
        opt.zero_grad()
        A.soft_dice_loss(A.soft_segmentation(amap, tau, 50.0), target).backward()
        opt.step()
    assert tau.item() == pytest.approx(0.6, abs=0.03)
    best, dice = A.best_threshold(amap.numpy(), target.numpy() > 0, np.linspace(0, 1, 101))
    assert best == pytest.approx(0.6, abs=0.011) and dice > 0.99
