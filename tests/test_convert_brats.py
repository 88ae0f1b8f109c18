"""blogrr_convert_brats end to end: BraTS folders (both namings) + IXI-like healthy scans with skull and
other channels -> convert (brain extraction) -> verify -> plan with the common channels -> train -> predict."""
from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from blogrr_nnu.commands.convert_brats import main as convert_main
from blogrr_nnu.commands.plan_and_preprocess import main as plan_main
from blogrr_nnu.commands.predict import main as predict_main
from blogrr_nnu.commands.train import main as train_main
from blogrr_nnu.image_io import read_geometry, read_image
from blogrr_nnu.phantom.brats_layout import write_brats_layout, write_healthy_layout, write_reports_csv
from blogrr_nnu.registration import dice
from blogrr_nnu.verify import verify_dataset

pytestmark = pytest.mark.slow  # about 80 s on 2 cores: brain extraction, registration, one training epoch

SPACING = 4.0
DATASET = "Dataset916_Byod"
TEST_CASE = "BraTS-GLI-00002-000"  # 2023 naming; the other cases (2021 naming) train


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("byod")
    reports = write_brats_layout(root / "brats", 2, spacing=SPACING, naming="2021")
    reports |= write_brats_layout(root / "brats", 1, spacing=SPACING, naming="2023", start=2)
    write_reports_csv(root / "reports.csv", reports)
    write_healthy_layout(root / "healthy", 2, spacing=SPACING)
    write_healthy_layout(root / "healthy_truth", 2, spacing=SPACING, skull=False)  # same brains, no head
    return root


def _convert_args(src, raw, *extra):
    return ["-i", str(src / "brats"), "--healthy", str(src / "healthy"), "--healthy_channel", "T1={case}-T1.nii.gz",
            "T2={case}-T2.nii.gz", "--reports", str(src / "reports.csv"), "-d", "916", "-n", "Byod",
            "--test_cases", TEST_CASE, "-np", "1", "--raw", str(raw), *extra]


