"""Every verification error of DESIGN.md section 3, triggered on a broken tiny dataset."""
from __future__ import annotations

import json
import os

import numpy as np
import nibabel as nib

from blogrr_nnu.commands import verify_dataset as cli
from blogrr_nnu.image_io import Geometry, write_image
from blogrr_nnu.verify import verify_dataset
from conftest import SHAPE, tiny_geometry, write_tiny_dataset


def _snapshot(folder):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_valid_dataset_has_no_problem(tiny_dataset, capsys):
    result = verify_dataset(tiny_dataset)
    assert result.problems == []
    assert [len(result.cases[r]) for r in ("healthy", "tumor", "test")] == [2, 2, 1]
    assert cli.main(["-d", "990", "--raw", str(tiny_dataset.parent)]) == 0
    assert "OK" in capsys.readouterr().out


def test_every_error_is_reported_with_its_file(tmp_path, capsys):
    folder = write_tiny_dataset(tmp_path / "raw", n_healthy=4, n_tumor=3, n_test=2)
    geo = tiny_geometry()
    brain = np.random.default_rng(1).uniform(0.5, 1.0, SHAPE).astype(np.float32)
    tr, trt, ts = folder / "imagesTr", folder / "imagesTrTumor", folder / "imagesTs"
    # missing channel
    (tr / "healthy_000_0001.nii.gz").unlink()
    # extra channel
    write_image(tr / "healthy_001_0002.nii.gz", brain, geo)
    # geometry mismatch between channels
    write_image(trt / "tumor_000_0001.nii.gz", brain, Geometry((2.0, 2.0, 3.0), geo.origin, geo.direction, SHAPE))
    # geometry mismatch with the label
    write_image(folder / "labelsTrTumor" / "tumor_001.nii.gz", np.zeros(SHAPE, np.uint8) + 1,
                Geometry(geo.spacing, (5.0, 0.0, 0.0), geo.direction, SHAPE))
    # non-3D image
    nib.save(nib.Nifti1Image(brain[..., None].repeat(2, axis=-1), np.eye(4)), str(ts / "test_000_0000.nii.gz"))
    # NaN
    nan_img = brain.copy()
    nan_img[3, 3, 3] = np.nan
    write_image(tr / "healthy_002_0000.nii.gz", nan_img, geo)
    # empty image
    write_image(tr / "healthy_003_0001.nii.gz", np.zeros(SHAPE, np.float32), geo)
    # non-binary label
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:5, 2:5, 2:5] = 2
    write_image(folder / "labelsTs" / "test_001.nii.gz", lab, geo)
    # reports: missing, empty, not UTF-8
    (folder / "reportsTr" / "tumor_000.txt").unlink()
    (folder / "reportsTr" / "tumor_001.txt").write_text("   \n")
    (folder / "reportsTs" / "test_001.txt").write_bytes(b"Mass \xff\xfe in the left lobe")
    # duplicate case id across splits
    for ch in (0, 1):
        write_image(ts / f"healthy_003_{ch:04d}.nii.gz", brain, geo)
    # unknown files
    (tr / "notes.txt").write_text("x")
    (folder / "reportsTr" / "nobody.txt").write_text("orphan report")
    (folder / "extras").mkdir()

    before = _snapshot(folder)
    result = verify_dataset(folder)
    assert _snapshot(folder) == before, "the verifier must not write anything"

    expected = [
        ("healthy_000_0001.nii.gz", "missing channel 1"),
        ("healthy_001_0002.nii.gz", "extra channel 2"),
        ("tumor_000_0001.nii.gz", "geometry differs"),
        ("labelsTrTumor/tumor_001.nii.gz", "label geometry differs"),
        ("test_000_0000.nii.gz", "4D"),
        ("healthy_002_0000.nii.gz", "NaN"),
        ("healthy_003_0001.nii.gz", "empty"),
        ("labelsTs/test_001.nii.gz", "not binary"),
        ("reportsTr/tumor_000.txt", "report missing"),
        ("reportsTr/tumor_001.txt", "report is empty"),
        ("reportsTs/test_001.txt", "not UTF-8"),
        ("imagesTs/healthy_003_0000.nii.gz", "duplicate case id"),
        ("imagesTr/notes.txt", "unknown file"),
        ("reportsTr/nobody.txt", "no matching image"),
        ("extras", "unknown file or folder"),
        ("dataset.json", "numTest is 2 but imagesTs/ holds 3"),
    ]
    lines = [p.line() for p in result.errors]
    for fname, what in expected:
        hits = [ln for ln in lines if fname in ln and what in ln]
        assert hits, f"no error mentions {fname} with {what!r}; got:\n" + "\n".join(lines)
    # Each error line says what to do ("-> fix").
    assert all(" -> " in ln and not ln.endswith("-> ") for ln in lines)
    assert not result.ok

    # The command prints the same report and exits 1.
    assert cli.main(["-d", "Dataset990_Tiny", "--raw", str(folder.parent)]) == 1
    out = capsys.readouterr().out
    assert "reportsTs/test_001.txt" in out and "not UTF-8" in out


