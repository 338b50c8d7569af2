"""Pack what a lent GPU machine needs for ``benchmarks/device_fold0.sh`` into ``.device/`` (git-ignored,
named in the device call's ``carry``): the labelled tiles re-encoded as 8-bit grayscale PNGs (the same
pixels, checked; 38 MB instead of 49) with their CSVs, and the wheels of the packages its image lacks.

Usage: python benchmarks/device_pack.py --data ../shared/data/tgs-salt [--no-wheels]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from saltseg.data.tiles import read_image, read_mask

# what the device image (Python 3.12, torch 2.11, Lightning 2.6.6) lacks of saltseg's training path
WHEELS = [
    "segmentation-models-pytorch==0.6.0",
    "timm==1.0.31",
    "pydantic==2.14.3",
    "pydantic-core==2.50.4",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "segyio==1.9.14",
]
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
]


def pack_tiles(src: Path, dst: Path) -> int:
    """Re-encode ``src``'s labelled tiles into ``dst`` as 8-bit grayscale PNGs; returns the tile count.
    Raises SystemExit when a re-encoded tile does not read back as the same pixels."""
    for name in ("depths.csv", "train.csv"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    n = 0
    for sub, read in (("images", read_image), ("masks", read_mask)):
        (dst / "train" / sub).mkdir(parents=True, exist_ok=True)
        for path in sorted((src / "train" / sub).glob("*.png")):
            pixels = read(path)
            out = dst / "train" / sub / path.name
            gray = pixels if sub == "images" else (pixels > 0).astype(np.uint8) * 255
            Image.fromarray(gray.astype(np.uint8)).save(out, optimize=True)
            if not np.array_equal(read(out), pixels):
                sys.exit(f"{out}: re-encoded pixels differ from {path}")
            n += sub == "images"
    return n


def download_wheels(dst: Path) -> None:
    """The wheels for the device's CPython 3.12 (pip from PyPI; no dependencies resolved)."""
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        *platform_args,
        "-d",
        str(dst),
        *WHEELS,
    ]
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/tgs-salt"))
    ap.add_argument("--out", type=Path, default=Path(".device"))
    ap.add_argument("--no-wheels", action="store_true")
    args = ap.parse_args()
    tiles = args.out / "tgs-salt"
    tiles.mkdir(parents=True, exist_ok=True)
    print(f"{pack_tiles(args.data, tiles)} labelled tiles -> {tiles}")
    if not args.no_wheels:
        download_wheels(args.out / "whl")
        print(f"wheels -> {args.out / 'whl'}")


if __name__ == "__main__":
    main()
