import pytest
import torch

from cet_monai.networks import PRESETS, DropoutUNet, network_from_preset


def test_presets_build_and_keep_shape():
    small = network_from_preset("small")
    x = torch.randn(2, 1, 16, 16, 16)
    assert small(x).shape == x.shape
    large = network_from_preset("large")
    assert large.divisor == 32 and len(PRESETS["large"]["features"]) == 6
    assert all(c.out_channels == 48 for c in [large.encoders[0][0].conv])


def test_dropout_only_in_decoder():
    net = DropoutUNet(features=(4, 8, 8), dropout=0.4)
    enc = [m for m in net.encoders.modules() if isinstance(m, torch.nn.Dropout)]
    dec = [m for m in net.decoders.modules() if isinstance(m, torch.nn.Dropout)]
    assert not enc and dec and all(m.p == 0.4 for m in dec)
    no_dropout = DropoutUNet(features=(4, 8), dropout=0.0)
    assert not [m for m in no_dropout.modules() if isinstance(m, torch.nn.Dropout)]


def test_bad_sizes_and_options_are_clear():
    net = DropoutUNet(features=(4, 8, 8))
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 1, 10, 16, 16))
    with pytest.raises(ValueError, match="unknown network preset"):
        network_from_preset("huge")
    with pytest.raises(ValueError, match="dropout"):
        DropoutUNet(dropout=1.0)


def test_cpu_bfloat16_runs_in_bfloat16_and_returns_float32():
    import torch

    from cet_monai.networks import DropoutUNet, native_cpu_bfloat16

    assert isinstance(native_cpu_bfloat16(), bool)
    torch.manual_seed(0)
    fp32 = DropoutUNet(features=(4, 8), dropout=0.0)
    bf16 = DropoutUNet(features=(4, 8), dropout=0.0, cpu_bfloat16=True)
    bf16.load_state_dict(fp32.state_dict())
    x = torch.randn(2, 1, 16, 16, 16)
    a, b = fp32(x), bf16(x)
    assert b.dtype == torch.float32 and not torch.equal(a, b)  # other arithmetic ...
    assert torch.allclose(a, b, atol=0.05 * float(a.abs().max()))  # ... the same network
    assert bf16.config["cpu_bfloat16"] is True
