#!/usr/bin/env bash
# Prepare, on a CPU machine with the package installed and a registry reachable, what scripts/gpu_check.sh needs on
# a GPU machine that has Python 3.12 + CUDA torch but no network, no nnunetv2, no SimpleITK and no deepmriprep:
#   $GPU_CHECK_DIR/preprocessed/   a packed subset of the dataset (python -m blogrr_nnu.benchmarks.speed.gpu_check_data pack)
#   $GPU_CHECK_DIR/wheels/         cp312 manylinux x86_64 wheels of what training and prediction import (never torch)
# and checks that what travels (this tree's files + $GPU_CHECK_DIR) stays under $LIMIT_MIB (64 MiB by default).
# Environment: DATASET (501), GPU_CHECK_DIR (.gpu_check), HEALTHY/TUMOR/TEST (8/6/3 cases), LIMIT_MIB (64),
# BLOGRR_raw / BLOGRR_preprocessed as for every blogrr command. See docs/performance.md, "GPU check".
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${DATASET:-501}
CARRY=${GPU_CHECK_DIR:-.gpu_check}
LIMIT_MIB=${LIMIT_MIB:-64}
PY=${PYTHON:-python}

# 1. the dataset planned and preprocessed for the GPU configurations (stages already done are reused)
if [ "$DATASET" = 501 ] && ! $PY -c "from blogrr_nnu.paths import raw_root, resolve_dataset; resolve_dataset(501, raw_root())" 2>/dev/null; then
    blogrr_make_demo_dataset -q
fi
blogrr_plan_and_preprocess -d "$DATASET" -c 3d_fullres 2d -np "${NP:-2}"

# 2. the carried subset (+ test cases registered and preprocessed here: the GPU machine cannot register)
rm -rf "$CARRY/preprocessed"
$PY -m blogrr_nnu.benchmarks.speed.gpu_check_data pack -d "$DATASET" -c 3d_fullres 2d -o "$CARRY/preprocessed" \
    --healthy "${HEALTHY:-8}" --tumor "${TUMOR:-6}" --test "${TEST:-3}"

# 3. wheels, at the versions tested here. Left out on purpose: torch (the machine's own CUDA build), SimpleITK
#    (~53 MB; nnunetv2 only imports it: scripts/gpu_check_stubs stands in), deepmriprep (atlas and template: used by
#    registration and report masks, which happen here), nibabel's and nnunetv2's planning-only extras.
rm -rf "$CARRY/wheels" && mkdir -p "$CARRY/wheels"
PINS=$($PY - <<'PY'
from importlib.metadata import version
names = ["nnunetv2", "batchgenerators", "batchgeneratorsv2", "dynamic-network-architectures", "acvl-utils",
         "blosc2", "ndindex", "numexpr", "connected-components-3d", "nibabel"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PY
)
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
for pin in $PINS; do
    # shellcheck disable=SC2086
    if ! $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT \
            -d "$CARRY/wheels" "$pin" 2>/dev/null; then
        # published as a source distribution only (acvl-utils): build its pure-Python wheel here
        $PY -m pip wheel -q --no-deps -w "$CARRY/wheels" "$pin"
    fi
done

# 4. sizes: everything that travels with the device tool's `run` (tracked + untracked-not-ignored + carried)
FILES=$(mktemp)
git ls-files -z -co --exclude-standard >"$FILES"
$PY - "$CARRY" "$LIMIT_MIB" "$FILES" <<'PY'
import sys
from pathlib import Path
carry, limit = Path(sys.argv[1]), float(sys.argv[2])
mib = lambda n: n / 2**20
names = Path(sys.argv[3]).read_text().split("\0")
tree = sum(Path(f).stat().st_size for f in names if f and Path(f).is_file())
wheels = sorted((carry / "wheels").glob("*.whl"))
data = sum(f.stat().st_size for f in (carry / "preprocessed").rglob("*") if f.is_file())
for w in wheels:
    print(f"  {mib(w.stat().st_size):7.2f} MiB  {w.name}")
w = sum(f.stat().st_size for f in wheels)
total = tree + w + data
print(f"working tree {mib(tree):.1f} MiB + wheels {mib(w):.1f} MiB + data {mib(data):.1f} MiB = {mib(total):.1f} MiB "
      f"(limit {limit:g} MiB)")
if mib(total) > limit:
    sys.exit("prepare_gpu_check: over the limit; carry fewer cases (HEALTHY=, TUMOR=, TEST=)")
PY
rm -f "$FILES"
echo "ready: on the GPU machine run  bash scripts/gpu_check.sh  with $CARRY carried"
