"""Sliding-window reconstruction: identity in, identity out, for any tile and step."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from blogrr_nnu.sliding_window import sliding_window_reconstruct, tile_count

RNG = np.random.default_rng(0)
CASES = [(tuple(int(v) for v in RNG.integers(5, 40, 3)), tuple(int(v) for v in RNG.integers(4, 24, 3)),
          float(RNG.choice([0.25, 0.5, 0.7, 1.0]))) for _ in range(12)]


@pytest.mark.parametrize("shape,tile,step", CASES)
def test_identity_network_reproduces_input(shape, tile, step):
    image = torch.randn(3, *shape) * 5
    rec = sliding_window_reconstruct(lambda x: x, image, tile, tile_step_size=step)
    assert rec.dtype == torch.float32 and rec.shape == image.shape
    assert torch.allclose(rec, image, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tile", [(8, 8), (16, 12)])
def test_identity_2d_tiles_and_mirroring(tile):
    image = torch.randn(2, 6, 20, 17)
    rec = sliding_window_reconstruct(lambda x: x, image, tile, tile_step_size=0.5, mirror_axes=(0, 1))
    assert torch.allclose(rec, image, atol=1e-5)


def test_blending_is_fp32_and_weighted():
    # A network that outputs a constant per tile: blending must give a convex combination, in fp32,
    # not fp16 (fp16 would round 1000.1 to 1000.0).
    image = torch.zeros(1, 30, 10, 10)
    calls = []

    def net(x):
        calls.append(1)
        return torch.full_like(x, 1000.1)

    rec = sliding_window_reconstruct(net, image, (16, 10, 10), tile_step_size=0.5)
    assert torch.allclose(rec, torch.full_like(rec, 1000.1), rtol=0, atol=1e-3)
    assert len(calls) == tile_count(image.shape[1:], (16, 10, 10), 0.5) == 3


def test_output_channels_can_differ():
    image = torch.randn(3, 12, 12, 12)
    rec = sliding_window_reconstruct(lambda x: x.mean(1, keepdim=True), image, (8, 8, 8), out_channels=1)
    assert rec.shape == (1, 12, 12, 12)
    assert torch.allclose(rec[0], image.mean(0), atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="tile_step_size"):
        sliding_window_reconstruct(lambda x: x, torch.zeros(1, 4, 4, 4), (4, 4, 4), tile_step_size=0)
    with pytest.raises(ValueError, match=r"\(C, Z, X, Y\)"):
        sliding_window_reconstruct(lambda x: x, torch.zeros(4, 4, 4), (4, 4, 4))
