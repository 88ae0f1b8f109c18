"""Tests of the demo phantom (blogrr_nnu.phantom) and blogrr_make_demo_dataset, on tiny 4 mm datasets."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from blogrr_nnu.atlas import hammers_regions, load_hammers
from blogrr_nnu.commands.make_demo_dataset import main
from blogrr_nnu.image_io import Geometry, read_geometry, read_image, write_image
from blogrr_nnu.phantom.anatomy import SubjectSpec, subject_transform, warp_template
from blogrr_nnu.phantom.baseline import flair_threshold_dice
from blogrr_nnu.phantom.dataset import make_demo_dataset
from blogrr_nnu.phantom.template import smoothing_for_spacing, template_model

SPACING = 4.0
SEED = 3
COUNTS = dict(n_healthy=2, n_tumor=2, n_test=1)
# Documented whole-tumour volume range (docs/demo_dataset.md), in ml.
LESION_ML = (3.0, 250.0)
TUMOR_DIRS = (("imagesTrTumor", "labelsTrTumor", "reportsTr"), ("imagesTs", "labelsTs", "reportsTs"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The tiny demo dataset, generated with two worker processes."""
    root = tmp_path_factory.mktemp("raw_a")
    return make_demo_dataset(root, spacing=SPACING, seed=SEED, num_workers=2, progress=False, **COUNTS)


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _tumor_cases(folder: Path):
    for img_dir, lab_dir, rep_dir in TUMOR_DIRS:
        for lab in sorted((folder / lab_dir).glob("*.nii.gz")):
            cid = lab.name[: -len(".nii.gz")]
            meta = json.loads((folder / "phantom_meta" / f"{cid}.json").read_text())
            yield cid, folder / img_dir, lab, folder / rep_dir / f"{cid}.txt", meta


def _template_labels(points: np.ndarray, spec: SubjectSpec) -> np.ndarray:
    """Hammers label (nearest voxel) at the template image of native ``points`` (N, 3)."""
    hammers, hgeo = load_hammers()
    tr = subject_transform(spec)
    q = np.array([tr.TransformPoint(tuple(float(v) for v in p)) for p in points])
    a = hgeo.affine_lps()
    idx = np.round(np.linalg.solve(a[:3, :3], (q - a[:3, 3]).T).T).astype(int)
    inside = np.all((idx >= 0) & (idx < np.array(hgeo.shape)), axis=1)
    out = np.zeros(len(points), np.uint8)
    out[inside] = hammers[tuple(idx[inside].T)]
    return out


def _voxel_points(mask: np.ndarray, geo: Geometry) -> np.ndarray:
    a = geo.affine_lps()
    return np.argwhere(mask) @ a[:3, :3].T + a[:3, 3]


# ------------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_byte_identical_files(demo, tmp_path):
    again = make_demo_dataset(tmp_path, spacing=SPACING, seed=SEED, num_workers=1, progress=False, **COUNTS)
    a, b = _hashes(demo), _hashes(again)
    assert len(a) == 2 * 3 + 3 * (3 + 2) + 5 + 2  # images, labels + reports, meta, dataset.json + montage
    assert a == b


def test_other_seed_gives_other_images(demo, tmp_path):
    other = make_demo_dataset(tmp_path, spacing=SPACING, seed=SEED + 1, n_healthy=1, n_tumor=1, n_test=0,
                              num_workers=1, montage=False, progress=False)
    for rel in ("imagesTr/healthy_000_0002.nii.gz", "imagesTrTumor/tumor_000_0000.nii.gz"):
        x, _ = read_image(demo / rel)
        y, _ = read_image(other / rel)
        assert x.shape != y.shape or not np.array_equal(x, y)
    # A case depends on (seed, role, index) only: fewer cases in the run do not change it.
    subset = make_demo_dataset(tmp_path / "subset", spacing=SPACING, seed=SEED, n_healthy=1, n_tumor=0, n_test=0,
                               num_workers=1, montage=False, progress=False)
    assert (subset / "imagesTr/healthy_000_0001.nii.gz").read_bytes() == \
        (demo / "imagesTr/healthy_000_0001.nii.gz").read_bytes()


