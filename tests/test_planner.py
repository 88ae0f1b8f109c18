"""The planner: memory target monotonicity, anisotropy, 2D coverage, CPU variants, reconstruction output."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from blogrr_nnu.planners.planner import CPU_3D, BlogrrPlanner
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

DJ = {"channel_names": {"0": "T1", "1": "T2", "2": "FLAIR"}, "file_ending": ".nii.gz", "numHealthy": 20, "numTumor": 10}


def fake_fingerprint(spacing=(1.0, 1.0, 1.0), shape=(140, 175, 145), n=20, seed=0):
    """Fingerprint of ``n`` healthy cases of about ``shape`` voxels (template X, Y, Z) at ``spacing``."""
    rng = np.random.default_rng(seed)
    stats = {"mean": 100.0, "std": 30.0, "p0.5": 20.0, "p25": 80.0, "p50": 100.0, "p75": 120.0, "p99.5": 190.0}
    cases = []
    for i in range(n):
        crop = [int(round(s * (1 + 0.04 * rng.standard_normal()))) for s in shape]
        cases.append({"case_id": f"h{i}", "role": "healthy", "spacing": list(spacing), "shape": [256] * 3,
                      "shape_after_crop": crop, "spacing_template_axes": list(spacing),
                      "shape_after_crop_template_axes": crop, "intensity": [stats] * 3,
                      "registration": {"metric": -1.0, "brain_dice": 0.95}})
    return {"spacings": [c["spacing_template_axes"] for c in cases],
            "shapes_after_crop": [c["shape_after_crop_template_axes"] for c in cases],
            "median_relative_size_after_cropping": 0.4, "foreground_intensity_properties_per_channel": {},
            "cases": cases}


def plan(tmp_path, gb=8.0, **kw):
    return BlogrrPlanner("Dataset001_X", DJ, fake_fingerprint(**kw), tmp_path, gb).plan_experiment()


@pytest.fixture(scope="module")
def plans_by_target(tmp_path_factory):
    return {gb: plan(tmp_path_factory.mktemp(f"p{gb}"), gb) for gb in (4, 8, 16, 40)}


def test_larger_memory_target_never_gives_smaller_patch_or_batch(plans_by_target):
    targets = sorted(plans_by_target)
    for cfg in ("3d_fullres", "2d"):
        for small, large in zip(targets, targets[1:]):
            a, b = plans_by_target[small]["configurations"][cfg], plans_by_target[large]["configurations"][cfg]
            assert all(pb >= pa for pa, pb in zip(a["patch_size"], b["patch_size"])), (cfg, small, large)
            if list(a["patch_size"]) == list(b["patch_size"]):
                assert b["batch_size"] >= a["batch_size"], (cfg, small, large)
    # and the target actually matters: 4 GB and 40 GB differ for 3d_fullres
    assert np.prod(plans_by_target[40]["configurations"]["3d_fullres"]["patch_size"]) > \
        np.prod(plans_by_target[4]["configurations"]["3d_fullres"]["patch_size"])


def test_estimate_within_target(plans_by_target):
    for gb, plans in plans_by_target.items():
        for name in ("3d_fullres", "2d"):
            c = plans["configurations"][name]
            assert c["blogrr"]["memory_estimate_gb"] <= gb + 1e-6, (gb, name, c["blogrr"]["memory_estimate_gb"])


def test_anisotropic_spacing_gives_anisotropic_patch(tmp_path):
    plans = plan(tmp_path, spacing=(1.0, 1.0, 5.0), shape=(140, 175, 29))
    c = plans["configurations"]["3d_fullres"]
    # stored order is (Z, X, Y): Z is the 5 mm axis
    assert plans["transpose_forward"] == [2, 0, 1]
    assert c["spacing"][0] == pytest.approx(5.0) and c["spacing"][1] == pytest.approx(1.0)
    assert c["patch_size"][0] < c["patch_size"][1] / 2 and c["patch_size"][0] < c["patch_size"][2] / 2
    # nnU-Net's topology does not pool the coarse axis as often as the fine ones
    strides = np.array(c["architecture"]["arch_kwargs"]["strides"])
    assert strides[:, 0].prod() < strides[:, 1].prod()


def test_2d_patch_covers_in_plane_brain(tmp_path):
    fp_shape = (140, 175, 145)
    plans = plan(tmp_path, shape=fp_shape)
    c = plans["configurations"]["2d"]
    largest = np.max(fake_fingerprint(shape=fp_shape)["shapes_after_crop"], 0)
    # in-plane axes of an axial slice are template X and Y
    assert c["patch_size"][0] >= largest[0] and c["patch_size"][1] >= largest[1]


def test_cpu_variants_are_small(tmp_path):
    plans = plan(tmp_path)
    full, cpu = plans["configurations"]["3d_fullres"], plans["configurations"]["3d_cpu"]
    assert min(cpu["spacing"]) >= CPU_3D["min_spacing"]
    assert cpu["architecture"]["arch_kwargs"]["features_per_stage"][0] == 8
    assert max(cpu["architecture"]["arch_kwargs"]["features_per_stage"]) <= 64
    assert cpu["batch_size"] == CPU_3D["batch_size"]
    assert cpu["blogrr"]["device_class"] == "cpu" and full["blogrr"]["device_class"] == "gpu"
    # the CPU patch covers the whole (median) brain at its spacing
    median_brain = np.median(fake_fingerprint()["shapes_after_crop"], 0)[[2, 0, 1]] * 1.0 / 3.0
    assert all(p >= m for p, m in zip(cpu["patch_size"], np.floor(median_brain)))


def test_reconstruction_network_outputs_input_channels(tmp_path):
    plans = plan(tmp_path, spacing=(2.0, 2.0, 2.0), shape=(70, 88, 72))
    c = plans["configurations"]["3d_cpu"]
    arch = c["architecture"]
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 3,
                                 c["blogrr"]["reconstruction_output_channels"], deep_supervision=False)
    x = torch.zeros((1, 3, *c["patch_size"]))
    with torch.no_grad():
        assert net(x).shape == x.shape


def test_blogrr_fields_scale_with_normalised_range(tmp_path):
    c = plan(tmp_path)["configurations"]["3d_fullres"]["blogrr"]
    # fake stats: (190 - 20) / ((120 - 80) / 1.349) = 5.733 normalised units between p0.5 and p99.5
    rng = (190 - 20) / (40 / 1.349)
    assert c["normalised_range_per_channel"] == pytest.approx([rng] * 3)
    assert c["coarse_noise"]["std_per_channel"] == pytest.approx([0.2 * rng] * 3)
    assert c["sigmoid_steepness"] == pytest.approx(50 / rng)
    assert c["anomaly_sigma_voxels"] == pytest.approx([7.5, 7.5, 7.5])
