"""The self-configuring planner: nnU-Net's ExperimentPlanner, taught about reconstruction networks.

What we take from nnU-Net unchanged: target spacing from the median spacing (with its anisotropy
rule), network topology from spacing and patch size, the memory estimate against a GPU memory target
and the patch/batch-size search (``get_plans_for_configuration``), the 3d_lowres rule. What we change:

- the dataset is read from our raw format and our fingerprint (nnU-Net's ``__init__`` hard-wires
  ``nnUNet_raw`` and ``labelsTr``), and arrays live in template-aligned space with axial slices first
  (``transpose_forward = [2, 0, 1]``);
- the reconstruction network outputs as many channels as it takes (memory estimate included);
- every configuration carries a ``blogrr`` block: coarse noise, anomaly smoothing, sigmoid steepness
  and threshold-network input, expressed for our normalised intensities (docs/plans.md);
- CPU variants (``2d_cpu``, ``3d_cpu``: narrower network, coarser spacing) that train in minutes on a
  laptop-class CPU, chosen by default when no GPU is present.
"""
from __future__ import annotations

import json
import logging
from copy import deepcopy
from pathlib import Path

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.json_export import recursive_fix_for_json_export

from blogrr_nnu.image_io import atomic_write

logger = logging.getLogger(__name__)

PLANS_NAME = "blogrr_plans"
TRANSPOSE_FORWARD = [2, 0, 1]  # template (X, Y, Z) -> stored (Z, X, Y): axial slices first
# Reference method (BLOGRR): images in [0, 1], coarse noise std 0.2 on a 16x16 grid over 128 px,
# anomaly-map Gaussian sigma 4 px, sigmoid steepness 50. BraTS slices are 240 px at 1 mm resized to
# 128 px, i.e. 1.875 mm per pixel: a noise cell is 8 px = 15 mm and the smoothing sigma 7.5 mm.
REF_NOISE_STD_01 = 0.2
REF_NOISE_CELL_MM = 15.0
REF_SMOOTH_SIGMA_MM = 7.5
REF_SMOOTH_RADIUS_MM = 3.75  # the reference's 5x5 kernel: +-2 px of 1.875 mm
REF_SIGMOID_STEEPNESS_01 = 50.0
REF_ERROR_TOLERANCE_WEIGHT = 0.5
# CPU variants: nnU-Net's topology with these widths and spacings (DESIGN.md section 6 measured
# 1.4 s per step for 3D 8-64 at 56x64x56, batch 2, and 0.42 s for 2D 16-128 at 96x112, batch 8).
# On a CPU the limit is compute time, not memory, so their batch size is fixed instead of filling a
# memory target.
CPU_3D = {"min_spacing": 3.0, "base_features": 8, "max_features": 64, "memory_gb": 2.0, "batch_size": 2}
CPU_2D = {"min_spacing": 2.0, "base_features": 16, "max_features": 128, "memory_gb": 2.0, "batch_size": 8}
# Whole-brain input of the threshold network: at most this many voxels along the longest axis.
THRESHOLD_INPUT_MAX_3D = 48
THRESHOLD_INPUT_MAX_2D = 96


