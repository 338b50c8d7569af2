"""Whole seismic surveys: SEG-Y and MDIO in and out, segmented section by section in one process or block
by block on a Dask cluster, converted between formats, cut into training tiles, and synthesised.

Example:
    >>> from saltseg.artifacts import resolve_models
    >>> from saltseg.volume import predict_survey, segy_to_mdio
    >>> segy_to_mdio("survey.sgy", "survey.mdio", iline=9, xline=21)  # missing traces padded and masked
    >>> members = [(m.path, m.weight) for m in resolve_models(["runs/r1"])]
    >>> report = predict_survey(members, "survey.mdio", "salt.mdio", workers=2, axes=("inline", "crossline"))
"""

from saltseg.volume.chunked import SurveyReport, predict_survey
from saltseg.volume.convert import TilesReport, mdio_to_segy, segy_to_mdio, write_training_tiles
from saltseg.volume.segment import VolumeReport, segment_segy
from saltseg.volume.segy import SegyVolume, amplitude_clip, open_segy, read_volume, to_uint8
from saltseg.volume.survey import Survey, open_survey
from saltseg.volume.synth3d import SyntheticSurvey, write_synthetic_segy

__all__ = [
    "SegyVolume",
    "Survey",
    "SurveyReport",
    "SyntheticSurvey",
    "TilesReport",
    "VolumeReport",
    "amplitude_clip",
    "mdio_to_segy",
    "open_segy",
    "open_survey",
    "predict_survey",
    "read_volume",
    "segment_segy",
    "segy_to_mdio",
    "to_uint8",
    "write_synthetic_segy",
    "write_training_tiles",
]
