"""Methods as settings classes: validation, the record a checkpoint stores, bundles that only wire."""

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cet_monai.errors import CetMonaiError
from cet_monai.methods import (
    METHODS,
    EvenOddHalves,
    FourierMasks,
    MethodRecord,
    RealSpaceBernoulli,
    RecorruptedPairs,
    load_record,
    method_from_dict,
)
from cet_monai.networks import DropoutUNet

ROOT = Path(__file__).resolve().parents[1]


class _Source:
    """What a method reads of a TomogramSource: the normalised image and the training region."""

    def __init__(self, image: torch.Tensor) -> None:
        self.image = image
        self.has_reference = False

    def training_region(self) -> torch.Tensor:
        return self.image


@pytest.fixture(scope="module")
def source():
    g = torch.Generator().manual_seed(0)
    z = torch.arange(32.0)
    signal = torch.sin(z / 3.0)[:, None, None] * torch.cos(z / 5.0)[None, :, None] * torch.ones(1, 1, 32)
    return _Source((signal + 0.5 * torch.randn(32, 32, 32, generator=g))[None])


def _methods():
    patch = (16, 16, 16)
    return [
        RecorruptedPairs(patch_size=patch, margin=4, versions=2, spectrum_block=16),
        FourierMasks(patch_size=patch, margin=4, versions=2),
        FourierMasks(patch_size=patch, margin=4, versions=2, sampling="patch"),
        FourierMasks(patch_size=patch, versions=2, sampling="split", split_on="tomogram", pool_size=4),
        RealSpaceBernoulli(patch_size=patch, versions=2, passes=2),
        EvenOddHalves(patch_size=patch),
    ]


def test_every_method_is_registered_under_its_name():
    assert set(METHODS) == {"recorrupted", "fourier", "real", "halves"}
    for name, cls in METHODS.items():
        assert cls.name == name and dataclasses.is_dataclass(cls)
        with pytest.raises(dataclasses.FrozenInstanceError):
            cls().versions = 3


@pytest.mark.parametrize("index", range(6))
def test_record_round_trip_rebuilds_the_same_inference(index, source, tmp_path):
    """to_dict -> checkpoint -> load_record gives the same method and, run, the same output."""
    method = _methods()[index].fitted_to(source, seed=0)
    net = DropoutUNet(spatial_dims=3, in_channels=1, out_channels=1, features=(4, 8, 8), dropout=0.2 if method.passes else 0.0,
                      norm=None, cpu_bfloat16=False)
    path = tmp_path / "ckpt.pt"
    torch.save({"network": net.state_dict(), "method": MethodRecord(method, net).state_dict()}, path)
    record = load_record(path)
    again = record.method
    assert type(again) is type(method) and again == method  # every setting (the spectrum is compared below)
    rebuilt = record.build_network()
    rebuilt.load_state_dict(torch.load(path, weights_only=True)["network"])
    outs = []
    for m, n in ((method, net), (again, rebuilt)):
        n.eval()
        with torch.no_grad():
            outs.append(m.inferer(seed=3)(source.image[None], n))
    a, b = (o["mean"] if isinstance(o, dict) else o for o in outs)
    # bit for bit, except that a checkpoint keeps the noise spectrum in float32 (last-bit differences)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6 if method.name == "recorrupted" else 0.0)
    assert float(a.std()) > 0


