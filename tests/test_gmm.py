"""GMM pseudo-labels against a healthy intensity model, and report + image fusion."""
from __future__ import annotations

import numpy as np
import pytest

from blogrr_nnu.gmm import (
    HealthyModel,
    atypicality_map,
    brain_samples,
    ellipsoid_volume_ml,
    fit_healthy_model,
    fuse_report_and_image,
    gmm_pseudo_label,
)

SHAPE = (32, 32, 32)
SPACING = (2.0, 2.0, 2.0)


def _grid():
    return np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), 0).astype(float)


def _case(rng, lesion_center=None, lesion_radius=5.0):
    """Two channels of three tissues (CSF-, GM-, WM-like shells of an ellipsoid brain), optional lesion."""
    g = _grid()
    r = np.sqrt(((g - 15.5) ** 2 / np.array([14, 14, 13.0])[:, None, None, None] ** 2).sum(0))
    brain = r < 1
    tissue = np.select([r < 0.35, r < 0.7, r < 1], [0, 1, 2], 0)  # inner CSF, WM, outer GM
    means = np.array([[-2.0, 1.5], [1.0, -0.5], [-0.3, 0.4]])  # (T1, FLAIR) per tissue, z units
    img = means[tissue].transpose(3, 0, 1, 2) + 0.25 * rng.standard_normal((2, *SHAPE))
    lesion = np.zeros(SHAPE, bool)
    if lesion_center is not None:
        lesion = (np.sqrt(((g - np.array(lesion_center)[:, None, None, None]) ** 2).sum(0)) <= lesion_radius) & brain
        img[0][lesion] = -1.0 + 0.25 * rng.standard_normal(lesion.sum())
        img[1][lesion] = 4.0 + 0.3 * rng.standard_normal(lesion.sum())
    img[:, ~brain] = 0
    return img.astype(np.float32), brain, lesion


@pytest.fixture(scope="module")
def healthy_model():
    rng = np.random.default_rng(0)
    samples = np.concatenate([brain_samples(*_case(rng)[:2], n=3000, seed=i) for i in range(4)])
    return fit_healthy_model(samples, seed=0)


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def test_gmm_picks_the_bright_lesion(healthy_model):
    img, brain, lesion = _case(np.random.default_rng(7), lesion_center=(20, 12, 16), lesion_radius=6)
    mask, info = gmm_pseudo_label(img, brain, healthy_model, SPACING, seed=0)
    assert _dice(mask > 0, lesion) >= 0.8, info
    assert info["tumour_components"], info
    # the chosen components are the atypical ones, the others are mostly typical
    fracs = [c["atypical_fraction"] for c in info["components"]]
    assert max(fracs) >= 0.5 and sorted(fracs)[-len(info["tumour_components"]) - 1] < 0.5


def test_gmm_flags_almost_nothing_on_a_healthy_case(healthy_model):
    img, brain, _ = _case(np.random.default_rng(8))
    mask, info = gmm_pseudo_label(img, brain, healthy_model, SPACING, seed=0)
    # documented bound: below 1 % of the brain (here: nothing at all)
    assert mask.sum() < 0.01 * brain.sum(), info


def test_healthy_model_round_trips_and_marks_the_quantile(healthy_model):
    again = HealthyModel.from_dict(healthy_model.to_dict())
    x = np.random.default_rng(1).standard_normal((50, 2))
    np.testing.assert_allclose(again.log_likelihood(x), healthy_model.log_likelihood(x))
    rng = np.random.default_rng(2)
    fresh = brain_samples(*_case(rng)[:2], n=4000, seed=9)
    frac = float((healthy_model.log_likelihood(fresh) < healthy_model.loglik_threshold).mean())
    assert 0.0 <= frac < 0.03  # about the 1 % quantile on new healthy voxels


def test_fused_label_stays_inside_the_report_region_and_matches_the_reported_volume(healthy_model):
    from scipy import ndimage

    img, brain, lesion = _case(np.random.default_rng(7), lesion_center=(20, 12, 16), lesion_radius=6)
    gmm, _ = gmm_pseudo_label(img, brain, healthy_model, SPACING, seed=0)
    atyp = atypicality_map(img, brain, healthy_model)
    g = _grid()
    region = (g[0] >= 17) & brain  # a "lobe" that holds most, not all, of the lesion (centre x = 20, r = 6)
    true_ml = lesion.sum() * 8 / 1000.0
    # no margin: never outside the region itself, at most the reported volume
    fused, info = fuse_report_and_image(region, gmm, atyp, SPACING, report_volume_ml=0.8 * true_ml, margin_mm=0,
                                        brain=brain)
    assert not np.any(fused.astype(bool) & ~region)
    assert info["volume_ml"] == pytest.approx(0.8 * true_ml, abs=0.008)
    assert np.all(lesion[fused > 0])  # the most atypical voxels are lesion voxels
    # a 6 mm margin: never outside the region grown by 6 mm, and the whole lesion is recovered
    grown = ndimage.distance_transform_edt(~region, sampling=SPACING) <= 6.0
    fused6, _ = fuse_report_and_image(region, gmm, atyp, SPACING, report_volume_ml=true_ml, margin_mm=6,
                                      brain=brain)
    assert not np.any(fused6.astype(bool) & ~grown)
    clipped, _ = fuse_report_and_image(region, gmm, atyp, SPACING, report_volume_ml=true_ml, margin_mm=0, brain=brain)
    assert _dice(fused6 > 0, lesion) >= 0.9 and _dice(fused6 > 0, lesion) > _dice(clipped > 0, lesion) + 0.05
    # without a stated size: every abnormal-looking voxel inside the region
    fused2, _ = fuse_report_and_image(region, gmm, atyp, SPACING, margin_mm=0)
    np.testing.assert_array_equal(fused2 > 0, ((atyp > 0) | (gmm > 0)) & region)
    # a region where nothing looks abnormal: the image adds nothing, the report region is kept
    far = (g[0] < 8) & brain
    fused3, info3 = fuse_report_and_image(far, gmm, atyp, SPACING, report_volume_ml=true_ml, margin_mm=0)
    np.testing.assert_array_equal(fused3 > 0, far)
    assert info3["source"].startswith("report region")
    # no report: the GMM label, said so
    fused4, info4 = fuse_report_and_image(None, gmm, atyp, SPACING)
    np.testing.assert_array_equal(fused4, gmm)
    assert "no report" in info4["source"]


def test_ellipsoid_volume_of_reported_diameters():
    assert ellipsoid_volume_ml((40,)) == pytest.approx(np.pi / 6 * 64.0)  # 4 cm sphere: 33.5 ml
    assert ellipsoid_volume_ml((69, 48, 51)) == pytest.approx(np.pi / 6 * 69 * 48 * 51 / 1000)
    assert ellipsoid_volume_ml(None) is None
