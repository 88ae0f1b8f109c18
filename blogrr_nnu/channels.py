"""Which image channels a model uses, when healthy and tumour scans do not have the same ones.

A tumour collection (BraTS: T1, T1ce, T2, FLAIR) and a healthy one (IXI: T1, T2, PD; HCP: T1, T2)
rarely share every channel. The raw dataset says so in ``dataset.json``: ``channel_names`` are the
channels of ``imagesTrTumor/`` and ``imagesTs/``, the optional ``channel_names_healthy`` those of
``imagesTr/`` (the same as ``channel_names`` when absent). The user names the channels to use at
planning time (``blogrr_plan_and_preprocess --channels T1 T2``); the resulting
:class:`ChannelSelection` is stored in the plans (``plans["channels"]``), the preprocessed
``dataset.json`` lists only the selected channels, and prediction reads only those files of an input
folder (which follows the tumour scans' numbering).

Names are compared through :func:`canonical_name`, so ``t1n``/``T1w`` match ``T1``, ``t1c``/``T1Gd``
match ``T1ce``, ``t2w`` matches ``T2`` and ``t2f`` matches ``FLAIR``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from blogrr_nnu.raw_dataset import RawCase

# Spellings of the same MR contrast in public datasets (lower case, letters and digits only).
ALIASES = {
    "t1": "T1", "t1w": "T1", "t1n": "T1", "t1native": "T1", "mprage": "T1", "t1weighted": "T1",
    "t1ce": "T1ce", "t1c": "T1ce", "t1gd": "T1ce", "t1post": "T1ce", "t1wce": "T1ce", "t1contrast": "T1ce",
    "t2": "T2", "t2w": "T2", "t2weighted": "T2",
    "flair": "FLAIR", "t2f": "FLAIR", "t2flair": "FLAIR", "t2wflair": "FLAIR",
    "pd": "PD", "pdw": "PD",
}


class ChannelSelectionError(ValueError):
    """The channels asked for (or the lack of a choice) do not fit the dataset; the message says what to pass."""


def canonical_name(name: str) -> str:
    """The contrast a channel name stands for: ``"t1n"`` -> ``"T1"``, ``"T2-FLAIR"`` -> ``"FLAIR"``.

    Unknown names are returned stripped; they then match only themselves (case-insensitively).
    """
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return ALIASES.get(key, name.strip())


def _key(name: str) -> str:
    return canonical_name(name).lower()


def role_channel_names(dataset_json: dict, role: str) -> dict[str, str]:
    """``{"0": name, ...}`` of the scans of one role (``"healthy"``, ``"tumor"`` or ``"test"``)."""
    if role == "healthy" and dataset_json.get("channel_names_healthy"):
        return dataset_json["channel_names_healthy"]
    return dataset_json["channel_names"]


def _ordered(names: dict[str, str]) -> list[str]:
    return [names[str(i)] for i in range(len(names))]


def common_channels(dataset_json: dict) -> list[str]:
    """Channels that healthy and tumour scans both have, in the tumour scans' order and spelling."""
    healthy = {_key(n) for n in _ordered(role_channel_names(dataset_json, "healthy"))}
    return [n for n in _ordered(dataset_json["channel_names"]) if _key(n) in healthy]


def channels_differ(dataset_json: dict) -> bool:
    """True when healthy and tumour scans do not have the same set of channels."""
    tumour = {_key(n) for n in _ordered(dataset_json["channel_names"])}
    healthy = {_key(n) for n in _ordered(role_channel_names(dataset_json, "healthy"))}
    return tumour != healthy


@dataclass(frozen=True)
class ChannelSelection:
    """The model's channels and, per role, the file index each one is read from.

    Attributes:
        names: model channel names, in model order (spelled as in ``channel_names``).
        tumor_indices: per model channel, its ``_XXXX`` index in ``imagesTrTumor/`` and ``imagesTs/``.
        healthy_indices: per model channel, its index in ``imagesTr/``.
        tumor_channel_names: the raw ``channel_names`` (for messages about input folders).
    """

    names: tuple[str, ...]
    tumor_indices: tuple[int, ...]
    healthy_indices: tuple[int, ...]
    tumor_channel_names: dict[str, str]

    def indices(self, role: str) -> tuple[int, ...]:
        """File index of each model channel for a role."""
        return self.healthy_indices if role == "healthy" else self.tumor_indices

    def channel_names(self) -> dict[str, str]:
        """``{"0": name, ...}`` of the model's channels (what the preprocessed dataset.json lists)."""
        return {str(i): n for i, n in enumerate(self.names)}

    def select(self, case: RawCase) -> RawCase:
        """The case with only the selected channels, renumbered 0..K-1 in model order.

        Raises:
            ChannelSelectionError: a selected channel's file is missing (the verifier reports that first).
        """
        images = {}
        for k, i in enumerate(self.indices(case.role)):
            if i not in case.images:
                raise ChannelSelectionError(f"case {case.case_id!r} has no channel {i:04d} ({self.names[k]})")
            images[k] = case.images[i]
        return replace(case, images=images)

    def model_dataset_json(self, dataset_json: dict) -> dict:
        """The dataset.json of the preprocessed data: only the selected channels, for every role."""
        out = {k: v for k, v in dataset_json.items() if k != "channel_names_healthy"}
        out["channel_names"] = self.channel_names()
        return out

    def to_dict(self) -> dict:
        """JSON form stored as ``plans["channels"]``."""
        return {"names": list(self.names), "tumor_indices": list(self.tumor_indices),
                "healthy_indices": list(self.healthy_indices), "tumor_channel_names": dict(self.tumor_channel_names)}

    @classmethod
    def from_dict(cls, d: dict) -> "ChannelSelection":
        return cls(tuple(d["names"]), tuple(int(i) for i in d["tumor_indices"]),
                   tuple(int(i) for i in d["healthy_indices"]), dict(d["tumor_channel_names"]))