def test_recorrupted_method_estimates_its_spectrum_once(source):
    method = RecorruptedPairs(patch_size=(16, 16, 16), spectrum_block=16)
    assert method.spectrum is None
    with pytest.raises(CetMonaiError, match="fitted_to"):
        method.sampler()
    fitted = method.fitted_to(source)
    assert fitted.spectrum is not None and fitted.fitted_to(source) is fitted
    pair = fitted.training_pairing()
    pair.set_random_state(seed=0)
    out = pair({"image": source.image[:, :24, :24, :24]})
    out = out[0] if isinstance(out, list) else out
    assert out["image"].shape == out["label"].shape and not torch.equal(out["image"], out["label"])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: FourierMasks(sampling="pools"), "sampling must be one of"),
        (lambda: FourierMasks(pool_kind="seed"), "renamed: use pool_kind masks"),
        (lambda: FourierMasks(keep_prob=0.0), "keep_prob"),
        (lambda: FourierMasks(tilt_range=120), "tilt_range"),
        (lambda: RecorruptedPairs(alpha=0), "alpha"),
        (lambda: RecorruptedPairs(spectrum_quantile=1.0), "spectrum_quantile"),
        (lambda: RecorruptedPairs(local_noise_level="yes"), "local_noise_level"),
        (lambda: RecorruptedPairs(spectrum_equalize_levels=1), "spectrum_equalize_levels"),
        (lambda: RecorruptedPairs(spectrum_calibration="pink"), "spectrum_calibration"),
        (lambda: RecorruptedPairs(spectrum_low_frequencies="flat"), "spectrum_low_frequencies"),
        (lambda: RecorruptedPairs(noise_bank=-2), "noise_bank"),
        (lambda: RecorruptedPairs(equalize_noise_level="yes"), "equalize_noise_level"),
        (lambda: RecorruptedPairs(target_lowpass=0.0), "target_lowpass"),
        (lambda: RecorruptedPairs(target_lowpass=0.95), "target_lowpass"),
        (lambda: RecorruptedPairs(target_lowpass="high"), "target_lowpass"),
        (lambda: RecorruptedPairs(equalize_noise_level=True, local_noise_level=False), "needs local_noise_level"),
        (lambda: RealSpaceBernoulli(versions=0), "versions"),
        (lambda: RealSpaceBernoulli(patch_size=(16, 16)), "3 edges"),
        (lambda: RealSpaceBernoulli(passes=-1), "passes"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(make, message):
    with pytest.raises(CetMonaiError, match=message):
        make()


def test_unknown_recorded_settings_and_methods_are_refused():
    with pytest.raises(CetMonaiError, match=r"pool_kindd \(did you mean pool_kind\?\)"):
        method_from_dict({"name": "fourier", "pool_kindd": "split"})
    with pytest.raises(CetMonaiError, match="unknown denoising method 'wiener'"):
        method_from_dict({"name": "wiener"})


def test_records_older_than_a_setting_keep_what_they_were_trained_with():
    """The noise-level options became the default later: an older record ran without them."""
    fresh = RecorruptedPairs()
    assert fresh.spectrum_equalize_levels and fresh.local_noise_level
    state = fresh.to_dict()
    assert method_from_dict(state).local_noise_level is True  # a record that has the setting keeps it
    assert fresh.flip_versions
    assert fresh.spectrum_calibration == "colored"
    assert fresh.noise_weighted_loss == 0.5 and fresh.target_lowpass == "auto"
    for name in RecorruptedPairs.absent_in_old_records:
        state.pop(name)
    old = method_from_dict(state)
    assert old.spectrum_equalize_levels is False and old.local_noise_level is False
    assert old.flip_versions is False
    assert old.spectrum_calibration == "white"  # a shared model re-estimates its spectra as it was trained
    assert old.spectrum_low_frequencies == "ramp" and old.noise_bank == 0
    assert old.noise_weighted_loss == 0.0  # trained with the plain MSE
    assert old.equalize_noise_level is False  # the drawn noise scaled, the patches not divided
    assert old.target_lowpass is None  # targets not filtered


def test_noise_bank_and_low_frequency_settings_reach_the_pairing_and_the_sampler(source):
    """``noise_bank`` and ``spectrum_low_frequencies`` are what the transform, the sampler and the
    estimator are built with; for several tomograms the bank is shared out between them."""
    method = RecorruptedPairs(noise_bank=6, spectrum_low_frequencies="cylindrical").fitted_to(source)
    assert method.spectrum.info["low_frequency_model"] == "cylindrical"
    assert method.training_pairing().pairer.noise_bank == 6
    assert method.sampler().noise_bank == 6
    assert method_from_dict(method.to_dict()).noise_bank == 6


def test_equalize_noise_level_reaches_the_pairing_and_the_sampler(source):
    method = RecorruptedPairs(equalize_noise_level=True).fitted_to(source)
    assert method.training_pairing().pairer.equalize_level is True
    assert method.sampler().equalize_level is True
    assert method_from_dict(method.to_dict()).equalize_noise_level is True
    assert RecorruptedPairs().fitted_to(source).sampler().equalize_level is False
    assert RecorruptedPairs(target_lowpass=None).fitted_to(source).training_pairing().pairer.target_lowpass is None
    lowpass = RecorruptedPairs(target_lowpass=0.35).fitted_to(source)
    assert lowpass.training_pairing().pairer.target_lowpass == 0.35
    assert method_from_dict(lowpass.to_dict()).target_lowpass == 0.35
    spectra = (method.spectrum, method.spectrum, method.spectrum)
    several = RecorruptedPairs(noise_bank=6, spectrum_seed=0, spectra=spectra)
    assert several.training_pairing().transforms[-1].pairer.noise_bank == 2


def _ramp_or_rolled_off(rolled_off: bool, edge: float):
    """A spectrum whose highest shells hold ~90 % (ramp-like) or ~20 % (rolled off) of its
    strongest shell's power, recording ``edge`` as where its tomogram's signal ends."""
    from cet_monai.noise_spectrum import NoiseSpectrum

    k = np.sqrt(sum(f**2 for f in np.meshgrid(*[np.fft.fftfreq(32)] * 3, indexing="ij")))
    grid = np.minimum(k, 0.3) / 0.3 * (np.exp(-((k / 0.3) ** 4)) if rolled_off else 1.0)
    return NoiseSpectrum(grid, {"signal_edge": edge})


def test_target_lowpass_auto_is_set_from_the_spectrum():
    """``auto``: one estimator shell (1/32) above the spectrum's signal edge; off where the noise
    is rolled off at high frequencies or no shell holds measurable signal; several tomograms: the
    highest cutoff, off if any one is off; a spectrum without the edge is a clear error."""
    method = RecorruptedPairs(target_lowpass="auto")
    assert method.with_spectrum(_ramp_or_rolled_off(False, 0.28)).lowpass_cutoff() == pytest.approx(0.28 + 1 / 32)
    assert RecorruptedPairs(target_lowpass="auto", spectrum_block=16).with_spectrum(
        _ramp_or_rolled_off(False, 0.28)).lowpass_cutoff() == pytest.approx(0.28 + 1 / 16)
    assert method.with_spectrum(_ramp_or_rolled_off(True, 0.28)).lowpass_cutoff() is None
    assert method.with_spectrum(_ramp_or_rolled_off(False, float("nan"))).lowpass_cutoff() is None
    assert method.with_spectrum(_ramp_or_rolled_off(False, 0.28)).training_pairing().pairer.target_lowpass == pytest.approx(0.28 + 1 / 32)
    several = RecorruptedPairs(target_lowpass="auto", spectrum_seed=0,
                               spectra=(_ramp_or_rolled_off(False, 0.25), _ramp_or_rolled_off(False, 0.31)))
    assert several.lowpass_cutoff() == pytest.approx(0.31 + 1 / 32)
    assert dataclasses.replace(several, spectra=several.spectra + (_ramp_or_rolled_off(True, 0.3),)).lowpass_cutoff() is None
    assert method_from_dict(method.to_dict()).target_lowpass == "auto"
    assert RecorruptedPairs(target_lowpass=0.3).with_spectrum(_ramp_or_rolled_off(True, 0.2)).lowpass_cutoff() == 0.3
    old = _ramp_or_rolled_off(False, 0.28)
    old.info.pop("signal_edge")
    with pytest.raises(CetMonaiError, match="signal edge"):
        method.with_spectrum(old).lowpass_cutoff()


def test_noise_weighted_loss_is_built_with_the_estimated_spectra(source):
    """``noise_weighted_loss`` is the exponent of the loss the method builds, with its own spectrum
    (several tomograms: all of theirs); 0 is the plain MSE; out-of-range values are refused."""
    from cet_monai.losses import NoiseWeightedMSELoss

    method = RecorruptedPairs(noise_weighted_loss=0.5).fitted_to(source)
    loss = method.training_loss()
    assert isinstance(loss, NoiseWeightedMSELoss) and loss.exponent == 0.5 and loss.spectra == [method.spectrum]
    assert method_from_dict(method.to_dict()).noise_weighted_loss == 0.5
    assert isinstance(RecorruptedPairs(noise_weighted_loss=0).fitted_to(source).training_loss(), torch.nn.MSELoss)
    several = RecorruptedPairs(noise_weighted_loss=1, spectrum_seed=0, spectra=(method.spectrum, method.spectrum.scaled(2.0)))
    assert len(several.training_loss().spectra) == 2
    for bad in (3.0, "half", True):
        with pytest.raises(CetMonaiError, match="noise_weighted_loss"):
            RecorruptedPairs(noise_weighted_loss=bad)


def test_the_flip_setting_reaches_the_window_inferer():
    assert RealSpaceBernoulli().window_inferer().flip_versions is False  # off unless a method turns it on
    assert RealSpaceBernoulli(flip_versions=True).window_inferer().flip_versions is True
    with pytest.raises(CetMonaiError, match="flip_versions must be true or false"):
        RealSpaceBernoulli(flip_versions="yes")
    with pytest.raises(CetMonaiError, match="flip_versions flips the versions of each window"):
        FourierMasks(sampling="pool", flip_versions=True)  # inferred from whole-tomogram pool members
    assert FourierMasks(sampling="patch", flip_versions=True).window_inferer().flip_versions


def test_old_checkpoints_name_what_replaced_their_recipe(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"network": {}, "recipe": {"method": "fourier"}}, path)
    with pytest.raises(CetMonaiError, match="'recipe' entry was replaced by 'method'"):
        load_record(path)
    torch.save({"network": {}}, path)
    with pytest.raises(CetMonaiError, match="holds no method record"):
        load_record(path)


