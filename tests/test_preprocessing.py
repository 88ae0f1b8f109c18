"""plan_and_preprocess on template-made cases: round trip to native space, idempotence, atomicity."""
from __future__ import annotations

import json
import os
import pickle

import blosc2
import numpy as np
import pytest

from blogrr_nnu.commands import plan_and_preprocess as cli
from blogrr_nnu.image_io import read_image
from blogrr_nnu.planners.api import load_plans, plan_and_preprocess
from blogrr_nnu.planners.preprocessing import NO_LABEL, SEG_CHANNELS, is_done
from blogrr_nnu.registration import dice
from blogrr_nnu.spatial import CaseSpace
from template_cases import write_template_dataset

CONFIG = "3d_cpu"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("pp")
    raw = write_template_dataset(root / "raw")
    out = plan_and_preprocess(raw.name, [CONFIG], raw=str(root / "raw"), preprocessed=str(root / "pre"),
                              num_processes=2)
    return raw, out


def _load(folder, case_id):
    data = blosc2.open(str(folder / f"{case_id}.b2nd"), mode="r")[:]
    seg = blosc2.open(str(folder / f"{case_id}_seg.b2nd"), mode="r")[:]
    with open(folder / f"{case_id}.pkl", "rb") as fh:
        props = pickle.load(fh)
    return data, seg, props


def test_outputs_and_fingerprint(prepared):
    raw, out = prepared
    plans = load_plans(out)
    fp = json.loads((out / "dataset_fingerprint.json").read_text())
    # 3 healthy + 2 tumour; the test case (with its label) is never read by planning or preprocessing
    assert len(fp["spacings"]) == 5 and len(fp["cases"]) == 5
    assert not (out / "registration" / "test_000.json").exists()
    assert fp["registration_quality"]["brain_dice_min"] >= 0.85
    folder = out / plans["configurations"][CONFIG]["data_identifier"]
    ids = sorted(p.name[:-4] for p in folder.glob("*.pkl"))
    assert ids == ["healthy_000", "healthy_001", "healthy_002", "tumor_000", "tumor_001"]
    assert not (folder / ".tmp").exists()


def test_label_round_trip_to_native(prepared):
    raw, out = prepared
    plans = load_plans(out)
    folder = out / plans["configurations"][CONFIG]["data_identifier"]
    for cid, lab_dir in (("tumor_000", "labelsTrTumor"), ("tumor_001", "labelsTrTumor")):
        _, seg, props = _load(folder, cid)
        space = CaseSpace.from_dict(props["case_space"])
        native, geo = read_image(raw / lab_dir / f"{cid}.nii.gz")
        back = space.mask_to_native(seg[SEG_CHANNELS.index("label")])
        assert back.shape == native.shape
        assert dice(back > 0, native > 0) >= 0.95, cid


def test_arrays_are_normalised_and_labelled(prepared):
    _, out = prepared
    plans = load_plans(out)
    folder = out / plans["configurations"][CONFIG]["data_identifier"]
    data, seg, props = _load(folder, "healthy_000")
    brain = seg[0] > 0
    assert data.shape[0] == 2 and data.dtype == np.float32 and seg.shape[0] == len(SEG_CHANNELS)
    assert data.shape[1:] == tuple(props["case_space"]["bbox"][i][1] - props["case_space"]["bbox"][i][0]
                                   for i in plans["transpose_forward"])
    for c in range(2):
        vals = data[c][brain]
        q25, q50, q75 = np.percentile(vals, (25, 50, 75))
        assert abs(q50) < 0.05 and (q75 - q25) / 1.349 == pytest.approx(1.0, abs=0.05)
        assert np.all(data[c][~brain] == 0)
    # healthy: no pseudo-label, no ground truth (-1)
    assert not seg[1].any() and np.all(seg[2] == NO_LABEL) and not props["has_label"]


def test_report_pseudo_label_covers_the_right_frontal_tumour(prepared):
    _, out = prepared
    plans = load_plans(out)
    folder = out / plans["configurations"][CONFIG]["data_identifier"]
    _, seg, props = _load(folder, "tumor_000")
    pseudo, label, brain = seg[1] > 0, seg[2] > 0, seg[0] > 0
    assert props["has_report_pseudo_label"] and label.any()
    assert (pseudo & label).sum() / label.sum() >= 0.8  # the region holds the tumour
    assert not (pseudo & ~brain).any()
    # right hemisphere only: template LPS x < 0. Stored axis 1 is template X.
    space = CaseSpace.from_dict(props["case_space"])
    x_index = np.nonzero(pseudo.any(axis=(0, 2)))[0] + space.bbox[0][0]
    x_mm = space.grid.origin[0] + x_index * space.grid.spacing[0]
    assert x_mm.max() < 5.0


