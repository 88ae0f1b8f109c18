"""``python -m blogrr_nnu.benchmarks.speed.gpu_check_data``: the data the GPU check carries, packed on a CPU machine.

The GPU machine of ``scripts/gpu_check.sh`` has no network, no SimpleITK and no atlas package, and what travels
there is limited in size (docs/performance.md, "GPU check"). So everything that needs registration or the atlas
happens here, beforehand:

- ``pack``: from a planned and preprocessed dataset, a subset of its preprocessed training cases (the first
  ``--healthy`` healthy and ``--tumor`` tumour cases by id, unchanged files), its plans, ``dataset.json``, the
  fingerprint, a ``splits_final.json`` of that subset, and the first ``--test`` raw test cases (``imagesTs``,
  with ``labelsTs`` and reports) registered and preprocessed here exactly as training cases are, into
  ``gpu_check_test/<data identifier>/`` (their ``label`` seg channel is what the check's Dice is computed
  against, on the stored grid). Configurations whose preprocessed arrays are identical (``2d`` and
  ``3d_fullres`` at the same spacing: only the Blosc2 chunking differs) are carried once; the manifest
  ``gpu_check.json`` names the copies to make. Prints the size of each part.
- ``unpack`` (on the GPU machine, before the check): writes those copies, re-chunked for their own patch
  with the same writer as preprocessing.
"""
from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
from pathlib import Path

MANIFEST = "gpu_check.json"
TEST_DIR = "gpu_check_test"
CASE_SUFFIXES = (".b2nd", "_seg.b2nd", ".pkl")
TOP_FILES = ("blogrr_plans.json", "dataset.json", "dataset_fingerprint.json")


def folder_bytes(path: Path) -> int:
    """Bytes of the files below ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _arrays(folder: Path, case_id: str):
    import blosc2

    return [blosc2.open(str(folder / f"{case_id}{s}"), mode="r")[:] for s in (".b2nd", "_seg.b2nd")]


def same_arrays(a: Path, b: Path, case_ids: list[str]) -> bool:
    """True when two configurations' folders hold equal data and seg arrays for every case."""
    import numpy as np

    for cid in case_ids:
        if not all((f / f"{cid}{s}").is_file() for f in (a, b) for s in CASE_SUFFIXES):
            return False
        if not all(np.array_equal(x, y) for x, y in zip(_arrays(a, cid), _arrays(b, cid))):
            return False
    return True


def subset(data_folder: Path, n_healthy: int, n_tumor: int) -> list[str]:
    """The first ``n_healthy`` healthy and ``n_tumor`` tumour case ids (by id) of a configuration folder."""
    from blogrr_nnu.splits import case_roles

    roles = case_roles(data_folder)
    healthy = sorted(k for k, r in roles.items() if r == "healthy")[:n_healthy]
    tumor = sorted(k for k, r in roles.items() if r == "tumor")[:n_tumor]
    return healthy + tumor


def preprocess_test_cases(raw_folder: Path, plans: dict, registration_dir: Path, targets, n: int) -> list[str]:
    """Register (or reuse ``registration_dir/<case>.json``) and preprocess the first ``n`` raw test cases."""
    from blogrr_nnu.channels import selection_from_plans
    from blogrr_nnu.planners.fingerprint import registration_channel, load_case_channels
    from blogrr_nnu.planners.preprocessing import preprocess_case
    from blogrr_nnu.raw_dataset import list_cases, load_dataset_json
    from blogrr_nnu.registration import register_to_template

    dj = load_dataset_json(raw_folder)
    selection = selection_from_plans(plans, dj)
    cases = [selection.select(c) for c in list_cases(raw_folder, dj)[0]["test"] if c.label is not None][:n]
    for case in cases:
        path = registration_dir / f"{case.case_id}.json"
        if path.is_file():
            registration = json.loads(path.read_text())
        else:  # as the predictor registers a new case (same channel, seed 0)
            data, geometry = load_case_channels(case)
            registration = register_to_template(data[registration_channel(selection.channel_names())], geometry,
                                                seed=0).to_dict()
        preprocess_case(case, registration, targets, plans["transpose_forward"])
    for t in targets:
        shutil.rmtree(t.folder / ".tmp", ignore_errors=True)
    return [c.case_id for c in cases]


