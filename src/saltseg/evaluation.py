"""Scoring predictions (a submission CSV or a prediction folder) against a dataset's masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from saltseg.artifacts.names import PRED_MASKS_FILE
from saltseg.data.tiles import load_masks, open_dataset
from saltseg.errors import DataError
from saltseg.metrics.kaggle import dice_scores, iou_scores, kaggle_scores, score_breakdown
from saltseg.submission import read_submission


def format_breakdown(breakdown: dict[str, list[dict]]) -> list[str]:
    """Table lines of a :func:`~saltseg.metrics.kaggle.score_breakdown`."""
    lines: list[str] = []
    for title, rows in breakdown.items():
        lines.append(f"{'by ' + title:<20} {'tiles':>6} {'score':>7} {'lost':>7}")
        lines += [f"  {r['group']:<18} {r['count']:6d} {r['score']:7.4f} {r['lost']:7.4f}" for r in rows]
    return lines


def evaluate_predictions(predictions: str | Path, data_dir: str | Path, partial: bool = False) -> list[str]:
    """Score the labelled tiles of ``data_dir`` against ``predictions``; the last line is ``score: X``.

    Every labelled tile must be in the file (a missing one would otherwise drop out of the mean);
    ``partial`` scores only those present and says how many were left out.
    """
    predictions = Path(predictions)
    if predictions.is_dir():
        predictions = predictions / PRED_MASKS_FILE
        if not predictions.exists():
            raise DataError(f"prediction folder has no {PRED_MASKS_FILE}", predictions.parent)
    pred = read_submission(predictions)
    src = open_dataset(data_dir)
    ids = [i for i in src.labelled_ids if i in pred]
    if not ids:
        raise DataError(f"no id of the submission is a labelled tile of {data_dir}", predictions)
    absent = [i for i in src.labelled_ids if i not in pred]
    if absent and not partial:
        raise DataError(
            f"{len(absent)} of the {len(src.labelled_ids)} labelled tiles of {data_dir} are not in the file "
            f"(first: {', '.join(absent[:3])}); give --partial to score only the {len(ids)} present",
            predictions,
        )
    truth = load_masks([src.mask_path(i) for i in ids])
    p = np.stack([pred[i] for i in ids])
    scores = kaggle_scores(p, truth)
    depths = src.depth_array(ids) if src.depths else None
    lines = [
        f"scored {len(ids)} labelled tiles ({len(pred) - len(ids)} ids of the file not labelled, "
        f"{len(src.labelled_ids) - len(ids)} labelled tiles not in the file)"
    ]
    lines += format_breakdown(score_breakdown(scores, truth, depths))
    lines.append(
        f"mean IoU: {iou_scores(p, truth).mean():.4f}   mean Dice: {dice_scores(p, truth).mean():.4f}"
    )
    lines.append(f"score: {scores.mean():.4f}")
    return lines
