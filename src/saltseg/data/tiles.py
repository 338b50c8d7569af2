"""Reading tiles and masks, and finding them in the Kaggle layout or in a plain folder.

Layouts understood by :func:`open_dataset`:

* Kaggle: ``train/images/<id>.png``, ``train/masks/<id>.png``, ``test/images/<id>.png``, and optional
  ``train.csv``, ``depths.csv``, ``sample_submission.csv``.
* Plain folder: ``images/<id>.png`` with optional ``masks/<id>.png`` (tiles with a mask are labelled).
* A flat folder of PNG images (all unlabelled).

Pixel rule: how a PNG becomes pixels. It is the one rule of :func:`read_image` and :func:`read_mask`,
hence of ``data check``, ``train`` and ``predict``:

* Bit depth: 8-bit samples are kept; 16-bit samples keep their high byte (``v >> 8``, so the full
  16-bit range 0..65535 maps onto 0..255 whatever the tile's own range: never a per-tile rescale);
  1-, 2- and 4-bit grey are scaled to the full 8-bit range (a 1-bit tile reads 0 / 255).
* Colour: a palette tile is first replaced by its colours; alpha (LA, RGBA, a transparent palette) is
  ignored. An image whose red, green and blue channels are equal everywhere is grey; otherwise it is
  converted to luminance ``L = 0.299 R + 0.587 G + 0.114 B`` (ITU-R 601, Pillow's ``convert("L")``).
* Masks: salt where the grey value, or for a colour mask any of red, green and blue, is above 0. A mask
  must hold at most two values (grey levels, or colours for a colour mask), the lower being 0 (black)
  when there are two; otherwise it is refused as not binary. A 16-bit colour mask is refused (Pillow
  keeps only its high byte, which would erase values below 256).
* Anything else (a float or 32-bit integer image, CMYK, a signed 16-bit TIFF...) is refused with an
  error naming the file.
"""

from __future__ import annotations

import csv
import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from saltseg.errors import DataError

IMAGE_SUFFIXES = (".png",)


_PNG_END = b"IEND\xaeB`\x82"  # the last chunk of every complete PNG file
_WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L")
_KNOWN_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", *_WIDE_GREY_MODES)
_MODE_NAMES = {
    "F": "32-bit float",
    "I": "32-bit integer",
    "I;16S": "signed 16-bit",
    "CMYK": "CMYK colour",
    "YCbCr": "YCbCr colour",
    "LAB": "Lab colour",
    "HSV": "HSV colour",
}


@dataclass(frozen=True)
class _Pixels:
    """The samples of one file: (H, W) grey (uint8 or uint16) or (H, W, 3) uint8 RGB, alpha dropped."""

    values: np.ndarray
    wide_colour: bool  # a 16-bit colour PNG, which Pillow reduces to the high byte of each sample


def _png_is_wide_colour(data: bytes) -> bool:
    """True for a PNG whose header says 16-bit samples of a colour type with several channels."""
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[24] == 16 and data[25] in (2, 4, 6)


