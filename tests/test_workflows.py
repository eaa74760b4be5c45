"""Python entry points over the bundles: in-memory denoising (incl. Noise2Noise between halves)."""

import numpy as np
import pytest

from cet_monai.data import simulate_tomogram
from cet_monai.errors import CetMonaiError
from cet_monai.workflows import bundle_dir, denoise_volume

TINY = {"iterations": 2, "epoch_length": 1, "val_interval": 1, "patch_size": [16, 16, 16], "margin": 4,
        "network_def#features": [4, 8], "versions": 1, "passes": 1}


@pytest.fixture(scope="module")
def sim():
    return simulate_tomogram(shape=(16, 32, 32), mode="fast", seed=1)


@pytest.mark.parametrize("method", ["fourier", "n2n"])
def test_denoise_volume_returns_the_input_scale(sim, method):
    noisy = sim.noisy * 40.0 + 7.0
    out = denoise_volume(noisy, method=method, even=sim.even * 40.0 + 7.0, odd=sim.odd * 40.0 + 7.0, **TINY)
    assert out.shape == noisy.shape and np.isfinite(out).all()
    assert abs(float(out.mean()) - float(noisy.mean())) < float(noisy.std())


def test_n2n_needs_both_halves(sim):
    with pytest.raises(CetMonaiError, match="even and odd"):
        denoise_volume(sim.noisy, method="n2n", even=sim.even)


def test_unknown_bundle_is_a_clear_error():
    with pytest.raises(CetMonaiError, match="not found"):
        bundle_dir("no_such_bundle")


@pytest.mark.parametrize("pool_kind", ["masks", "split"])
def test_pool_sampling_validates_without_a_reference(sim, pool_kind):
    # the pool holds the training region only: validation pairs come from the held-out region itself
    out = denoise_volume(sim.noisy, method="fourier", sampling="pool", pool_kind=pool_kind,
                         **{**TINY, "pool_size": 4})
    assert out.shape == sim.noisy.shape and np.isfinite(out).all()


def test_train_refuses_a_budget_that_is_not_whole_epochs():
    """The Python API checks the budget as the CLI does (the bundle would round it silently)."""
    from cet_monai.workflows import check_iterations, train

    with pytest.raises(CetMonaiError, match="not a whole number of epochs of 50 iterations.*use 50 or 100"):
        train("recorrupted", iterations=70)
    overrides = {"iterations": 20}
    check_iterations("recorrupted", overrides)
    assert overrides == {"iterations": 20, "epoch_length": 20}   # a short budget shortens the epoch
    with pytest.raises(CetMonaiError, match="iterations must be >= 1"):
        check_iterations("fourier", {"iterations": 0})


def test_method_from_settings_is_what_the_bundle_builds(tmp_path):
    """The CLI's preflight builds the method from the bundle's defaults and the overrides; it
    must be the object the bundle's method_def makes (the same class, the same settings)."""
    from cet_monai.methods import FourierMasks, RecorruptedPairs, RealSpaceBernoulli
    from cet_monai.workflows import method_from_settings, train

    assert method_from_settings("recorrupted") == RecorruptedPairs()
    assert method_from_settings("recorrupted", {"alpha": 0.5, "method_def#margin": 4}) == RecorruptedPairs(alpha=0.5, margin=4)
    assert isinstance(method_from_settings("fourier"), FourierMasks)
    assert isinstance(method_from_settings("real"), RealSpaceBernoulli)
    assert method_from_settings("recorrupted", {"alpha": "$1.0 / 2"}) == RecorruptedPairs(alpha=0.5)  # evaluated as the bundle does
    wf = train("fourier", output_dir=tmp_path, iterations=1, epoch_length=1, progress=False, **{"simulation#shape": [16, 32, 32],
               "patch_size": [16, 16, 16], "margin": 4, "network_def#features": [4, 8], "versions": 1, "passes": 1, "keep_prob": 0.4})
    built = wf.parser.get_parsed_content("method_def")
    expected = method_from_settings("fourier", {"patch_size": [16, 16, 16], "margin": 4, "versions": 1, "passes": 1, "keep_prob": 0.4})
    assert built == expected and built.keep_prob == 0.4
