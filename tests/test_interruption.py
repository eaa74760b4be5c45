"""Killed at any moment, the same command resumes and ends with the same output, bit for bit.

A real ``cet-monai denoise`` subprocess is killed with SIGKILL (``cet_monai.faults``: no
cleanup runs, as with a cluster's out-of-memory killer) before the first checkpoint, while a
checkpoint is being written, during inference and during the output write; the same command
is then run again and its output compared with an uninterrupted run's. SIGTERM is handled like
Ctrl-C: a clean exit (143) with the latest checkpoint kept.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cet_monai.data import simulate_tomogram
from cet_monai.io import read_volume, write_volume

BUDGET = ["--iterations", "6", "--set", "epoch_length=2", "--set", "patch_size=[16,16,16]", "--set", "margin=4",
          "--set", "network_def#features=[4,8]", "--versions", "2", "--device", "cpu"]


def _denoise(tomo, out, fault=None, wait=True, extra=()):
    env = {k: v for k, v in os.environ.items() if k != "CET_MONAI_FAULT"}
    env["OMP_NUM_THREADS"] = "1"
    if fault:
        env["CET_MONAI_FAULT"] = fault
    cmd = [sys.executable, "-m", "cet_monai.cli", "denoise", str(tomo), "-o", str(out), *BUDGET, *extra]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    tomo = folder / "tomo.mrc"
    write_volume(tomo, simulate_tomogram(shape=(16, 32, 32), snr=0.05, seed=3).noisy.astype(np.float32), voxel_size=10.0)
    done = _denoise(tomo, folder / "tomo_denoised.mrc")
    assert done.returncode == 0, done.stderr
    return tomo, read_volume(folder / "tomo_denoised.mrc")[0]


@pytest.mark.parametrize("fault", ["iteration:1", "checkpoint:2", "inference:1", "output:1"])
def test_killed_then_rerun_gives_the_uninterrupted_output(tmp_path, reference, fault):
    tomo, expected = reference
    out = tmp_path / "tomo_denoised.mrc"
    killed = _denoise(tomo, out, fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not out.exists()  # never a partial output
    again = _denoise(tomo, out)
    assert again.returncode == 0, again.stderr[-2000:]
    np.testing.assert_array_equal(read_volume(out)[0], expected)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_killed_with_a_noise_bank_then_rerun_gives_the_uninterrupted_output(tmp_path):
    """With ``noise_bank`` the pairs are cut from volumes drawn at the first patch, before the first
    checkpoint: the resumed run must cut from the same ones (the transform's state holds their seed)."""
    bank = ("--set", "noise_bank=2")  # 24^3 patches (16 + 2 x 4 margin) fit the 24 x 32 x 32 spectrum grid
    volume = simulate_tomogram(shape=(24, 32, 32), snr=0.05, seed=4).noisy.astype(np.float32)
    outputs = []
    for run in ("straight", "killed"):
        (tmp_path / run).mkdir()
        tomo, out = tmp_path / run / "tomo.mrc", tmp_path / run / "tomo_denoised.mrc"
        write_volume(tomo, volume, voxel_size=10.0)
        if run == "killed":
            killed = _denoise(tomo, out, fault="checkpoint:2", extra=bank)
            assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        done = _denoise(tomo, out, extra=bank)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(read_volume(out)[0])
    np.testing.assert_array_equal(outputs[1], outputs[0])


def test_sigterm_exits_cleanly_and_the_rerun_finishes(tmp_path, reference):
    tomo, expected = reference
    out = tmp_path / "tomo_denoised.mrc"
    proc = _denoise(tomo, out, wait=False)
    work = tmp_path / "tomo_denoised_run"
    deadline = time.time() + 120
    while time.time() < deadline and not list(work.glob("checkpoint_*.pt")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 143 and "Traceback" not in err and "run the same command again" in err
    again = _denoise(tomo, out)
    assert again.returncode == 0, again.stderr[-2000:]
    np.testing.assert_array_equal(read_volume(out)[0], expected)