def test_fourier_pairings_build_what_their_settings_say(source):
    per_patch = FourierMasks(patch_size=(16, 16, 16), margin=4)
    assert not per_patch.uses_pool and per_patch.patch_margin == 4 and per_patch.pool(source) is None
    whole = FourierMasks(split_on="tomogram", pool_size=3, margin=4)
    assert whole.whole_split and whole.uses_pool and whole.patch_margin == 0
    assert type(whole.inferer()).__name__ == "FourierSplitInferer"
    assert type(whole.inferer(slab_voxels=10)).__name__ == "FourierSplitInferer"  # never slabbed: it needs the whole FFT
    assert type(per_patch.inferer(slab_voxels=10)).__name__ == "SlabInferer"
    pool = FourierMasks(sampling="pool", pool_kind="masks", pool_size=3)
    assert pool.masks == "bernoulli" and not pool.whole_split and len(pool.pool(source, seed=0)) == 3


def _dollar_strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _dollar_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _dollar_strings(value)
    elif isinstance(node, str) and node.startswith("$"):
        yield node


def test_bundles_hold_no_conditionals_except_the_device_choice():
    offending = []
    for path in sorted((ROOT / "bundles").glob("*/configs/*.yaml")):
        for expr in _dollar_strings(yaml.safe_load(path.read_text())):
            if re.search(r"\bif\b.*\belse\b", expr) and "cuda" not in expr:
                offending.append(f"{path.relative_to(ROOT)}: {expr}")
    assert offending == []


def test_each_denoising_bundle_names_its_method_once():
    for bundle, name in (("recorrupted_denoising", "recorrupted"), ("fourier_denoising", "fourier"), ("real_denoising", "real")):
        config = yaml.safe_load((ROOT / "bundles" / bundle / "configs" / "train.yaml").read_text())
        target = config["method_def"]["_target_"]
        assert METHODS[name].__name__ == target.rsplit(".", 1)[1]
        settings = set(config["method_def"]) - {"_target_"}
        assert settings == set(METHODS[name].settings()), bundle  # every setting wired, none invented
    halves = yaml.safe_load((ROOT / "bundles" / "fourier_denoising" / "configs" / "halves.yaml").read_text())
    assert halves["method_def"]["_target_"].endswith("EvenOddHalves")