# ------------------------------------------------------------------------------------------- layout
def test_layout_dataset_json_and_images(demo):
    ds = json.loads((demo / "dataset.json").read_text(encoding="utf-8"))
    assert ds["channel_names"] == {"0": "T1", "1": "T2", "2": "FLAIR"}
    assert ds["labels"] == {"background": 0, "tumor": 1} and ds["file_ending"] == ".nii.gz"
    assert (ds["numHealthy"], ds["numTumor"], ds["numTest"]) == (2, 2, 1)
    assert ds["phantom"]["seed"] == SEED and ds["phantom"]["spacing"] == SPACING
    assert "research" in ds["licence"]
    assert len(list((demo / "imagesTr").glob("*.nii.gz"))) == 3 * ds["numHealthy"]
    assert len(list((demo / "imagesTrTumor").glob("*.nii.gz"))) == 3 * ds["numTumor"]
    assert len(list((demo / "imagesTs").glob("*.nii.gz"))) == 3 * ds["numTest"]
    assert sorted(p.name for p in demo.iterdir()) == sorted(
        ["dataset.json", "imagesTr", "imagesTrTumor", "labelsTrTumor", "reportsTr", "imagesTs", "labelsTs",
         "reportsTs", "phantom_meta", "montage.png"])
    for cid, img_dir, lab, rep, meta in _tumor_cases(demo):
        geos = [read_geometry(img_dir / f"{cid}_{c:04d}.nii.gz")[0] for c in range(3)]
        assert all(g.close_to(geos[0]) for g in geos) and read_geometry(lab)[0].close_to(geos[0])
        assert geos[0].spacing == (SPACING,) * 3
        chans = [read_image(img_dir / f"{cid}_{c:04d}.nii.gz")[0] for c in range(3)]
        assert all(c.dtype == np.int16 for c in chans)
        brain = chans[0] > 0
        # Skull-stripped: the three channels share one brain mask, 0 outside, and the brain is brain-sized.
        assert all(np.array_equal(c > 0, brain) for c in chans)
        assert 900 < brain.sum() * SPACING ** 3 / 1000 < 1900
        assert rep.read_text(encoding="utf-8").strip()


def test_directions_and_shapes_vary_but_stay_valid(tmp_path):
    from blogrr_nnu.phantom.anatomy import native_geometry
    geos = [native_geometry(np.random.default_rng(i), 2.0) for i in range(30)]
    assert len({g.direction for g in geos}) == 2 and len({g.shape for g in geos}) > 3
    for g in geos:  # the grid is centred on the scanner origin whatever the direction
        centre = g.affine_lps() @ np.append((np.array(g.shape) - 1) / 2.0, 1.0)
        assert np.allclose(centre[:3], 0.0)


# ------------------------------------------------------------------------------------------- labels
def test_label_volumes_binary_and_healthy_clean(demo):
    n = 0
    for cid, img_dir, lab, rep, meta in _tumor_cases(demo):
        gt, geo = read_image(lab)
        assert gt.dtype == np.uint8 and set(np.unique(gt)) == {0, 1}
        ml = gt.sum() * np.prod(geo.spacing) / 1000
        assert LESION_ML[0] <= ml <= LESION_ML[1], (cid, ml)
        assert abs(ml - meta["findings"]["volume_ml"]) < 1e-6
        flair = read_image(img_dir / f"{cid}_0002.nii.gz")[0]
        assert np.all(flair[gt > 0] > 0)  # the lesion is inside the brain
        n += 1
    assert n == 3
    for meta_file in sorted((demo / "phantom_meta").glob("healthy_*.json")):
        meta = json.loads(meta_file.read_text())
        assert meta["lesion"] is None and meta["subject"]["mass_effect"] is None
    assert not list(demo.glob("labels*/healthy_*"))


