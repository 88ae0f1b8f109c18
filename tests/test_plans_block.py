"""The plans' blogrr block is parsed once and a bad or old one is refused with the field and the fix."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from blogrr_nnu.inference.predictor import BlogrrPredictor, ModelFolderError
from blogrr_nnu.plans_block import BlogrrBlock, PlansBlockError, configuration_block

PLANS = json.loads((Path(__file__).parent / "data" / "pinned" / "plans.json").read_text())  # the planner's output
BLOCK = PLANS["configurations"]["3d_cpu"]["blogrr"]


def test_the_planners_block_parses_to_its_values():
    b = configuration_block(PLANS, "3d_cpu")
    assert b.cpu and b.reconstruction_output_channels == 3
    assert b.coarse_noise.grid == tuple(BLOCK["coarse_noise"]["grid"]) and b.coarse_noise.roll is True
    assert b.anomaly_sigma_voxels == tuple(BLOCK["anomaly_sigma_voxels"])
    assert b.threshold_net.input_size == tuple(BLOCK["threshold_net"]["input_size"])
    assert b.sigmoid_steepness == BLOCK["sigmoid_steepness"] and b.memory_target_gb == BLOCK["memory_target_gb"]
    assert BlogrrBlock.from_dict(b) is b  # an already parsed block passes through


@pytest.mark.parametrize("change, words", [
    (lambda d: d.pop("sigmoid_steepness"), "sigmoid_steepness is missing (plans written by an older"),
    (lambda d: d["coarse_noise"].pop("grid"), "coarse_noise.grid is missing"),
    (lambda d: d.update(device_class="tpu"), "device_class must be one of cpu, gpu"),
    (lambda d: d.update(normalised_range_per_channel=[1.0, 2.0]), "list of 3 positive numbers"),
    (lambda d: d["threshold_net"].update(input_size=[48, "40", 48]), "threshold_net.input_size must be a list"),
    (lambda d: d.update(anomaly_kernel_radius_voxels=[1, 1]), "anomaly_kernel_radius_voxels must be a list of 3"),
    (lambda d: d.update(error_tolerance_weight=float("nan")), "error_tolerance_weight must be a finite number"),
    (lambda d: d["coarse_noise"].update(roll="yes"), "coarse_noise.roll must be true or false"),
])
def test_a_bad_block_names_the_field_and_the_fix(change, words):
    d = copy.deepcopy(BLOCK)
    change(d)
    with pytest.raises(PlansBlockError) as err:
        BlogrrBlock.from_dict(d, "x/blogrr_plans.json")
    msg = str(err.value)
    assert msg.startswith("x/blogrr_plans.json: 'blogrr' block: ") and words in msg
    assert msg.endswith("re-run blogrr_plan_and_preprocess for this dataset") and "\n" not in msg


def test_prediction_refuses_a_run_whose_plans_lack_the_block():
    plans = copy.deepcopy(PLANS)
    del plans["configurations"]["3d_cpu"]["blogrr"]
    dj = json.loads((Path(__file__).parent / "data" / "pinned" / "dataset.json").read_text())
    p = BlogrrPredictor(device=torch.device("cpu"), fixed_threshold=1.0, allow_tqdm=False)
    with pytest.raises(ModelFolderError, match="configuration 3d_cpu: 'blogrr' block: missing"):
        p.initialize_from_checkpoints(plans, "3d_cpu", dj, [{"network_weights": {}}], "DAETrainer")


def test_a_fixed_threshold_takes_the_modes_shape():
    from blogrr_nnu.threshold_modes import ThresholdMode

    amap = torch.zeros(1, 5, 4, 4)
    slices = ThresholdMode.create("reference", 2, BLOCK)
    per_case = ThresholdMode.create("reference", 2, BLOCK, per_case_2d=True)
    assert slices.constant(1.5, amap).tolist() == [1.5] * 5 and slices.shaped(slices.constant(1.5, amap)).shape == (1, 5, 1, 1)
    assert per_case.constant(1.5, amap).tolist() == [1.5] and per_case.shaped(torch.tensor([1.5])).shape == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="one tau per case"):
        per_case.shaped(torch.ones(5))