def _open_pixels(path: Path) -> _Pixels:
    """Decode ``path`` into samples by the pixel rule of this module."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.format == "PNG" and _PNG_END not in data[-64:]:
                # Pillow decodes a PNG cut anywhere after its pixel data without complaint
                raise OSError("PNG file is truncated: no IEND chunk")
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
            mode, fmt = im.mode, im.format
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except UnidentifiedImageError:
        raise DataError("unreadable image: unknown format or corrupt header", path) from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        zlib.error,
        struct.error,
        Image.DecompressionBombError,
    ) as exc:
        raise DataError(f"unreadable or truncated image ({exc})", path) from None
    if mode == "I" and fmt == "PNG" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        mode = "I;16"  # how older Pillow versions return a 16-bit grey PNG
    if mode not in _KNOWN_MODES:
        name = _MODE_NAMES.get(mode, "unknown")
        raise DataError(
            f"unsupported pixel format {mode} ({name}{f', {fmt}' if fmt else ''}): expected 1-, 2-, 4-, "
            "8- or 16-bit grey, grey with alpha, RGB, RGBA or palette",
            path,
        )
    if mode == "1":
        arr = arr.astype(np.uint8) * np.uint8(255)
    elif mode in _WIDE_GREY_MODES:
        arr = arr.astype(np.uint16)  # native byte order (I;16B is big-endian)
    elif mode == "LA":
        arr = arr[..., 0]
    elif mode in ("RGB", "RGBA"):
        arr = arr[..., :3]
    if arr.ndim not in (2, 3) or min(arr.shape[:2], default=0) < 1:
        raise DataError(f"expected a 2-D or RGB image, got array of shape {arr.shape}", path)
    return _Pixels(np.ascontiguousarray(arr), wide_colour=fmt == "PNG" and _png_is_wide_colour(data))


def read_image(path: str | Path) -> np.ndarray:
    """Read a seismic tile as a 2-D uint8 array, by the pixel rule of this module.

    Grey tiles of 1 to 16 bits and RGB / RGBA / palette tiles with equal channels (the Kaggle format)
    read as their grey values (16-bit: the high byte, never a per-tile rescale); a colour tile whose
    channels differ is converted to luminance.
    """
    path = Path(path)
    arr = _open_pixels(path).values
    if arr.ndim == 3:
        if (arr == arr[..., :1]).all():
            arr = arr[..., 0]
        else:
            arr = np.asarray(Image.fromarray(arr, mode="RGB").convert("L"))
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def read_mask(path: str | Path, strict: bool = True) -> np.ndarray:
    """Read a mask as a 2-D boolean array, by the pixel rule of this module.

    Salt where the grey value (1-, 8- or 16-bit), or any colour channel of an RGB / RGBA / palette mask,
    is above 0.

    Args:
        path: the PNG file.
        strict: raise :class:`DataError` if the mask has more than two distinct values (grey levels or
            colours), or two of which neither is 0 (black).
    """
    path = Path(path)
    px = _open_pixels(path)
    if px.wide_colour:
        raise DataError(
            "unsupported mask: 16-bit colour (its values below 256 would read as 0); save masks as 8- or "
            "16-bit grey",
            path,
        )
    arr = px.values
    if strict and arr.ndim == 3:
        colours = np.unique(arr.reshape(-1, 3), axis=0)
        if len(colours) > 2 or (len(colours) == 2 and colours.any(axis=1).all()):
            shown = [tuple(c) for c in colours[:6].tolist()]
            raise DataError(f"mask is not binary: colours {shown}", path)
    elif strict:
        values = np.unique(arr)
        if values.size > 2 or (values.size == 2 and values[0] != 0):
            raise DataError(f"mask is not binary: values {values[:6].tolist()}", path)
    return (arr > 0).any(axis=-1) if arr.ndim == 3 else arr > 0


def _files_in(folder: Path | None) -> dict[str, Path]:
    """``{id: path}`` of the PNG files of ``folder`` (any case of the suffix: ``a.PNG`` is id ``a``)."""
    if folder is None or not folder.is_dir():
        return {}
    files = (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return {p.stem: p for p in sorted(files)}


def read_csv_column_pairs(path: Path, key: str, value: str) -> list[tuple[str, str]]:
    """Read two named columns of a CSV as (key, value) rows, with a clear error for a bad header."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # tolerate a BOM
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if key not in header or value not in header:
                raise DataError(f"expected columns {key!r} and {value!r}, found {header}", path)
            return [(row[key], row[value] or "") for row in reader]
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"not a readable CSV ({exc})", path) from None


@dataclass
class TileSource:
    """Where the tiles of one dataset are, and what is known about them."""

    root: Path
    layout: str
    labelled_ids: list[str]
    unlabelled_ids: list[str]
    image_paths: dict[str, Path]
    mask_dir: Path | None
    depths: dict[str, float] = field(default_factory=dict)
    train_csv: Path | None = None
    sample_submission: Path | None = None
    orphan_masks: list[str] = field(default_factory=list)
    images_without_masks: list[str] = field(default_factory=list)
    test_ids: list[str] = field(default_factory=list)
    train_and_test_ids: list[str] = field(default_factory=list)
    bad_depths: list[str] = field(default_factory=list)
    mask_paths: dict[str, Path] = field(default_factory=dict)

    def image_path(self, tile_id: str) -> Path:
        """Path of the image of ``tile_id`` (labelled or unlabelled)."""
        try:
            return self.image_paths[tile_id]
        except KeyError:
            raise DataError(f"no image with id {tile_id!r}", self.root) from None

    def mask_path(self, tile_id: str) -> Path:
        """Path of the mask of a labelled tile."""
        if self.mask_dir is None:
            raise DataError("this dataset has no masks", self.root)
        return self.mask_paths.get(tile_id, self.mask_dir / f"{tile_id}.png")

    def depth_array(self, ids: list[str]) -> np.ndarray:
        """Depths of ``ids`` (NaN where unknown)."""
        return np.array([self.depths.get(i, np.nan) for i in ids], dtype=float)