class BlogrrPlanner(ExperimentPlanner):
    """ExperimentPlanner for reconstruction networks on template-aligned brains.

    Args:
        dataset_name: ``DatasetXXX_Name``.
        dataset_json: the raw dataset.json.
        fingerprint: output of :func:`blogrr_nnu.planners.fingerprint.extract_fingerprint`.
        output_folder: the dataset's preprocessed folder (plans are written there).
        gpu_memory_target_in_gb: memory target for the GPU configurations (nnU-Net's default 8).

    Example:
        >>> planner = BlogrrPlanner("Dataset501_BlogrrDemo", dj, fp, out_dir, 8)  # doctest: +SKIP
        >>> plans = planner.plan_experiment()  # doctest: +SKIP
    """

    def __init__(self, dataset_name: str, dataset_json: dict, fingerprint: dict, output_folder: str | Path,
                 gpu_memory_target_in_gb: float = 8.0):
        # nnU-Net's __init__ reads nnUNet_raw and expects labelsTr for every case; set the same state
        # from our inputs instead of calling it. tests/test_planner_init.py runs nnU-Net's real __init__ and fails
        # when nnunetv2 sets an attribute this one does not, or changes a default copied here.
        self.dataset_name = dataset_name
        self.output_folder = Path(output_folder)
        self.suppress_transpose = False
        self.dataset_json = deepcopy(dataset_json)
        self.dataset_json.setdefault("labels", {"background": 0, "tumor": 1})
        self.dataset_json["numTraining"] = int(dataset_json.get("numHealthy", 0))
        self.dataset_fingerprint = fingerprint
        self.num_input_channels = len(dataset_json["channel_names"])
        self.anisotropy_threshold = 3
        self.UNet_base_num_features = 32
        from dynamic_network_architectures.architectures.unet import PlainConvUNet
        self.UNet_class = PlainConvUNet
        self.UNet_reference_val_3d = 560000000
        self.UNet_reference_val_2d = 85000000
        self.UNet_reference_com_nfeatures = 32
        self.UNet_reference_val_corresp_GB = 8
        self.UNet_reference_val_corresp_bs_2d = 12
        self.UNet_reference_val_corresp_bs_3d = 2
        self.UNet_featuremap_min_edge_length = 4
        self.UNet_blocks_per_stage_encoder = (2,) * 14
        self.UNet_blocks_per_stage_decoder = (2,) * 13
        self.UNet_min_batch_size = 2
        self.UNet_max_features_2d = 512
        self.UNet_max_features_3d = 320
        self.max_dataset_covered = 0.05
        self.UNet_vram_target_GB = float(gpu_memory_target_in_gb)
        self.lowres_creation_threshold = 0.25
        self.preprocessor_name = "BlogrrPreprocessor"
        self.plans_identifier = PLANS_NAME
        self.overwrite_target_spacing = None
        self.plans = None

    # -- what differs from nnU-Net ----------------------------------------------------------------
    def determine_transpose(self):
        """Axial slices first, whatever the spacing: arrays are template-aligned."""
        return list(TRANSPOSE_FORWARD), [int(i) for i in np.argsort(TRANSPOSE_FORWARD)]

    def determine_normalization_scheme_and_whether_mask_is_used_for_norm(self):
        """Robust z-score inside the brain for every channel (blogrr_nnu.planners.preprocessing)."""
        return ["BlogrrRobustZScore"] * self.num_input_channels, [True] * self.num_input_channels

    def static_estimate_VRAM_usage(self, patch_size, input_channels, output_channels, arch_class_name, arch_kwargs,
                                   arch_kwargs_req_import):
        """nnU-Net's estimate (conv feature-map size) for a network whose output has the input's channels."""
        net = get_network_from_plans(arch_class_name, arch_kwargs, arch_kwargs_req_import, input_channels,
                                     self.num_input_channels, allow_init=False)
        return net.compute_conv_feature_map_size(patch_size)

    def memory_estimate_gb(self, plan: dict) -> float:
        """nnU-Net's memory model in GB for the plan's patch and batch size (what is compared to the target)."""
        dim = len(plan["patch_size"])
        arch = plan["architecture"]
        est = self.static_estimate_VRAM_usage(plan["patch_size"], self.num_input_channels, self.num_input_channels,
                                              arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"])
        ref_val = self.UNet_reference_val_2d if dim == 2 else self.UNet_reference_val_3d
        ref_bs = self.UNet_reference_val_corresp_bs_2d if dim == 2 else self.UNet_reference_val_corresp_bs_3d
        return float(est / ref_bs * plan["batch_size"] / ref_val * self.UNet_reference_val_corresp_GB)

    # -- our fields ---------------------------------------------------------------------------------
    def _normalised_range(self) -> list[float]:
        """Per channel, p0.5..p99.5 width of the normalised intensities of healthy brains."""
        healthy = [c for c in self.dataset_fingerprint["cases"] if c["role"] == "healthy"] or \
            self.dataset_fingerprint["cases"]
        ranges = []
        for ch in range(self.num_input_channels):
            widths = []
            for c in healthy:
                st = c["intensity"][ch]
                scale = max((st["p75"] - st["p25"]) / 1.349, 1e-8)
                widths.append((st["p99.5"] - st["p0.5"]) / scale)
            ranges.append(float(np.median(widths)))
        return ranges

    def _blogrr_block(self, plan: dict, device_class: str, brain_shape: np.ndarray) -> dict:
        spacing = np.asarray(plan["spacing"], float)
        patch = np.asarray(plan["patch_size"], int)
        ranges = self._normalised_range()
        dim = len(patch)
        # Noise cells of ~15 mm: grid = patch extent in mm / cell size (at least 2 cells per axis).
        grid = np.maximum(2, np.round(patch * spacing / REF_NOISE_CELL_MM)).astype(int)
        limit = THRESHOLD_INPUT_MAX_3D if dim == 3 else THRESHOLD_INPUT_MAX_2D
        extent = brain_shape[-dim:] * spacing
        t_spacing = max(float(spacing.max()), float(extent.max()) / limit)
        t_size = [int(np.ceil(e / t_spacing / 8.0) * 8) for e in extent]
        return {
            "device_class": device_class,
            "reconstruction_output_channels": self.num_input_channels,
            "normalised_range_per_channel": ranges,
            "coarse_noise": {
                "grid": grid.tolist(),
                "cell_mm": REF_NOISE_CELL_MM,
                "std_per_channel": [REF_NOISE_STD_01 * r for r in ranges],
                "roll": True,
                "brain_only": True,
            },
            "anomaly_sigma_mm": REF_SMOOTH_SIGMA_MM,
            "anomaly_sigma_voxels": (REF_SMOOTH_SIGMA_MM / spacing).tolist(),
            "anomaly_kernel_radius_mm": REF_SMOOTH_RADIUS_MM,
            "anomaly_kernel_radius_voxels": np.maximum(1, np.round(REF_SMOOTH_RADIUS_MM / spacing)).astype(int).tolist(),
            "sigmoid_steepness": REF_SIGMOID_STEEPNESS_01 / float(np.mean(ranges)),
            "error_tolerance_weight": REF_ERROR_TOLERANCE_WEIGHT,
            "threshold_net": {"input_size": t_size, "input_spacing": t_spacing,
                              "per_case": dim == 3, "features": [16, 32, 64, 128]},
            "memory_estimate_gb": self.memory_estimate_gb(plan),
        }

    def _configuration(self, name: str, spacing: np.ndarray, shape: np.ndarray, n_vox: float, cache: dict,
                       *, base: int | None = None, max_f: int | None = None, memory_gb: float | None = None,
                       cpu_batch_size: int | None = None) -> dict:
        saved = (self.UNet_base_num_features, self.UNet_max_features_2d, self.UNet_max_features_3d,
                 self.UNet_vram_target_GB)
        try:
            if base is not None:
                self.UNet_base_num_features = base
                self.UNet_max_features_2d = self.UNet_max_features_3d = max_f
                self.UNet_vram_target_GB = memory_gb
            plan = self.get_plans_for_configuration(spacing, shape, f"{PLANS_NAME}_{name}", n_vox, cache)
            plan["batch_dice"] = False
            if cpu_batch_size is not None:
                plan["batch_size"] = cpu_batch_size
            # nnU-Net rounds the batch size, which can overshoot the target by a fraction of a sample.
            while plan["batch_size"] > self.UNet_min_batch_size and self.memory_estimate_gb(plan) > self.UNet_vram_target_GB:
                plan["batch_size"] -= 1
            plan["blogrr"] = self._blogrr_block(plan, "cpu" if base is not None else "gpu",
                                                np.asarray(shape, float))
            plan["blogrr"]["memory_target_gb"] = self.UNet_vram_target_GB
        finally:
            (self.UNet_base_num_features, self.UNet_max_features_2d, self.UNet_max_features_3d,
             self.UNet_vram_target_GB) = saved
        return plan

    def plan_experiment(self) -> dict:
        """Plan 2d, 3d_fullres (+3d_lowres where nnU-Net would) and the CPU variants; save and return the plans."""
        fwd, bwd = self.determine_transpose()
        spacing = np.asarray(self.determine_fullres_target_spacing(), float)  # template X, Y, Z
        fp = self.dataset_fingerprint
        shapes = [compute_new_shape(s, sp, spacing) for s, sp in zip(fp["shapes_after_crop"], fp["spacings"])]
        median_t = np.median(shapes, 0)[fwd]
        max_t = np.max(shapes, 0)[fwd]
        spacing_t = spacing[fwd]
        n_vox = float(np.prod(median_t) * max(1, self.dataset_json["numTraining"]))
        cache: dict = {}
        configs = {"3d_fullres": self._configuration("3d_fullres", spacing_t, median_t, n_vox, cache)}
        # 3d_lowres as nnU-Net decides: when the fullres patch covers < 25% of the median brain.
        fullres = configs["3d_fullres"]
        if np.prod(fullres["patch_size"]) / np.prod(median_t) < self.lowres_creation_threshold:
            low_spacing = spacing_t.copy()
            low_shape = median_t.copy()
            while True:
                low_spacing = low_spacing * 1.03
                low_shape = spacing_t / low_spacing * median_t
                plan = self._configuration("3d_lowres", low_spacing, np.round(low_shape), n_vox, cache)
                if np.prod(plan["patch_size"]) / np.prod(low_shape) >= self.lowres_creation_threshold:
                    break
            if np.prod(median_t) / np.prod(low_shape) >= 2:
                configs["3d_lowres"] = plan
        # 2D: the in-plane patch covers the largest brain, so a slice is seen whole.
        configs["2d"] = self._configuration("2d", spacing_t[1:], max_t[1:], n_vox, cache)
        # CPU variants: coarser spacing, narrower network, small memory budget.
        sp3 = np.maximum(spacing_t, CPU_3D["min_spacing"])
        configs["3d_cpu"] = self._configuration("3d_cpu", sp3, np.round(median_t * spacing_t / sp3), n_vox, cache,
                                                base=CPU_3D["base_features"], max_f=CPU_3D["max_features"],
                                                memory_gb=CPU_3D["memory_gb"], cpu_batch_size=CPU_3D["batch_size"])
        sp2 = np.maximum(spacing_t, CPU_2D["min_spacing"])
        configs["2d_cpu"] = self._configuration("2d_cpu", sp2[1:], np.round(max_t * spacing_t / sp2)[1:], n_vox, cache,
                                                base=CPU_2D["base_features"], max_f=CPU_2D["max_features"],
                                                memory_gb=CPU_2D["memory_gb"], cpu_batch_size=CPU_2D["batch_size"])
        for name, plan in configs.items():
            # Every configuration stores its own data at its own spacing (2d's slices are cut from a
            # volume at the 3D spacing with the 2D in-plane spacing).
            plan["spacing_3d"] = ([float(spacing_t[0])] + list(plan["spacing"]) if len(plan["spacing"]) == 2
                                  else list(plan["spacing"]))
        plans = {
            "dataset_name": self.dataset_name,
            "plans_name": PLANS_NAME,
            "original_median_spacing_after_transp": [float(v) for v in np.median(fp["spacings"], 0)[fwd]],
            "original_median_shape_after_transp": [int(round(v)) for v in np.median(fp["shapes_after_crop"], 0)[fwd]],
            "image_reader_writer": "SimpleITKIO",
            "transpose_forward": fwd,
            "transpose_backward": bwd,
            "configurations": configs,
            "experiment_planner_used": type(self).__name__,
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": fp["foreground_intensity_properties_per_channel"],
            "gpu_memory_target_gb": self.UNet_vram_target_GB,
        }
        self.plans = plans
        self.save_plans(plans)
        return plans

    def save_plans(self, plans: dict) -> Path:
        """Write ``blogrr_plans.json`` atomically into the preprocessed folder."""
        recursive_fix_for_json_export(plans)
        path = self.output_folder / f"{PLANS_NAME}.json"
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(plans, indent=1)))
        logger.info("plans written to %s", path)
        return path
