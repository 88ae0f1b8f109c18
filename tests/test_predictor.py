"""blogrr_predict: native geometry, a known lesion found where it is, folds, sharding, skipping, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from blogrr_nnu.commands.predict import main as predict_main
from blogrr_nnu.image_io import read_image, write_image
from blogrr_nnu.inference.predictor import BlogrrPredictor
from blogrr_nnu.networks import build_reconstruction_network, build_threshold_network
from blogrr_nnu.planners.api import plan_and_preprocess
from blogrr_nnu.checkpoint import save_checkpoint
from template_cases import RIGHT_FRONTAL_LPS, make_case, write_template_dataset

CONFIG = "3d_cpu"
DATASET = "Dataset982_PredTiny"
TAU = 2.0  # normalised units; with R(x) = 0 the anomaly map is the smoothed mean |z-score|


def _zero_reconstruction_checkpoint(plans: dict, n_ch: int, threshold: dict | None = None) -> dict:
    """A real plans U-Net whose last layer is zeroed, so R(x) = 0 and A = smooth(mean_c |x|) exactly."""
    cfg = plans["configurations"][CONFIG]
    net = build_reconstruction_network(cfg, n_ch)
    last = net.decoder.seg_layers[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    ckpt = {"network_weights": net.state_dict(), "tau_initialised": False, "threshold_input": "image+anomaly",
            "inference_allowed_mirroring_axes": [1], "current_epoch": 1}
    if threshold is not None:
        ckpt.update(threshold)
    return ckpt


def _threshold_weights(plans: dict, n_ch: int, tau: float) -> dict:
    """A threshold network whose output is exactly ``tau`` for every input (zero head weights, set bias)."""
    t = build_threshold_network(plans["configurations"][CONFIG]["blogrr"], n_ch, 3, "image+anomaly")
    t.set_constant(tau)
    return {"threshold_weights": t.state_dict(), "tau_initialised": True}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pred")
    write_template_dataset(root / "raw", name=DATASET, n_healthy=2, n_tumor=1, n_test=0, spacing=6.0, seed=5)
    pre = plan_and_preprocess(DATASET, [CONFIG], raw=str(root / "raw"), preprocessed=str(root / "pre"),
                              num_processes=1)
    plans = json.loads((pre / "blogrr_plans.json").read_text())
    dj = json.loads((pre / "dataset.json").read_text())
    run = root / "results" / DATASET / f"DAETrainer__blogrr_plans__{CONFIG}"
    run.mkdir(parents=True)
    (run / "plans.json").write_text(json.dumps(plans))
    (run / "dataset.json").write_text(json.dumps(dj))
    save_checkpoint(_zero_reconstruction_checkpoint(plans, 2), run / "fold_0" / "checkpoint_final.pth")
    trun = run.parent / f"BlogrrTrainer__blogrr_plans__{CONFIG}"
    trun.mkdir()
    for name in ("plans.json", "dataset.json"):
        shutil.copy(run / name, trun / name)
    for fold in ("0", "1"):
        save_checkpoint(_zero_reconstruction_checkpoint(plans, 2, _threshold_weights(plans, 2, TAU)),
                        trun / f"fold_{fold}" / "checkpoint_final.pth")
    return run


# An oblique-free but non-trivial orientation: voxel axes permuted and flipped, anisotropic voxels.
DIRECTION = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
SPACING = (5.0, 3.5, 4.5)


@pytest.fixture(scope="module")
def input_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("in")
    rng = np.random.default_rng(11)
    labels = {}
    for cid in ("caseA", "caseB"):
        data, label, geo, _ = make_case(rng, SPACING, RIGHT_FRONTAL_LPS, lesion_radius=20.0, direction=DIRECTION)
        for ch in range(2):
            write_image(folder / f"{cid}_{ch:04d}.nii.gz", data[ch], geo)
        labels[cid] = (label, geo)
    return folder, labels


def _centroid_mm(mask, geo) -> np.ndarray:
    idx = np.argwhere(mask > 0).mean(0)
    return np.asarray(geo.direction).reshape(3, 3) @ (idx * np.asarray(geo.spacing)) + np.asarray(geo.origin)


def test_prediction_has_the_input_geometry_and_finds_the_lesion(run_folder, input_folder, tmp_path):
    folder, labels = input_folder
    out = tmp_path / "out"
    rc = predict_main(["-i", str(folder), "-o", str(out), "-m", str(run_folder), "--threshold", str(TAU),
                       "--save_anomaly_maps", "-device", "cpu"])
    assert rc == 0
    for cid, (label, geo) in labels.items():
        mask, mgeo = read_image(out / f"{cid}.nii.gz")
        amap, ageo = read_image(out / "anomaly_maps" / f"{cid}_anomaly.nii.gz")
        # exactly the input's grid: shape, spacing, origin, direction
        for g in (mgeo, ageo):
            assert g.shape == geo.shape
            np.testing.assert_allclose(g.spacing, geo.spacing, rtol=0, atol=1e-6)
            np.testing.assert_allclose(g.origin, geo.origin, rtol=0, atol=1e-4)
            np.testing.assert_allclose(g.direction, geo.direction, rtol=0, atol=1e-6)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert amap.dtype == np.float32
        dice = 2 * np.logical_and(mask > 0, label > 0).sum() / (mask.sum() + label.sum())
        assert dice >= 0.8, (cid, dice)  # measured 0.89 and 0.87
        # the lesion is found where it is: centroids within one (largest) voxel
        assert np.linalg.norm(_centroid_mm(mask, mgeo) - _centroid_mm(label, geo)) <= max(SPACING), cid
        info = json.loads((out / "anomaly_maps" / f"{cid}.json").read_text())
        assert info["tau"] == pytest.approx(TAU) and info["threshold_source"] == "fixed"
        assert info["voxels"] == int(mask.sum())
        assert info["volume_ml"] == pytest.approx(mask.sum() * np.prod(SPACING) / 1000.0)


def test_threshold_network_folds_average_to_the_same_mask(run_folder, input_folder, tmp_path):
    """Two folds whose T outputs exactly TAU give the fixed-threshold mask; tau is reported per fold."""
    folder, _ = input_folder
    trun = run_folder.parent / f"BlogrrTrainer__blogrr_plans__{CONFIG}"
    assert predict_main(["-i", str(folder), "-o", str(tmp_path / "t"), "-m", str(trun), "--save_anomaly_maps"]) == 0
    assert predict_main(["-i", str(folder), "-o", str(tmp_path / "f"), "-m", str(run_folder),
                         "--threshold", str(TAU)]) == 0
    for cid in ("caseA", "caseB"):
        a, _ = read_image(tmp_path / "t" / f"{cid}.nii.gz")
        b, _ = read_image(tmp_path / "f" / f"{cid}.nii.gz")
        np.testing.assert_array_equal(a, b)
        info = json.loads((tmp_path / "t" / "anomaly_maps" / f"{cid}.json").read_text())
        assert info["folds"] == ["0", "1"] and info["tau_per_fold"] == pytest.approx([TAU, TAU], abs=1e-4)


def test_sharding_skipping_and_bad_input(run_folder, input_folder, tmp_path, capsys):
    folder, _ = input_folder
    inp = tmp_path / "in"
    shutil.copytree(folder, inp)
    # a case without its FLAIR channel, and a corrupt file
    shutil.copy(inp / "caseA_0000.nii.gz", inp / "caseC_0000.nii.gz")
    (inp / "caseD_0000.nii.gz").write_bytes(b"not a nifti")
    shutil.copy(inp / "caseA_0001.nii.gz", inp / "caseD_0001.nii.gz")
    out = tmp_path / "out"
    args = ["-i", str(inp), "-o", str(out), "-m", str(run_folder), "--threshold", str(TAU)]
    rc0 = predict_main(args + ["-num_parts", "2", "-part_id", "0"])
    rc1 = predict_main(args + ["-num_parts", "2", "-part_id", "1"])
    err = capsys.readouterr().err
    # the two parts together cover caseA..caseD exactly once; each part with a bad case exits 1
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["caseA.nii.gz", "caseB.nii.gz"]
    assert {rc0, rc1} == {1}
    assert "caseC" in err and "missing channel" in err and "0001 (FLAIR)" in err
    assert "caseD_0000.nii.gz" in err and "cannot be read" in err
    # finished cases are skipped unless --overwrite
    stamp = (out / "caseA.nii.gz").stat().st_mtime_ns
    predict_main(args)
    assert (out / "caseA.nii.gz").stat().st_mtime_ns == stamp
    assert "skipped 2 already done" in capsys.readouterr().out
    predict_main(args + ["--overwrite"])
    assert (out / "caseA.nii.gz").stat().st_mtime_ns != stamp


def test_dae_run_without_threshold_is_refused_with_the_fix(run_folder, input_folder, tmp_path, capsys):
    folder, _ = input_folder
    assert predict_main(["-i", str(folder), "-o", str(tmp_path / "o"), "-m", str(run_folder)]) == 2
    assert "--threshold" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_small_components_are_removed_by_volume():
    p = BlogrrPredictor(min_component_ml=1.0, allow_tqdm=False)
    mask = np.zeros((20, 20, 20), bool)
    mask[2:4, 2:4, 2:4] = True  # 8 voxels of 8 mm^3 = 0.064 ml
    mask[10:16, 10:16, 10:16] = True  # 216 voxels = 1.728 ml
    kept, removed = p.remove_small_components(mask, (2.0, 2.0, 2.0))
    assert removed == 1 and kept.sum() == 216 and kept[12, 12, 12] and not kept[3, 3, 3]


def test_overlay_slice_is_the_one_with_most_ground_truth(tmp_path):
    from blogrr_nnu.overlays import pick_slice, write_overview

    gt = np.zeros((10, 12, 8), np.uint8)
    gt[2:5, 2:5, 3] = 1  # 9 voxels on slice 3
    gt[2:8, 2:8, 6] = 1  # 36 voxels on slice 6
    pred = np.zeros_like(gt)
    pred[0:2, 0:2, 1] = 1
    image = np.ones(gt.shape, np.float32)
    assert pick_slice(gt, pred, fallback=image) == 6
    assert pick_slice(None, pred, fallback=image) == 1
    assert pick_slice(None, np.zeros_like(gt), fallback=image) == 3  # middle of the non-zero image
    import matplotlib.image as mpimg

    def colour_pixels(png, rgb):
        img = mpimg.imread(png)[..., :3]
        return int((np.abs(img - np.asarray(rgb)).max(-1) < 0.1).sum()), img.shape[:2]

    # the panel shows slice 6 (most ground truth): its GT contour is green; the prediction lies on slice 1 only
    png = write_overview(tmp_path / "o.png", [dict(image=image, gt=gt, pred=pred, amap=image, tau=0.5, title="x")])
    green, shape = colour_pixels(png, (0, 1, 0))
    assert shape == (270, 585)  # figsize 6.5 x 3.0 inch at 90 dpi, one row per case
    assert green > 20 and colour_pixels(png, (1, 0, 0))[0] == 0
    pred[3:6, 3:6, 6] = 1  # now the prediction is on the shown slice: a red contour appears
    png = write_overview(tmp_path / "o2.png", [dict(image=image, gt=gt, pred=pred, amap=image, tau=0.5, title="x")])
    assert colour_pixels(png, (1, 0, 0))[0] > 10
