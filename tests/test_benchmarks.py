"""End-to-end runs of benchmarks/quality.py and benchmarks/speed.py at a tiny size.

The trained methods run 2 iterations on 32x40x40 tomograms: the numbers are meaningless, the
tables, files, held-out check and child-process plumbing are what is tested.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def test_heldout_check_scores_linear_filters_zero_and_signal_positive():
    q = _load("quality")
    rng = np.random.default_rng(0)
    shape = (16, 20, 24)
    clean = np.fft.irfftn(np.fft.rfftn(rng.standard_normal(shape)) / (1 + 20 * np.abs(np.fft.fftfreq(shape[0]))[:, None, None]),
                          s=shape, axes=(0, 1, 2))
    x = clean + 0.5 * clean.std() * rng.standard_normal(shape)
    m = q.heldout_mask(shape, 0)
    xin = q.heldout_input(x, m)
    # the input holds nothing of the held-out coefficients: raw scores exactly 0
    assert q.heldout_correlation(xin, x, m, 1.0)[2] == 0.0
    # the clean signal itself, on the held-out coefficients, correlates with the noisy tomogram
    assert q.heldout_correlation(clean, x, m, 1.0)[2] > 0.5
    # ... and pure noise does not
    assert abs(q.heldout_correlation(rng.standard_normal(shape), x, m, 1.0)[2]) < 0.1


def test_mad_sigma_of_white_noise():
    d = _load("denoisers")
    rng = np.random.default_rng(1)
    assert d.mad_sigma(3.0 * rng.standard_normal((32, 32, 32))) == pytest.approx(3.0, rel=0.05)


def test_quality_end_to_end(tmp_path, capsys):
    q = _load("quality")
    argv = ["--snr", "0.1", "--shape", "32", "40", "40", "--iterations", "2", "--out", str(tmp_path), "--methods", "raw",
            "gaussian", "f2f-split", "n2n", "bm4d", "--heldout-snr", "0.1", "--heldout-methods", "raw", "gaussian", "n2n", "--no-real"]
    res = q.main(argv)
    text = capsys.readouterr().out
    assert "| SNR | method | PSNR (dB)" in text and "Held-out Fourier check" in text
    rows = {r["method"]: r for r in res["quality"]}
    assert set(rows) == {"raw", "gaussian", "f2f-split", "n2n", "bm4d"}
    assert rows["raw"]["gain"] == pytest.approx(0.0, abs=1e-9)
    assert rows["gaussian"]["psnr"] > rows["raw"]["psnr"] + 2  # the best Gaussian filter always helps here
    for name in ("raw", "gaussian", "f2f-split", "n2n"):
        assert np.isfinite(rows[name]["psnr"]) and rows[name]["fsc0143"] > 0
    assert rows["bm4d"]["notes"].startswith(("sigma_psd", "not installed"))
    held = {r["method"]: r for r in res["heldout"]}
    assert held["raw"]["heldout"] == 0.0 and held["clean (ceiling)"]["heldout"] > 0
    for f in ("quality.json", "quality.csv", "heldout.csv", "benchmark_slices_snr0.1.png", "benchmark_psnr_time.png"):
        assert (tmp_path / f).exists()
    # a second run reads the cache and reprints the same table
    res2 = q.main(argv)
    assert [r.get("psnr") for r in res2["quality"]] == [r.get("psnr") for r in res["quality"]]


def test_speed_end_to_end(tmp_path, capsys):
    s = _load("speed")
    res = s.main(["--methods", "gaussian", "--sizes", "32", "40", "40", "40", "48", "48", "--limit", "60", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert "| method | shape (Z x Y x X)" in text and "exponent b" in text
    ok = [r for r in res["rows"] if r["status"] == "ok"]
    assert len(ok) == 2
    for r in ok:
        assert r["peak_rss_mib"] > 50 and r["total_s"] > 0 and r["infer_vox_per_s"] > 0
    fits = {f["method"]: f for f in res["fits"]}
    assert fits["gaussian"]["b_total"] is not None
    assert json.loads((tmp_path / "speed.json").read_text())["rows"]


def test_speed_time_limit(tmp_path):
    s = _load("speed")
    res = s.main(["--methods", "f2f-split", "--sizes", "32", "40", "40", "40", "48", "48", "--iterations", "2",
                  "--limit", "0.5", "--out", str(tmp_path)])
    statuses = [r["status"] for r in res["rows"]]
    assert statuses[0].startswith("hit the") and statuses[1].startswith("skipped")


def test_single_tomogram_slope_and_summary(tmp_path):
    """The slope is measured without any fit (an output at half the clean scale has slope 2), and a
    tiny run through the default method writes rows the summary reads back."""
    st = _load("single_tomogram")
    clean = np.random.default_rng(0).normal(size=(8, 8, 8))
    assert st.slope(clean, clean) == pytest.approx(1.0)
    assert st.slope(0.5 * clean + 3.0, clean) == pytest.approx(2.0)
    out = tmp_path / "rows.csv"
    argv = ["--shape", "16", "32", "32", "--snr", "0.05", "--seeds", "0", "--methods", "recorrupted", "--threads", "1",
            "--set", "iterations=2", "--set", "epoch_length=1", "--set", "patch_size=[16,16,16]", "--set", "margin=4",
            "--set", "network_def#features=[4,8]", "--set", "versions=1", "--csv", str(out)]
    import torch

    threads = torch.get_num_threads()
    try:
        assert st.main(argv) == 0  # sets torch's thread count (--threads): the tests after this one keep theirs
    finally:
        torch.set_num_threads(threads)
    table = st.summary([{**r, "snr": float(r["snr"]), "gain_db": float(r["gain_db"]), "ssim": float(r["ssim"]),
                         "gaussian_ssim": float(r["gaussian_ssim"]), "slope": float(r["slope"]), "seconds": float(r["seconds"])}
                        for r in __import__("csv").DictReader(out.open())])
    assert "| wbp | 0.05 | recorrupted | 1 |" in table
