"""saltseg: salt-body segmentation of seismic images (TGS Salt Identification Challenge and beyond).

The Python API (:mod:`saltseg.api`) is importable from here; torch and Lightning load on first use::

    import saltseg
    saltseg.train("cpu_fast", "DATA", "runs/r1", folds=[0])
    masks = saltseg.Segmenter.from_runs("runs/r1").masks(tiles)
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("saltseg")  # the one place for the version is pyproject.toml
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

_API = (
    "Segmenter",
    "ensemble",
    "export",
    "load_config",
    "predict",
    "predict_arrays",
    "refit",
    "run_pipeline",
    "run_recipe",
    "train",
    "tune",
)
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from saltseg import api

        return getattr(api, name)
    raise AttributeError(f"module 'saltseg' has no attribute {name!r}")