def _find(name: str, names: list[str]) -> int | None:
    hits = [i for i, n in enumerate(names) if _key(n) == _key(name)]
    return hits[0] if hits else None


def resolve_channels(dataset_json: dict, requested: list[str] | None = None, where: str | Path = "dataset.json"
                     ) -> ChannelSelection:
    """The model's channels for a raw dataset and an optional user choice.

    Args:
        dataset_json: the raw dataset.json.
        requested: channel names to use (any spelling :func:`canonical_name` knows), in model order;
            ``None``: every channel, which needs healthy and tumour scans to have the same ones.
        where: the dataset.json's path, for messages.

    Returns:
        The :class:`ChannelSelection`.

    Raises:
        ChannelSelectionError: no choice while the channel sets differ, an unknown or repeated name, or
            a name one of the sets lacks; the message names the common channels and the option.

    Example:
        >>> dj = {"channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
        ...       "channel_names_healthy": {"0": "T1", "1": "T2", "2": "PD"}}
        >>> resolve_channels(dj, ["t1", "t2w"]).tumor_indices
        (0, 2)
    """
    tumour = _ordered(dataset_json["channel_names"])
    healthy = _ordered(role_channel_names(dataset_json, "healthy"))
    common = common_channels(dataset_json)
    option = f"--channels {' '.join(common)}" if common else None
    if requested is None or len(requested) == 0:
        if channels_differ(dataset_json):
            how = (f"choose channels both have: {option}" if option else
                   "they share no channel; use healthy scans with at least one of the tumour scans' channels")
            raise ChannelSelectionError(f"{where}: healthy scans (imagesTr/) have {', '.join(healthy)} and tumour scans have "
                                        f"{', '.join(tumour)}: {how}")
        requested = tumour
    keys = [_key(n) for n in requested]
    if len(set(keys)) != len(keys):
        raise ChannelSelectionError(f"{where}: --channels names a channel twice ({' '.join(requested)}); name each once")
    t_idx, h_idx = [], []
    for name in requested:
        t, h = _find(name, tumour), _find(name, healthy)
        if t is None or h is None:
            which = "tumour scans (channel_names)" if t is None else "healthy scans (channel_names_healthy)"
            have = tumour if t is None else healthy
            hint = f"; the channels both sets have: {', '.join(common)}" if common else ""
            raise ChannelSelectionError(f"{where}: channel {name!r} is not among the {which}: {', '.join(have)}{hint}")
        t_idx.append(t)
        h_idx.append(h)
    return ChannelSelection(tuple(tumour[i] for i in t_idx), tuple(t_idx), tuple(h_idx),
                            dict(dataset_json["channel_names"]))


def selection_from_plans(plans: dict, dataset_json: dict) -> ChannelSelection:
    """The plans' channel selection; plans written before selections existed use every channel as numbered."""
    if plans.get("channels"):
        return ChannelSelection.from_dict(plans["channels"])
    n = len(dataset_json["channel_names"])
    names = tuple(_ordered(dataset_json["channel_names"]))
    return ChannelSelection(names, tuple(range(n)), tuple(range(n)), dict(dataset_json["channel_names"]))


def check_previous_selection(plans_file: Path, selection: ChannelSelection, overwrite: bool) -> None:
    """Refuse to mix channels: cases preprocessed with another selection would be reused as done.

    Raises:
        ChannelSelectionError: ``plans_file`` exists with other channels and ``overwrite`` is False.
    """
    if overwrite or not Path(plans_file).is_file():
        return
    old = json.loads(Path(plans_file).read_text()).get("channels")
    if old is None:  # plans from before channel selections: every channel, as numbered
        return
    before = ChannelSelection.from_dict(old)
    if (before.names, before.tumor_indices, before.healthy_indices) != (
            selection.names, selection.tumor_indices, selection.healthy_indices):
        raise ChannelSelectionError(f"{Path(plans_file).parent} was preprocessed with channels "
                                    f"{' '.join(before.names)}; pass --overwrite to preprocess it again with "
                                    f"{' '.join(selection.names)}")


def channel_notes(names: list[str] | tuple[str, ...]) -> list[str]:
    """What a channel selection costs, one line each (printed after planning; docs/data_format.md).

    Measured on the phantom (Dataset962: 12 healthy + 12 tumour cases at 3 mm, 3d_cpu; GMM / fused
    pseudo-label Dice against the labels): T1+T2+FLAIR 0.712 / 0.855, T1+FLAIR 0.389 / 0.629,
    T1+T2 0.129 / 0.652, T1 0.000 / 0.289 (the report regions alone: 0.289).
    """
    keys = {canonical_name(n) for n in names}
    notes = []
    if "FLAIR" not in keys:
        notes.append("no FLAIR channel: GMM and fused pseudo-labels (--pseudo_label gmm|fused, CGC's targets) are "
                     "much weaker without it (phantom: GMM Dice 0.71 with T1 T2 FLAIR, 0.13 with T1 T2; fused 0.86 / "
                     "0.65); report pseudo-labels, BLOGRR's default, do not use the image")
    if not any(k.lower().startswith("t1") for k in keys):
        notes.append(f"no T1 channel: registration to the T1 template uses {names[0]}; check the registration "
                     "quality in dataset_fingerprint.json")
    return notes
