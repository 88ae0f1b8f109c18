"""Channel subsets: name matching, selection errors, the verifier's common-channel hint, re-planning guard."""
from __future__ import annotations

import json
import shutil

import pytest

from blogrr_nnu.channels import (ChannelSelection, ChannelSelectionError, canonical_name, channel_notes,
                                 check_previous_selection, common_channels, resolve_channels, selection_from_plans)
from blogrr_nnu.raw_dataset import RawCase
from blogrr_nnu.verify import verify_dataset
from conftest import write_tiny_dataset

BRATS = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
IXI = {"0": "T1", "1": "T2", "2": "PD"}


def test_canonical_names_cover_brats_2023_and_common_spellings():
    assert [canonical_name(n) for n in ("t1n", "T1w", "t1c", "T1-Gd", "t2w", "t2f", "T2-FLAIR", "PDw", "DWI")] == \
        ["T1", "T1", "T1ce", "T1ce", "T2", "FLAIR", "FLAIR", "PD", "DWI"]


def test_selection_maps_names_to_each_sets_file_index():
    dj = {"channel_names": BRATS, "channel_names_healthy": IXI}
    assert common_channels(dj) == ["T1", "T2"]
    sel = resolve_channels(dj, ["t2w", "T1"])  # model order is the order asked for
    assert sel.names == ("T2", "T1") and sel.tumor_indices == (2, 0) and sel.healthy_indices == (1, 0)
    case = RawCase("h", "healthy", {0: "h_0000", 1: "h_0001", 2: "h_0002"})
    assert sel.select(case).images == {0: "h_0001", 1: "h_0000"}
    tumour = RawCase("t", "test", {i: f"t_{i:04d}" for i in range(4)})
    assert sel.select(tumour).images == {0: "t_0002", 1: "t_0000"}
    mdj = sel.model_dataset_json({**dj, "file_ending": ".nii.gz"})
    assert mdj["channel_names"] == {"0": "T2", "1": "T1"} and "channel_names_healthy" not in mdj
    assert ChannelSelection.from_dict(json.loads(json.dumps(sel.to_dict()))) == sel


@pytest.mark.parametrize("requested, message", [
    (None, "choose channels both have: --channels T1 T2"),
    (["FLAIR"], "channel 'FLAIR' is not among the healthy scans (channel_names_healthy): T1, T2, PD; the channels "
                "both sets have: T1, T2"),
    (["PD"], "not among the tumour scans (channel_names)"),
    (["T1", "t1w"], "names a channel twice"),
])
def test_selection_errors_say_what_to_pass(requested, message):
    with pytest.raises(ChannelSelectionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_channels({"channel_names": BRATS, "channel_names_healthy": IXI}, requested, "x/dataset.json")


def test_same_channels_in_another_order_need_no_option():
    sel = resolve_channels({"channel_names": {"0": "T1", "1": "FLAIR"}, "channel_names_healthy": {"0": "flair", "1": "t1w"}})
    assert sel.names == ("T1", "FLAIR") and sel.healthy_indices == (1, 0)
    old = selection_from_plans({}, {"channel_names": {"0": "T1", "1": "FLAIR"}})
    assert old.tumor_indices == (0, 1) and old.healthy_indices == (0, 1)


def _healthy_with_fewer_channels(tmp_path, healthy_names):
    folder = write_tiny_dataset(tmp_path / "raw", channels=("T1", "T2", "FLAIR"))
    dj = json.loads((folder / "dataset.json").read_text())
    dj["channel_names_healthy"] = healthy_names
    (folder / "dataset.json").write_text(json.dumps(dj))
    for f in (folder / "imagesTr").glob("*_0002.nii.gz"):  # healthy scans: T1 and T2 only
        f.unlink()
    return folder


def test_verifier_checks_healthy_scans_against_their_own_channels(tmp_path):
    folder = _healthy_with_fewer_channels(tmp_path, {"0": "T1", "1": "T2"})
    result = verify_dataset(folder)
    assert result.ok
    (hint,) = result.problems
    assert hint.severity == "warning" and "both have T1, T2" in hint.problem
    assert hint.fix == "plan with `blogrr_plan_and_preprocess -d Dataset990_Tiny --channels T1 T2`"
    # a healthy scan missing one of *its* channels is still an error, named by the healthy channel name
    next((folder / "imagesTr").glob("*_0001.nii.gz")).unlink()
    errors = verify_dataset(folder).errors
    assert len(errors) == 1 and "missing channel 1 (T2)" in errors[0].problem


def test_verifier_rejects_sets_without_a_common_channel(tmp_path):
    folder = _healthy_with_fewer_channels(tmp_path, {"0": "PD", "1": "DWI"})
    errors = verify_dataset(folder).errors
    assert len(errors) == 1 and "share no channel" in errors[0].problem


def test_bad_channel_names_healthy_is_a_dataset_json_error(tmp_path):
    folder = _healthy_with_fewer_channels(tmp_path, {"1": "T1"})
    errors = verify_dataset(folder).errors
    assert len(errors) == 1 and "channel_names_healthy must map" in errors[0].problem


def test_replanning_with_other_channels_needs_overwrite(tmp_path):
    dj = {"channel_names": BRATS, "channel_names_healthy": IXI}
    plans = tmp_path / "blogrr_plans.json"
    plans.write_text(json.dumps({"channels": resolve_channels(dj, ["T1", "T2"]).to_dict()}))
    check_previous_selection(plans, resolve_channels(dj, ["T1", "T2"]), overwrite=False)  # same: fine
    with pytest.raises(ChannelSelectionError, match="preprocessed with channels T1 T2; pass --overwrite"):
        check_previous_selection(plans, resolve_channels(dj, ["T1"]), overwrite=False)
    check_previous_selection(plans, resolve_channels(dj, ["T1"]), overwrite=True)
    shutil.rmtree(tmp_path)
    check_previous_selection(plans, resolve_channels(dj, ["T1"]), overwrite=False)  # nothing planned yet


def test_channel_notes_warn_about_missing_flair_and_t1():
    assert channel_notes(["T1", "T2", "FLAIR"]) == []
    (flair,) = channel_notes(["T1w", "T2"])
    assert flair.startswith("no FLAIR channel") and "0.13 with T1 T2" in flair
    notes = channel_notes(["T2", "t2f"])
    assert len(notes) == 1 and notes[0].startswith("no T1 channel: registration to the T1 template uses T2")