def test_lesion_centre_lies_in_drawn_region(demo):
    for cid, img_dir, lab, rep, meta in _tumor_cases(demo):
        spec = SubjectSpec.from_meta(meta)
        region = meta["lesion"]["region"]
        centre = np.array(meta["lesion"]["centre"])
        # Centre -> template through the stored transform -> Hammers label of the drawn region.
        assert _template_labels(centre[None], spec)[0] == region, cid
        gt, geo = read_image(lab)
        pts = _voxel_points(gt > 0, geo)
        assert np.linalg.norm(pts.mean(0) - centre) < meta["lesion"]["radius"]
        labels = _template_labels(pts, spec)
        assert np.mean(labels == region) > 0.02  # the drawn region holds part of the lesion
        # The lesion stays in its compartment: never the other hemisphere, cerebellum or brainstem.
        side = hammers_regions()[region].side
        others = {lab for lab, r in hammers_regions().items()
                  if r.side not in (side, "midline") or r.structure in ("cerebellum", "brainstem excluding substantia nigra")}
        assert np.mean(np.isin(labels, list(others))) < 0.03


# ------------------------------------------------------------------------------------------- reports
_SITE = {"frontal": "frontal lobe", "temporal": "temporal lobe", "parietal": "parietal lobe",
         "occipital": "occipital lobe", "insula": "insula", "cingulate": "cingulate gyrus"}


def _test_site(label: int) -> tuple[str, str] | None:
    r = hammers_regions()[label]
    if r.lobe:
        return r.side, _SITE[r.lobe]
    if r.structure in ("caudate nucleus", "putamen", "pallidum", "nucleus accumbens"):
        return r.side, "basal ganglia"
    if r.structure in ("thalamus", "cerebellum"):
        return r.side, r.structure
    if r.structure == "corpus callosum":
        return "midline", "corpus callosum"
    return None  # ventricles, brainstem: not counted


def test_reports_name_side_and_dominant_site_from_atlas_overlap(demo):
    for cid, img_dir, lab, rep, meta in _tumor_cases(demo):
        text = " ".join(rep.read_text(encoding="utf-8").lower().split())
        gt, geo = read_image(lab)
        labels = _template_labels(_voxel_points(gt > 0, geo), SubjectSpec.from_meta(meta))
        counts: dict[tuple[str, str], int] = {}
        sides = {"left": 0, "right": 0}
        for lbl in labels[labels > 0]:
            s = _test_site(int(lbl))
            if s:
                counts[s] = counts.get(s, 0) + 1
                if s[0] in sides:
                    sides[s[0]] += 1
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
        top = ranked[0][1]
        # Near-ties (within 5 % of the lesion) may rank either way after interpolation.
        acceptable = [k for k, c in ranked if c >= top - 0.05 * sum(counts.values())]
        phrases = [site if side == "midline" else f"{side} {site}" for side, site in acceptable]
        assert any(p in text for p in phrases), (cid, phrases, text)
        main_side = max(sides, key=sides.get)
        assert main_side in text
        d = meta["findings"]["diameters_mm"]
        assert any(f"{x:.0f}" in text or f"{x / 10:.1f}" in text for x in d)  # size is reported


def test_report_wording_varies_and_omission_is_recorded():
    from blogrr_nnu.phantom.report_writer import Findings, write_report
    f = Findings(volume_ml=40.0, diameters_mm=(45.0, 38.0, 36.0), sides={"left": 0.9},
                 sites=[("left", "frontal lobe", 0.7), ("left", "insula", 0.2), ("left", "temporal lobe", 0.1)],
                 dominant_label=58, ventricle_side="left", midline_shift_mm=4.0, mass_amplitude=0.4)
    texts, omitted = set(), 0
    for i in range(40):
        text, om = write_report(f, np.random.default_rng(i))
        assert "left frontal lobe" in text.lower()
        assert all(o.split(" ", 1)[1] not in text for o in om)
        texts.add(text)
        omitted += bool(om)
    assert len(texts) == 40 and 3 <= omitted <= 25


