"""The built wheel (not the editable install) holds every subpackage and data file."""
from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy so the test leaves no build/ or egg-info in the checkout.
    src = tmp_path_factory.mktemp("src") / "blogrr-nnu"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                                             "blogrr_data", ".pytest_cache", ".venv"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, capture_output=True, text=True)
    (whl,) = out.glob("blogrr_nnu-*.whl")
    return whl


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in ("blogrr_nnu", "blogrr_nnu/planners", "blogrr_nnu/trainers", "blogrr_nnu/inference",
                "blogrr_nnu/commands", "blogrr_nnu/phantom", "blogrr_nnu/reports", "blogrr_nnu/importers"):
        assert f"{pkg}/__init__.py" in names, f"{pkg} missing from the wheel"
    # The role folders must not leak out as top-level packages ("inference" is taken on PyPI).
    assert not any(n.split("/")[0] in ("planners", "trainers", "inference") for n in names)
    # Every data file of the source packages is shipped.
    for data in (REPO / "blogrr_nnu").rglob("*.yaml"):
        assert data.relative_to(REPO).as_posix() in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "blogrr_make_demo_dataset = blogrr_nnu.commands.make_demo_dataset:main" in scripts
    assert "blogrr_verify_dataset = blogrr_nnu.commands.verify_dataset:main" in scripts
    assert "blogrr_benchmark = blogrr_nnu.commands.benchmark:main" in scripts
    assert "blogrr_convert_brats = blogrr_nnu.commands.convert_brats:main" in scripts


def test_wheel_installs_and_imports_in_fresh_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, text=True)
    code = (
        "import blogrr_nnu, blogrr_nnu.planners, blogrr_nnu.trainers, blogrr_nnu.inference, blogrr_nnu.paths\n"
        "import pathlib, sys\n"
        "print(pathlib.Path(blogrr_nnu.planners.__file__).resolve())\n"
        "print(pathlib.Path(blogrr_nnu.inference.__file__).resolve())\n"
    )
    # Run outside the checkout so the repository folder is not on sys.path.
    out = subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path).stdout.split()
    for f in out:
        assert str(env_dir.resolve()) in f, f"imported {f} from outside the fresh venv"
    # The console script of the wheel runs (--help needs no heavy import).
    help_out = subprocess.run([str(env_dir / "bin" / "blogrr_verify_dataset"), "--help"], capture_output=True,
                              text=True, cwd=tmp_path)
    assert help_out.returncode == 0 and "blogrr_verify_dataset -d 501" in help_out.stdout
