"""Phantom cases in foreign layouts: BraTS case folders (both namings) and an IXI-like healthy folder with skull.

What a user brings (docs/data_format.md, "Bringing your own data") rather than our raw format, made
from the phantom so the importers and the 1 mm benchmarks run on known data:

- **BraTS** (:func:`write_brats_layout`): tumour phantoms resampled onto the BraTS grid (240 x 240 x 155 mm,
  at 1 mm the BraTS shape), four channels ``t1, t1ce, t2, flair`` (T1ce: T1 with an enhancing rim) and
  sub-region labels: BraTS 2020/2021 naming with labels {0, 1, 2, 4}, or 2023 naming
  (``-t1n/-t1c/-t2w/-t2f/-seg``) with labels {0, 1, 2, 3}; reports in a CSV keyed by case id.
- **healthy** (:func:`write_healthy_layout`): healthy phantoms as ``<case>-T1.nii.gz``, ``<case>-T2.nii.gz``
  (no FLAIR, as in IXI), on a grid with room for a head, with a synthesised skull and scalp
  (:mod:`blogrr_nnu.phantom.head`) unless ``skull=False``.

Sub-regions are drawn from the whole-tumour label by depth: the deepest part is the necrotic core
(1), a shell around it enhancing tumour (4 or 3), the rest oedema (2).
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from blogrr_nnu.image_io import Geometry, write_image
from blogrr_nnu.phantom.cases import PhantomCase, generate_case
from blogrr_nnu.phantom.contrast import CHANNELS
from blogrr_nnu.phantom.head import HEAD_MARGIN_MM, add_head
from blogrr_nnu.phantom.template import resample_to

logger = logging.getLogger(__name__)

BRATS_FOV_MM = (240.0, 240.0, 155.0)
NAMING_FILES = {  # naming -> (case id format, separator, channel suffixes T1 T1ce T2 FLAIR, label suffix)
    "2021": ("BraTS2021_{i:05d}", "_", ("t1", "t1ce", "t2", "flair"), "seg"),
    "2023": ("BraTS-GLI-{i:05d}-000", "-", ("t1n", "t1c", "t2w", "t2f"), "seg"),
}
ENHANCING = {"2021": 4, "2023": 3}


def brats_geometry(spacing: float, centre: np.ndarray) -> Geometry:
    """The BraTS field of view at ``spacing``, LPS-aligned, centred on ``centre`` (LPS mm)."""
    shape = tuple(int(round(f / spacing)) for f in BRATS_FOV_MM)
    origin = np.asarray(centre, float) - (np.asarray(shape) - 1) / 2.0 * spacing
    return Geometry((float(spacing),) * 3, tuple(origin.tolist()), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), shape)


def brain_centre(case: PhantomCase) -> np.ndarray:
    """Physical centre (LPS mm) of the bounding box of the case's brain."""
    idx = np.argwhere(case.images[0] > 0)
    mid = (idx.min(0) + idx.max(0)) / 2.0
    return (case.geometry.affine_lps() @ np.append(mid, 1.0))[:3]


def sub_regions(label: np.ndarray, spacing: float, enhancing: int) -> np.ndarray:
    """Whole-tumour mask ``(X, Y, Z)`` -> BraTS sub-regions: 1 necrosis, 2 oedema, ``enhancing``.

    Depth below the label's surface decides: deeper than 55 % of the maximum depth is the core; the
    outer 3 mm of the core (at least one voxel) is enhancing, the rest of the core necrotic.
    """
    out = np.zeros(label.shape, np.uint8)
    if not label.any():
        return out
    depth = ndi.distance_transform_edt(label > 0, sampling=spacing)
    out[label > 0] = 2
    core = depth > 0.55 * depth.max()
    inner = ndi.distance_transform_edt(core, sampling=spacing) > max(3.0, spacing)
    out[core] = enhancing
    out[inner] = 1
    return out


def write_brats_layout(folder: str | Path, n_cases: int, *, spacing: float = 1.0, naming: str = "2021",
                       seed: int = 0, start: int = 0) -> dict[str, str]:
    """Write ``n_cases`` tumour phantoms as BraTS case folders below ``folder``.

    Args:
        folder: output folder (created); each case gets ``<folder>/<case>/``.
        n_cases: number of cases (phantom tumour indices ``start .. start + n_cases - 1``).
        spacing: isotropic mm (1 mm gives the BraTS shape 240 x 240 x 155).
        naming: ``"2021"`` (also 2020) or ``"2023"``.
        seed: phantom seed.
        start: first phantom index (so two namings can hold different subjects).

    Returns:
        case id -> report text.
    """
    fmt, sep, suffixes, seg = NAMING_FILES[naming]
    reports = {}
    for i in range(start, start + n_cases):
        case = generate_case(seed, "tumor", i, spacing)
        cid = fmt.format(i=i)
        geo = brats_geometry(spacing, brain_centre(case))
        t1, t2, flair = (resample_to(case.images[c].astype(np.float32), case.geometry, geo)
                         for c in range(len(CHANNELS)))
        whole = resample_to(case.label, case.geometry, geo, sitk.sitkNearestNeighbor) > 0.5
        label = sub_regions(whole, spacing, ENHANCING[naming])
        t1ce = t1 * np.where(label == ENHANCING[naming], 1.8, 1.0)  # contrast uptake of the enhancing rim
        out = Path(folder) / cid
        for suffix, img in zip(suffixes, (t1, t1ce, t2, flair)):
            write_image(out / f"{cid}{sep}{suffix}.nii.gz", np.round(img).astype(np.int16), geo)
        write_image(out / f"{cid}{sep}{seg}.nii.gz", label, geo)
        reports[cid] = case.report
    return reports


