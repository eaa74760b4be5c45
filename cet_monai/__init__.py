"""cet-monai: self-supervised denoising of cryo-electron tomograms from a single tomogram.

Conventions used everywhere in the package:

* A volume is a 3D array indexed ``(Z, Y, X)`` -- the order ``mrcfile`` uses -- whatever the
  file format it came from (NIfTI and TIFF readers transpose as needed). Z is the beam
  direction of the untilted specimen, the tilt axis is Y.
* With a channel axis, a volume is ``(C, Z, Y, X)`` (MONAI's channel-first convention).
* Voxel sizes are in angstrom, ordered like the array axes ``(Z, Y, X)`` unless a name says
  otherwise (MRC headers store them as X, Y, Z).
"""

__version__ = "0.1.0"
