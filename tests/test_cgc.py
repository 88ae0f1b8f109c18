"""CGC: the contrastive loss, mini-patch geometry, a short training and prediction with its network."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from blogrr_nnu.commands.predict import main as predict_main
from blogrr_nnu.image_io import read_image
from blogrr_nnu.planners.api import plan_and_preprocess
from blogrr_nnu.trainers.api import build_trainer
from blogrr_nnu.trainers.cgc_trainer import contrast_geometry, cross_granularity_contrastive_loss
from blogrr_nnu.checkpoint import load_checkpoint
from template_cases import write_template_dataset

DATASET = "Dataset983_CgcTiny"


def test_contrastive_loss_is_lower_for_separated_than_for_mixed_embeddings():
    g = torch.Generator().manual_seed(0)
    n = 40
    lesion = torch.zeros(n, dtype=torch.bool)
    lesion[:15] = True
    normal = ~lesion
    normal[-5:] = False  # ignored mini-patches (neither)
    a, b = F.normalize(torch.randn(2, 16, generator=g), dim=1)
    separated = torch.where(lesion[:, None], a, b) + 0.05 * torch.randn(n, 16, generator=g)
    mixed = F.normalize(torch.randn(n, 16, generator=g), dim=1)
    l_sep = cross_granularity_contrastive_loss(F.normalize(separated, dim=1), lesion, normal, 0.2)
    l_mix = cross_granularity_contrastive_loss(mixed, lesion, normal, 0.2)
    assert float(l_sep) < float(l_mix) - 1.0
    # swapping the two groups' embeddings of a separated batch keeps it separated (same loss up to noise)
    # while putting lesion patches among the normal ones raises it
    half = separated.clone()
    half[:7] = b + 0.05 * torch.randn(7, 16, generator=g)
    assert float(cross_granularity_contrastive_loss(F.normalize(half, dim=1), lesion, normal)) > float(l_sep)
    # nothing to contrast: zero, and still differentiable
    z = torch.randn(5, 8, requires_grad=True)
    out = cross_granularity_contrastive_loss(z, torch.zeros(5, dtype=torch.bool), torch.ones(5, dtype=torch.bool))
    assert float(out.detach()) == 0.0 and out.requires_grad


def test_contrast_geometry_follows_the_reference_in_mm():
    s5 = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert contrast_geometry((1.0, 1.0, 1.0), s5) == (3, (1, 3, 3))  # BraTS-like: stride 8, 3x3x1
    assert contrast_geometry((3.0, 3.0, 3.0), s5[:4]) == (1, (1, 4, 4))  # demo 3d_cpu: the 6 mm stage
    assert contrast_geometry((2.0, 1.0, 1.0), [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]) == (3, (1, 3, 3))
    assert contrast_geometry((2.0, 2.0), [[1, 1], [2, 2], [2, 2], [2, 2]]) == (2, (3, 3))  # 2D: 8 mm stage


@pytest.fixture(scope="module")
def cgc_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cgc")
    raw = write_template_dataset(root / "raw", name=DATASET, n_healthy=5, n_tumor=5, n_test=1, spacing=6.0, seed=4)
    plan_and_preprocess(DATASET, ["3d_cpu", "2d_cpu"], raw=str(root / "raw"), preprocessed=str(root / "pre"),
                        num_processes=2)
    return root, raw


def test_cgc_trains_on_gmm_labels_and_predicts_in_native_geometry(cgc_env, monkeypatch, tmp_path):
    root, raw = cgc_env
    monkeypatch.setenv("BLOGRR_preprocessed", str(root / "pre"))
    monkeypatch.setenv("BLOGRR_results", str(tmp_path / "results"))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    tr = build_trainer(DATASET, 0, "3d_cpu", trainer="cgc", device="cpu", epochs=4, iters=6)
    assert tr.upper_loop_target == "pseudo_gmm"
    tr.on_train_start()
    before = tr.run_validation()["val_pseudo_dice"]
    tr.run_training()
    p = tr.progress
    assert p["ce"][-1] < p["ce"][0] and max(p["contrastive"]) > 0  # both losses were active
    assert p["val_pseudo_dice"][-1] > before + 0.2, (before, p["val_pseudo_dice"])
    ckpt = load_checkpoint(f"{tr.output_folder}/checkpoint_final.pth")
    assert ckpt["method"] == "cgc" and "projection_weights" in ckpt
    # blogrr_predict uses the segmentation network: probability >= 0.5, on the input's grid
    out = tmp_path / "pred"
    rc = predict_main(["-i", str(raw / "imagesTs"), "-o", str(out), "-d", DATASET, "-tr", "cgc", "-c", "3d_cpu",
                       "--save_anomaly_maps", "--results", str(tmp_path / "results")])
    assert rc == 0
    mask, geo = read_image(out / "test_000.nii.gz")
    label, lgeo = read_image(raw / "labelsTs" / "test_000.nii.gz")
    assert geo.shape == lgeo.shape and np.allclose(geo.spacing, lgeo.spacing) and np.allclose(geo.origin, lgeo.origin)
    info = json.loads((out / "anomaly_maps" / "test_000.json").read_text())
    assert info["threshold_source"].startswith("segmentation network (CGC)") and info["tau"] == 0.5
    dice = 2 * np.logical_and(mask > 0, label > 0).sum() / max(mask.sum() + label.sum(), 1)
    assert dice >= 0.5, dice


def test_cgc_2d_trains_per_slice_and_predicts(cgc_env, monkeypatch, tmp_path):
    root, raw = cgc_env
    monkeypatch.setenv("BLOGRR_preprocessed", str(root / "pre"))
    monkeypatch.setenv("BLOGRR_results", str(tmp_path / "results"))
    tr = build_trainer(DATASET, 0, "2d_cpu", trainer="cgc", device="cpu", epochs=3, iters=6)
    tr.run_training()
    p = tr.progress
    assert len(p["epoch"]) == 3 and all(np.isfinite(p["ce"])) and p["ce"][-1] < p["ce"][0]
    assert p["val_pseudo_dice"][-1] > 0.3, p["val_pseudo_dice"]
    out = tmp_path / "pred"
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(out), "-d", DATASET, "-tr", "cgc", "-c", "2d_cpu",
                         "--results", str(tmp_path / "results")]) == 0
    mask, geo = read_image(out / "test_000.nii.gz")
    assert geo.shape == read_image(raw / "labelsTs" / "test_000.nii.gz")[1].shape and mask.max() <= 1


def test_gmm_baseline_predicts_raw_cases_without_a_network(cgc_env, monkeypatch, tmp_path):
    root, raw = cgc_env
    monkeypatch.setenv("BLOGRR_preprocessed", str(root / "pre"))
    out = tmp_path / "gmm"
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(out), "-d", DATASET, "-tr", "gmm", "-c", "3d_cpu",
                         "--save_anomaly_maps"]) == 0
    mask, geo = read_image(out / "test_000.nii.gz")
    label, lgeo = read_image(raw / "labelsTs" / "test_000.nii.gz")
    assert geo.shape == lgeo.shape and np.allclose(geo.origin, lgeo.origin)
    info = json.loads((out / "anomaly_maps" / "test_000.json").read_text())
    assert info["threshold_source"].startswith("GMM") and info["folds"] == ["gmm"]
    dice = 2 * np.logical_and(mask > 0, label > 0).sum() / max(mask.sum() + label.sum(), 1)
    assert dice >= 0.6, dice
    # without preprocessing there is no healthy model: a clear error naming the fix
    monkeypatch.setenv("BLOGRR_preprocessed", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(tmp_path / "x"), "-d", DATASET, "-tr", "gmm"]) == 2
