"""Between formats: SEG-Y to MDIO (``multidimio``'s ingestion), MDIO back to SEG-Y, and labelled sections
to training tiles in the Kaggle layout.

* SEG-Y -> MDIO: MDIO builds the grid from the inline / crossline trace headers (any byte locations), so
  a survey with missing traces becomes a full cube whose ``trace_mask`` marks the missing ones.
* MDIO -> SEG-Y: an MDIO dataset that kept its SEG-Y headers is exported by MDIO; a saltseg prediction
  (no headers of its own) is written with the headers of the SEG-Y it was predicted from (``like``).
* Sections -> tiles: :func:`write_training_tiles` cuts inlines (and crosslines) of an amplitude survey and
  its label cube into 101 x 101 tiles (images, masks, ``train.csv``, ``depths.csv``), so that
  ``saltseg train`` learns from a user's interpreted survey.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from saltseg.errors import DataError
from saltseg.utils.io import atomic_path, check_output_file
from saltseg.volume.survey import Axis3D, open_survey, survey_format

__all__ = ["TilesReport", "mdio_to_segy", "segy_to_mdio", "write_training_tiles"]

TEMPLATES = {"time": "PostStack3DTime", "depth": "PostStack3DDepth"}


def segy_to_mdio(
    src: str | Path,
    dst: str | Path,
    iline: int = 189,
    xline: int = 193,
    domain: Literal["time", "depth"] = "time",
) -> Path:
    """Convert a post-stack 3-D SEG-Y to MDIO with MDIO's own ingestion (missing traces masked).

    Raises:
        DataError: The input is missing or not SEG-Y, the output exists, or MDIO cannot build the grid
            from the given header bytes (its message, on one line).
    """
    from mdio import segy_to_mdio as ingest
    from mdio.builder.template_registry import get_template
    from segy.schema import HeaderField
    from segy.standards import get_segy_standard

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DataError("SEG-Y file not found", src)
    if dst.exists():
        raise DataError("the output exists; choose a new one (saltseg never replaces it)", dst)
    check_output_file(dst, inputs=[src])
    spec = get_segy_standard(1.0).customize(
        trace_header_fields=[
            HeaderField(name="inline", byte=int(iline), format="int32"),
            HeaderField(name="crossline", byte=int(xline), format="int32"),
        ]
    )
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        ingest(segy_spec=spec, mdio_template=get_template(TEMPLATES[domain]), input_path=src, output_path=tmp)
    except Exception as exc:  # MDIO's and the segy library's own errors
        shutil.rmtree(tmp, ignore_errors=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"MDIO cannot ingest it with inline byte {iline} / crossline byte {xline} ({first})", src
        ) from None
    tmp.rename(dst)
    return dst


def mdio_to_segy(src: str | Path, dst: str | Path, like: str | Path | None = None) -> Path:
    """Write the MDIO dataset ``src`` as SEG-Y: a saltseg prediction with the headers of ``like`` (the SEG-Y
    it was predicted from), any other MDIO through MDIO's export (it kept its SEG-Y headers)."""
    from saltseg.volume.segy import create_like, open_segy
    from saltseg.volume.survey import _mdio_dataset

    src, dst = Path(src), Path(dst)
    if survey_format(src) != "mdio" or not src.exists():
        raise DataError("not an MDIO dataset", src)
    check_output_file(dst, inputs=[src, *([like] if like else [])])
    if dst.exists():
        raise DataError("the output exists; choose a new one (saltseg never replaces it)", dst)
    ds = _mdio_dataset(src.resolve())
    variable = (ds.attrs.get("attributes") or {}).get("defaultVariableName", "amplitude")
    if "headers" in ds and like is None:
        from mdio import mdio_to_segy as export
        from segy.standards import get_segy_standard

        with atomic_path(dst) as tmp:
            export(get_segy_standard(1.0), src, tmp)
        return dst
    if like is None:
        raise DataError(
            "the dataset has no SEG-Y headers (a saltseg prediction): give --like SURVEY.sgy, the SEG-Y it "
            "was predicted from",
            src,
        )
    values = ds[variable]
    with open_segy(like) as (f, _):
        if f.unstructured:
            raise DataError(
                "the --like SEG-Y has no 3-D geometry; convert through MDIO's export instead", like
            )
        if (len(f.ilines), len(f.xlines), len(f.samples)) != tuple(values.shape):
            raise DataError(
                f"the --like SEG-Y is {len(f.ilines)} x {len(f.xlines)} x {len(f.samples)}, the dataset "
                f"{' x '.join(map(str, values.shape))}",
                like,
            )
        with create_like(f, dst) as out:
            for i, il in enumerate(f.ilines):
                out.iline[il] = np.ascontiguousarray(values.isel(inline=i).values, dtype=np.float32)
    return dst


