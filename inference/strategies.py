"""One strategy per kind of run: how an ensemble member turns a stored case into a map, a soft mask and a tau.

:class:`~blogrr_nnu.inference.predictor.BlogrrPredictor` keeps what every method shares (registration,
preprocessing, the sum over ensemble members, removal of small components, the way back to the native
grid, the JSON account) and asks its strategy for the rest:

| strategy | members (ensembled) | map | soft mask | tau |
|---|---|---|---|---|
| :class:`ReconstructionStrategy` (BLOGRR, DAE) | trained folds | anomaly map of R's reconstruction (normative runs: minus the fold's mean map) | ``sigmoid(k (A - tau))`` in the brain | threshold network, or a fixed value |
| :class:`SegmentationStrategy` (CGC, stock nnU-Net) | trained folds | tumour probability (softmax) | the probability | 0.5 |
| :class:`GMMStrategy` (GMM w/ threshold) | the healthy intensity model (no network) | atypicality | the GMM pseudo-label | 0 |
"""
from __future__ import annotations

import numpy as np
import torch

from blogrr_nnu import gmm as G
from blogrr_nnu import normative as N
from blogrr_nnu.cases import WholeCase, anomaly_from_reconstruction

# runs whose network segments (2 output channels, softmax) instead of reconstructing
SEGMENTATION_METHODS = {"cgc": "CGC", "nnunet": "stock nnU-Net, full supervision"}


class Strategy:
    """What one kind of run predicts of a stored case (module docstring)."""

    #: segmentation networks have 2 output channels; None = as many as the input (a reconstruction)
    out_channels: int | None = None

    def members(self, predictor) -> list:
        """What the predictor ensembles (each fold's checkpoint by default)."""
        return list(predictor.list_of_parameters)

    def predict(self, predictor, case: WholeCase, member, spacing) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(map (1, *S), soft mask (1, *S), tau)`` of one member on a stored case."""
        raise NotImplementedError

    def threshold_source(self, predictor) -> str:
        raise NotImplementedError

    def anomaly_units(self, predictor) -> str:
        raise NotImplementedError


class ReconstructionStrategy(Strategy):
    """BLOGRR and DAE runs: reconstruction, anomaly map, tau per case (or slice), soft mask."""

    @staticmethod
    def check_maps(checkpoints: list[dict]) -> str | None:
        """Why the folds cannot be ensembled for their maps, or None."""
        normative = {bool(c.get("normative", False)) for c in checkpoints}
        if len(normative) > 1:
            return ("some folds were trained on normative maps and some on plain ones; their maps are on different "
                    "scales and cannot be ensembled")
        if normative == {True} and not all(c.get("normative_map") is not None for c in checkpoints):
            return ("a checkpoint on normative maps without its mean map (stopped before the first upper loop); train "
                    "it further (blogrr_train ... --c)")
        return None

    def predict(self, predictor, case, member, spacing):
        predictor.network.load_state_dict(member["network_weights"])
        if predictor.threshold_network is not None:
            predictor.threshold_network.load_state_dict(member["threshold_weights"])
        out = predictor.predict_sliding_window_return_logits(case.data)
        amap = anomaly_from_reconstruction(case, out, predictor.blogrr)
        if member.get("normative_map") is not None:  # a run on normative maps: minus its fold's mean map, as in training
            if case.props.get("case_space") is None:
                raise ValueError("a run on normative maps subtracts its mean map on the case's crop of the template grid: "
                                 "give predict_preprocessed the case's CaseSpace (space=...)")
            amap = N.subtract(amap, member["normative_map"], case.props["case_space"], case.brain, case.case_id)
        mode = predictor.threshold_mode  # what a case's tau is, and its shape (blogrr_nnu.threshold_modes)
        if predictor.fixed_threshold is not None:
            tau = mode.constant(predictor.fixed_threshold, amap)
        else:
            tau = mode.case_tau(predictor.threshold_network, case.data, case.brain, amap, predictor.device)
        k = float(predictor.blogrr.sigmoid_steepness)
        return amap, torch.sigmoid(k * (amap - mode.shaped(tau))) * case.brain, tau

    def threshold_source(self, predictor) -> str:
        if predictor.fixed_threshold is not None:
            return "fixed"
        return (f"threshold network ({predictor.threshold_model}"
                + (f", {predictor.threshold_input})" if predictor.threshold_model == "reference" else ")"))

    def anomaly_units(self, predictor) -> str:
        units = "robust z-score of the case (median / (IQR / 1.349)) per channel, averaged over channels"
        if any(m.get("normative_map") is not None for m in predictor.list_of_parameters):
            units += ", minus the healthy training cases' mean map (normative maps)"
        return units


class SegmentationStrategy(Strategy):
    """CGC and stock nnU-Net runs: the tumour probability is both the map and the soft mask."""

    out_channels = 2

    def __init__(self, method: str):
        self.method = method

    def predict(self, predictor, case, member, spacing):
        predictor.network.load_state_dict(member["network_weights"])
        out = predictor.predict_sliding_window_return_logits(case.data)
        amap = torch.softmax(out, 0)[1:2] * case.brain
        return amap, amap, torch.full((1,), 0.5)

    def threshold_source(self, predictor) -> str:
        return f"segmentation network ({SEGMENTATION_METHODS[self.method]}): tumour probability >= 0.5"

    def anomaly_units(self, predictor) -> str:
        return "tumour probability"


class GMMStrategy(Strategy):
    """The GMM w/ threshold baseline: no network; the case's mixture judged against the healthy model."""

    def __init__(self, healthy_model: G.HealthyModel):
        self.healthy_model = healthy_model

    def members(self, predictor) -> list:
        return [self.healthy_model]

    def predict(self, predictor, case, member, spacing):
        image, brain = case.data.numpy(), case.brain[0].numpy()
        mask, _ = G.gmm_pseudo_label(image, brain, member, spacing)
        amap = torch.from_numpy(G.atypicality_map(image, brain, member))[None]
        return amap, torch.from_numpy(mask.astype(np.float32))[None], torch.zeros(1)

    def threshold_source(self, predictor) -> str:
        return "GMM components atypical for healthy brains (no network)"

    def anomaly_units(self, predictor) -> str:
        return "atypicality: healthy log-likelihood threshold minus log-likelihood"
