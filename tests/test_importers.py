"""Importer parts on tiny files: BraTS namings and labels, healthy patterns and resampling, reports, the split."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from blogrr_nnu.importers.assemble import split_tumour_cases
from blogrr_nnu.importers.brats import CHANNELS, find_brats_cases, match_brats_file, whole_tumour
from blogrr_nnu.importers.files import ConversionError, SourceCase
from blogrr_nnu.importers.healthy import (PRESETS, find_healthy_cases, parse_channel_patterns, pattern_regex,
                                          write_healthy_case)
from blogrr_nnu.importers.reports import load_reports


def _nii(path, data, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def test_both_brats_namings_map_to_the_same_channels():
    assert match_brats_file("BraTS20_Training_001_t1ce.nii.gz") == ("brats2021", "BraTS20_Training_001", "T1ce")
    assert match_brats_file("BraTS2021_00000_flair.nii.gz") == ("brats2021", "BraTS2021_00000", "FLAIR")
    assert match_brats_file("BraTS-GLI-00000-000-t2f.nii.gz") == ("brats2023", "BraTS-GLI-00000-000", "FLAIR")
    assert match_brats_file("BraTS-MEN-00004-000-t1n.nii") == ("brats2023", "BraTS-MEN-00004-000", "T1")
    assert match_brats_file("BraTS-GLI-00000-000-seg.nii.gz")[2] == "seg"
    assert match_brats_file("notes.txt") is None and match_brats_file("IXI002-Guys-0828-T1.nii.gz") is None


def test_find_brats_cases_and_missing_channel(tmp_path):
    a = np.zeros((4, 4, 4), np.float32)
    for m in ("t1", "t1ce", "t2", "flair", "seg"):
        _nii(tmp_path / "d" / "BraTS20_Training_001" / f"BraTS20_Training_001_{m}.nii.gz", a)
    for m in ("t1n", "t1c", "t2w", "t2f"):  # no -seg: a case without ground truth is fine
        _nii(tmp_path / "d" / "sub" / "BraTS-GLI-00001-000" / f"BraTS-GLI-00001-000-{m}.nii.gz", a)
    cases = find_brats_cases(tmp_path / "d")
    assert [c.case_id for c in cases] == ["BraTS-GLI-00001-000", "BraTS20_Training_001"]
    assert list(cases[0].images) == list(CHANNELS) and cases[0].label is None
    assert cases[1].images["T1ce"].name == "BraTS20_Training_001_t1ce.nii.gz" and cases[1].label is not None
    (tmp_path / "d" / "sub" / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t2w.nii.gz").unlink()
    with pytest.raises(ConversionError, match="case 'BraTS-GLI-00001-000' lacks T2; add the file"):
        find_brats_cases(tmp_path / "d")
    _nii(tmp_path / "e" / "scan.nii.gz", a)
    with pytest.raises(ConversionError, match="no BraTS file found"):
        find_brats_cases(tmp_path / "e")


def test_whole_tumour_merges_sub_regions_and_rejects_other_labels(tmp_path):
    seg = np.zeros((5, 5, 5), np.float32)
    seg[1, 1, 1], seg[2, 2, 2], seg[3, 3, 3] = 1, 2, 4
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    out = whole_tumour(_nii(tmp_path / "s.nii.gz", seg, affine))
    data = np.asarray(out.dataobj)
    assert data.dtype == np.uint8 and int(data.sum()) == 3 and np.array_equal(out.affine, affine)
    seg[0, 0, 0] = 5
    with pytest.raises(ConversionError, match=r"values 0, 1, 2, 4, 5 are not BraTS labels"):
        whole_tumour(_nii(tmp_path / "t.nii.gz", seg))


def test_patterns_presets_and_incomplete_cases(tmp_path):
    assert parse_channel_patterns(["T1={case}-T1.nii.gz", "T2 = {case}-T2.nii.gz"]) == {
        "T1": "{case}-T1.nii.gz", "T2": "{case}-T2.nii.gz"}
    for bad in (["T1"], ["T1=x.nii.gz"], ["T1={case}.nii.gz", "T1={case}_b.nii.gz"]):
        with pytest.raises(ConversionError):
            parse_channel_patterns(bad)
    rx = pattern_regex(PRESETS["hcp"]["T2"])
    assert rx.match("100307/T1w/T2w_acpc_dc_restore_brain.nii.gz")["case"] == "100307"
    assert rx.match("100307/T1w/T1w_acpc_dc_restore_brain.nii.gz") is None
    assert pattern_regex("{case}/*_{case}.nii.gz").match("s1/anat_s1.nii.gz") and \
        not pattern_regex("{case}/*_{case}.nii.gz").match("s1/anat_s2.nii.gz")
    a = np.ones((3, 3, 3), np.float32)
    for f in ("IXI-T1/IXI002-Guys-0828-T1", "IXI-T2/IXI002-Guys-0828-T2", "IXI-T1/IXI012-HH-1211-T1"):
        _nii(tmp_path / f"{f}.nii.gz", a)  # IXI's tarballs unpacked one folder per contrast
    with pytest.raises(ConversionError, match="IXI012-HH-1211-T2.nii.gz: healthy case 'IXI012-HH-1211' lacks T2"):
        find_healthy_cases(tmp_path, {"T1": "{case}-T1.nii.gz", "T2": "{case}-T2.nii.gz"})
    cases = find_healthy_cases(tmp_path, {"T1": "{case}-T1.nii.gz", "T2": "{case}-T2.nii.gz"}, skip_incomplete=True)
    assert [c.case_id for c in cases] == ["IXI002-Guys-0828"] and list(cases[0].images) == ["T1", "T2"]
    assert cases[0].images["T2"] == tmp_path / "IXI-T2" / "IXI002-Guys-0828-T2.nii.gz"


def test_healthy_channels_resampled_onto_the_first_grid(tmp_path):
    """IXI-like: T1 on one grid, T2 on a coarser, shifted one; a world-space cube stays where it is."""
    t1 = np.zeros((20, 20, 20), np.float32)
    t1[5:15, 5:15, 5:15] = 100
    t2 = np.zeros((10, 10, 10), np.float32)
    t2[2:8, 2:8, 2:8] = 50  # 2 mm voxels: world 4..16 mm
    aff2 = np.diag([2.0, 2.0, 2.0, 1.0])
    case = SourceCase("h", {"T1": _nii(tmp_path / "h-T1.nii.gz", t1), "T2": _nii(tmp_path / "h-T2.nii.gz", t2, aff2)})
    outs = [tmp_path / "o0.nii.gz", tmp_path / "o1.nii.gz"]
    with pytest.raises(ConversionError, match="not on the grid of h-T1.nii.gz; pass --resample_healthy"):
        write_healthy_case(case, outs, brain_extractor=object())
    write_healthy_case(case, outs, resample=True)
    o2 = nib.load(str(outs[1]))
    assert o2.shape == (20, 20, 20) and np.allclose(o2.affine, np.eye(4))
    assert np.asarray(o2.dataobj)[10, 10, 10] == pytest.approx(50) and np.asarray(o2.dataobj)[1, 1, 1] == 0


def test_reports_from_folder_csv_and_json(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "c1.txt").write_text("Left frontal mass.", encoding="utf-8")
    assert load_reports(tmp_path / "r") == {"c1": "Left frontal mass."}
    (tmp_path / "r.csv").write_text('subject,notes,Report\nc1,x,"Left frontal mass, 3 cm."\nc2,y,Right temporal.\n',
                                    encoding="utf-8")
    assert load_reports(tmp_path / "r.csv") == {"c1": "Left frontal mass, 3 cm.", "c2": "Right temporal."}
    (tmp_path / "a.json").write_text(json.dumps({"c1": "A"}))
    (tmp_path / "b.json").write_text(json.dumps([{"case_id": "c1", "report": "A"}, {"case_id": "c2", "report": "B"}]))
    assert load_reports(tmp_path / "a.json") == {"c1": "A"} and load_reports(tmp_path / "b.json")["c2"] == "B"
    (tmp_path / "d.csv").write_text("case_id,report\nc1,A\nc1,B\n")
    with pytest.raises(ConversionError, match="two reports for case 'c1'"):
        load_reports(tmp_path / "d.csv")
    with pytest.raises(ConversionError, match="reports not found"):
        load_reports(tmp_path / "missing.csv")


def test_split_is_seeded_and_handles_cases_without_reports():
    ids = [f"c{i}" for i in range(10)]
    reports = {c: "text" for c in ids[:8]}
    with pytest.raises(ConversionError, match="2 tumour case\\(s\\) have no report \\(e.g. c8, c9\\)"):
        split_tumour_cases(ids, reports)
    train, test, skipped = split_tumour_cases(ids, reports, test_fraction=0.25, missing_reports="test", seed=3)
    assert len(train) == 6 and {"c8", "c9"} <= set(test) and len(test) == 4 and not skipped
    assert split_tumour_cases(ids, reports, test_fraction=0.25, missing_reports="test", seed=3) == (train, test, [])
    other = split_tumour_cases(ids, reports, test_fraction=0.25, missing_reports="test", seed=4)
    assert other[1] != test
    train, test, skipped = split_tumour_cases(ids, reports, test_cases=["c0"], missing_reports="skip")
    assert test == ["c0"] and skipped == ["c8", "c9"] and "c8" not in train and len(train) == 7
    with pytest.raises(ConversionError, match="--test_cases nope: not among"):
        split_tumour_cases(ids, reports, test_cases=["nope"], missing_reports="skip")