def test_parallel_gives_same_problems(tmp_path):
    folder = write_tiny_dataset(tmp_path / "raw", n_healthy=3)
    nan_img = np.random.default_rng(2).uniform(0.5, 1.0, SHAPE).astype(np.float32)
    nan_img[0, 0, 0] = np.inf
    write_image(folder / "imagesTr" / "healthy_001_0000.nii.gz", nan_img, tiny_geometry())
    serial = sorted(p.line() for p in verify_dataset(folder).problems)
    parallel = sorted(p.line() for p in verify_dataset(folder, num_processes=2).problems)
    assert serial == parallel and len(serial) == 1 and "NaN/inf" in serial[0]


def test_not_skull_stripped(tmp_path):
    folder = write_tiny_dataset(tmp_path / "raw", n_healthy=2)
    # A 'head' of 24x28x24 voxels at 6 mm is ~3.5 l of non-zero voxels: not a brain.
    head_geo = Geometry((6.0, 6.0, 6.0), (0.0, 0.0, 0.0), tiny_geometry().direction, SHAPE)
    for ch in (0, 1):
        write_image(folder / "imagesTr" / f"healthy_001_{ch:04d}.nii.gz",
                    np.random.default_rng(ch).uniform(1, 2, SHAPE).astype(np.float32), head_geo)
    errors = [p for p in verify_dataset(folder).errors if "skull-stripped" in p.problem]
    assert {os.path.basename(p.path) for p in errors} == {"healthy_001_0000.nii.gz", "healthy_001_0001.nii.gz"}
    assert all("skull-strip" in p.fix for p in errors)


def test_empty_label_is_only_a_warning(tmp_path):
    folder = write_tiny_dataset(tmp_path / "raw")
    write_image(folder / "labelsTs" / "test_000.nii.gz", np.zeros(SHAPE, np.uint8), tiny_geometry())
    result = verify_dataset(folder)
    assert result.ok
    assert [p.severity for p in result.problems] == ["warning"] and "label is empty" in result.problems[0].problem


def test_bad_dataset_json(tmp_path):
    folder = write_tiny_dataset(tmp_path / "raw")
    dj = json.loads((folder / "dataset.json").read_text())
    del dj["numTumor"]
    (folder / "dataset.json").write_text(json.dumps(dj))
    result = verify_dataset(folder)
    assert len(result.problems) == 1 and "numTumor" in result.problems[0].problem
    (folder / "dataset.json").write_text("{not json")
    assert "not valid UTF-8 JSON" in verify_dataset(folder).problems[0].problem
    (folder / "dataset.json").unlink()
    assert verify_dataset(folder).problems[0].path.endswith("dataset.json")


def test_unknown_dataset_id_exit_code(tmp_path, capsys):
    write_tiny_dataset(tmp_path / "raw")
    assert cli.main(["-d", "123", "--raw", str(tmp_path / "raw")]) == 2
    assert "no dataset matches '123'" in capsys.readouterr().err
