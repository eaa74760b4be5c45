"""Resource estimates before a run: disk that cannot hold the outputs is refused before any work,
too little memory is said, and the estimate follows the slabbing of large tomograms."""

import pytest

from cet_monai.engines import resources
from cet_monai.engines.resources import GIB, check_resources, estimate_run
from cet_monai.errors import OptionError


def test_memory_is_bounded_above_one_slab_and_the_large_copies_go_to_scratch_disk():
    small, large = estimate_run((100, 512, 512)), estimate_run((1000, 512, 512))
    assert small.slabs == 1 and large.slabs > 4  # 26 M voxels fit one slab of 64 M; 262 M do not
    # the small tomogram's normalised copy is in RAM: 4 bytes per voxel on top of the constant
    assert small.memory >= resources.BASE_BYTES + 4 * 100 * 512 * 512 and small.scratch_disk == 0
    # above 64 M voxels neither the normalised copy (on disk) nor the stitching (one slab) grows
    huge = estimate_run((2000, 512, 512))
    from cet_monai.inferers.streaming import DEFAULT_SLAB_VOXELS

    assert abs(huge.memory - large.memory) <= 12 * DEFAULT_SLAB_VOXELS // 4  # slabs of a similar depth, not more
    assert large.memory < resources.BASE_BYTES + 4 * 1000 * 512 * 512
    # measured (benchmarks/large_tomogram.py, 2026-12-06): 1.34 / 1.51 / 1.68 GiB peak for 0.5 / 1 / 2 GiB;
    # the model gives 1.44 / 1.58 / 1.58 (the measured peak also creeps up with the number of slabs)
    for shape, measured in (((512, 512, 512), 1.34), ((1024, 512, 512), 1.51), ((2048, 512, 512), 1.68)):
        assert -0.15 <= estimate_run(shape).memory / GIB - measured <= 0.2, (shape, estimate_run(shape).memory / GIB)
    # scratch: the normalised copy and the slabbed result, 4 bytes per voxel each
    assert large.scratch_disk == 2 * 4 * 1000 * 512 * 512 and huge.scratch_disk == 2 * large.scratch_disk
    with_std = estimate_run((1000, 512, 512), save_std=True)
    assert with_std.output_disk == 2 * large.output_disk and with_std.memory > large.memory
    assert with_std.scratch_disk == 3 * 4 * 1000 * 512 * 512


