"""Checkpoints that cannot run code: tensors, numbers, strings (and lists/dicts of them) only.

``torch.load(weights_only=True)`` refuses anything else, so a checkpoint shared by someone else
cannot execute code on the user's machine when it is loaded. Writes are atomic (temporary file,
then rename), so a kill during saving leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch


class UnsafeCheckpointError(ValueError):
    """The file holds objects that ``weights_only`` loading refuses (or is not a checkpoint)."""


def save_checkpoint(checkpoint: dict, path: str | os.PathLike) -> Path:
    """Atomically save ``checkpoint`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file holds pickled objects other than tensors, numbers and strings
            (refused: loading them could run code), or is not a torch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UnsafeCheckpointError(
            f"{path}: refused to load: it holds objects other than tensors, numbers and strings, which could run "
            f"code ({first[:160]}); only load checkpoints you trust, or re-save it with plain state dicts"
        ) from None
    except (RuntimeError, EOFError) as exc:
        raise UnsafeCheckpointError(f"{path}: not a readable torch checkpoint ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise UnsafeCheckpointError(f"{path}: not a blogrr checkpoint (no network_weights)")
    return ckpt


def load_stock_checkpoint(path: str | os.PathLike) -> dict:
    """A stock nnU-Net checkpoint as prediction needs it, read with ``weights_only=True``.

    nnU-Net pickles numpy scalars in its log, which ``weights_only`` refuses by default; those (and nothing
    that can run code) are allowed here, so the file is still read safely.
    """
    core = getattr(np, "_core", None) or np.core  # numpy >= 2 pickles its scalars from numpy._core
    safe = [np.dtype, core.multiarray.scalar]
    safe += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "bool")]
    with torch.serialization.safe_globals(safe):
        ckpt = load_checkpoint(path, "cpu")
    return {"network_weights": ckpt["network_weights"], "method": "nnunet", "trainer_name": ckpt.get("trainer_name"),
            "inference_allowed_mirroring_axes": list(ckpt.get("inference_allowed_mirroring_axes") or []),
            "current_epoch": int(ckpt.get("current_epoch", 0)), "logging": ckpt.get("logging", {})}