def write_healthy_layout(folder: str | Path, n_cases: int, *, spacing: float = 1.0, seed: int = 0,
                         channels: tuple[str, ...] = ("T1", "T2"), skull: bool = True,
                         brats_grid: bool = False) -> list[str]:
    """Write ``n_cases`` healthy phantoms IXI-style, ``<folder>/<case>-<channel>.nii.gz``, with a head.

    Args:
        channels: any of T1, T1ce (a healthy brain enhances nowhere: the T1 image), T2, FLAIR.
        skull: put a synthesised head around the brain (the grid gets room for it).
        brats_grid: skull-stripped on the BraTS grid instead (a four-channel healthy set like BraTS's
            own cases; ``skull`` must be False).

    Returns:
        The case ids (``IXI9NN-Phantom-NNNN``).
    """
    if brats_grid and skull:
        raise ValueError("the BraTS grid has no room for a head: pass skull=False with brats_grid=True")
    ids = []
    margin = int(np.ceil((HEAD_MARGIN_MM + 6.0) / spacing))
    for i in range(n_cases):
        case = generate_case(seed, "healthy", i, spacing)
        g = case.geometry
        idx = [CHANNELS.index("T1" if c == "T1ce" else c) for c in channels]
        if brats_grid:
            geo = brats_geometry(spacing, brain_centre(case))
            images = np.stack([resample_to(case.images[k].astype(np.float32), g, geo) for k in idx])
        else:
            images = np.pad(case.images[idx].astype(np.float32), [(0, 0)] + [(margin, margin)] * 3)
            origin = np.asarray(g.origin) - np.asarray(g.direction).reshape(3, 3) @ np.full(3, margin * spacing)
            geo = Geometry(g.spacing, tuple(origin.tolist()), g.direction, tuple(int(s) + 2 * margin for s in g.shape))
        if skull:
            images = add_head(images, images[0] > 0, geo, list(channels), np.random.default_rng([seed, i]))
        cid = f"IXI{900 + i:03d}-Phantom-{i:04d}"
        for c, name in enumerate(channels):
            write_image(Path(folder) / f"{cid}-{name}.nii.gz", np.round(images[c]).astype(np.int16), geo)
        ids.append(cid)
    return ids


def write_reports_csv(path: str | Path, reports: dict[str, str]) -> Path:
    """Reports as a CSV with columns ``case_id, report``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "report"])
        for cid in sorted(reports):
            w.writerow([cid, reports[cid]])
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m blogrr_nnu.phantom.brats_layout``: write phantom BraTS + IXI-like folders."""
    p = argparse.ArgumentParser(
        prog="python -m blogrr_nnu.phantom.brats_layout",
        description="Write tumour phantoms as BraTS case folders (2021 and/or 2023 naming, 4 channels, sub-region "
        "labels, reports.csv) and healthy phantoms IXI-style (T1, T2, skull and scalp) below OUT.",
        epilog="example:\n  python -m blogrr_nnu.phantom.brats_layout -o /tmp/byod --n_2021 2 --n_2023 1 --n_healthy 3 "
        "--spacing 1\n  (then: blogrr_convert_brats -i /tmp/byod/brats --healthy /tmp/byod/healthy --healthy_channel "
        "T1={case}-T1.nii.gz T2={case}-T2.nii.gz --reports /tmp/byod/reports.csv -d 502 --brain_extraction)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True, help="output folder (brats/, healthy/, reports.csv)")
    p.add_argument("--n_2021", type=int, default=2, help="tumour cases with BraTS 2020/2021 naming (default 2)")
    p.add_argument("--n_2023", type=int, default=1, help="tumour cases with BraTS 2023 naming (default 1)")
    p.add_argument("--n_healthy", type=int, default=3, help="healthy cases (default 3)")
    p.add_argument("--spacing", type=float, default=1.0, help="isotropic mm (default 1: BraTS's 240x240x155)")
    p.add_argument("--no_skull", action="store_true", help="healthy scans skull-stripped instead of with a head")
    p.add_argument("--healthy_channels", nargs="+", default=["T1", "T2"], choices=["T1", "T1ce", "T2", "FLAIR"],
                   help="healthy channels (default T1 T2, as IXI/HCP; T1ce of a healthy brain is its T1)")
    p.add_argument("--healthy_brats_grid", action="store_true",
                   help="healthy scans skull-stripped on the BraTS grid (implies --no_skull)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if min(args.n_2021, args.n_2023, args.n_healthy) < 0 or not 0.5 <= args.spacing <= 8:
        print(f"{p.prog}: counts must be >= 0 and --spacing between 0.5 and 8 mm", file=sys.stderr)
        return 2
    out = Path(args.output)
    reports = write_brats_layout(out / "brats", args.n_2021, spacing=args.spacing, naming="2021", seed=args.seed)
    reports |= write_brats_layout(out / "brats", args.n_2023, spacing=args.spacing, naming="2023", seed=args.seed,
                                  start=args.n_2021)
    write_reports_csv(out / "reports.csv", reports)
    write_healthy_layout(out / "healthy", args.n_healthy, spacing=args.spacing, seed=args.seed,
                         channels=tuple(args.healthy_channels), skull=not (args.no_skull or args.healthy_brats_grid),
                         brats_grid=args.healthy_brats_grid)
    print(f"wrote {len(reports)} BraTS case(s), {args.n_healthy} healthy case(s) and reports.csv below {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