def test_outputs_that_do_not_fit_are_refused_before_any_work(tmp_path, monkeypatch):
    est = estimate_run((200, 512, 512))
    monkeypatch.setattr(resources, "_free", lambda folder: est.output_disk // 2)
    with pytest.raises(OptionError, match="free space or choose another -o"):
        check_resources([("a.mrc", str(tmp_path / "out" / "a_denoised.mrc"), est)])
    # two outputs on one disk add up
    monkeypatch.setattr(resources, "_free", lambda folder: int(est.output_disk * 1.5))
    check_resources([("a.mrc", str(tmp_path / "a_d.mrc"), est)])
    with pytest.raises(OptionError, match="outputs need"):
        check_resources([("a.mrc", str(tmp_path / "a_d.mrc"), est), ("b.mrc", str(tmp_path / "b_d.mrc"), est)])


def test_too_little_memory_is_refused_unless_ignored(tmp_path, monkeypatch):
    run = [("big.mrc", str(tmp_path / "big_d.mrc"), estimate_run((1000, 512, 512)))]
    said = []
    monkeypatch.setattr(resources, "available_memory", lambda: 1 * GIB)
    with pytest.raises(OptionError, match=r"big.mrc needs .* only 1.0 GiB .*--ignore-memory-estimate"):
        check_resources(run, say=said.append)
    check_resources(run, say=said.append, refuse_memory=False)
    assert len(said) == 1 and "big.mrc" in said[0] and "available" in said[0]
    monkeypatch.setattr(resources, "available_memory", lambda: 100 * GIB)
    said.clear()
    check_resources(run, say=said.append)
    assert said == []


def test_the_command_line_refuses_a_run_that_cannot_fit_in_memory(tmp_path, monkeypatch, capsys):
    import numpy as np

    from cet_monai.cli import EXIT_USAGE, main
    from cet_monai.io import write_volume

    write_volume(tmp_path / "t.mrc", np.random.default_rng(0).normal(size=(16, 32, 32)).astype(np.float32), voxel_size=10.0)
    monkeypatch.setattr(resources, "available_memory", lambda: 2**20)
    assert main(["denoise", str(tmp_path / "t.mrc"), "-o", str(tmp_path / "t_d.mrc"), "--iterations", "2", "--patch-size", "16"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--ignore-memory-estimate" in err and "Traceback" not in err
    assert not (tmp_path / "t_d.mrc").exists() and not list(tmp_path.glob("t_d_run/*.pt"))  # refused before any work


def test_available_memory_reads_this_machine():
    value = resources.available_memory()
    assert value is None or 0 < value < 2**50


def test_denoise_refuses_a_full_disk_before_training(tmp_path, monkeypatch, capsys):
    import numpy as np

    from cet_monai.cli import main
    from cet_monai.io import write_volume

    tomo = tmp_path / "t.mrc"
    write_volume(tomo, np.random.default_rng(0).standard_normal((40, 48, 48)).astype(np.float32), voxel_size=10.0)
    monkeypatch.setattr(resources, "_free", lambda folder: 1000)
    assert main(["denoise", str(tomo), "-o", str(tmp_path / "t_d.mrc"), "--iterations", "2", "--set", "epoch_length=2"]) == 2
    assert "the disk has" in capsys.readouterr().err
    assert not list((tmp_path / "t_d_run").glob("checkpoint*"))


def _saved_bytes_of_a_real_step(net, x):
    """Bytes of the distinct storages autograd saves for one real forward (CPU)."""
    import torch

    storages: dict[int, int] = {}

    def pack(t):
        storages.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x)
    return sum(storages.values())


def test_training_gpu_estimate_counts_what_autograd_really_saves():
    """The meta-device count equals the activations a real CPU step saves, plus 16 bytes per
    parameter, twice the largest layer output and the fixed slack; it grows with the batch."""
    import torch

    from cet_monai.networks import DropoutUNet

    net = DropoutUNet(features=(4, 8, 16), dropout=0.2, norm="batch").train()
    x = torch.randn(2, 1, 16, 16, 16)
    real = _saved_bytes_of_a_real_step(net, x)
    params = sum(p.numel() for p in net.parameters())
    est = resources.training_gpu_bytes(net, 2, (16, 16, 16))
    largest = 2 * 8 * 16**3 * 4  # at least: a full-resolution 8-channel decoder output of the batch
    assert real + 16 * params + resources.GPU_SLACK_BYTES + 2 * largest <= est <= real * 1.05 + 16 * params + resources.GPU_SLACK_BYTES + 2 * 4 * real
    double = resources.training_gpu_bytes(net, 4, (16, 16, 16))
    assert double - resources.GPU_SLACK_BYTES - 16 * params == pytest.approx(2 * (est - resources.GPU_SLACK_BYTES - 16 * params), rel=0.03)  # per-channel statistics do not grow
    assert next(net.parameters()).device.type == "cpu"  # the network itself is not moved


def test_a_training_step_that_cannot_fit_on_the_gpu_is_refused_naming_the_settings(monkeypatch):
    import torch

    from cet_monai.networks import DropoutUNet

    net = DropoutUNet(features=(4, 8), dropout=0.0)
    resources.check_gpu_memory(net, "cpu", 4, (16, 16, 16))  # other devices: nothing to check
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * 2**20, 80 * GIB))
    with pytest.raises(OptionError, match=r"patches_per_item.*--patch-size.*--device cpu"):
        resources.check_gpu_memory(net, "cuda:0", 4, (16, 16, 16))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (70 * GIB, 80 * GIB))
    resources.check_gpu_memory(net, "cuda:0", 4, (16, 16, 16))
