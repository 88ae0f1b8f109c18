"""BlogrrPlanner sets nnU-Net's planner state itself (nnU-Net's __init__ reads nnUNet_raw and labelsTr, which our
raw format does not have). This test runs nnU-Net's real ExperimentPlanner.__init__ on a one-case dataset in
nnU-Net's own format and fails when nnunetv2 sets an attribute ours does not, or changes a constant we copied:
a new nnunetv2 then breaks here, loudly, instead of in a plan."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import nibabel as nib

from blogrr_nnu.planners.planner import BlogrrPlanner
from test_planner import DJ, fake_fingerprint

# nnU-Net state that has no counterpart in our planner (we never list nnU-Net's raw files)
NOT_OURS = {"raw_dataset_folder", "dataset"}
# set by us on purpose to other values than nnU-Net's defaults (docs/plans.md, planners/planner.py)
OURS = {"dataset_name", "dataset_json", "dataset_fingerprint", "preprocessor_name", "plans_identifier",
        "UNet_vram_target_GB"}

CHILD = """
import json, sys
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
p = ExperimentPlanner("Dataset999_Guard")
out = {}
for k, v in vars(p).items():
    try:
        json.dumps(v); out[k] = v
    except TypeError:
        out[k] = repr(v)
print(json.dumps(out))
"""


def _as_json(v):
    """What the child prints for a value: its JSON form (tuples as lists), or its repr."""
    try:
        return json.loads(json.dumps(v))
    except TypeError:
        return repr(v)


def test_our_planner_sets_every_attribute_nnunets_init_sets(tmp_path):
    raw, pre = tmp_path / "raw" / "Dataset999_Guard", tmp_path / "pre" / "Dataset999_Guard"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    pre.mkdir(parents=True)
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    nib.save(img, raw / "imagesTr" / "c_0000.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), raw / "labelsTr" / "c.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1"}, "labels": {"background": 0, "x": 1},
                                                  "numTraining": 1, "file_ending": ".nii.gz"}))
    (pre / "dataset_fingerprint.json").write_text("{}")
    env = {**os.environ, "nnUNet_raw": str(tmp_path / "raw"), "nnUNet_preprocessed": str(tmp_path / "pre"),
           "nnUNet_results": str(tmp_path / "res")}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    ours = vars(BlogrrPlanner("Dataset001_X", DJ, fake_fingerprint(), tmp_path / "out", 8.0))
    missing = sorted(set(theirs) - set(ours) - NOT_OURS)
    assert not missing, f"nnunetv2's ExperimentPlanner.__init__ sets {missing}; set them in BlogrrPlanner.__init__"
    changed = {k: (_as_json(ours[k]), v) for k, v in theirs.items() if k in ours and k not in OURS
               and _as_json(ours[k]) != v}
    assert not changed, f"nnunetv2's planner defaults differ from the values BlogrrPlanner copies: {changed}"
    assert "UNet_reference_val_3d" in theirs and theirs["UNet_min_batch_size"] == ours["UNet_min_batch_size"]
