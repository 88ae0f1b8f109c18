"""Healthy scans in their own naming: channels found by file-name patterns, optional resampling and brain extraction.

A pattern has ``{case}`` where the case id stands and ``*`` for any characters within one name. A
pattern without ``/`` is matched against file names at any depth, e.g. ``T1={case}-T1.nii.gz`` (IXI:
``IXI-T1/IXI002-Guys-0828-T1.nii.gz``); one with ``/`` against the path below the healthy folder, e.g.
``T1={case}/T1w/T1w_acpc_dc_restore_brain.nii.gz`` (HCP). :data:`PRESETS` holds these two.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from blogrr_nnu.importers.files import ConversionError, SourceCase, copy_nifti

logger = logging.getLogger(__name__)

PRESETS = {
    # IXI: raw T1, T2, PD (not skull-stripped: use brain extraction; T1 is sagittal, T2/PD axial: resample)
    "ixi": {"T1": "{case}-T1.nii.gz", "T2": "{case}-T2.nii.gz", "PD": "{case}-PD.nii.gz"},
    # HCP structural preprocessing: skull-stripped T1w/T2w in ACPC space, one grid
    "hcp": {"T1": "{case}/T1w/T1w_acpc_dc_restore_brain.nii.gz", "T2": "{case}/T1w/T2w_acpc_dc_restore_brain.nii.gz"},
}


def parse_channel_patterns(items: list[str]) -> dict[str, str]:
    """``["T1={case}-T1.nii.gz", ...]`` -> ``{"T1": "{case}-T1.nii.gz", ...}`` (order kept).

    Raises:
        ConversionError: an item is not ``NAME=PATTERN``, lacks ``{case}``, or a name repeats.
    """
    out: dict[str, str] = {}
    for item in items:
        name, sep, pattern = item.partition("=")
        name, pattern = name.strip(), pattern.strip()
        if not sep or not name or "{case}" not in pattern:
            raise ConversionError(f"--healthy_channel {item!r}: write NAME=PATTERN with {{case}} in the pattern, "
                                  "e.g. T1={case}-T1.nii.gz")
        if name in out:
            raise ConversionError(f"--healthy_channel: channel {name!r} given twice; give each channel once")
        out[name] = pattern
    return out


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Regex of a pattern over a POSIX path relative to the healthy folder, group ``case``."""
    parts = re.split(r"(\{case\}|\*)", pattern)
    rx = "".join("(?P<case>[^/]+?)" if p == "{case}" and i == parts.index("{case}") else
                 "(?P=case)" if p == "{case}" else "[^/]*" if p == "*" else re.escape(p)
                 for i, p in enumerate(parts))
    return re.compile(rf"^{rx}$")


def find_healthy_cases(folder: Path, patterns: dict[str, str], *, skip_incomplete: bool = False) -> list[SourceCase]:
    """Healthy cases below ``folder`` whose files match ``patterns`` (channel name -> pattern).

    Raises:
        ConversionError: missing folder, no match at all, or a case without every channel (unless
            ``skip_incomplete``: then it is left out with a warning).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConversionError(f"{folder}: healthy folder not found; pass the folder that holds the healthy scans")
    regexes = {name: pattern_regex(p) for name, p in patterns.items()}
    cases: dict[str, SourceCase] = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        for name, rx in regexes.items():
            m = rx.match(rel if "/" in patterns[name] else f.name)
            if m:
                cases.setdefault(m["case"], SourceCase(m["case"], naming="pattern")).images.setdefault(name, f)
    if not cases:
        shown = ", ".join(f"{n}={p}" for n, p in patterns.items())
        raise ConversionError(f"{folder}: no file matches the healthy patterns ({shown}); check --healthy_channel")
    out = []
    for cid in sorted(cases):
        case = cases[cid]
        missing = [n for n in patterns if n not in case.images]
        if missing:
            where = next(iter(case.images.values())).parent / Path(patterns[missing[0]].replace("{case}", cid)).name \
                if "/" not in patterns[missing[0]] else folder / patterns[missing[0]].replace("{case}", cid)
            if not skip_incomplete:
                raise ConversionError(f"{where}: healthy case {cid!r} lacks {', '.join(missing)}; add it, or pass "
                                      "--skip_incomplete to leave such cases out")
            logger.warning("%s: healthy case %r lacks %s; left out", where, cid, ", ".join(missing))
            continue
        case.images = {n: case.images[n] for n in patterns}
        out.append(case)
    if not out:
        raise ConversionError(f"{folder}: no healthy case has every channel of {', '.join(patterns)}")
    logger.info("found %d healthy case(s) in %s", len(out), folder)
    return out


def _resample_like(src: Path, ref: nib.Nifti1Image, ref_path: Path) -> nib.Nifti1Image:
    """``src`` resampled (linear, world coordinates, no registration) onto the grid of ``ref``."""
    moving = sitk.ReadImage(str(src), sitk.sitkFloat32)
    fixed = sitk.ReadImage(str(ref_path), sitk.sitkFloat32)
    out = sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    data = np.transpose(sitk.GetArrayFromImage(out), (2, 1, 0))  # SimpleITK's (Z, Y, X) -> voxel (X, Y, Z)
    return nib.Nifti1Image(data.astype(np.float32), ref.affine)


def write_healthy_case(case: SourceCase, out_files: list[Path], *, resample: bool = False,
                       brain_extractor=None, bet_channel: str | None = None) -> dict:
    """Write one healthy case's channels, resampled onto the first channel's grid and brain-extracted on request.

    Args:
        case: the source case (channel name -> file).
        out_files: destination per channel, in ``case.images`` order.
        resample: resample every channel onto the grid of the first (world coordinates: for channels
            acquired in one session, such as IXI's T1 and T2, without co-registration).
        brain_extractor: a :class:`~blogrr_nnu.brain_extraction.BrainExtractor`, or ``None``.
        bet_channel: the channel the brain mask is computed on (default: the first).

    Returns:
        ``{"brain_ml": ...}`` when brain extraction ran, else ``{}``.

    Raises:
        ConversionError: channels on different grids while brain extraction needs one grid.
    """
    names = list(case.images)
    if not resample and brain_extractor is None:
        for name, dst in zip(names, out_files):
            copy_nifti(case.images[name], dst)
        return {}
    ref_path = case.images[names[0]]
    ref = nib.load(str(ref_path))
    images = {}
    for name in names:
        img = nib.load(str(case.images[name]))
        if resample and name != names[0]:
            img = _resample_like(case.images[name], ref, ref_path)
        elif img.shape != ref.shape or not np.allclose(img.affine, ref.affine, atol=1e-3):
            raise ConversionError(f"{case.images[name]}: not on the grid of {ref_path.name}; pass --resample_healthy "
                                  "to resample the channels onto one grid")
        images[name] = img
    info: dict = {}
    if brain_extractor is not None:
        from blogrr_nnu.brain_extraction import apply_mask

        mask = brain_extractor.mask(images[bet_channel or names[0]])
        info["brain_ml"] = float(mask.sum() * np.prod(ref.header.get_zooms()[:3]) / 1000.0)
        images = {n: apply_mask(img, mask) for n, img in images.items()}
    for name, dst in zip(names, out_files):
        nib.save(images[name], str(dst))
    return info
