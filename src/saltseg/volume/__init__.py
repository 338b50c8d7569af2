"""Whole seismic volumes: SEG-Y input/output (segyio) and section-by-section salt segmentation.

Example:
    >>> from saltseg.inference.sliding import load_ensemble
    >>> from saltseg.volume import segment_segy
    >>> models, weights = load_ensemble(["runs/r1"])
    >>> report = segment_segy(models, "survey.sgy", "salt.sgy", weights=weights, iline=9, xline=21)
"""

from saltseg.volume.segment import VolumeReport, segment_segy
from saltseg.volume.segy import SegyVolume, amplitude_clip, open_segy, read_volume, to_uint8

__all__ = [
    "SegyVolume",
    "VolumeReport",
    "amplitude_clip",
    "open_segy",
    "read_volume",
    "segment_segy",
    "to_uint8",
]