@pytest.fixture(scope="module")
def converted(sources, tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    rc = convert_main(_convert_args(sources, raw, "--brain_extraction", "-device", "cpu"))
    return rc, raw / DATASET


def test_sources_are_brats_layouts_with_skull(sources):
    names = sorted(p.name for p in (sources / "brats").rglob("*.nii.gz"))
    assert "BraTS2021_00000_t1ce.nii.gz" in names and f"{TEST_CASE}-t2f.nii.gz" in names and len(names) == 15
    seg21 = np.asarray(nib.load(str(sources / "brats" / "BraTS2021_00000" / "BraTS2021_00000_seg.nii.gz")).dataobj)
    seg23 = np.asarray(nib.load(str(sources / "brats" / TEST_CASE / f"{TEST_CASE}-seg.nii.gz")).dataobj)
    assert set(np.unique(seg21)) == {0, 1, 2, 4} and set(np.unique(seg23)) == {0, 1, 2, 3}
    assert seg21.shape == (60, 60, 39)  # BraTS's 240 x 240 x 155 mm at 4 mm
    head = np.asarray(nib.load(str(sources / "healthy" / "IXI900-Phantom-0000-T1.nii.gz")).dataobj)
    assert np.count_nonzero(head) * SPACING ** 3 / 1000 > 5000  # a whole head with noisy air, not a brain


def test_skull_on_without_brain_extraction_writes_nothing(sources, tmp_path, capsys):
    assert convert_main(_convert_args(sources, tmp_path)) == 1
    err = capsys.readouterr().err
    assert "does not look skull-stripped" in err and "add --brain_extraction" in err
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its hidden temporary folder


def test_converted_dataset_is_valid_and_brain_extracted(converted, sources):
    rc, folder = converted
    assert rc == 0
    dj = json.loads((folder / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    assert dj["channel_names_healthy"] == {"0": "T1", "1": "T2"}
    assert (dj["numHealthy"], dj["numTumor"], dj["numTest"]) == (2, 2, 1)
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [f"{TEST_CASE}_{c:04d}.nii.gz" for c in range(4)]
    assert (folder / "reportsTr" / "BraTS2021_00001.txt").read_text().strip()
    result = verify_dataset(folder)
    assert result.ok
    assert [p.fix for p in result.problems] == [f"plan with `blogrr_plan_and_preprocess -d {DATASET} --channels T1 T2`"]
    # labels: every BraTS sub-region (1, 2, 4 / 1, 2, 3) is tumour, on the image grid
    for cid, sub, lab in (("BraTS2021_00000", "BraTS2021_00000/BraTS2021_00000_seg", "labelsTrTumor"),
                          (TEST_CASE, f"{TEST_CASE}/{TEST_CASE}-seg", "labelsTs")):
        src, _ = read_image(sources / "brats" / f"{sub}.nii.gz")
        out, geo = read_image(folder / lab / f"{cid}.nii.gz")
        assert set(np.unique(out)) == {0, 1} and np.array_equal(out > 0, src > 0)
    # healthy scans: skull and scalp removed; the brain that remains is the phantom's brain
    for i, cid in enumerate(("IXI900-Phantom-0000", "IXI901-Phantom-0001")):
        truth, _ = read_image(sources / "healthy_truth" / f"{cid}-T1.nii.gz")
        for c, name in enumerate(("T1", "T2")):
            got, _ = read_image(folder / "imagesTr" / f"{cid}_{c:04d}.nii.gz")
            assert dice(got > 0, truth > 0) >= 0.95, (cid, name)


def test_plan_train_predict_with_the_common_channels(converted, tmp_path, capsys, monkeypatch):
    rc, folder = converted
    assert rc == 0
    raw, pre, res = str(folder.parent), str(tmp_path / "pre"), str(tmp_path / "res")
    base = ["-d", "916", "-c", "3d_cpu", "-np", "1", "--raw", raw, "--preprocessed", pre]
    assert plan_main(base) == 2
    err = capsys.readouterr().err
    assert "--channels T1 T2" in err and len(err.strip().splitlines()) == 1
    assert plan_main(base + ["--channels", "T1", "T2"]) == 0
    assert "channels: T1 T2\nnote: no FLAIR channel" in capsys.readouterr().out
    plans = json.loads((tmp_path / "pre" / DATASET / "blogrr_plans.json").read_text())
    assert plans["channels"]["names"] == ["T1", "T2"]
    assert plans["channels"]["tumor_indices"] == [0, 2] and plans["channels"]["healthy_indices"] == [0, 1]
    pdj = json.loads((tmp_path / "pre" / DATASET / "dataset.json").read_text())
    assert pdj["channel_names"] == {"0": "T1", "1": "T2"} and "channel_names_healthy" not in pdj

    for key, value in (("BLOGRR_raw", raw), ("BLOGRR_preprocessed", pre), ("BLOGRR_results", res)):
        monkeypatch.setenv(key, value)
    assert train_main(["916", "all", "-c", "3d_cpu", "--epochs", "1", "--iters", "2", "--upper_iters", "1",
                       "-device", "cpu"]) == 0
    out = tmp_path / "pred"
    assert predict_main(["-i", str(folder / "imagesTs"), "-o", str(out), "-d", "916", "-c", "3d_cpu", "-f", "all",
                         "-device", "cpu", "--save_anomaly_maps"]) == 0
    mask, geo = read_image(out / f"{TEST_CASE}.nii.gz")
    ref, _ = read_geometry(folder / "imagesTs" / f"{TEST_CASE}_0000.nii.gz")
    assert geo.close_to(ref) and mask.shape == (60, 60, 39) and set(np.unique(mask)) <= {0, 1}
    info = json.loads((out / "anomaly_maps" / f"{TEST_CASE}.json").read_text())
    assert [p.rsplit("_", 1)[1] for p in info["input_files"]] == ["0000.nii.gz", "0002.nii.gz"]  # T1, T2 only
    # an input without its T2 file (channel 0002) is refused by name; T1ce and FLAIR are not needed
    partial = tmp_path / "partial"
    partial.mkdir()
    for c in (0, 1, 3):
        shutil.copy(folder / "imagesTs" / f"{TEST_CASE}_{c:04d}.nii.gz", partial)
    capsys.readouterr()
    assert predict_main(["-i", str(partial), "-o", str(tmp_path / "p2"), "-d", "916", "-c", "3d_cpu", "-f", "all",
                         "-device", "cpu"]) == 1
    assert "missing channel(s) 0002 (T2)" in capsys.readouterr().err
