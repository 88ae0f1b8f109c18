"""Mixed precision as nnU-Net uses it: fp16 autocast and a gradient scaler on CUDA, nothing elsewhere.

nnU-Net's ``nnUNetTrainer.train_step`` runs the forward pass and the loss under
``torch.autocast("cuda")`` (fp16) with a ``GradScaler``, and its predictor runs the network under the
same autocast; on CPU and MPS it uses neither. Our trainers do the same for the *network's forward
pass only*: the reconstruction (or the logits and projections of CGC) is cast back to fp32 before the
MSE, the anomaly map, the error-tolerance term and the soft segmentation are computed from it, so those
small differences of large numbers are never taken in fp16 (docs/training.md, "Mixed precision").
On CPU every function here is the identity of the fp32 code path, bit for bit.
"""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch


def enabled(device: torch.device | str) -> bool:
    """True where nnU-Net enables mixed precision: CUDA devices."""
    return torch.device(device).type == "cuda"


def autocast(device: torch.device | str, on: bool = True):
    """``torch.autocast("cuda")`` (fp16, nnU-Net's default) on CUDA when ``on``; a no-op context elsewhere."""
    if on and enabled(device):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters: Iterable[torch.nn.Parameter],
                  scaler=None, max_norm: float = 12.0) -> None:
    """Zero the gradients, backpropagate ``loss``, clip the gradient norm to ``max_norm``, step.

    With a ``torch.GradScaler`` (nnU-Net's trainer makes one on CUDA as ``self.grad_scaler``, else ``None``)
    the loss is scaled, the gradients are unscaled before clipping, and the step is skipped when they
    overflowed, as in ``nnUNetTrainer.train_step``. Without one this is the plain fp32 step.
    """
    params = list(parameters)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    scaler.step(optimizer)
    scaler.update()


def configure_cuda(device: torch.device | str) -> None:
    """cuDNN autotuning on CUDA, as nnU-Net's ``run_training`` sets it (no effect on CPU runs).

    Autotuning picks the fastest convolution kernels for each shape; their sums may be ordered differently
    between runs, so on CUDA a resumed run equals an uninterrupted one up to kernel choice (on CPU: exactly).
    """
    if enabled(device):
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
