"""The GPU check without a GPU: it refuses cleanly, and with --allow_cpu its parts run at toy sizes on data packed
as scripts/prepare_gpu_check.sh packs it, with SimpleITK replaced by the import stand-in and deepmriprep absent
(as on the GPU machine); and what the precision comparison measures."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from blogrr_nnu.benchmarks.speed import gpu_check, gpu_check_data
from blogrr_nnu.planners.api import plan_and_preprocess
from template_cases import write_template_dataset

DATASET = "Dataset984_GpuCheckTiny"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def carried(tmp_path_factory):
    """A tiny dataset planned and preprocessed (3d_cpu, 2d_cpu: same 6 mm arrays), packed, unpacked."""
    root = tmp_path_factory.mktemp("gpu_check")
    write_template_dataset(root / "raw", name=DATASET, n_healthy=5, n_tumor=5, n_test=2, spacing=6.0, seed=3)
    plan_and_preprocess(DATASET, ["3d_cpu", "2d_cpu"], raw=str(root / "raw"), preprocessed=str(root / "pre"),
                        num_processes=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BLOGRR_preprocessed", str(root / "pre"))
        assert gpu_check_data.main(["pack", "-d", DATASET, "-c", "3d_cpu", "2d_cpu", "-o", str(root / "carry"),
                                    "--healthy", "5", "--tumor", "5", "--test", "2", "--raw", str(root / "raw")]) == 0
        packed_dirs = sorted(p.name for p in (root / "carry" / DATASET).iterdir() if p.is_dir())
        mp.setenv("BLOGRR_preprocessed", str(root / "carry"))
        assert gpu_check_data.main(["unpack", "-d", DATASET]) == 0
    return root, packed_dirs


def test_refuses_without_cuda_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["-d", "501"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is required" in err and "--allow_cpu" in err


@pytest.mark.slow  # with the fixture: planning, preprocessing and packing a tiny dataset (~40 s on 2 loaded cores)
def test_pack_carries_one_copy_of_identical_arrays_and_unpack_rechunks_it(carried):
    import blosc2
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params

    root, packed_dirs = carried
    src, dst = root / "pre" / DATASET, root / "carry" / DATASET
    manifest = json.loads((dst / "gpu_check.json").read_text())
    assert manifest["shared"] == {"blogrr_plans_2d_cpu": "blogrr_plans_3d_cpu"}
    assert "blogrr_plans_2d_cpu" not in packed_dirs  # carried once
    assert manifest["cases"] == [f"healthy_{i:03d}" for i in range(5)] + [f"tumor_{i:03d}" for i in range(5)]
    assert gpu_check_data.subset(src / "blogrr_plans_3d_cpu", 3, 2) == ["healthy_000", "healthy_001", "healthy_002",
                                                                     "tumor_000", "tumor_001"]
    assert manifest["test"] == ["test_000", "test_001"]
    assert manifest["source_fold_counts"] == {"healthy_train": 4, "healthy_val": 1, "tumor_train": 4, "tumor_val": 1}
    for cid in manifest["cases"]:  # the carried files are the preprocessed files, byte for byte
        for s in (".b2nd", "_seg.b2nd", ".pkl"):
            assert (dst / "blogrr_plans_3d_cpu" / f"{cid}{s}").read_bytes() == (src / "blogrr_plans_3d_cpu" / f"{cid}{s}").read_bytes()
    plans = json.loads((dst / "blogrr_plans.json").read_text())
    patch2d = plans["configurations"]["2d_cpu"]["patch_size"]
    for cid in manifest["cases"][:2]:  # unpacked: equal arrays, chunked for the 2d patch as preprocessing would
        a = blosc2.open(str(dst / "blogrr_plans_3d_cpu" / f"{cid}.b2nd"), mode="r")
        b = blosc2.open(str(dst / "blogrr_plans_2d_cpu" / f"{cid}.b2nd"), mode="r")
        assert np.array_equal(a[:], b[:])
        assert tuple(b.chunks) == tuple(comp_blosc2_params(b.shape, patch2d, 4)[1])
        assert tuple(b.chunks) != tuple(a.chunks)
    for cid in manifest["test"]:  # test cases on the stored grid, with their label resampled there
        seg = blosc2.open(str(dst / "gpu_check_test" / "blogrr_plans_3d_cpu" / f"{cid}_seg.b2nd"), mode="r")[:]
        assert 0 < (seg[2] > 0).sum() and ((seg[2] > 0) <= (seg[0] > 0)).all()
        assert (dst / "gpu_check_test" / "blogrr_plans_2d_cpu" / f"{cid}.pkl").is_file()


@pytest.mark.slow  # ~20-50 s: every part at toy sizes in a fresh process
def test_allow_cpu_runs_every_part_without_simpleitk_or_deepmriprep(carried, tmp_path):
    from blogrr_nnu.sliding_window import inference_tile_size, tile_count

    root, _ = carried
    absent = tmp_path / "absent" / "deepmriprep"
    absent.mkdir(parents=True)
    (absent / "__init__.py").write_text("raise ImportError('deepmriprep is not installed (as on the GPU machine)')\n")
    env = {**os.environ, "BLOGRR_preprocessed": str(root / "carry"), "BLOGRR_raw": str(tmp_path / "no_raw"),
           "PYTHONPATH": os.pathsep.join([str(REPO / "scripts" / "gpu_check_stubs"), str(tmp_path / "absent")])}
    report, raw = tmp_path / "report.md", tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "blogrr_nnu.benchmarks.speed.gpu_check", "-d", DATASET, "-c", "3d_cpu",
                           "--allow_cpu", "--iters", "3", "--rounds", "2", "-o", str(report), "--json", str(raw)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = report.read_text()
    assert proc.stdout.strip().endswith(text.strip().splitlines()[-1])  # the report is printed too
    assert "| SimpleITK | import stand-in" in text
    res = json.loads(raw.read_text())["results"]

    a = res["A 3d_cpu"]  # (A): 3 iterations a side in rounds of 2 and 1, ratio = the timed quotient
    assert [[n for n, _ in a["blocks"][s]] for s in ("ours", "stock")] == [[2, 1], [2, 1]]
    per = {s: sum(t for _, t in b) / sum(n for n, _ in b) for s, b in a["blocks"].items()}
    assert a["per_iteration"] == pytest.approx(per) and a["ratio"] == pytest.approx(per["ours"] / per["stock"])
    row = re.search(r"\| ours \| 3 \| ([0-9.]+) \|.*\| n/a \(CPU\) \|", text)
    assert row and float(row.group(1)) == pytest.approx(per["ours"], abs=1e-3)
    assert f"| 3d_cpu: our iteration <= 1.15 x stock | {a['ratio']:.3f} " in text
    assert a["peak_bytes"] == {"ours": None, "stock": None} and a["precision"] is None
    assert "| 3d_cpu: peak memory within the plans' 8 GiB | n/a (CPU) |" in text

    d = res["D 3d_cpu"]  # (D): tiles as the sliding window places them, ratios against the stock mean
    plans = json.loads((root / "carry" / DATASET / "blogrr_plans.json").read_text())["configurations"]["3d_cpu"]
    shape = d["methods"]["ours_patch"]["shapes"][0][1:]
    assert d["methods"]["ours_patch"]["tiles"] == [tile_count(shape, plans["patch_size"])]
    whole = inference_tile_size(shape, plans["patch_size"], plans["architecture"]["arch_kwargs"]["strides"])
    assert d["methods"]["ours_whole"]["tiles"] == [tile_count(shape, whole)]
    stock = np.mean(d["methods"]["stock"]["seconds"])
    for tag in ("ours_patch", "ours_patch_amp", "ours_whole"):
        assert d["methods"][tag]["ratio"] == pytest.approx(np.mean(d["methods"][tag]["seconds"]) / stock)
    assert d["diffs"]["ours_patch_amp"]["max"] == 0.0  # autocast is off on CPU: the same fp32 windows
    assert 0 < d["diffs"]["stock"]["max"]  # stock's fp16 buffer

    from blogrr_nnu.trainers.base_trainer import default_schedule

    iters_default = default_schedule(plans["blogrr"])[1]
    for key in ("B", "C"):  # (B), (C): one epoch of 2 iterations on fold 0 of the carried subset, 2 test cases
        r = res[key]
        assert r["counts"] == {"healthy_train": 4, "healthy_val": 1, "tumor_train": 4, "tumor_val": 1}
        assert len(r["time_lower"]) == 1 and r["s_per_iter"] == pytest.approx(r["time_lower"][0] / 2)
        assert r["epoch_default_s"] == pytest.approx(iters_default * r["s_per_iter"] + r["time_upper"][0] + r["time_val"][0])
        assert set(r["test"]["dice"]) == {"test_000", "test_001"}
        assert all(0 <= v <= 1 for v in r["test"]["dice"].values())
    assert res["C"]["time_upper"] == [0.0] or res["C"]["time_upper"][0] < 0.05  # CGC has no upper loop
    for title in ("(A) 3d_cpu", "(D) 3d_cpu", "(B) BLOGRR 3d_cpu", "(C) CGC 3d_cpu", "### Targets"):
        assert title in text


def test_precision_effects_measure_reduced_precision_not_noise():
    from blogrr_nnu.benchmarks.speed.gpu_parts import precision_effects

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 8, 3, padding=1), torch.nn.LeakyReLU(), torch.nn.Conv3d(8, 2, 3, padding=1))
    x = torch.randn(2, 2, 12, 14, 12)
    brain = torch.ones(2, 1, 12, 14, 12, dtype=torch.bool)
    import dataclasses
    import json
    from pathlib import Path

    from blogrr_nnu.plans_block import configuration_block

    plans = json.loads((Path(__file__).parent / "data" / "pinned" / "plans.json").read_text())
    blogrr = dataclasses.replace(configuration_block(plans, "3d_cpu"), anomaly_sigma_voxels=(1.0,) * 3,
                                 anomaly_kernel_radius_voxels=(2,) * 3, sigmoid_steepness=5.0)
    out = precision_effects(net, x, brain, blogrr, "cpu", torch.bfloat16)
    assert set(out) == {"bf16 losses under autocast", "bf16 forward, losses in fp32 (the trainer)"}  # no TF32 on CPU
    ours = out["bf16 forward, losses in fp32 (the trainer)"]
    with torch.no_grad():
        scale = float(net(x).abs().max())
    assert 0 < ours["rec_max_abs"] < 0.05 * scale  # bf16 rounding: present, and small
    assert 0 < ours["amap_max_abs"] and ours["mse_rel"] < 0.05 and ours["flipped_fraction"] < 0.05
    assert out["bf16 losses under autocast"]["rec_max_abs"] == ours["rec_max_abs"]  # the same forward pass
