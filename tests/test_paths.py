"""Path resolution order and dataset-id resolution."""
from pathlib import Path

import pytest

from blogrr_nnu import paths


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("BLOGRR_raw", "BLOGRR_preprocessed", "BLOGRR_results", "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.mark.parametrize("kind,func", [("raw", paths.raw_root), ("preprocessed", paths.preprocessed_root),
                                       ("results", paths.results_root)])
def test_resolution_order(clean_env, tmp_path, kind, func):
    # Last resort: ./blogrr_data/<kind> below the working directory.
    assert func() == tmp_path / "blogrr_data" / kind
    # nnU-Net's variable beats the default ...
    clean_env.setenv(f"nnUNet_{kind}", str(tmp_path / "nn"))
    assert func() == tmp_path / "nn"
    # ... ours beats nnU-Net's ...
    clean_env.setenv(f"BLOGRR_{kind}", str(tmp_path / "ours"))
    assert func() == tmp_path / "ours"
    # ... and the command-line flag beats everything.
    assert func(tmp_path / "flag") == tmp_path / "flag"


def test_resolution_is_lazy(clean_env, tmp_path):
    # Setting the variable after import takes effect: nothing is cached at import time.
    clean_env.setenv("BLOGRR_raw", str(tmp_path / "late"))
    assert paths.raw_root() == tmp_path / "late"


def test_empty_variable_falls_through(clean_env, tmp_path):
    clean_env.setenv("BLOGRR_raw", "")
    clean_env.setenv("nnUNet_raw", str(tmp_path / "nn"))
    assert paths.raw_root() == tmp_path / "nn"


def _mk(root: Path, *names: str) -> None:
    for n in names:
        (root / n).mkdir(parents=True)


def test_resolve_dataset_by_id_folder_and_name(tmp_path):
    _mk(tmp_path, "Dataset501_BlogrrDemo", "Dataset502_Other", "not_a_dataset")
    expected = tmp_path / "Dataset501_BlogrrDemo"
    assert paths.resolve_dataset(501, tmp_path) == expected
    assert paths.resolve_dataset("501", tmp_path) == expected
    assert paths.resolve_dataset("Dataset501_BlogrrDemo", tmp_path) == expected
    assert paths.resolve_dataset("BlogrrDemo", tmp_path) == expected
    assert paths.resolve_dataset("Other", tmp_path) == tmp_path / "Dataset502_Other"


def test_resolve_dataset_unknown_lists_available(tmp_path):
    _mk(tmp_path, "Dataset501_BlogrrDemo")
    with pytest.raises(paths.DatasetNotFoundError, match=r"no dataset matches '7'.*Dataset501_BlogrrDemo"):
        paths.resolve_dataset("7", tmp_path)
    with pytest.raises(paths.DatasetNotFoundError, match="no dataset matches 'Nope'"):
        paths.resolve_dataset("Nope", tmp_path)


def test_resolve_dataset_ambiguous(tmp_path):
    _mk(tmp_path, "Dataset501_A", "Dataset501_B", "Dataset600_Same", "Dataset601_Same")
    with pytest.raises(paths.DatasetNotFoundError, match="ambiguous.*Dataset501_A, Dataset501_B"):
        paths.resolve_dataset(501, tmp_path)
    with pytest.raises(paths.DatasetNotFoundError, match="ambiguous"):
        paths.resolve_dataset("Same", tmp_path)


def test_resolve_dataset_missing_root_says_how_to_fix(tmp_path):
    with pytest.raises(paths.DatasetNotFoundError, match="set BLOGRR_raw"):
        paths.resolve_dataset(501, tmp_path / "absent")


def test_dataset_folder_name_validates():
    assert paths.dataset_folder_name(5, "Demo") == "Dataset005_Demo"
    assert paths.parse_dataset_folder_name("Dataset005_Demo") == (5, "Demo")
    assert paths.parse_dataset_folder_name("Dataset5_Demo") is None
    with pytest.raises(ValueError):
        paths.dataset_folder_name(1000, "Demo")
    with pytest.raises(ValueError):
        paths.dataset_folder_name(5, "has space")
