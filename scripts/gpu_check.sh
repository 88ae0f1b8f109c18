#!/usr/bin/env bash
# The GPU check on a CUDA machine without network (docs/performance.md, "GPU check"). Needs $GPU_CHECK_DIR from
# scripts/prepare_gpu_check.sh next to this tree. Installs the carried wheels and this tree offline into a private
# folder (never torch: the machine's CUDA build is used), stands in for SimpleITK where it is missing, writes the
# 2d copies of the shared arrays, and runs python -m blogrr_nnu.benchmarks.speed.gpu_check under a hard time limit.
# Writes gpu_check.md (the report), gpu_check.json, gpu_check.log and nvidia-smi.txt into $OUT (./gpu_check_out).
# Environment: DATASET (501), GPU_CHECK_DIR (.gpu_check), BUDGET_S (390: the check's own budget), TIMEOUT_S (440:
# the hard limit of the check), PYTHON (python3). Everything, installs included, ends within 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
DATASET=${DATASET:-501}
CARRY=${GPU_CHECK_DIR:-.gpu_check}
OUTDIR=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/blogrr_gpu_site}
export PYTHONUNBUFFERED=1
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_check.log"
: >"$LOG"
nvidia-smi >"$OUTDIR/nvidia-smi.txt" 2>&1 || true

[ -d "$CARRY/wheels" ] && [ -d "$CARRY/preprocessed" ] || { echo "gpu_check.sh: $CARRY/wheels and $CARRY/preprocessed are missing (run scripts/prepare_gpu_check.sh and carry $CARRY)" | tee -a "$LOG"; exit 2; }
# offline, no dependencies resolved: exactly the carried wheels, then this tree (its package_dir needs an install)
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$CARRY"/wheels/*.whl >>"$LOG" 2>&1 \
    || { echo "gpu_check.sh: installing the carried wheels failed (see $LOG)"; exit 3; }
$PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade --target "$SITE" . >>"$LOG" 2>&1 \
    || { echo "gpu_check.sh: installing blogrr-nnu from this tree failed (see $LOG)"; exit 3; }
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
if ! $PY -c "import SimpleITK" 2>/dev/null; then
    export PYTHONPATH="$PYTHONPATH:$PWD/scripts/gpu_check_stubs"
fi
export BLOGRR_preprocessed="$(cd "$CARRY/preprocessed" && pwd)"
unset nnUNet_preprocessed nnUNet_results nnUNet_raw BLOGRR_results
# out of the tree: its blogrr_nnu/ folder would shadow the installed package (whose planners/, trainers/ and
# inference/ are subpackages only once installed)
cd "$OUTDIR" || exit 2
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$LOG"
$PY -m blogrr_nnu.benchmarks.speed.gpu_check_data unpack -d "$DATASET" 2>&1 | tee -a "$LOG"
timeout "${TIMEOUT_S:-440}" $PY -m blogrr_nnu.benchmarks.speed.gpu_check -d "$DATASET" -o "$OUTDIR/gpu_check.md" \
    --json "$OUTDIR/gpu_check.json" --budget_s "${BUDGET_S:-390}" "$@" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && echo "gpu_check.sh: stopped at the ${TIMEOUT_S:-440} s limit; $OUTDIR/gpu_check.md holds the parts done" | tee -a "$LOG"
exit "$rc"
