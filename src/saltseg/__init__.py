"""saltseg: salt-body segmentation of seismic images (TGS Salt Identification Challenge and beyond)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("saltseg")  # the one place for the version is pyproject.toml
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
