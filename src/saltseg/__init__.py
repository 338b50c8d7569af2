"""saltseg: salt-body segmentation of seismic images (TGS Salt Identification Challenge and beyond)."""

__version__ = "0.2.0"