def test_rerun_skips_finished_cases_and_redoes_broken_ones(prepared, tmp_path):
    raw, out = prepared
    plans = load_plans(out)
    folder = out / plans["configurations"][CONFIG]["data_identifier"]
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.pkl")}
    # simulate a kill: one case lost its .pkl (renamed last), and a temp file is left behind
    os.unlink(folder / "healthy_001.pkl")
    (folder / ".tmp").mkdir()
    (folder / ".tmp" / "healthy_001.123.b2nd").write_bytes(b"partial")
    assert not is_done(folder, "healthy_001")
    plan_and_preprocess(raw.name, [CONFIG], raw=str(raw.parent), preprocessed=str(out.parent))
    after = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.pkl")}
    assert set(after) == set(before)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {"healthy_001.pkl"}
    assert not (folder / ".tmp").exists()


def test_invalid_dataset_writes_nothing(tmp_path, capsys):
    raw = write_template_dataset(tmp_path / "raw", n_healthy=1, n_tumor=1, n_test=0)
    (raw / "reportsTr" / "tumor_000.txt").write_text("")
    code = cli.main(["-d", raw.name, "--raw", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "pre"),
                     "-c", CONFIG])
    assert code == 1
    assert "report is empty" in capsys.readouterr().err
    assert not (tmp_path / "pre").exists()


def test_unknown_configuration_is_refused(prepared, capsys):
    raw, out = prepared
    code = cli.main(["-d", raw.name, "--raw", str(raw.parent), "--preprocessed", str(out.parent), "-c", "4d"])
    assert code == 2 and "unknown configuration(s) 4d" in capsys.readouterr().err


def test_second_pass_adds_gmm_and_fused_pseudo_labels(prepared):
    from scipy import ndimage

    from blogrr_nnu.gmm import DEFAULT_FUSION_MARGIN_MM
    from blogrr_nnu.pseudo_labels import MODEL_FILE, add_image_pseudo_labels, quality

    _, out = prepared
    folder = out / load_plans(out)["configurations"][CONFIG]["data_identifier"]
    assert (folder / MODEL_FILE).is_file()
    idx = {n: SEG_CHANNELS.index(n) for n in SEG_CHANNELS}
    for cid in ("tumor_000", "tumor_001"):
        _, seg, props = _load(folder, cid)
        lesion, report, gmm, fused = (seg[idx[n]] > 0 for n in ("label", "pseudo_report", "pseudo_gmm", "pseudo_fused"))
        assert props["image_pseudo_labels"]
        # the bright sphere is what the GMM finds; the fused label stays within the grown report region
        assert dice(gmm, lesion) >= 0.6, (cid, dice(gmm, lesion))
        grown = ndimage.distance_transform_edt(~report, sampling=props["spacing"]) <= DEFAULT_FUSION_MARGIN_MM
        assert fused.any() and not np.any(fused & ~grown)
        assert dice(fused, lesion) > dice(report, lesion)
    for cid in ("healthy_000", "healthy_001"):  # healthy cases: channels present, empty
        _, seg, _ = _load(folder, cid)
        assert seg.shape[0] == len(SEG_CHANNELS) and not seg[idx["pseudo_gmm"]].any()
    # idempotent: a second call skips every case
    assert set(add_image_pseudo_labels(folder, [48, 48, 56]).values()) == {"skipped"}
    # the margin sweep with the default margin reproduces the stored fused labels' Dice; it reads the cases given
    from blogrr_nnu.pseudo_labels import margin_sweep

    sweep = margin_sweep(folder, ["tumor_000", "tumor_001"], [0.0, DEFAULT_FUSION_MARGIN_MM])
    stored = [dice(_load(folder, c)[1][idx["pseudo_fused"]] > 0, _load(folder, c)[1][idx["label"]] > 0)
              for c in ("tumor_000", "tumor_001")]
    assert sweep["mean_dice"][1] == pytest.approx(np.mean(stored), abs=1e-12)
    assert [r["case_id"] for r in sweep["cases"]] == ["tumor_000", "tumor_001"]
    assert sweep["best_margin"] in (0.0, DEFAULT_FUSION_MARGIN_MM)
    q = quality(folder)
    assert q["summary"]["fused"]["n"] == 2 and q["summary"]["fused"]["mean"] > q["summary"]["report"]["mean"]
