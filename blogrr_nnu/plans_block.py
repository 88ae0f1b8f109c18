"""The ``blogrr`` block of a configuration in the plans, parsed once into a typed, validated object.

nnU-Net parses its part of a configuration into a ``ConfigurationManager``; what BLOGRR adds (noise, anomaly map,
threshold network, schedule class; docs/plans.md) lives in the configuration's ``blogrr`` dict, written by
:class:`~blogrr_nnu.planners.planner.BlogrrPlanner`. :class:`BlogrrBlock` reads that dict once, checks every field
(type, length, range) and fails with one message naming the plans file and the fix on a bad or old block, so the
trainer, the predictor and the core read attributes (``block.coarse_noise.grid``) instead of string keys.

Example:
    >>> d = {"device_class": "cpu", "reconstruction_output_channels": 1, "normalised_range_per_channel": [4.0],
    ...      "coarse_noise": {"grid": [8, 8, 8], "cell_mm": 15.0, "std_per_channel": [0.8], "roll": True,
    ...                       "brain_only": True},
    ...      "anomaly_sigma_mm": 7.5, "anomaly_sigma_voxels": [2.5, 2.5, 2.5], "anomaly_kernel_radius_mm": 3.75,
    ...      "anomaly_kernel_radius_voxels": [1, 1, 1], "sigmoid_steepness": 7.5, "error_tolerance_weight": 0.5,
    ...      "threshold_net": {"input_size": [48, 40, 48], "input_spacing": 3.5, "per_case": True,
    ...                        "features": [16, 32, 64, 128]}}
    >>> b = BlogrrBlock.from_dict(d)
    >>> b.coarse_noise.grid, b.cpu, b.threshold_net.input_size
    ((8, 8, 8), True, (48, 40, 48))
    >>> BlogrrBlock.from_dict({**d, "sigmoid_steepness": -1.0})
    Traceback (most recent call last):
    ...
    blogrr_nnu.plans_block.PlansBlockError: plans: 'blogrr' block: sigmoid_steepness must be > 0, got -1.0; re-run blogrr_plan_and_preprocess for this dataset
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

DEVICE_CLASSES = ("cpu", "gpu")


class PlansBlockError(ValueError):
    """A configuration's ``blogrr`` block is missing, incomplete (an older blogrr-nnu) or invalid."""


def _fail(source: str, what: str) -> PlansBlockError:
    return PlansBlockError(f"{source}: 'blogrr' block: {what}; re-run blogrr_plan_and_preprocess for this dataset")


class _Reader:
    """Typed access to one dict of the block, with the message of the first bad field."""

    def __init__(self, d: Any, source: str, where: str = ""):
        if not isinstance(d, Mapping):
            raise _fail(source, f"{where or 'the block'} must be a JSON object, got {type(d).__name__}")
        self.d, self.source, self.where = d, source, where

    def _get(self, key: str):
        if key not in self.d:
            raise _fail(self.source, f"{self.where}{key} is missing (plans written by an older blogrr-nnu?)")
        return self.d[key]

    def number(self, key: str, *, positive: bool = False, minimum: float | None = None) -> float:
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _fail(self.source, f"{self.where}{key} must be a finite number, got {v!r}")
        if positive and v <= 0:
            raise _fail(self.source, f"{self.where}{key} must be > 0, got {v!r}")
        if minimum is not None and v < minimum:
            raise _fail(self.source, f"{self.where}{key} must be >= {minimum}, got {v!r}")
        return float(v)

    def flag(self, key: str) -> bool:
        v = self._get(key)
        if not isinstance(v, bool):
            raise _fail(self.source, f"{self.where}{key} must be true or false, got {v!r}")
        return v

    def numbers(self, key: str, *, integer: bool = False, length: int | None = None, positive: bool = True) -> tuple:
        v = self._get(key)
        ok = isinstance(v, (list, tuple)) and len(v) > 0 and all(
            not isinstance(x, bool) and isinstance(x, int if integer else (int, float)) and math.isfinite(x)
            and (x > 0 if positive else x >= 0) for x in v)
        if not ok or (length is not None and len(v) != length):
            kind = "whole numbers" if integer else "numbers"
            n = f"{length} " if length is not None else ""
            raise _fail(self.source, f"{self.where}{key} must be a list of {n}positive {kind}, got {v!r}")
        return tuple(int(x) if integer else float(x) for x in v)

    def sub(self, key: str) -> "_Reader":
        return _Reader(self._get(key), self.source, f"{self.where}{key}.")


