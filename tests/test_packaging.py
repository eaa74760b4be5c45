"""A wheel (`pip install .`, not editable) carries the bundles the CLI needs."""

import fnmatch
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def _setuptools_config():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_subpackage_and_bundle_file_is_listed():
    config = _setuptools_config()
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cet_monai").rglob("__init__.py")}
    assert set(config["packages"]) == found | {"cet_monai.bundles"}
    assert config["package-dir"]["cet_monai.bundles"] == "bundles"
    patterns = config["package-data"]["cet_monai.bundles"]
    files = [p.relative_to(ROOT / "bundles").as_posix() for p in (ROOT / "bundles").rglob("*") if p.is_file()]
    files = [f for f in files if "/models/" not in f and "/runs/" not in f and "__pycache__" not in f]
    missing = [f for f in files if not any(fnmatch.fnmatchcase(f, pat) and f.count("/") == pat.count("/") for pat in patterns)]
    assert not missing, f"bundle files the wheel would leave out: {missing}"


def test_wheel_ships_the_bundles_and_finds_them(tmp_path):
    pytest.importorskip("setuptools")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
                         capture_output=True, text=True)
    if out.returncode:
        pytest.skip(f"cannot build a wheel here: {out.stderr[-300:]}")
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for bundle in ("recorrupted_denoising", "fourier_denoising", "real_denoising", "membrane_segmentation"):
        assert f"cet_monai/bundles/{bundle}/configs/train.yaml" in names
        assert f"cet_monai/bundles/{bundle}/configs/metadata.json" in names
    for name in ("train.yaml", "multi_gpu_train.yaml", "inference.yaml", "metadata.json"):  # the shared denoising wiring
        assert f"cet_monai/bundles/denoising/configs/{name}" in names
    # the installed layout (no repository around it): bundle_dir finds cet_monai/bundles
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "import cet_monai.workflows as w; print(w.bundle_dir('recorrupted_denoising'))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                           env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == site / "cet_monai" / "bundles" / "recorrupted_denoising"