# ------------------------------------------------------------------------------------------- contrast
def _means(img: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(img[m].mean()) for k, m in masks.items()}


def test_contrast_ordering_and_lesion_signal(demo):
    model = template_model(smoothing_for_spacing(SPACING))
    checked_core = 0
    for cid, img_dir, lab, rep, meta in _tumor_cases(demo):
        spec = SubjectSpec.from_meta(meta)
        maps, _ = warp_template(model, spec)
        gt = read_image(lab)[0] > 0
        t1, t2, flair = (read_image(img_dir / f"{cid}_{c:04d}.nii.gz")[0].astype(float) for c in range(3))
        far = ~gt & (maps["caps"] < 0.05) & (maps["rim"] < 0.05)
        masks = {"csf": (maps["csf"] > 0.8) & far, "gm": (maps["gm"] > 0.7) & far, "wm": (maps["wm"] > 0.9) & far}
        f, t, s = _means(flair, masks), _means(t2, masks), _means(t1, masks)
        assert f["csf"] < f["wm"] < f["gm"], f  # CSF suppressed, WM darker than GM on FLAIR
        assert t["wm"] < t["gm"] < t["csf"], t  # CSF bright on T2
        assert s["csf"] < s["gm"] < s["wm"], s
        les = meta["lesion"]
        pts = _voxel_points(np.ones(gt.shape, bool), read_image(lab)[1]).reshape(*gt.shape, 3)
        dist = np.linalg.norm(pts - np.array(les["centre"]), axis=-1)
        oedema = gt & (dist > 1.3 * les["core_fraction"] * les["radius"])
        if oedema.sum() >= 5:
            assert flair[oedema].mean() > f["wm"] and t2[oedema].mean() > t["wm"]
        core = gt & (dist < 0.35 * les["core_fraction"] * les["radius"])
        if les["necrotic"] and core.any():
            assert t1[core].mean() < 0.8 * s["wm"]
            checked_core += 1
    assert checked_core >= 1


def test_flair_threshold_baseline_on_known_data(tmp_path):
    geo = Geometry((2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (16, 16, 16))
    rng = np.random.default_rng(0)
    for i in range(2):
        gt = np.zeros(geo.shape, np.uint8)
        gt[4:8 + i, 5:9, 6:10] = 1
        flair = (100 + rng.normal(0, 3, geo.shape) + 60 * gt).astype(np.float32)
        write_image(tmp_path / "imagesTrTumor" / f"tumor_{i:03d}_0002.nii.gz", flair, geo)
        write_image(tmp_path / "labelsTrTumor" / f"tumor_{i:03d}.nii.gz", gt, geo)
    r = flair_threshold_dice(tmp_path)
    assert r["dice"] == pytest.approx(1.0) and r["n_cases"] == 2 and 1.0 < r["threshold"] < 5.0


# ------------------------------------------------------------------------------------------- CLI
def test_cli_writes_dataset_and_refuses_to_overwrite(tmp_path, capsys):
    argv = ["-o", str(tmp_path), "--healthy", "1", "--tumor", "1", "--test", "1", "--spacing", "4", "-q",
            "--no-montage", "-d", "777", "-n", "Tiny", "--seed", "5", "-np", "1"]
    assert main(argv) == 0
    folder = tmp_path / "Dataset777_Tiny"
    ds = json.loads((folder / "dataset.json").read_text())
    for key, d in (("numHealthy", "imagesTr"), ("numTumor", "imagesTrTumor"), ("numTest", "imagesTs")):
        assert len(list((folder / d).glob("*_0000.nii.gz"))) == ds[key] == 1
    assert len(list((folder / "reportsTr").glob("*.txt"))) == 1 and len(list((folder / "labelsTs").iterdir())) == 1
    assert "Dataset777_Tiny" in capsys.readouterr().out
    assert main(argv) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite", "--measure-baseline"]) == 0
    assert "Dice" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    assert main(["--spacing", "0.1", "-o", str(tmp_path)]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