def open_dataset(root: str | Path, strict: bool = True) -> TileSource:
    """Find the tiles under ``root`` (Kaggle layout, ``images/``+``masks/``, or a flat PNG folder).

    Args:
        root: the dataset folder.
        strict: raise :class:`DataError` for an unreadable ``depths.csv`` or a depth that is not a
            number; when False, such a file is ignored and such rows are skipped and listed in
            :attr:`TileSource.bad_depths` (for ``saltseg data check``, which reports them).
    """
    root = Path(root)
    if not root.exists():
        raise DataError("data folder not found", root)
    if not root.is_dir():
        raise DataError("not a folder", root)
    depths_csv = root / "depths.csv"
    depths: dict[str, float] = {}
    bad_depths: list[str] = []
    if depths_csv.exists():
        try:
            depth_rows = read_csv_column_pairs(depths_csv, "id", "z")
        except DataError:
            if strict:
                raise
            depth_rows = []  # reported by saltseg data check
        for tile_id, z in depth_rows:
            try:
                value = float(z)
            except ValueError:
                value = float("nan")
            if not np.isfinite(value):
                if strict:
                    raise DataError(f"depth {z!r} of id {tile_id!r} is not a number", depths_csv)
                bad_depths.append(f"{tile_id} ({z!r})")
                continue
            depths[tile_id] = value
    if (root / "train" / "images").is_dir() or (root / "test" / "images").is_dir():
        train_dir, test_dir = root / "train" / "images", root / "test" / "images"
        mask_dir = root / "train" / "masks"
        image_files, mask_files, test_files = _files_in(train_dir), _files_in(mask_dir), _files_in(test_dir)
        images, masks, tests = sorted(image_files), set(mask_files), sorted(test_files)
        paths = {**test_files, **image_files}  # an id in both (a broken dataset) reads its train image
        return TileSource(
            root=root,
            layout="kaggle",
            labelled_ids=[i for i in images if i in masks],
            unlabelled_ids=tests + [i for i in images if i not in masks],
            image_paths=paths,
            mask_dir=mask_dir,
            depths=depths,
            train_csv=root / "train.csv" if (root / "train.csv").exists() else None,
            sample_submission=(
                root / "sample_submission.csv" if (root / "sample_submission.csv").exists() else None
            ),
            orphan_masks=sorted(masks - set(images)),
            images_without_masks=[i for i in images if i not in masks],
            test_ids=tests,
            train_and_test_ids=sorted(set(images) & set(tests)),
            bad_depths=bad_depths,
            mask_paths=mask_files,
        )
    img_dir = root / "images" if (root / "images").is_dir() else root
    mask_dir = root / "masks" if (root / "masks").is_dir() else None
    image_files = _files_in(img_dir)
    images = sorted(image_files)
    if not images:
        raise DataError("no PNG images found (expected train/images, images/ or *.png)", root)
    mask_files = _files_in(mask_dir)
    masks = set(mask_files)
    return TileSource(
        root=root,
        layout="folder",
        labelled_ids=[i for i in images if i in masks],
        unlabelled_ids=[i for i in images if i not in masks],
        image_paths=image_files,
        mask_dir=mask_dir,
        depths=depths,
        orphan_masks=sorted(masks - set(images)),
        bad_depths=bad_depths,
        mask_paths=mask_files,
    )


def load_images(paths: list[Path], size: tuple[int, int] | None = (101, 101)) -> np.ndarray:
    """Read images into one (N, H, W) uint8 array, checking every tile has ``size``."""
    out = None
    for k, p in enumerate(paths):
        img = read_image(p)
        if size is not None and img.shape != size:
            raise DataError(f"image is {img.shape[1]}x{img.shape[0]}, expected {size[1]}x{size[0]}", p)
        if out is None:
            out = np.empty((len(paths), *img.shape), dtype=np.uint8)
        elif img.shape != out.shape[1:]:
            raise DataError(f"image size {img.shape} differs from the first image's {out.shape[1:]}", p)
        out[k] = img
    if out is None:
        return np.empty((0, *(size or (0, 0))), dtype=np.uint8)
    return out


def load_masks(paths: list[Path], size: tuple[int, int] | None = (101, 101)) -> np.ndarray:
    """Read masks into one (N, H, W) bool array, checking sizes."""
    out = np.empty((len(paths), *(size or (101, 101))), dtype=bool)
    for k, p in enumerate(paths):
        m = read_mask(p)
        if m.shape != out.shape[1:]:
            raise DataError(f"mask is {m.shape[1]}x{m.shape[0]}, expected {out.shape[2]}x{out.shape[1]}", p)
        out[k] = m
    return out
