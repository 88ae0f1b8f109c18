"""Distributed data parallel training as nnU-Net does it: ``-num_gpus N`` spawns N processes, or an
outside launcher (``torchrun``) sets RANK / WORLD_SIZE. NCCL on CUDA, gloo on CPU (used by the tests)."""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def maybe_init_from_env(device: str) -> bool:
    """Join the process group torchrun describes in the environment (no-op without WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return True


def _worker(rank: int, world: int, port: int, device: str, args, kw) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=rank, world_size=world)
    if device == "cuda":
        torch.cuda.set_device(rank)
    try:
        from blogrr_nnu.trainers.api import run

        run(*args, **kw)
    finally:
        dist.destroy_process_group()


def launch(num_processes: int, dataset, fold, configuration, **kw) -> None:
    """Spawn ``num_processes`` training processes on this machine and wait for them."""
    device = kw.get("device", "cpu")
    if device == "cuda" and torch.cuda.device_count() < num_processes:
        raise ValueError(f"-num_gpus {num_processes} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    mp.spawn(_worker, args=(num_processes, free_port(), device, (dataset, fold, configuration), kw),
             nprocs=num_processes, join=True)
