"""``saltseg show``: image, mask and prediction of chosen tiles in one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from saltseg.artifacts.names import PRED_MASKS_FILE
from saltseg.data.tiles import open_dataset, read_image, read_mask
from saltseg.errors import DataError
from saltseg.metrics.kaggle import kaggle_scores
from saltseg.utils.io import atomic_path

MAX_TILES = 60


def _predictions(pred: Path) -> dict[str, np.ndarray]:
    from saltseg.submission import read_submission

    csv_path = pred / PRED_MASKS_FILE if pred.is_dir() else pred
    if pred.is_dir() and not csv_path.exists():
        raise DataError(f"prediction folder has no {PRED_MASKS_FILE} (made by saltseg predict)", pred)
    if not csv_path.exists():
        raise DataError("predictions not found", pred)
    return read_submission(csv_path)


SHOW_SOFTWARE = "saltseg show"
"""The PNG ``Software`` text of the pictures ``saltseg show`` draws (the only files it replaces)."""


def show_tiles(data_dir: str | Path, ids: list[str], out: str | Path, pred: str | Path | None = None) -> Path:
    """Write a PNG with one row per tile: image, truth mask (labelled tiles) and the prediction of
    ``pred`` (a prediction folder's ``masks.csv`` or a submission CSV) with its score."""
    from saltseg.diagnostics.figures import png_bytes, show_figure

    ids = [Path(i).stem if i.endswith(".png") else i for i in ids]
    if not ids:
        raise DataError("give at least one tile id")
    if len(ids) > MAX_TILES:
        raise DataError(f"{len(ids)} tiles asked for; show at most {MAX_TILES} at once")
    src = open_dataset(data_dir)
    unknown = [i for i in ids if i not in src.image_paths]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise DataError(f"no tile with id {unknown[0]!r}{more} in this dataset", data_dir)
    labelled = set(src.labelled_ids)
    images = [read_image(src.image_path(i)) for i in ids]
    truths = [read_mask(src.mask_path(i)) if i in labelled else None for i in ids]
    preds, notes = None, []
    if pred is not None:
        masks = _predictions(Path(pred))
        preds = [masks.get(i) for i in ids]
        for p, t in zip(preds, truths, strict=True):
            if p is None:
                notes.append("not in the predictions")
            else:
                what = f"prediction, salt {100 * p.mean():.0f}%" if p.any() else "prediction: empty"
                if t is not None:
                    what += f", score {kaggle_scores(p[None], t[None])[0]:.2f}"
                notes.append(what)
    fig = show_figure(ids, images, truths, preds, notes)
    out = Path(out)
    data = png_bytes(fig, dpi=110, software=SHOW_SOFTWARE)  # tells show's own pictures from the user's
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    return out
