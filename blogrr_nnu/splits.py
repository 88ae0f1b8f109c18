"""Seeded cross-validation splits of healthy and tumour cases, in nnU-Net's ``splits_final.json`` format.

Healthy and tumour cases are split separately (5 folds each, nnU-Net's seeded KFold), then fold k is
the union of healthy fold k and tumour fold k, so every fold holds out both kinds. Test cases never
enter a split. The file lives in the preprocessed dataset folder, as nnU-Net's does, and an existing
file is used as is (so a user can write their own).
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

from nnunetv2.utilities.crossval_split import generate_crossval_split

from blogrr_nnu.image_io import atomic_write

SPLIT_SEED = 12345
N_FOLDS = 5


def case_roles(folder: Path) -> dict[str, str]:
    """Case id -> role (``healthy``, ``tumor``, ``test``) from the preprocessed properties files."""
    roles = {}
    for pkl in sorted(Path(folder).glob("*.pkl")):
        with open(pkl, "rb") as fh:
            roles[pkl.stem] = pickle.load(fh)["role"]
    return roles


def make_splits(healthy: list[str], tumor: list[str], seed: int = SPLIT_SEED, n_folds: int = N_FOLDS) -> list[dict]:
    """Five folds; with fewer than ``n_folds`` cases of a kind, those cases are in every training set."""
    def folds(ids):
        if len(ids) >= n_folds:
            return generate_crossval_split(sorted(ids), seed=seed, n_splits=n_folds)
        return [{"train": sorted(ids), "val": []} for _ in range(n_folds)]

    fh, ft = folds(healthy), folds(tumor)
    return [{"train": [str(i) for i in a["train"] + b["train"]], "val": [str(i) for i in a["val"] + b["val"]]}
            for a, b in zip(fh, ft)]


def load_or_create_splits(preprocessed_folder: Path, data_folder: Path) -> list[dict]:
    """Read ``splits_final.json`` or create it from the cases of ``data_folder``."""
    path = Path(preprocessed_folder) / "splits_final.json"
    if path.is_file():
        return json.loads(path.read_text())
    roles = case_roles(data_folder)
    splits = make_splits([k for k, r in roles.items() if r == "healthy"], [k for k, r in roles.items() if r == "tumor"])
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(splits, indent=1)))
    return splits


def fold_keys(splits: list[dict], fold: int | str, roles: dict[str, str]) -> dict[str, list[str]]:
    """Training and validation ids of a fold, by role.

    Returns:
        ``{"healthy_train", "healthy_val", "tumor_train", "tumor_val"}`` -> sorted ids. For fold
        ``"all"`` every training case is in both train and val (as nnU-Net does).

    Raises:
        ValueError: fold out of range.
    """
    train_ids = [k for k, r in roles.items() if r in ("healthy", "tumor")]
    if fold == "all":
        tr, va = train_ids, train_ids
    else:
        f = int(fold)
        if not 0 <= f < len(splits):
            raise ValueError(f"fold {fold} does not exist: splits_final.json has folds 0..{len(splits) - 1} (or use 'all')")
        tr, va = splits[f]["train"], splits[f]["val"]
    out = {}
    for role in ("healthy", "tumor"):
        out[f"{role}_train"] = sorted(k for k in tr if roles.get(k) == role)
        out[f"{role}_val"] = sorted(k for k in va if roles.get(k) == role)
    return out
