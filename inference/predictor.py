"""BlogrrPredictor: nnU-Net's predictor, for a reconstruction network and a per-case threshold.

Why a subclass of ``nnUNetPredictor`` that replaces most of the path: nnU-Net's preprocessing
(crop, resample in native orientation, dataset-level normalisation) and export (argmax of
segmentation logits) do not apply here. Our cases are registered to the MNI template, resampled on
a template-aligned grid and normalised per case; the network reconstructs the image. So we keep the
predictor's settings and state (``tile_step_size``, ``use_gaussian``, ``use_mirroring``, ``device``,
``plans_manager``, ``configuration_manager``, ``list_of_parameters`` loaded into one network fold
after fold, ``manual_initialization``), and replace:

- model loading (:meth:`initialize_from_run_folder`): classes, not names (nnU-Net's by-name trainer
  lookup imports timm -> torchvision, DESIGN.md section 6), and ``torch.load(weights_only=True)``;
- :meth:`predict_sliding_window_return_logits`: fp32 stitching with as many channels as the input
  (nnU-Net buffers fp16 with ``num_segmentation_heads`` channels: up to 0.2 off for a reconstruction);
- per case (:meth:`predict_case`): registration and preprocessing exactly as in training
  (:func:`blogrr_nnu.planners.preprocessing.prepare_case`), anomaly map, tau from the threshold
  network, soft mask ``sigmoid(k (A - tau))`` averaged over folds, threshold 0.5, removal of tiny
  components, and the way back to the input's native grid (:class:`blogrr_nnu.spatial.CaseSpace`).

What differs between kinds of run (reconstruction + threshold, segmentation network, GMM without a network) is one small
strategy each (:mod:`blogrr_nnu.inference.strategies`); the predictor keeps registration, preprocessing, folds, export.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from blogrr_nnu import gmm as G
from blogrr_nnu.image_io import Geometry
from blogrr_nnu.nnunet_output import prints_as_log
from blogrr_nnu.plans_block import BlogrrBlock, PlansBlockError, configuration_block
from blogrr_nnu.sliding_window import inference_tile_size, sliding_window_reconstruct
from blogrr_nnu.networks import build_reconstruction_network, build_threshold_network
from blogrr_nnu.planners.api import spacing_xyz
from blogrr_nnu.planners.fingerprint import registration_channel
from blogrr_nnu.planners.preprocessing import prepare_case
from blogrr_nnu.registration import register_to_template
from blogrr_nnu.threshold_modes import ThresholdMode
from blogrr_nnu.cases import WholeCase
from blogrr_nnu.checkpoint import load_checkpoint, load_stock_checkpoint
from blogrr_nnu.inference.strategies import (SEGMENTATION_METHODS, GMMStrategy, ReconstructionStrategy,
                                             SegmentationStrategy, Strategy)

logger = logging.getLogger(__name__)

# Components smaller than this are removed from the mask. The anomaly map is smoothed with a
# Gaussian of sigma 7.5 mm (FWHM ~18 mm), so a finding much smaller than a 10 mm sphere (0.52 ml)
# cannot be resolved; what remains of that size is noise of the map.
DEFAULT_MIN_COMPONENT_ML = 0.5


class ModelFolderError(ValueError):
    """A run folder is missing files or does not match what prediction needs."""


@dataclass
class CasePrediction:
    """The result for one case, on its native grid.

    Attributes:
        mask: ``(X, Y, Z)`` uint8 {0, 1}, the input's native grid.
        anomaly_map: ``(X, Y, Z)`` float32 fold-mean anomaly map (normalised units), native grid.
        geometry: the input's geometry (channel 0).
        tau: fold-mean threshold (per case; the mean over slices for 2D configurations).
        info: JSON-ready details: taus per fold (and per slice), voxel count, volume in ml, registration.
    """

    mask: np.ndarray
    anomaly_map: np.ndarray
    geometry: Geometry
    tau: float
    info: dict = field(default_factory=dict)


def parse_run_folder_name(name: str) -> tuple[str, str, str]:
    """``<Trainer>__<plans>__<configuration>`` -> its three parts."""
    parts = name.split("__")
    if len(parts) != 3:
        raise ModelFolderError(f"{name}: not a run folder name of the form <Trainer>__<plans>__<configuration>")
    return parts[0], parts[1], parts[2]


class BlogrrPredictor(nnUNetPredictor):
    """Predict tumour masks with trained BLOGRR folds (or a DAE with a fixed threshold).

    Args:
        tile_step_size: sliding-window step as a fraction of the patch (0.5 as nnU-Net).
        use_gaussian: Gaussian weighting of the windows.
        use_mirroring: left-right mirroring test-time augmentation. Off by default: the threshold network
            was trained on anomaly maps made without it, and mirroring lowers the reconstruction error
            (and so shifts the map against the learned tau).
        device: where the networks run; stitching stays on the CPU.
        min_component_ml: connected components (26-connectivity) smaller than this are removed (0 = keep all).
        fixed_threshold: a threshold in normalised units that replaces the threshold network (needed for
            DAE runs, which have none).
        registration_seed: seed of the registration's metric sampling (as ``blogrr_plan_and_preprocess``).
        allow_tqdm: progress bars.

    Example:
        >>> p = BlogrrPredictor(device=torch.device("cpu"))  # doctest: +SKIP
        >>> p.initialize_from_run_folder("results/Dataset501_BlogrrDemo/BlogrrTrainerNormative__blogrr_plans__3d_cpu")  # doctest: +SKIP
        >>> pred = p.predict_case(data, geometry)  # doctest: +SKIP
    """

    def __init__(self, tile_step_size: float = 0.5, use_gaussian: bool = True, use_mirroring: bool = False,
                 device: torch.device = torch.device("cpu"), *, min_component_ml: float = DEFAULT_MIN_COMPONENT_ML,
                 fixed_threshold: float | None = None, registration_seed: int = 0, verbose: bool = False,
                 allow_tqdm: bool = True):
        if not 0 < tile_step_size <= 1:
            raise ValueError(f"tile_step_size must be in (0, 1], got {tile_step_size}")
        if min_component_ml < 0:
            raise ValueError(f"min_component_ml must be >= 0, got {min_component_ml}")
        device = torch.device(device)
        with prints_as_log(logger):  # nnU-Net prints a CUDA-only notice on every CPU start
            super().__init__(tile_step_size, use_gaussian, use_mirroring,
                             perform_everything_on_device=device.type == "cuda", device=device, verbose=verbose,
                             allow_tqdm=allow_tqdm)
        self.min_component_ml = float(min_component_ml)
        self.fixed_threshold = fixed_threshold
        self.registration_seed = int(registration_seed)
        self.threshold_network = None
        # as in training: a case within twice the patch's voxels runs as one window (0 = always the patch)
        self.whole_case_max_factor = 2.0
        self.threshold_input = "image+anomaly"
        self.threshold_per_case = True
        self.threshold_model = "contrast"
        self.threshold_mode: ThresholdMode | None = None
        # fp32 windows by default (the anomaly map is a small difference of large numbers); True runs them under fp16
        # autocast on CUDA as nnU-Net's predictor does (scripts/gpu_check.sh measures both: docs/performance.md)
        self.use_autocast = False
        self.method = "blogrr"
        self.strategy: Strategy = ReconstructionStrategy()  # what a run predicts (blogrr_nnu.inference.strategies)
        self.configuration_name = ""
        self.used_folds: list[str] = []
        self.checkpoint_name = ""
        self.model_files: list[Path] = []  # what initialisation read the weights / model from

    # -- loading --------------------------------------------------------------------------------------
    def initialize_from_run_folder(self, model_folder: str | Path, use_folds: list[str] | None = None,
                                   checkpoint_name: str = "checkpoint_final.pth") -> None:
        """Load plans, dataset.json and the folds' weights of a ``blogrr_train`` run folder.

        Args:
            model_folder: ``$BLOGRR_results/DatasetXXX_Name/<Trainer>__blogrr_plans__<configuration>``.
            use_folds: folds (``"0"``..``"4"``, ``"all"``); default: every ``fold_*`` with ``checkpoint_name``.
            checkpoint_name: ``checkpoint_final.pth`` (default), ``checkpoint_best.pth`` or ``checkpoint_latest.pth``.

        Raises:
            ModelFolderError: missing plans/dataset.json/checkpoints, or folds that disagree.
            UnsafeCheckpointError: a checkpoint holds objects that could run code.
        """
        folder = Path(model_folder)
        if not folder.is_dir():
            raise ModelFolderError(f"{folder}: run folder not found; train first with blogrr_train")
        trainer_name, _, configuration = parse_run_folder_name(folder.name)
        for name in ("plans.json", "dataset.json"):
            if not (folder / name).is_file():
                raise ModelFolderError(f"{folder / name}: missing; it is written when training starts "
                                       "(re-run blogrr_train ... --c with this blogrr-nnu version)")
        plans = json.loads((folder / "plans.json").read_text())
        dataset_json = json.loads((folder / "dataset.json").read_text())
        if use_folds is None:
            use_folds = sorted(p.name[len("fold_"):] for p in folder.glob("fold_*") if (p / checkpoint_name).is_file())
            if not use_folds:
                raise ModelFolderError(f"{folder}: no fold_*/{checkpoint_name}; finish training (or pick -chk "
                                       "checkpoint_best.pth / checkpoint_latest.pth)")
        checkpoints = []
        for f in use_folds:
            path = folder / f"fold_{f}" / checkpoint_name
            if not path.is_file():
                raise ModelFolderError(f"{path}: not found; train fold {f} first or leave it out of -f")
            checkpoints.append(load_stock_checkpoint(path) if trainer_name.startswith("nnUNetTrainer")
                               else load_checkpoint(path, "cpu"))
        inputs = {(c.get("threshold_model", "reference"), c.get("threshold_input", "image+anomaly")) for c in checkpoints}
        if len(inputs) > 1:
            raise ModelFolderError(f"{folder}: folds were trained with different threshold networks {sorted(inputs)}")
        self.checkpoint_name = checkpoint_name
        self.model_files = [folder / f"fold_{f}" / checkpoint_name for f in use_folds]
        self.used_folds = [str(f) for f in use_folds]
        self.initialize_from_checkpoints(plans, configuration, dataset_json, checkpoints, trainer_name)

    def initialize_from_checkpoints(self, plans: dict, configuration: str, dataset_json: dict, checkpoints: list[dict],
                                    trainer_name: str = "BlogrrTrainer") -> None:
        """Build the networks from the plans and keep each fold's weights (loaded fold after fold)."""
        if configuration not in plans["configurations"]:
            raise ModelFolderError(f"configuration {configuration!r} is not in the plans")
        self._parse_block(plans, configuration, f"{trainer_name} plans.json")
        pm = PlansManager(plans)
        cm = pm.get_configuration(configuration)
        self.configuration_name = configuration
        n_ch = len(dataset_json["channel_names"])
        dim = len(cm.patch_size)
        methods = {c.get("method", "blogrr") for c in checkpoints}
        if len(methods) > 1:
            raise ModelFolderError(f"{trainer_name}: folds of different methods {sorted(methods)} cannot be ensembled")
        self.method = methods.pop()
        if self.method in SEGMENTATION_METHODS:  # tumour probability >= 0.5, no threshold network
            self.strategy = SegmentationStrategy(self.method)
            from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

            arch = cm.configuration["architecture"]
            network = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"],
                                             arch["_kw_requires_import"], n_ch, 2, allow_init=True,
                                             deep_supervision=False)
            axes = tuple(checkpoints[0].get("inference_allowed_mirroring_axes") or ())
            self.manual_initialization(network.to(self.device).eval(), pm, cm, checkpoints, dataset_json, trainer_name,
                                       axes)
            return
        self.strategy = ReconstructionStrategy()
        if problem := self.strategy.check_maps(checkpoints):
            raise ModelFolderError(f"{trainer_name}: {problem}")
        network = build_reconstruction_network(cm.configuration, n_ch)
        trained_t = [bool(c.get("tau_initialised")) and "threshold_weights" in c for c in checkpoints]
        if self.fixed_threshold is None and not all(trained_t):
            raise ModelFolderError(f"{trainer_name}: the run has no trained threshold network (a DAE run, or stopped "
                                   "before the first upper loop); give a threshold with --threshold VALUE")
        self.threshold_input = checkpoints[0].get("threshold_input", "image+anomaly")
        self.threshold_per_case = bool(checkpoints[0].get("threshold_per_case", dim == 3))
        self.threshold_model = checkpoints[0].get("threshold_model", "reference")  # older checkpoints: the CNN
        self.threshold_mode = ThresholdMode.create(self.threshold_model, dim, self.blogrr,
                                                   threshold_input=self.threshold_input,
                                                   per_case_2d=self.threshold_per_case)
        if self.fixed_threshold is None:
            self.threshold_network = build_threshold_network(self.blogrr, n_ch, dim, self.threshold_input,
                                                             self.threshold_model).to(self.device).eval()
        axes = tuple(checkpoints[0].get("inference_allowed_mirroring_axes") or ())
        self.manual_initialization(network.to(self.device).eval(), pm, cm, checkpoints, dataset_json, trainer_name, axes)

    def initialize_gmm(self, plans: dict, configuration: str, dataset_json: dict, healthy_model: dict) -> None:
        """The "GMM w/ threshold" baseline: no network; each case's GMM tumour components (docs/pseudo_labels.md).

        Args:
            healthy_model: the configuration's ``healthy_intensity_model.json`` (from preprocessing).
        """
        if configuration not in plans["configurations"]:
            raise ModelFolderError(f"configuration {configuration!r} is not in the plans")
        self._parse_block(plans, configuration, "preprocessed plans")
        self.plans_manager = PlansManager(plans)
        self.configuration_manager = self.plans_manager.get_configuration(configuration)
        self.configuration_name = configuration
        self.dataset_json = dataset_json
        self.method = "gmm"
        self.strategy = GMMStrategy(G.HealthyModel.from_dict(healthy_model))
        self.list_of_parameters = []  # no folds: the strategy's one member is the healthy model
        self.used_folds = ["gmm"]

    def initialize_gmm_from_preprocessed(self, folder: str | Path, configuration: str) -> None:
        """:meth:`initialize_gmm` with plans, dataset.json and healthy model of a preprocessed dataset folder.

        Raises:
            ModelFolderError: the configuration is not planned, or its healthy model is missing.
        """
        from blogrr_nnu.planners.api import load_plans
        from blogrr_nnu.pseudo_labels import MODEL_FILE

        folder = Path(folder)
        plans = load_plans(folder)
        if configuration not in plans["configurations"]:
            raise ModelFolderError(f"configuration {configuration!r} is not in the plans "
                                   f"({', '.join(plans['configurations'])})")
        model = folder / plans["configurations"][configuration]["data_identifier"] / MODEL_FILE
        if not model.is_file():
            raise ModelFolderError(f"{model}: missing; run `blogrr_pseudo_labels -d {folder.name} -c {configuration}`")
        dj = json.loads((folder / "dataset.json").read_text())
        self.initialize_gmm(plans, configuration, dj, json.loads(model.read_text()))
        self.model_files = [model]

    @property
    def blogrr(self) -> BlogrrBlock:
        """The configuration's ``blogrr`` plans block, parsed when the predictor was initialised."""
        return self._blogrr

    def _parse_block(self, plans: dict, configuration: str, source: str) -> None:
        try:
            self._blogrr = configuration_block(plans, configuration, source)
        except PlansBlockError as exc:
            raise ModelFolderError(str(exc)) from None

    # -- nnU-Net's hook, in fp32 with the input's channel count ---------------------------------------
    @torch.inference_mode()
    def predict_sliding_window_return_logits(self, input_image: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(C, *S)`` float32 on the CPU of the loaded fold (the name is nnU-Net's; these are not logits).

        With ``perform_everything_on_device`` (set on CUDA, as nnU-Net) the windows are stitched on the device, and
        on the CPU when that runs out of memory (as nnU-Net falls back).
        """
        mirror = self.allowed_mirroring_axes if self.use_mirroring else None
        patch = self.configuration_manager.patch_size
        tile = inference_tile_size(input_image.shape[1:], patch, self.configuration_manager.configuration[
            "architecture"]["arch_kwargs"]["strides"], self.whole_case_max_factor)

        def run(stitch_device):
            return sliding_window_reconstruct(self.network, input_image, tile,
                                              out_channels=self.strategy.out_channels,
                                              tile_step_size=self.tile_step_size, use_gaussian=self.use_gaussian,
                                              mirror_axes=mirror, window_device=self.device, stitch_device=stitch_device,
                                              autocast=self.use_autocast).cpu()

        if self.perform_everything_on_device and self.device.type != "cpu":
            try:
                return run(self.device)
            except torch.cuda.OutOfMemoryError:
                logger.warning("out of GPU memory while stitching on the device: stitching this case on the CPU")
                torch.cuda.empty_cache()
        return run("cpu")

    # -- one case ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_case(self, data: np.ndarray, geometry: Geometry) -> CasePrediction:
        """Predict one case given as native arrays.

        Args:
            data: ``(C, X, Y, Z)`` intensities of all channels (skull-stripped: 0 outside the brain).
            geometry: the native grid of the channels.

        Returns:
            A :class:`CasePrediction` on the native grid.
        """
        if self.configuration_manager is None:
            raise RuntimeError("initialize the predictor first (initialize_from_run_folder or initialize_gmm)")
        n_ch = len(self.dataset_json["channel_names"])
        if data.ndim != 4 or data.shape[0] != n_ch:
            raise ValueError(f"expected {n_ch} channels of 3D data, got shape {tuple(data.shape)}")
        reg = register_to_template(data[registration_channel(self.dataset_json["channel_names"])], geometry,
                                   seed=self.registration_seed)
        # 2D configurations keep the slice spacing of the 3D grid ("spacing_3d"); spacing_xyz reads it
        spacing = spacing_xyz(self.plans_manager.plans, self.configuration_name)
        space, image, brain, _ = prepare_case(data, geometry, reg.case_to_template, spacing,
                                              self.plans_manager.transpose_forward)
        soft, amap_mean, taus = self.predict_preprocessed(image, brain, space_spacing(space), space)
        per_slice = self.threshold_mode is not None and self.threshold_mode.per_slice
        hard, removed = self.remove_small_components(soft >= 0.5, space_spacing(space))
        # zero the removed components only; the soft values around kept ones still shape their borders
        soft = np.where((soft >= 0.5) & ~hard, 0.0, soft).astype(np.float32)
        mask = space.mask_to_native(soft)
        amap_native = space.to_native(amap_mean, linear=True)
        voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
        tau_mean = float(np.mean([np.mean(t) for t in taus]))
        info = {
            "tau": tau_mean,
            "tau_per_fold": [float(np.mean(t)) for t in taus],
            "threshold_source": self.strategy.threshold_source(self),
            "voxels": int(mask.sum()),
            "volume_ml": float(mask.sum() * voxel_ml),
            "components_removed": removed,
            "min_component_ml": self.min_component_ml,
            "folds": self.used_folds or [str(i) for i in range(len(self.strategy.members(self)))],
            "registration": {"metric": reg.metric, "brain_dice": reg.brain_dice},
            "anomaly_units": self.strategy.anomaly_units(self),
        }
        if per_slice:
            info["tau_per_slice_range"] = [float(np.min(taus)), float(np.max(taus))]
        return CasePrediction(mask, amap_native.astype(np.float32), geometry, tau_mean, info)

    @torch.inference_mode()
    def predict_preprocessed(self, image: np.ndarray, brain: np.ndarray, spacing,
                             space=None) -> tuple[np.ndarray, np.ndarray, list]:
        """The folds' mean soft mask and anomaly map of a case already on the stored grid, and each fold's tau.

        What :meth:`predict_case` does between preprocessing and the way back to the native grid; also what the
        GPU check (:mod:`blogrr_nnu.benchmarks.speed.gpu_check`) runs on cases preprocessed beforehand.

        Args:
            image: ``(C, *S)`` float32 normalised image; brain: ``(*S)`` mask; spacing: voxel size, stored axis order.
            space: the case's :class:`~blogrr_nnu.spatial.CaseSpace` or its stored dict (normative maps need its crop).

        Returns:
            ``(soft (*S) float32 in [0, 1], anomaly map (*S) float32, taus: one list per fold)``.
        """
        case = WholeCase("input", torch.from_numpy(image), torch.from_numpy(brain[None] > 0),
                         torch.zeros((1, *brain.shape)), None, {"case_space": space})
        soft_sum = torch.zeros((1, *brain.shape))
        amap_sum = torch.zeros((1, *brain.shape))
        taus = []
        members = self.strategy.members(self)
        for member in members:
            amap, soft, tau = self.strategy.predict(self, case, member, spacing)
            soft_sum += soft
            amap_sum += amap
            taus.append(tau.tolist())
        n = len(members)
        soft = (soft_sum / n)[0].numpy()
        amap_mean = (amap_sum / n)[0].numpy()
        return soft, amap_mean, taus

    def remove_small_components(self, mask: np.ndarray, spacing) -> tuple[np.ndarray, int]:
        """Drop 26-connected components smaller than ``min_component_ml``; returns ``(mask, number removed)``."""
        return G.remove_small_components(mask, spacing, self.min_component_ml)


def space_spacing(space) -> tuple[float, ...]:
    """Voxel size of a :class:`~blogrr_nnu.spatial.CaseSpace`'s stored array (stored axis order)."""
    return tuple(float(space.grid.spacing[i]) for i in space.transpose_forward)