def pack(dataset: str, configurations: list[str], out_root: Path, n_healthy: int, n_tumor: int, n_test: int,
         raw: str | None = None) -> dict:
    """Write the carried copy of ``dataset`` under ``out_root/<dataset folder>``; returns the manifest."""
    from blogrr_nnu.paths import preprocessed_root, raw_root, resolve_dataset
    from blogrr_nnu.planners.api import load_plans, spacing_xyz
    from blogrr_nnu.planners.preprocessing import ConfigTarget
    from blogrr_nnu.splits import case_roles, fold_keys, load_or_create_splits, make_splits

    src = resolve_dataset(dataset, preprocessed_root())
    plans = load_plans(src)
    cfgs = plans["configurations"]
    missing = [c for c in configurations if c not in cfgs or not any((src / cfgs[c]["data_identifier"]).glob("*.pkl"))]
    if missing:
        raise ValueError(f"{src}: configuration(s) {', '.join(missing)} not preprocessed; run `blogrr_plan_and_preprocess "
                         f"-d {src.name} -c {' '.join(configurations)}` first")
    if min(n_healthy, n_tumor) < 5:  # splits_final has 5 folds: with fewer cases of a kind none is held out
        raise ValueError(f"--healthy and --tumor must be >= 5 (fold 0 must hold cases of each kind out), got {n_healthy} "
                         f"and {n_tumor}")
    dst = Path(out_root) / src.name
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in TOP_FILES:
        shutil.copyfile(src / name, dst / name)
    first = src / cfgs[configurations[0]]["data_identifier"]
    ids = subset(first, n_healthy, n_tumor)
    if len(ids) < n_healthy + n_tumor:
        raise ValueError(f"{first}: fewer cases than --healthy {n_healthy} + --tumor {n_tumor}")
    roles = {}
    for cid in ids:
        with open(first / f"{cid}.pkl", "rb") as fh:
            roles[cid] = pickle.load(fh)["role"]
    splits = make_splits([k for k in ids if roles[k] == "healthy"], [k for k in ids if roles[k] == "tumor"])
    (dst / "splits_final.json").write_text(json.dumps(splits, indent=1))
    full = fold_keys(load_or_create_splits(src, first), 0, case_roles(first))  # what the subset stands in for
    manifest = {"dataset": src.name, "configurations": list(configurations), "cases": ids, "shared": {}, "test": [],
                "source_fold_counts": {k: len(v) for k, v in full.items()}}
    carried: dict[str, str] = {}  # data identifier -> carried folder it is identical to
    for c in configurations:
        ident = cfgs[c]["data_identifier"]
        twin = next((k for k in carried if same_arrays(src / k, src / ident, ids)), None)
        if twin is not None:
            manifest["shared"][ident] = twin
            continue
        (dst / ident).mkdir()
        for f in (src / ident).iterdir():  # the cases, and the configuration's own files (healthy intensity model)
            if f.is_file() and (f.suffix == ".json" or any(f.name == f"{cid}{s}" for cid in ids for s in CASE_SUFFIXES)):
                shutil.copyfile(f, dst / ident / f.name)
        carried[ident] = ident
    if n_test:
        targets = [ConfigTarget(c, dst / TEST_DIR / cfgs[c]["data_identifier"], spacing_xyz(plans, c),
                                list(cfgs[c]["patch_size"])) for c in configurations
                   if cfgs[c]["data_identifier"] in carried]
        manifest["test"] = preprocess_test_cases(resolve_dataset(src.name, raw_root(raw)), plans, src / "registration",
                                                 targets, n_test)
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def unpack(dataset: str) -> list[str]:
    """Write the shared configurations' folders named in the manifest; returns the identifiers written."""
    from blogrr_nnu.paths import preprocessed_root, resolve_dataset
    from blogrr_nnu.planners.api import load_plans
    from blogrr_nnu.planners.preprocessing import save_case_atomic

    base = resolve_dataset(dataset, preprocessed_root())
    manifest = json.loads((base / MANIFEST).read_text())
    plans = load_plans(base)
    patch = {v["data_identifier"]: list(v["patch_size"]) for v in plans["configurations"].values()}
    written = []
    for ident, twin in manifest["shared"].items():
        for sub in (base, base / TEST_DIR):
            if not (sub / twin).is_dir():
                continue
            (sub / ident).mkdir(exist_ok=True)
            for f in (sub / twin).iterdir():
                if f.suffix == ".json":
                    shutil.copyfile(f, sub / ident / f.name)
                elif f.suffix == ".pkl":
                    with open(f, "rb") as fh:
                        props = pickle.load(fh)
                    data, seg = _arrays(sub / twin, f.stem)
                    save_case_atomic(sub / ident, f.stem, data, seg, props, patch[ident])
            shutil.rmtree(sub / ident / ".tmp", ignore_errors=True)
        written.append(ident)
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m blogrr_nnu.benchmarks.speed.gpu_check_data",
        description="Pack (on a CPU machine) or unpack (on the GPU machine) the preprocessed data the GPU check "
        "carries (module docstring; docs/performance.md). Reads BLOGRR_preprocessed / BLOGRR_raw.",
        epilog="examples:\n  python -m blogrr_nnu.benchmarks.speed.gpu_check_data pack -d 501 -o .gpu_check/preprocessed\n"
        "  BLOGRR_preprocessed=.gpu_check/preprocessed python -m blogrr_nnu.benchmarks.speed.gpu_check_data unpack -d 501",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    parser.add_argument("-c", "--configurations", nargs="+", default=["3d_fullres", "2d"])
    parser.add_argument("-o", "--output", default=None, help="pack: root folder of the carried preprocessed data")
    parser.add_argument("--healthy", type=int, default=8, help="healthy training cases carried (default 8)")
    parser.add_argument("--tumor", type=int, default=6, help="tumour training cases carried (default 6)")
    parser.add_argument("--test", type=int, default=3, help="labelled test cases preprocessed and carried (default 3)")
    parser.add_argument("--raw", default=None, help="raw root (default: BLOGRR_raw)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0, or 2 with a one-line reason."""
    args = build_parser().parse_args(argv)
    from blogrr_nnu.paths import DatasetNotFoundError

    try:
        if args.action == "unpack":
            print("unpacked:", ", ".join(unpack(args.dataset)) or "nothing to unpack")
            return 0
        if not args.output:
            print("gpu_check_data: pack needs -o OUTPUT", file=sys.stderr)
            return 2
        manifest = pack(args.dataset, args.configurations, Path(args.output), args.healthy, args.tumor, args.test,
                        args.raw)
    except (DatasetNotFoundError, FileNotFoundError, ValueError) as exc:
        print(f"gpu_check_data: {exc}", file=sys.stderr)
        return 2
    dst = Path(args.output) / manifest["dataset"]
    for p in sorted(q for q in dst.iterdir() if q.is_dir()):
        print(f"{folder_bytes(p) / 2**20:8.1f} MiB  {p}")
    print(f"{folder_bytes(dst) / 2**20:8.1f} MiB  {dst} ({len(manifest['cases'])} training cases, "
          f"{len(manifest['test'])} test cases; shared: {manifest['shared'] or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
