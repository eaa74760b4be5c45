"""Noise2Noise from Fourier-masked copies of one tomogram (Fourier-space Bernoulli sampling).

Three pairings, chosen by ``sampling`` (and ``split_on``):

* ``split`` on ``patch`` (the default): complementary masks over each patch's measured
  coefficients (the missing wedge left out), a low-frequency ball of ``shared_lowpass`` given to
  both halves; inference: K complementary splits per window, each prediction kept on the
  coefficients its input did not see.
* ``split`` on ``tomogram``: the same split of the whole tomogram's spectrum, a pool of
  ``pool_size`` splits for training; inference splits the whole tomogram
  (:class:`~cet_monai.inferers.FourierSplitInferer`), never per slab.
* ``patch``: Bernoulli blocks of ``block_scale`` coefficients with a kept low-frequency ball and
  random sign flips (probability ``flip_prob``), drawn per patch; ``pool``: a pool of such
  masked whole-tomogram copies (``pool_kind: split`` = split on tomogram). Inference: K masked
  versions x T dropout passes; per-patch masks are drawn on each window plus the training margin
  (the same block size and no wrap-around), a pool's as K whole-tomogram members of the family it
  was trained on (:class:`~cet_monai.inferers.FourierPoolInferer`, never per slab), or with
  ``pool_inference: windows`` per window (measured in ``docs/denoising.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cet_monai.errors import CetMonaiError
from cet_monai.methods.base import DenoisingMethod, _positive, _probability, register_method

__all__ = ["FourierMasks"]

SAMPLINGS = ("split", "patch", "pool")


@register_method
@dataclass(frozen=True)
class FourierMasks(DenoisingMethod):
    """Training pairs from Fourier-masked copies of the tomogram (module docstring for the pairings).

    Args:
        sampling: ``split``, ``patch`` or ``pool``.
        split_on: ``split`` only: ``patch`` (each patch's own spectrum) or ``tomogram``.
        shared_lowpass: fraction of the coefficients (a low-frequency ball) given to both halves of a split.
        pool_kind: ``pool`` only: ``masks`` (Bernoulli blocks and flips) or ``split``.
        pool_size: members of a whole-tomogram pool.
        pool_inference: ``pool`` with ``masks`` only: ``whole`` (K whole-tomogram masked copies,
            default) or ``windows`` (masks drawn on each window plus margin).
        tilt_range: degrees; the missing wedge left out of split masks (``None``: none).
        keep_prob: probability that a coefficient (block) is kept.
        flip_prob: probability of a sign flip per block (Bernoulli masks only).
        block_scale: Bernoulli block edge in coefficients.
        patch_size, margin, pairs_per_patch, versions, passes: see :class:`DenoisingMethod`.
    """

    name = "fourier"

    sampling: str = "split"
    split_on: str = "patch"
    shared_lowpass: float = 0.02
    pool_kind: str = "masks"
    pool_size: int = 40
    pool_inference: str = "whole"
    tilt_range: float | None = 60.0
    keep_prob: float = 0.5
    flip_prob: float = 0.1
    block_scale: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sampling not in SAMPLINGS:
            raise CetMonaiError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        if self.split_on not in ("patch", "tomogram"):
            raise CetMonaiError(f"split_on must be patch or tomogram, got {self.split_on!r}")
        if self.pool_kind == "seed":
            raise CetMonaiError("pool_kind 'seed' was renamed: use pool_kind masks (Bernoulli blocks with sign flips)")
        if self.pool_kind not in ("masks", "split"):
            raise CetMonaiError(f"pool_kind must be masks or split, got {self.pool_kind!r}")
        if self.pool_inference not in ("whole", "windows"):
            raise CetMonaiError(f"pool_inference must be whole or windows, got {self.pool_inference!r}")
        object.__setattr__(self, "shared_lowpass", float(self.shared_lowpass))
        if not 0.0 <= self.shared_lowpass < 1.0:
            raise CetMonaiError(f"shared_lowpass must be in [0, 1), got {self.shared_lowpass}")
        object.__setattr__(self, "pool_size", _positive("pool_size", self.pool_size))
        object.__setattr__(self, "keep_prob", _probability("keep_prob", self.keep_prob))
        object.__setattr__(self, "flip_prob", _probability("flip_prob", self.flip_prob, low_open=False))
        object.__setattr__(self, "block_scale", _positive("block_scale", self.block_scale))
        if self.tilt_range is not None:
            tilt = float(self.tilt_range)
            if not 0.0 < tilt <= 90.0:
                raise CetMonaiError(f"tilt_range must be in (0, 90] degrees or null, got {self.tilt_range!r}")
            object.__setattr__(self, "tilt_range", tilt)
        if self.flip_versions and self.whole_tomogram:
            raise CetMonaiError("flip_versions flips the versions of each window; whole-tomogram splits and pool members "
                                "are not made per window: use it with sampling patch, or pool with pool_inference windows")

    # ------------------------------------------------------------------ what the settings mean
    @property
    def whole_split(self) -> bool:
        """Complementary splits of the whole tomogram (trained from a pool, inferred whole)."""
        return (self.sampling == "split" and self.split_on == "tomogram") or (self.sampling == "pool" and self.pool_kind == "split")

    @property
    def whole_pool(self) -> bool:
        """A Bernoulli-mask pool inferred from whole-tomogram members (:class:`~cet_monai.inferers.FourierPoolInferer`)."""
        return self.sampling == "pool" and self.pool_kind == "masks" and self.pool_inference == "whole"

    @property
    def whole_tomogram(self) -> bool:
        """Inferred from whole-tomogram versions (splits or pool members), never per window or slab."""
        return self.whole_split or self.whole_pool

    @property
    def uses_pool(self) -> bool:
        return self.sampling == "pool" or self.whole_split

    @property
    def masks(self) -> str:
        """Window masks at inference: ``split`` (complementary halves) or ``bernoulli`` (Bernoulli blocks with flips)."""
        return "split" if self.sampling == "split" or (self.sampling == "pool" and self.pool_kind == "split") else "bernoulli"

    def _mask_options(self) -> dict:
        return {"keep_prob": self.keep_prob, "flip_prob": self.flip_prob, "block_scale": self.block_scale,
                "tilt_range_deg": self.tilt_range, "shared_lowpass": self.shared_lowpass}

    def check_several_tomograms(self) -> None:
        """A pool (``sampling pool``, or ``split`` on ``tomogram``) holds masked copies of one whole
        tomogram and is inferred from whole-tomogram versions: one tomogram only."""
        if self.uses_pool:
            what, way = (("split on tomogram", "--set split_on=patch (its default)") if self.sampling == "split"
                         else (f"sampling {self.sampling}", "--sampling split (per patch, its default) or patch"))
            raise CetMonaiError(f"the Fourier method with {what} draws its pairs from masked copies of one whole tomogram, so it "
                                f"cannot fit one model on several: use {way}, or leave out --shared-model")

    # ------------------------------------------------------------------ training pairs
    @property
    def patch_margin(self) -> int:
        return 0 if self.uses_pool else self.margin  # pool members are whole-tomogram copies: no wrap-around to cut

    def pool(self, source, seed: int = 0):
        """The whole-tomogram :class:`~cet_monai.transforms.FourierSamplePool` (``None`` for per-patch pairings)."""
        if not self.uses_pool:
            return None
        from cet_monai.transforms import FourierSamplePool

        return FourierSamplePool(tomogram=source.training_region(), num_samples=self.pool_size,
                                 kind="split" if self.whole_split else "bernoulli", seed=seed, **self._mask_options())

    def training_pairing(self, source=None, seed: int = 0):
        from cet_monai.transforms import RandFourierPaird

        if self.uses_pool and source is None:
            raise CetMonaiError(f"sampling {self.sampling}: the pool is made of the tomogram, pass its source")
        return RandFourierPaird(keys="image", label_key="label", mode="pool" if self.uses_pool else self.sampling,
                                pool=self.pool(source, seed) if self.uses_pool else None, num_samples=self.pairs_per_patch,
                                **self._mask_options())

    # ------------------------------------------------------------------ inference
    def sampler(self, num_versions: int | None = None):
        from cet_monai.inferers import IdentitySampler
        from cet_monai.inferers.samplers import FourierSampler

        if self.whole_tomogram:
            return IdentitySampler()  # the versions are whole-tomogram copies (FourierSplitInferer / FourierPoolInferer)
        return FourierSampler(num_versions=self.versions if num_versions is None else int(num_versions), masks=self.masks,
                              context=self.margin, **self._mask_options())

    def _split_inferer(self, window, num_versions: int, seed: int = 0):
        from cet_monai.inferers import FourierSplitInferer

        return FourierSplitInferer(window, num_versions=int(num_versions), keep_prob=self.keep_prob, tilt_range_deg=self.tilt_range,
                                   shared_lowpass=self.shared_lowpass, seed=seed)

    def _pool_inferer(self, window, num_versions: int, seed: int = 0):
        from cet_monai.inferers import FourierPoolInferer

        return FourierPoolInferer(window, num_versions=int(num_versions), keep_prob=self.keep_prob, block_scale=self.block_scale,
                                  flip_prob=self.flip_prob, seed=seed)

    def _whole_inferer(self, window, num_versions: int, seed: int = 0):
        make = self._split_inferer if self.whole_split else self._pool_inferer
        return make(window, num_versions, seed=seed)

    def inferer(self, *, versions: int | None = None, passes: int | None = None, overlap: float = 0.5, sw_batch_size: int = 2,
                return_std: bool = False, sw_device=None, device=None, progress: bool = False, seed: int = 0,
                slab_voxels: int | None = None):
        """As :meth:`DenoisingMethod.inferer`; whole-tomogram splits and pool members need the whole FFT: never slabbed."""
        if not self.whole_tomogram:
            return super().inferer(versions=versions, passes=passes, overlap=overlap, sw_batch_size=sw_batch_size, return_std=return_std,
                                   sw_device=sw_device, device=device, progress=progress, seed=seed, slab_voxels=slab_voxels)
        from cet_monai.methods.base import check_std_predictions

        window = self.window_inferer(passes=passes, overlap=overlap, sw_batch_size=sw_batch_size, seed=seed, return_std=return_std,
                                     sw_device=sw_device, device=device, progress=progress)
        k = self.versions if versions is None else int(versions)
        if return_std:
            check_std_predictions(k, window.passes)
        return self._whole_inferer(window, k, seed=seed)

    def reference_inferer(self):
        window = self.window_inferer(passes=min(self.passes, 2), sw_batch_size=4, overlap=0.25)
        return self._whole_inferer(window, min(self.versions, 2)) if self.whole_tomogram else window
