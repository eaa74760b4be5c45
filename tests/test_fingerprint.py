"""A checkpoint is never resumed or reused for another tomogram or other settings (work folders, fingerprints)."""

import numpy as np
import pytest

from cet_monai.cli import EXIT_OK, EXIT_USAGE, main
from cet_monai.engines import RunFingerprint, volume_stem, work_dir_for
from cet_monai.engines.fingerprint import CheckpointMismatchError, volume_fingerprint
from cet_monai.io import write_volume

TINY = ["--iterations", "2", "--set", "epoch_length=1", "--set", "patch_size=[16,16,16]", "--set", "margin=4",
        "--set", "network_def#features=[4,8]", "--versions", "1", "--passes", "1"]


@pytest.mark.parametrize(
    "output, folder",
    [
        ("../res/x.mrc", "../res/x_run"),
        ("/data/v1.5/x.mrc", "/data/v1.5/x_run"),
        ("/tmp/tmp.AbC12/out.mrc", "/tmp/tmp.AbC12/out_run"),
        ("a.b.mrc", "a.b_run"),
        ("a.c.mrc", "a.c_run"),
        ("x.nii.gz", "x_run"),
        ("X.REC", "X_run"),
    ],
)
def test_work_folder_is_the_whole_output_path_minus_its_suffix(output, folder):
    assert work_dir_for(output) == folder
    assert volume_stem(output) == folder[: -len("_run")]


def test_volume_fingerprint_tells_tomograms_apart():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 16, 16)).astype(np.float32)
    b = a.copy()
    b[4, 8, 8] += 1.0  # one voxel: inside the hashed sample (small volumes are hashed whole)
    assert volume_fingerprint(a) == volume_fingerprint(a.copy())
    assert volume_fingerprint(a) != volume_fingerprint(b)
    assert volume_fingerprint(a, 10.0) != volume_fingerprint(a, 12.0)
    assert volume_fingerprint(a)["shape"] != volume_fingerprint(a.reshape(16, 8, 16))["shape"]


class _Source:
    def __init__(self, fp):
        self.fp = fp

    def fingerprint(self):
        return dict(self.fp)


def test_run_fingerprint_names_what_differs(tmp_path):
    fp = RunFingerprint(_Source({"shape": [8, 8, 8]}), {"patch_size": [16] * 3, "method": {"passes": 1, "method": "fourier"}}, seed=0)
    state = fp.state_dict()
    fp.check(state)  # same run: no error
    # inference-only settings (T) may change between resumes
    RunFingerprint(_Source({"shape": [8, 8, 8]}), {"patch_size": [16] * 3, "method": {"passes": 8, "method": "fourier"}}, seed=0).check(state)
    other = RunFingerprint(_Source({"shape": [8, 8, 9]}), {"patch_size": [32] * 3, "method": {"passes": 1, "method": "fourier"}}, seed=1)
    with pytest.raises(CheckpointMismatchError) as info:
        other.check(state, tmp_path / "checkpoint_epoch=1.pt")
    msg = str(info.value)
    assert str(tmp_path) in msg and "--no-resume" in msg and "--work-dir" in msg
    assert "tomogram shape" in msg and "setting patch_size" in msg and "seed" in msg
    with pytest.raises(CheckpointMismatchError, match="predates"):
        fp.check(None)


def _tomogram(path, seed):
    rng = np.random.default_rng(seed)
    write_volume(path, rng.normal(size=(16, 24, 24)).astype(np.float32), voxel_size=(10.0, 10.0, 10.0))
    return path


def test_second_tomogram_is_never_denoised_by_the_first_ones_model(tmp_path, capsys):
    root = tmp_path / "v1.5"  # a dotted folder: the old folder rule cut the path at the first dot
    root.mkdir()
    a, b = _tomogram(root / "a.mrc", 0), _tomogram(root / "b.mrc", 1)
    # outputs that shared one work folder before: a.b.mrc / a.c.mrc
    assert main(["denoise", str(a), "-o", str(root / "a.b.mrc")] + TINY) == EXIT_OK
    assert main(["denoise", str(b), "-o", str(root / "a.c.mrc")] + TINY) == EXIT_OK
    assert sorted(p.name for p in root.glob("*_run")) == ["a.b_run", "a.c_run"]
    capsys.readouterr()
    # the same work folder for another tomogram: refused with one line naming the folder and the ways out
    argv = ["denoise", str(b), "-o", str(root / "b2.mrc"), "--work-dir", str(root / "a.b_run")] + TINY
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "a.b_run" in err and "--no-resume" in err and "--work-dir" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1
    assert not (root / "b2.mrc").exists()
    # other settings on the same tomogram are refused as well
    assert main(["denoise", str(a), "-o", str(root / "a3.mrc"), "--work-dir", str(root / "a.b_run"), "--seed", "3"] + TINY) == EXIT_USAGE
    assert "seed" in capsys.readouterr().err
    # --no-resume starts afresh and keeps the earlier checkpoints aside, not deleted
    before = sorted(p.name for p in (root / "a.b_run").glob("checkpoint*.pt"))
    assert main(argv + ["--no-resume"]) == EXIT_OK
    superseded = list((root / "a.b_run").glob("superseded_*"))
    assert len(superseded) == 1 and sorted(p.name for p in superseded[0].glob("checkpoint*.pt")) == before
    # the same tomogram with the same settings resumes (the finished run is reused, no error)
    assert main(["denoise", str(b), "-o", str(root / "b3.mrc"), "--work-dir", str(root / "a.b_run")] + TINY) == EXIT_OK
