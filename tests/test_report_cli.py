"""blogrr_report_to_mask and blogrr_report_quality, called in-process as ``main(argv)``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blogrr_nnu.atlas import hammers_regions, load_hammers
from blogrr_nnu.commands import report_quality, report_to_mask
from blogrr_nnu.image_io import array_to_sitk, read_image, sitk_to_array
from blogrr_nnu.registration import register_to_template, warp_to_case
from blogrr_nnu.reports.quality import score
from template_cases import write_template_dataset

RIGHT_FRONTAL = "History: headache.\n\nFindings: a 4.1 x 3.2 cm enhancing mass in the right frontal lobe. " \
                "The ventricles are normal."
NO_SITE = "MRI brain. No acute intracranial abnormality. Appearances are within normal limits."


@pytest.fixture
def reports_dir(tmp_path: Path) -> Path:
    d = tmp_path / "reports"
    d.mkdir()
    (d / "case_a.txt").write_text(RIGHT_FRONTAL, encoding="utf-8")
    (d / "case_b.txt").write_text(NO_SITE, encoding="utf-8")
    return d


def _lps_x(mask: np.ndarray, geometry) -> np.ndarray:
    """LPS x (mm) of every non-zero voxel of ``mask``."""
    idx = np.argwhere(mask > 0)
    return (idx @ geometry.affine_lps()[:3, :3].T + geometry.affine_lps()[:3, 3])[:, 0]


def test_right_frontal_mask_and_json(reports_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert report_to_mask.main(["-i", str(reports_dir), "-o", str(out), "-q", "--explain"]) == 0
    mask, geometry = read_image(out / "case_a.nii.gz")
    atlas, atlas_geometry = load_hammers()
    assert mask.dtype == np.uint8 and mask.shape == atlas.shape and geometry.close_to(atlas_geometry)
    assert set(np.unique(mask)) == {0, 1}
    # right hemisphere: LPS x < 0. The atlas's own right frontal labels touch the midline (x = 0, 1.1 %
    # of the voxels) and reach 1 mm past it (0.1 %), so allow one voxel there, and no more.
    x = _lps_x(mask, geometry)
    assert x.max() <= 1.0 and np.mean(x < 0) > 0.98 and np.mean(x > 0) < 0.002 and x.mean() < -20
    regions = hammers_regions()
    labels_in_mask = set(np.unique(atlas[mask > 0]).tolist())
    assert labels_in_mask and all(regions[i].name.startswith("FL ") and regions[i].name.endswith(" R")
                                  for i in labels_in_mask)
    # the mask is exactly the union of the right frontal labels
    assert np.array_equal(mask > 0, np.isin(atlas, sorted(labels_in_mask)))

    account = json.loads((out / "case_a.json").read_text(encoding="utf-8"))
    assert account["case"] == "case_a" and account["mask"] == "case_a.nii.gz"
    assert account["mask_voxels"] == int(mask.sum())
    assert [(s["term"], s["side"]) for s in account["sites"]] == [("frontal", "right")]
    assert account["sides"] == {"frontal": "right"}
    site = account["sites"][0]
    assert RIGHT_FRONTAL[slice(*site["span"])] == "frontal lobe"
    assert RIGHT_FRONTAL[slice(*site["side_span"])] == "right"
    assert site["side_text"] == "right"
    assert account["size_mm"] == [41.0, 32.0]
    assert RIGHT_FRONTAL[slice(*account["findings"][0]["size_span"])] == "4.1 x 3.2 cm"
    ids = [m["id"] for m in account["matched_labels"]]
    assert set(ids) == labels_in_mask
    assert {m["name"] for m in account["matched_labels"]} == {regions[i].name for i in ids}
    assert "FL superior frontal gyrus R" in {m["name"] for m in account["matched_labels"]}
    assert [e["term"] for e in account["excluded"]] == ["ventricles"]

    printed = capsys.readouterr().out
    assert "frontal" in printed and "right from 'right'" in printed and "'frontal lobe'" in printed


def test_no_site_report_writes_json_only(reports_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert report_to_mask.main(["-i", str(reports_dir), "-o", str(out), "-q"]) == 0
    account = json.loads((out / "case_b.json").read_text(encoding="utf-8"))
    assert account["sites"] == [] and account["matched_labels"] == [] and account["mask"] is None
    assert not (out / "case_b.nii.gz").exists()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "case_b.txt" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING") and "no lesion site" in warnings[0]


def test_unreadable_report_is_named_and_skipped(reports_dir: Path, tmp_path: Path, capsys) -> None:
    (reports_dir / "case_c.txt").write_bytes("Masse frontale droite, 3 cm. \xe9t\xe9".encode("latin-1"))
    (reports_dir / "case_d.txt").write_text("  \n", encoding="utf-8")
    out = tmp_path / "out"
    assert report_to_mask.main(["-i", str(reports_dir), "-o", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert any("case_c.txt" in line and "not UTF-8" in line for line in err.splitlines())
    assert any("case_d.txt" in line and "empty" in line for line in err.splitlines())
    assert not (out / "case_c.json").exists() and not (out / "case_d.json").exists()
    assert (out / "case_a.nii.gz").exists() and (out / "case_b.json").exists()


def test_usage_errors(tmp_path: Path) -> None:
    assert report_to_mask.main(["-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 2
    assert report_to_mask.main(["-i", str(tmp_path), "-o", str(tmp_path / "o")]) == 2  # no .txt files
    (tmp_path / "a.txt").write_text(RIGHT_FRONTAL, encoding="utf-8")
    assert report_to_mask.main(["-i", str(tmp_path), "-o", str(tmp_path / "o"), "--dilate_mm", "-1"]) == 2


def test_dilation_grows_the_mask_inside_the_brain(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(RIGHT_FRONTAL, encoding="utf-8")
    assert report_to_mask.main(["-i", str(tmp_path / "a.txt"), "-o", str(tmp_path / "o0"), "-q"]) == 0
    assert report_to_mask.main(["-i", str(tmp_path / "a.txt"), "-o", str(tmp_path / "o5"), "-q",
                                "--dilate_mm", "5"]) == 0
    m0, _ = read_image(tmp_path / "o0" / "a.nii.gz")
    m5, _ = read_image(tmp_path / "o5" / "a.nii.gz")
    atlas, _ = load_hammers()
    assert np.all(m5[m0 > 0] == 1) and m5.sum() > 1.1 * m0.sum() and np.all(atlas[m5 > 0] > 0)


# ------------------------------------------------------------------------------------- quality command
@pytest.fixture(scope="module")
def quality_dataset(tmp_path_factory) -> Path:
    return write_template_dataset(tmp_path_factory.mktemp("raw"), n_healthy=1, n_tumor=2, n_test=1)


def test_quality_right_frontal(quality_dataset: Path, tmp_path: Path, capsys) -> None:
    out_json = tmp_path / "q.json"
    train_only = tmp_path / "train.json"
    assert report_quality.main(["-d", "980", "--raw", str(quality_dataset.parent), "-o", str(train_only), "-q"]) == 0
    # by default only training cases are scored: test labels never guide a choice
    assert {r["case"] for r in json.loads(train_only.read_text())["cases"]} == {"tumor_000", "tumor_001"}
    argv = ["-d", "980", "--raw", str(quality_dataset.parent), "-np", "2", "-o", str(out_json), "-q", "--include_test"]
    assert report_quality.main(argv) == 0
    result = json.loads(out_json.read_text())
    rows = {r["case"]: r for r in result["cases"]}
    assert set(rows) == {"tumor_000", "tumor_001", "test_000"}  # the healthy case has no label/report
    assert result["registration_channel"] == 0 and result["extent"] == "whole_tumour"
    for r in rows.values():
        assert r["coverage"] >= 0.9 and r["registration_dice"] >= 0.9 and not r["no_site"]
        assert r["sites"] == {"frontal": "right"}
        # a lobe is much larger than a 22 mm sphere: Dice low, pseudo-label several times the tumour
        assert 0.1 < r["dice"] < 0.5 and r["volume_ratio"] > 2

    # independent recomputation of one case from the public pieces
    folder = quality_dataset
    mask_dir = tmp_path / "masks"
    assert report_to_mask.main(["-i", str(folder / "reportsTs"), "-o", str(mask_dir), "-q"]) == 0
    template_mask, template_geometry = read_image(mask_dir / "test_000.nii.gz")
    t1, geometry = read_image(folder / "imagesTs" / "test_000_0000.nii.gz")
    flair, _ = read_image(folder / "imagesTs" / "test_000_0001.nii.gz")
    label, _ = read_image(folder / "labelsTs" / "test_000.nii.gz")
    registration = register_to_template(t1, geometry, seed=1)  # the command's default seed
    warped = sitk_to_array(warp_to_case(array_to_sitk(template_mask, template_geometry), geometry,
                                        registration.case_to_template, nearest=True)) > 0
    pseudo = warped & ((t1 != 0) | (flair != 0))
    inter = np.logical_and(pseudo, label > 0).sum()
    expected_dice = 2.0 * inter / (pseudo.sum() + (label > 0).sum())
    assert rows["test_000"]["dice"] == pytest.approx(expected_dice, abs=1e-9)
    assert rows["test_000"]["coverage"] == pytest.approx(inter / (label > 0).sum(), abs=1e-9)
    assert rows["test_000"]["volume_ratio"] == pytest.approx(pseudo.sum() / (label > 0).sum(), abs=1e-9)
    assert rows["test_000"]["registration_dice"] == pytest.approx(registration.brain_dice, abs=1e-9)

    summary = result["summary"]
    assert summary["all"]["n"] == 3 and summary["tumor"]["n"] == 2 and summary["test"]["n"] == 1
    covs = [rows[c]["coverage"] for c in ("tumor_000", "tumor_001")]
    assert summary["tumor"]["coverage"]["mean"] == pytest.approx(np.mean(covs))
    assert summary["tumor"]["coverage"]["std"] == pytest.approx(np.std(covs))
    printed = capsys.readouterr().out
    assert "test_000" in printed and "+-" in printed


def test_quality_wrong_side_and_no_site(quality_dataset: Path, tmp_path: Path, capsys) -> None:
    # Same images, reports changed: the wrong side must be caught (coverage near 0).
    import shutil

    folder = tmp_path / quality_dataset.name
    shutil.copytree(quality_dataset, folder)
    (folder / "reportsTr" / "tumor_000.txt").write_text("A 4 cm mass in the left frontal lobe.", encoding="utf-8")
    (folder / "reportsTr" / "tumor_001.txt").write_text(NO_SITE, encoding="utf-8")
    out_json = tmp_path / "q.json"
    assert report_quality.main(["-d", folder.name, "--raw", str(tmp_path), "-o", str(out_json), "-q",
                                "--include_test"]) == 0
    rows = {r["case"]: r for r in json.loads(out_json.read_text())["cases"]}
    assert rows["tumor_000"]["sites"] == {"frontal": "left"}
    assert rows["tumor_000"]["coverage"] < 0.05 and rows["tumor_000"]["dice"] < 0.05
    assert rows["tumor_001"]["no_site"] and rows["tumor_001"]["coverage"] == 0.0
    assert rows["tumor_001"]["dice"] == 0.0 and rows["tumor_001"]["volume_ratio"] == 0.0
    assert rows["test_000"]["coverage"] >= 0.9  # untouched report
    err = capsys.readouterr().err
    assert any("tumor_001" in line and "no lesion site" in line for line in err.splitlines())


def test_quality_usage_errors(tmp_path: Path) -> None:
    assert report_quality.main(["-d", "123", "--raw", str(tmp_path)]) == 2  # no such dataset
    with pytest.raises(SystemExit) as exit_:  # -np >= 1 is argparse's check: usage line, status 2
        report_quality.main(["-d", "1", "-np", "0", "--raw", str(tmp_path)])
    assert exit_.value.code == 2
    assert report_quality.main(["-d", "1", "--seed", "0", "--raw", str(tmp_path)]) == 2


def test_score_handles_empty_ground_truth() -> None:
    p = np.zeros((4, 4, 4), bool)
    p[0, 0, :2] = True
    s = score(p, np.zeros_like(p), (2.0, 2.0, 2.0))
    assert s["coverage"] is None and s["volume_ratio"] is None and s["dice"] == 0.0 and s["pseudo_ml"] == 0.016


def test_normal_finding_phrase_is_not_a_site(tmp_path: Path) -> None:
    # Found by blogrr_report_quality on the demo phantom: its reports say "Periventricular FLAIR caps,
    # a normal finding."; reading that as a lesion site added both periventricular regions to P.
    (tmp_path / "a.txt").write_text("A mass in the left frontal lobe. Periventricular FLAIR caps, a normal finding.",
                                    encoding="utf-8")
    assert report_to_mask.main(["-i", str(tmp_path / "a.txt"), "-o", str(tmp_path / "o"), "-q"]) == 0
    account = json.loads((tmp_path / "o" / "a.json").read_text(encoding="utf-8"))
    assert account["sides"] == {"frontal": "left"}
    assert [(e["term"], e["reason"]) for e in account["excluded"]] == [("periventricular_white_matter", "normal")]


# ------------------------------------------------------------------------------------- extents and roles
def test_extent_option_and_roles_in_the_json(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Glioma of the right temporal lobe. Oedema affects the right parietal lobe. "
                                    "Ventricular compression affects the right occipital lobe.", encoding="utf-8")
    outs = {}
    for extent in ("lesion", "whole_tumour"):
        out = tmp_path / extent
        assert report_to_mask.main(["-i", str(tmp_path / "a.txt"), "-o", str(out), "-q", "--extent", extent]) == 0
        outs[extent] = (read_image(out / "a.nii.gz")[0], json.loads((out / "a.json").read_text(encoding="utf-8")))
    (lesion, acc_l), (whole, acc_w) = outs["lesion"], outs["whole_tumour"]
    assert acc_l["drawn"] == ["right temporal"] and acc_w["drawn"] == ["right temporal", "right parietal"]
    assert np.all(whole[lesion > 0] == 1) and whole.sum() > lesion.sum() == acc_l["mask_voxels"]
    assert [(s["term"], s["role"]) for s in acc_w["sites"]] == [("temporal", "lesion"), ("parietal", "oedema")]
    assert acc_w["roles"]["mass_effect"] and not acc_w["roles"]["hedged"] and acc_w["extent"] == "whole_tumour"
    assert [f["role"] for f in acc_w["findings"]] == ["lesion", "oedema"]


def test_command_extent_choices_match_the_library() -> None:
    from blogrr_nnu.reports import roles

    for command in (report_to_mask, report_quality):
        assert set(command.EXTENTS) == set(roles.EXTENTS) and command.DEFAULT_EXTENT == roles.DEFAULT_EXTENT


# ------------------------------------------------------------------------------------- --corpus mode
@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    texts = {"a": "Enhancing tumour of the right frontal lobe.",
             "b": "Glioma of the left temporal lobe.",
             "c": NO_SITE,
             "d": "Mass of the left parietal lobe. Oedema reaches the left occipital lobe."}
    for rid, text in texts.items():
        (d / f"{rid}.txt").write_text(text, encoding="utf-8")
    expected = {"a": [{"side": "R", "site": "frontal"}], "b": [{"side": "R", "site": "temporal"}], "c": [],
                "d": [{"side": "L", "site": "parietal"}]}
    (d / "expected.json").write_text(json.dumps(expected), encoding="utf-8")
    expected["d"].append({"side": "L", "site": "occipital"})
    (d / "expected_with_edema.json").write_text(json.dumps(expected), encoding="utf-8")
    return d


def test_corpus_table(small_corpus: Path, tmp_path: Path, capsys) -> None:
    out_json = tmp_path / "c.json"
    assert report_quality.main(["--corpus", str(small_corpus), "-o", str(out_json), "--details"]) == 0
    result = json.loads(out_json.read_text())
    rows = {(r["labels"], r["extent"]): r for r in result["rows"]}
    assert len(rows) == 4
    lesion = rows[("expected.json", "lesion")]
    # a and d exact (1.0), b on the wrong side (0.0, a side error); c is the control and gives no mask
    assert lesion["n_reports"] == 4 and lesion["n_scored"] == 3
    assert lesion["mean_dice"] == pytest.approx(2 / 3)
    assert lesion["side_errors"] == ["b"] and lesion["controls"] == ["c"] and lesion["controls_with_mask"] == []
    whole = rows[("expected_with_edema.json", "whole_tumour")]
    assert whole["mean_dice"] == pytest.approx(2 / 3) and whole["side_errors"] == ["b"]
    # the oedema lobe is outside the lesion extent: below 1 against the lesion + oedema labels
    assert result["reports"]["d"]["expected_with_edema.json"]["lesion"]["dice"] < 0.8
    assert result["reports"]["d"]["expected.json"]["whole_tumour"]["dice"] < 0.8
    printed = capsys.readouterr().out
    assert "| expected.json | lesion | 4 | 0.667 (n=3) | 1 | 1/1 |" in printed
    assert "b expected.json lesion: Dice 0.000 SIDE ERROR" in printed


def test_corpus_usage_errors(small_corpus: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:  # -d and --corpus are mutually exclusive
        report_quality.main(["-d", "501", "--corpus", str(small_corpus)])
    assert exc.value.code == 2
    assert report_quality.main(["-d", "501", "--expected", str(small_corpus / "expected.json")]) == 2
    assert report_quality.main(["--corpus", str(tmp_path / "missing")]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a": [{"side": "left", "site": "frontal"}]}), encoding="utf-8")
    assert report_quality.main(["--corpus", str(small_corpus), "--expected", str(bad)]) == 2
    orphan = tmp_path / "orphan.json"
    orphan.write_text(json.dumps({"zz": []}), encoding="utf-8")
    assert report_quality.main(["--corpus", str(small_corpus), "--expected", str(orphan)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("blogrr_report_quality:")]
    assert len(err) == 5 and "side in" in err[3] and "zz" in err[4]