@dataclass
class TilesReport:
    """What :func:`write_training_tiles` wrote."""

    out: Path
    tiles: int
    salt_tiles: int
    sections: int


def write_training_tiles(
    survey_path: str | Path,
    labels_path: str | Path,
    out: str | Path,
    *,
    axes: Sequence[Axis3D] = ("inline",),
    every: int = 1,
    tile: int = 101,
    stride: int = 101,
    clip_percentile: float = 99.0,
    iline: int = 189,
    xline: int = 193,
) -> TilesReport:
    """Cut every ``every``-th section of ``survey_path`` and its label cube ``labels_path`` (salt > 0.5;
    SEG-Y or MDIO, same grid) into ``tile`` x ``tile`` tiles in the Kaggle layout under ``out``.

    Tiles are taken every ``stride`` samples / traces; a tile's depth in ``depths.csv`` is the sample of
    its top row. Tiles touching a missing trace are skipped. The folder appears only when complete.
    """
    from PIL import Image

    from saltseg.data.rle import rle_encode
    from saltseg.volume.segy import to_uint8

    survey, labels = open_survey(survey_path, iline, xline), open_survey(labels_path, iline, xline)
    if survey.shape != labels.shape:
        raise DataError(
            f"the labels are {' x '.join(map(str, labels.shape))}, the survey "
            f"{' x '.join(map(str, survey.shape))}",
            labels_path,
        )
    if every < 1 or tile < 8 or stride < 1:
        raise DataError(f"need every >= 1, tile >= 8 and stride >= 1, got {every}, {tile}, {stride}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError("output folder exists and is not empty; choose a new one", out)
    clip = survey.amplitude_clip(clip_percentile)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    n = salty = sections = 0
    try:
        (tmp / "train/images").mkdir(parents=True)
        (tmp / "train/masks").mkdir(parents=True)
        with open(tmp / "train.csv", "w", newline="") as tf, open(tmp / "depths.csv", "w", newline="") as df:
            train, depths = csv.writer(tf, lineterminator="\n"), csv.writer(df, lineterminator="\n")
            train.writerow(["id", "rle_mask"])
            depths.writerow(["id", "z"])
            for axis in axes:
                for s in range(0, survey.length(axis), every):
                    amps = survey.read(axis, s, s + 1)
                    salt = labels.read(axis, s, s + 1)
                    live = survey.live[s] if axis == "inline" else survey.live[:, s]
                    amps, salt = (amps[0], salt[0]) if axis == "inline" else (amps[:, 0], salt[:, 0])
                    image = to_uint8(amps, clip).T  # (samples, traces): depth down the rows
                    mask = (salt > 0.5).T
                    sections += 1
                    for y in range(0, image.shape[0] - tile + 1, stride):
                        for x in range(0, image.shape[1] - tile + 1, stride):
                            if not live[x : x + tile].all():
                                continue
                            tid = f"{axis[0]}{s:05d}_{y:05d}_{x:05d}"
                            m = mask[y : y + tile, x : x + tile]
                            Image.fromarray(image[y : y + tile, x : x + tile]).save(
                                tmp / f"train/images/{tid}.png"
                            )
                            Image.fromarray(m.astype(np.uint8) * 255).save(tmp / f"train/masks/{tid}.png")
                            train.writerow([tid, rle_encode(m)])
                            depths.writerow([tid, int(survey.samples[y]) if len(survey.samples) else y])
                            n += 1
                            salty += int(m.any())
        if n == 0:
            raise DataError(
                f"no {tile} x {tile} tile fits in the sections (survey {survey.shape})", survey_path
            )
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TilesReport(out=out, tiles=n, salt_tiles=salty, sections=sections)
