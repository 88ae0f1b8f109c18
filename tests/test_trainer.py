"""BlogrrTrainer on tiny template-made data: R learns, T learns, exact resume, safe checkpoints, DDP."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from blogrr_nnu.planners.api import plan_and_preprocess
from blogrr_nnu.trainers.api import build_trainer, resume
from blogrr_nnu.checkpoint import UnsafeCheckpointError, load_checkpoint
from template_cases import write_template_dataset

CONFIG = "3d_cpu"
DATASET = "Dataset981_TrainTiny"


@pytest.fixture(scope="module")
def pre_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_template_dataset(root / "raw", name=DATASET, n_healthy=5, n_tumor=5, n_test=0, spacing=6.0, seed=3)
    plan_and_preprocess(DATASET, [CONFIG, "2d_cpu"], raw=str(root / "raw"), preprocessed=str(root / "pre"),
                        num_processes=2)
    return root


@pytest.fixture
def env(pre_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BLOGRR_preprocessed", str(pre_root / "pre"))
    monkeypatch.setenv("BLOGRR_results", str(tmp_path / "results"))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    return tmp_path


def _trainer(epochs=1, iters=4, upper=3, fold=0, **kw):
    return build_trainer(DATASET, fold, CONFIG, device="cpu", epochs=epochs, iters=iters, upper_iters=upper, **kw)


def _weights(tr):
    return {**{f"R.{k}": v.clone() for k, v in tr.network.state_dict().items()},
            **{f"T.{k}": v.clone() for k, v in tr.threshold_network.state_dict().items()}}


def test_reconstruction_error_on_held_out_healthy_drops(env):
    tr = _trainer(epochs=3, iters=6, upper=2)
    tr.on_train_start()
    assert tr.keys["healthy_val"], "fold 0 must hold out a healthy case"
    before = tr.run_validation()["val_healthy_mse"]
    tr.run_training()
    after = tr.progress["val_healthy_mse"][-1]
    assert after < 0.7 * before, (before, after)
    # progress, checkpoints and the plot are in the run folder
    names = set(os.listdir(tr.output_folder))
    assert {"checkpoint_final.pth", "progress.png", "progress.json"} <= names and "checkpoint_latest.pth" not in names
    assert len(tr.progress["epoch"]) == 3


def test_reference_threshold_moves_toward_the_dice_optimal_value(env):
    from blogrr_nnu.trainers.upper_loop import CachedCase

    tr = _trainer(threshold_model="reference", threshold_input="image+anomaly")
    tr.on_train_start()
    tr.threshold_lr_factor = 10.0
    for g in tr.threshold_optimizer.param_groups:
        g["lr"] = tr.initial_lr * tr.threshold_lr_factor
    size = list(tr.blogrr.threshold_net.input_size)
    # Constructed cases: A is a ramp along one axis, the pseudo-label is A > 0.3 * tau_max, so the Dice-optimal
    # threshold is known.
    tau_max = tr.threshold_network.tau_max
    ramp = torch.linspace(0, 0.6 * tau_max, size[0]).view(1, -1, 1, 1).expand(1, *size).clone()
    target = (ramp > 0.3 * tau_max).float()
    brain = torch.ones_like(ramp)
    inp = torch.cat([torch.zeros(tr.num_input_channels, *size), ramp], 0)
    tr.upper_loop.cache = lambda: [CachedCase(inp[None], ramp[None], target[None], brain[None])] * 4
    # start far below the optimum
    tr.tau_initialised = True
    with torch.no_grad():
        tr.threshold_network.head.bias.fill_(float(np.log(0.05 / 0.95)))
    start = float(tr.threshold_network(inp[None]).detach())
    tr.num_upper_iterations_per_epoch = 60
    tr.run_upper_loop(0)
    end = float(tr.threshold_network(inp[None]).detach())
    optimum = 0.3 * tau_max
    assert abs(end - optimum) < 0.5 * abs(start - optimum), (start, end, optimum)


@pytest.mark.parametrize("normative", [False, True])
def test_resume_after_kill_matches_uninterrupted_run(env, monkeypatch, normative):
    """Also on normative maps: the recency-weighted sums behind the mean map are in the checkpoint, so the resumed run
    subtracts the same mean as the uninterrupted one."""
    monkeypatch.setenv("BLOGRR_results", str(env / "uninterrupted"))
    straight = _trainer(epochs=2, iters=3, upper=2, normative=normative)
    straight.run_training()
    expected = _weights(straight)

    monkeypatch.setenv("BLOGRR_results", str(env / "killed"))
    killed = _trainer(epochs=2, iters=3, upper=2, normative=normative)
    original = killed.run_lower_loop

    def dying(epoch):
        if epoch == 1:  # die in the middle of the second epoch, after some steps
            killed.num_iterations_per_epoch = 2
            original(epoch)
            raise KeyboardInterrupt("simulated kill")
        return original(epoch)

    killed.run_lower_loop = dying
    with pytest.raises(KeyboardInterrupt):
        killed.run_training()
    assert os.path.isfile(os.path.join(killed.output_folder, "checkpoint_latest.pth"))

    resumed = _trainer(epochs=2, iters=3, upper=2, normative=normative)
    assert resume(resumed) == "checkpoint_latest.pth" and resumed.current_epoch == 1
    resumed.run_training()
    got = _weights(resumed)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    assert resumed.progress["lower_loss"] == pytest.approx(straight.progress["lower_loss"])
    if normative:
        assert np.array_equal(resumed.normative_maps.mean, straight.normative_maps.mean)


def test_checkpoints_hold_only_safe_types_and_pickled_objects_are_refused(env, tmp_path):
    tr = _trainer()
    tr.initialize()
    path = tmp_path / "ok.pth"
    tr.save_checkpoint(str(path))
    ckpt = torch.load(path, weights_only=True)  # would raise if anything but tensors/numbers/strings were inside
    assert set(ckpt) >= {"network_weights", "threshold_weights", "optimizer_state", "progress"}
    bad = dict(ckpt, payload=np.random.default_rng(0))  # an arbitrary pickled object
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(UnsafeCheckpointError, match="refused to load"):
        load_checkpoint(tmp_path / "bad.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(tmp_path / "garbage.pth")


def _ddp_worker(rank, world, port, pre, results, out, trainer="blogrr"):
    import torch.distributed as dist

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "BLOGRR_preprocessed": pre,
                       "BLOGRR_results": results})
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        tr = _trainer(iters=1, trainer=trainer)
        tr.on_train_start()
        init = {k: v.clone() for k, v in tr.network.module.state_dict().items()}
        tr.run_lower_loop(0)
        state = tr.network.module.state_dict()
        torch.save({"init": init, "after": state, "batch": tr.batch_size}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _two_ranks(pre_root, tmp_path, trainer):
    """One lower-loop step of ``trainer`` in two gloo processes; each rank's weights before and after."""
    import torch.multiprocessing as mp

    from blogrr_nnu.trainers.ddp import free_port

    mp.spawn(_ddp_worker, args=(2, free_port(), str(pre_root / "pre"), str(tmp_path / "res"), str(tmp_path), trainer),
             nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    changed = [k for k in r0["after"] if not torch.equal(r0["after"][k], r0["init"][k])]
    assert changed, "one step must change the weights"
    return r0, r1


@pytest.mark.slow
def test_ddp_two_cpu_processes_hold_identical_weights(pre_root, tmp_path):
    r0, r1 = _two_ranks(pre_root, tmp_path, "blogrr")
    assert r0["batch"] + r1["batch"] == 2  # the plans' batch of 2 is split over the two ranks
    for k in r0["after"]:
        assert torch.equal(r0["after"][k], r1["after"][k]), k


@pytest.mark.slow
def test_cgc_ddp_ranks_stay_identical(pre_root, tmp_path):
    """CGC reads the encoder's skips; its forward must still go through DDP, or the network's gradients are
    never all-reduced and the ranks drift apart after one step on their own batches (seen before the fix)."""
    r0, r1 = _two_ranks(pre_root, tmp_path, "cgc")
    for k in r0["after"]:
        assert torch.equal(r0["after"][k], r1["after"][k]), k


def test_amp_is_the_plain_fp32_step_on_cpu():
    """Mixed precision is nnU-Net's: CUDA only; on CPU the helpers are the fp32 step, bit for bit."""
    from blogrr_nnu import amp

    assert not amp.enabled("cpu") and amp.enabled("cuda")
    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = torch.optim.Adam(a.parameters(), 1e-2), torch.optim.Adam(b.parameters(), 1e-2)
    for _ in range(3):
        x = torch.randn(4, 5) * 10
        opt_a.zero_grad(set_to_none=True)
        (a(x) ** 2).mean().backward()
        torch.nn.utils.clip_grad_norm_(a.parameters(), 1.0)
        opt_a.step()
        with amp.autocast("cpu"):
            loss_b = (b(x) ** 2).mean()
        assert loss_b.dtype == torch.float32
        amp.backward_step(loss_b, opt_b, b.parameters(), None, max_norm=1.0)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_2d_threshold_per_slice_and_per_case(env):
    from blogrr_nnu.threshold_modes import slice_mean_tau

    for per_case in (False, True):
        tr = build_trainer(DATASET, 0, "2d_cpu", device="cpu", epochs=2, iters=3, upper_iters=2,
                           threshold_per_case=per_case, threshold_model="reference")
        assert ("PerCaseT" in type(tr).__name__) == per_case
        tr.run_training()
        case = tr.tumor_val[0]
        amap = tr.anomaly(case)[1]
        tau = tr.case_tau(case, amap)
        n_slices = case.data.shape[1]
        assert tau.shape == ((1,) if per_case else (n_slices,))
        with torch.no_grad():
            slices = tr.threshold_network.eval()(tr.threshold_mode.inputs(case.data, case.brain, amap))
        expected = slice_mean_tau(slices, case.brain) if per_case else slices
        torch.testing.assert_close(tau, expected)
        ckpt = load_checkpoint(os.path.join(tr.output_folder, "checkpoint_final.pth"))
        assert ckpt["threshold_per_case"] is per_case
    # one tau per case is the mean over the slices that hold brain, not over every slice
    brain = torch.zeros(1, 4, 3, 3, dtype=torch.bool)
    brain[0, 1:3, 1, 1] = True
    assert float(slice_mean_tau(torch.tensor([9.0, 1.0, 3.0, 9.0]), brain)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="2D configurations"):
        build_trainer(DATASET, 0, CONFIG, device="cpu", threshold_per_case=True)
    with pytest.raises(ValueError, match="reference threshold model"):
        build_trainer(DATASET, 0, "2d_cpu", device="cpu", threshold_per_case=True)


def test_default_upper_loop_gives_each_case_its_own_threshold(env):
    """The trainer's own upper loop at its default settings (contrast T, default steps, learning rate and slope
    prior) on a fold of 19 constructed cases, two of whose best thresholds differ clearly: T's tau of each of the
    two lands where that case's Dice is within 0.03 of its best, and the bright case gets the higher tau (see
    tests/test_tau.py for why a Dice bound, why 0.03 with the slope prior and why a fold of 19)."""
    from blogrr_nnu.tau import dice_optimal_threshold
    from blogrr_nnu.cases import WholeCase
    from test_tau import _dice, fold_of_lesion_cases

    tr = build_trainer(DATASET, 0, CONFIG, device="cpu", epochs=1, iters=4, pseudo_label="gmm")  # default upper loop
    assert tr.threshold_model == "contrast" and tr.num_upper_iterations_per_epoch == 300
    tr.on_train_start()
    built = fold_of_lesion_cases()
    cases, maps = [], []
    for i, (a, b, les) in enumerate(built):
        t = lambda x: torch.from_numpy(np.asarray(x))[None]  # noqa: E731
        cases.append(WholeCase(f"c{i}", torch.zeros(tr.num_input_channels, *a.shape), t(b), t(les).float(), None,
                               {"spacing": [2.0, 2.0, 2.0], "report": None}))
        maps.append(t(a))
    tr.tumor_train = cases
    tr.upper_loop.anomaly_maps = lambda: maps
    out = tr.run_upper_loop(0)
    assert out["upper_cases"] == len(built) and tr.tau_initialised
    assert set(tr.healthy_taus) == set(tr.keys["healthy_train"])  # refreshed for the next lower loop
    taus = [float(tr.case_tau(c, m)[0]) for c, m in zip(cases[:2], maps[:2])]
    for (a, b, les), t in zip(built[:2], taus):
        best_t, best_d = dice_optimal_threshold(a, les, b)
        assert _dice((a > t) & b, les) >= best_d - 0.03, (t, best_t)
    assert taus[0] > taus[1] + 0.3
    # the slope the epoch reports is the one T applies: log tau against the log half-contrast threshold of the two
    # cases; the constructed maps' own slope is 1, the prior's (normative maps, the default) 0.78, so the fit lands
    # strictly between them
    from blogrr_nnu.tau import half_contrast_threshold, slope_prior

    assert tr.normative and slope_prior(tr.threshold_model, tr.normative) == 0.78

    x = [np.log(half_contrast_threshold(a, b)) for a, b, _ in built[:2]]
    assert out["tau_slope"] == pytest.approx(np.log(taus[0] / taus[1]) / (x[0] - x[1]), rel=1e-3)
    assert 0.78 + 0.05 < out["tau_slope"] < 0.97
    assert f"slope {out['tau_slope']:.2f}" in tr.epoch_summary({"lower_loss": 0.0, "lower_mse": 0.0}, out,
                                                              {"val_pseudo_dice": 0.0, "val_gt_dice": 0.0,
                                                               "val_healthy_flagged": 0.0})
    # a resumed run must refuse a checkpoint of the other threshold model
    path = os.path.join(tr.output_folder, "contrast.pth")
    tr.save_checkpoint(path)
    other = _trainer(pseudo_label="gmm", threshold_model="reference")
    with pytest.raises(ValueError, match="threshold network is 'contrast'"):
        other.load_checkpoint(path)


@pytest.mark.parametrize("normative", [True, False])
def test_blogrr_predict_gives_a_training_case_the_tau_t_learned_for_it(env, pre_root, tmp_path, normative):
    """T is fitted on the trainer's maps (stored grid) and applied to the predictor's (raw NIfTI in, registration,
    preprocessing, sliding window): on the fold's own tumour training cases the two must agree, or T's fit would be
    off by whatever the two pipelines differ by (a different smoothing, normalisation or crop shifts every tau). On
    normative maps (the default) the predictor subtracts the checkpoint's mean map, the one T was fitted with."""
    import json

    from blogrr_nnu.commands.predict import main as predict_main

    tr = _trainer(epochs=2, iters=3, pseudo_label="gmm", normative=normative)  # default T and upper-loop steps
    tr.run_training()
    assert tr.tau_initialised
    ids = [c.case_id for c in tr.tumor_train]
    train_tau = {k: float(tr.case_tau(c, m)[0]) for k, c, m in zip(ids, tr.tumor_train, tr.upper_loop.anomaly_maps())}
    assert np.ptp(list(train_tau.values())) > 0.01  # the cases get taus of their own, so agreement means something
    src = pre_root / "raw" / DATASET / "imagesTrTumor"
    inp = tmp_path / "in"
    inp.mkdir()
    for k in ids:
        for f in src.glob(f"{k}_*.nii.gz"):
            (inp / f.name).symlink_to(f)
    out = tmp_path / "out"
    assert predict_main(["-i", str(inp), "-o", str(out), "-m", os.path.dirname(str(tr.output_folder)), "-f", "0",
                         "-device", "cpu", "--save_anomaly_maps"]) == 0
    for k in ids:
        info = json.loads((out / "anomaly_maps" / f"{k}.json").read_text())
        assert info["tau"] == pytest.approx(train_tau[k], rel=1e-3), (k, info["tau"], train_tau[k])
        assert ("normative maps" in info["anomaly_units"]) == normative
    # blogrr_threshold_targets reads a run's maps as its method uses them: the normative run's checkpoint mean is
    # subtracted (the maps equal the upper loop's), a plain run has none
    from blogrr_nnu.trainers.target_diagnostic import case_maps, run_normative_map, subtract_normative

    run = Path(tr.output_folder).parent
    mean = run_normative_map(run, "0")
    assert (mean is not None) == normative
    cases = case_maps(run, Path(tr.preprocessed_dataset_folder), Path(tr.preprocessed_dataset_folder_base), "0")
    if normative:
        cases = subtract_normative(cases, mean)
    trained = dict(zip(ids, tr.upper_loop.anomaly_maps()))
    assert cases and all(c["case"] in trained for c in cases)
    for c in cases:
        np.testing.assert_allclose(c["amap"].numpy(), trained[c["case"]].numpy(), atol=1e-4)


def test_a_patch_carries_the_normative_map_of_its_own_voxels_through_crop_and_augmentation(pre_root):
    """The lower loop's normative error tolerance needs the mean map at each patch's voxels, after nnU-Net's loader
    has cropped, rotated, scaled and mirrored it: NormativeDataset adds it as one more image channel. Given a case's
    own first channel as the "mean", every patch must hold the same values in both channels, wherever it was cut."""
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from blogrr_nnu.cases import read_stored_case
    from blogrr_nnu.normative import NormativeDataset

    pre = pre_root / "pre" / DATASET
    plans = json.loads((pre / "blogrr_plans.json").read_text())
    folder = pre / plans["configurations"][CONFIG]["data_identifier"]
    keys = sorted(p.stem for p in folder.glob("*.pkl"))
    own = {k: read_stored_case(folder, k)[0][0] for k in keys}
    patch = [16, 16, 16]
    transforms = ComposeTransforms([
        SpatialTransform(patch, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0, p_rotation=1.0,
                         rotation=(-0.3, 0.3), p_scaling=1.0, scaling=(0.8, 1.2), p_synchronize_scaling_across_axes=1,
                         bg_style_seg_sampling=False, border_mode_seg="constant", padding_value_seg=-1),
        MirrorTransform(allowed_axes=(0, 1, 2))])
    label_manager = PlansManager(plans).get_label_manager(json.loads((pre / "dataset.json").read_text()))
    loader = nnUNetDataLoader(NormativeDataset(folder, keys, lambda k, props: own[k]), 2, [24, 24, 24], patch,
                              label_manager, oversample_foreground_percent=0.0, transforms=transforms)
    n_ch = len(json.loads((pre / "dataset.json").read_text())["channel_names"])
    for _ in range(4):
        data = loader.generate_train_batch()["data"]
        assert data.shape[1] == n_ch + 1
        assert data[:, 0].abs().max() > 0.5  # patches with tissue in them, so equality means something
        assert torch.allclose(data[:, -1], data[:, 0], atol=1e-5)


def test_normative_run_keeps_its_mean_and_refuses_the_other_maps(env):
    """Normative maps: the checkpoint holds the mean map, which takes away most of the healthy training cases' map
    (their average error); the predictor needs a case's crop to subtract it; a run on plain maps cannot resume it;
    --maps is for reconstruction trainers only."""
    from blogrr_nnu.inference.predictor import BlogrrPredictor

    tr = _trainer(epochs=2, iters=3, pseudo_label="gmm", normative=True)
    tr.run_training()
    ckpt = load_checkpoint(os.path.join(tr.output_folder, "checkpoint_final.pth"))
    assert ckpt["normative"] and ckpt["normative_map"].abs().max() > 0.1
    plain, normed = [], []
    for k in tr.keys["healthy_train"]:
        case = tr.load_case(k)
        plain.append(float(tr.plain_anomaly(case)[1][case.brain].mean()))
        normed.append(float(tr.anomaly(case)[1][case.brain].mean()))
    assert abs(np.mean(normed)) < 0.25 * np.mean(plain), (plain, normed)
    p = BlogrrPredictor(device=torch.device("cpu"), allow_tqdm=False)
    p.initialize_from_run_folder(os.path.dirname(str(tr.output_folder)), use_folds=["0"])
    case = tr.tumor_train[0]
    with pytest.raises(ValueError, match="CaseSpace"):
        p.predict_preprocessed(case.data.numpy(), case.brain[0].numpy(), tuple(case.props["spacing"]))
    plain_run = _trainer(epochs=2, iters=3, pseudo_label="gmm", normative=False)
    with pytest.raises(ValueError, match="normative maps, this run is on plain"):
        plain_run.load_checkpoint(os.path.join(tr.output_folder, "checkpoint_final.pth"))
    with pytest.raises(ValueError, match="--maps applies"):
        _trainer(trainer="cgc", normative=True)