@dataclass(frozen=True, kw_only=True)
class CoarseNoise:
    """The lower loop's coarse noise: cells per axis, their size, std per channel, random roll, brain only."""

    grid: tuple[int, ...]
    cell_mm: float
    std_per_channel: tuple[float, ...]
    roll: bool
    brain_only: bool


@dataclass(frozen=True, kw_only=True)
class ThresholdNetPlan:
    """The reference threshold network's input grid and widths (the map threshold networks need none of it)."""

    input_size: tuple[int, ...]
    input_spacing: float
    per_case: bool
    features: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class BlogrrBlock:
    """One configuration's ``blogrr`` block (docs/plans.md has the meaning of every field)."""

    device_class: str
    reconstruction_output_channels: int
    normalised_range_per_channel: tuple[float, ...]
    coarse_noise: CoarseNoise
    anomaly_sigma_mm: float
    anomaly_sigma_voxels: tuple[float, ...]
    anomaly_kernel_radius_mm: float
    anomaly_kernel_radius_voxels: tuple[int, ...]
    sigmoid_steepness: float
    error_tolerance_weight: float
    threshold_net: ThresholdNetPlan
    memory_estimate_gb: float | None = None
    memory_target_gb: float | None = None

    @property
    def cpu(self) -> bool:
        """A CPU configuration (``3d_cpu``, ``2d_cpu``): the short schedule and learning rates."""
        return self.device_class == "cpu"

    @classmethod
    def from_dict(cls, d: Any, source: str = "plans") -> "BlogrrBlock":
        """Parse and check a ``blogrr`` dict.

        Args:
            d: the configuration's ``blogrr`` entry.
            source: what to name in an error (the plans file and configuration).

        Raises:
            PlansBlockError: a missing, mistyped or out-of-range field (the message says which and the fix).
        """
        if isinstance(d, cls):
            return d
        if d is None:
            raise _fail(source, "missing (not plans of blogrr_plan_and_preprocess?)")
        r = _Reader(d, source)
        device = r._get("device_class")
        if device not in DEVICE_CLASSES:
            raise _fail(source, f"device_class must be one of {', '.join(DEVICE_CLASSES)}, got {device!r}")
        channels = r.number("reconstruction_output_channels", positive=True)
        ranges = r.numbers("normalised_range_per_channel", length=int(channels))
        n = r.sub("coarse_noise")
        noise = CoarseNoise(grid=n.numbers("grid", integer=True), cell_mm=n.number("cell_mm", positive=True),
                            std_per_channel=n.numbers("std_per_channel", length=int(channels), positive=False),
                            roll=n.flag("roll"), brain_only=n.flag("brain_only"))
        sigma = r.numbers("anomaly_sigma_voxels")
        radius = r.numbers("anomaly_kernel_radius_voxels", integer=True, length=len(sigma))
        t = r.sub("threshold_net")
        tnet = ThresholdNetPlan(input_size=t.numbers("input_size", integer=True),
                                input_spacing=t.number("input_spacing", positive=True), per_case=t.flag("per_case"),
                                features=t.numbers("features", integer=True))
        optional = {k: r.number(k, minimum=0.0) for k in ("memory_estimate_gb", "memory_target_gb") if k in d}
        return cls(device_class=device, reconstruction_output_channels=int(channels),
                   normalised_range_per_channel=ranges, coarse_noise=noise,
                   anomaly_sigma_mm=r.number("anomaly_sigma_mm", positive=True), anomaly_sigma_voxels=sigma,
                   anomaly_kernel_radius_mm=r.number("anomaly_kernel_radius_mm", positive=True),
                   anomaly_kernel_radius_voxels=radius, sigmoid_steepness=r.number("sigmoid_steepness", positive=True),
                   error_tolerance_weight=r.number("error_tolerance_weight", minimum=0.0), threshold_net=tnet,
                   **optional)


def configuration_block(plans: Mapping, configuration: str, source: str = "plans") -> BlogrrBlock:
    """The parsed ``blogrr`` block of ``plans["configurations"][configuration]``."""
    cfg = plans["configurations"][configuration]
    return BlogrrBlock.from_dict(cfg.get("blogrr"), f"{source}, configuration {configuration}")
