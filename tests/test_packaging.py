"""An installed copy works like a checkout: every package and the embedded data set are in
the wheel, and the subset is found inside the package when there is no data/ beside it."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tinyalexnet.datasets import embedded
from tinyalexnet.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
SUBSET_FILES = embedded.SUBSET.files("train") + embedded.SUBSET.files("test") + ("LICENSE",)


def _pyproject():
    tomllib = pytest.importorskip("tomllib")          # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_pyproject_lists_every_package_and_maps_the_data():
    config = _pyproject()
    folders = sorted(".".join(p.parent.relative_to(ROOT).parts)
                     for p in (ROOT / "tinyalexnet").rglob("__init__.py"))
    assert sorted(config["packages"]) == sorted(folders + ["tinyalexnet.data"])
    assert config["package-dir"] == {"tinyalexnet.data": "data"}
    assert config["package-data"] == {"tinyalexnet.data": ["fashion-mnist-subset/*"]}


def test_the_wheel_holds_every_module_and_the_subset(tmp_path):
    """Build the wheel as pip install does (from a copy: setuptools writes build/ beside
    the sources) and list it."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src / "pyproject.toml")
    ignore = shutil.ignore_patterns("__pycache__", "downloads", "cache")
    for name in ("tinyalexnet", "data"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path / "w"),
                           str(src)], capture_output=True, text=True)
    if done.returncode != 0 and "No module named pip" in done.stderr:
        pytest.skip("pip is not installed here")
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "w").glob("tinyalexnet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (ROOT / "tinyalexnet").rglob("*.py"):
        assert path.relative_to(ROOT).as_posix() in names, path
    for name in SUBSET_FILES:
        assert f"tinyalexnet/data/fashion-mnist-subset/{name}" in names, name
    assert not any(n.startswith("data/") or "/downloads/" in n for n in names)


def test_the_subset_is_found_inside_an_installed_package(tmp_path, monkeypatch):
    """No data/ beside the package (an installed copy): the copy inside it is read."""
    inside = tmp_path / "site-packages" / "tinyalexnet" / "data" / embedded.NAME
    inside.mkdir(parents=True)
    for name in SUBSET_FILES:
        shutil.copy(embedded.SUBSET_DIR / name, inside / name)
    monkeypatch.setattr(embedded, "SUBSET_DIR", tmp_path / "no-checkout" / embedded.NAME)
    monkeypatch.setattr(embedded, "INSTALLED_DIR", inside)
    test = embedded.load_subset("test")
    assert len(test) == 1000 and np.bincount(test.labels).tolist() == [100] * 10
    os.remove(inside / "t10k-labels-idx1-ubyte.gz")                 # neither place complete
    with pytest.raises(DataError, match="no-checkout.*the embedded subset is missing"):
        embedded.load_subset("test")
