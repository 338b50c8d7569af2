"""Tune post-processing on out-of-fold probabilities with the exact metric, one step at a time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saltseg.data.tiles import load_images, open_dataset
from saltseg.errors import DataError
from saltseg.inference.postprocess import (
    POSTPROCESS_FILE,
    PostprocessConfig,
    apply_postprocess,
    save_postprocess,
)
from saltseg.metrics.kaggle import kaggle_scores


@dataclass
class OOF:
    """Out-of-fold predictions of a run or an ensemble, with their truth and images."""

    ids: list[str]
    probs: np.ndarray
    truth: np.ndarray
    salt: np.ndarray | None
    images: np.ndarray | None


def load_oof(run_dir: str | Path, with_images: bool = True) -> OOF:
    """Gather ``oof.npz`` of every fold of a run (or the ensemble's ``oof.npz``) and their images."""
    from saltseg.training.train import load_probs

    run_dir = Path(run_dir)
    files = [run_dir / "oof.npz"] if (run_dir / "oof.npz").exists() else sorted(run_dir.glob("fold*/oof.npz"))
    if not files:
        raise DataError(
            "no out-of-fold predictions (fold*/oof.npz or oof.npz); train the folds first", run_dir
        )
    parts = [load_probs(f) for f in files]
    ids = [str(i) for p in parts for i in p["ids"]]
    probs = np.concatenate([p["probs"] for p in parts])
    truth = np.concatenate([p["truth"] for p in parts])
    salt = np.concatenate([p["salt"] for p in parts]) if all("salt" in p for p in parts) else None
    images = None
    data_json = run_dir / "data.json"
    if with_images and data_json.exists():
        data_dir = json.loads(data_json.read_text())["data_dir"]
        if Path(data_dir).exists():
            src = open_dataset(data_dir)
            images = load_images([src.image_path(i) for i in ids])
    return OOF(ids, probs, truth, salt, images)


def _score(oof: OOF, cfg: PostprocessConfig) -> float:
    return float(kaggle_scores(apply_postprocess(oof.probs, cfg, oof.images, oof.salt), oof.truth).mean())


def tune_postprocess(oof: OOF, try_crf: bool = False) -> tuple[PostprocessConfig, list[tuple[str, float]]]:
    """Search each step in turn, keeping a setting only when it raises the OOF score.

    Returns the tuned settings and ``[(step description, OOF score after it), ...]``.
    """
    cfg = PostprocessConfig(threshold=0.5, flat_empty=False)
    log = [("threshold 0.50 (untuned)", _score(oof, cfg))]
    best = log[0][1]
    # 1. threshold
    grid = np.round(np.arange(0.20, 0.81, 0.02), 2)
    scores = [_score(oof, cfg.model_copy(update={"threshold": float(t)})) for t in grid]
    t_best = float(grid[int(np.argmax(scores))])
    if max(scores) > best:
        cfg, best = cfg.model_copy(update={"threshold": t_best}), max(scores)
    log.append((f"threshold {cfg.threshold:.2f}", best))
    # 2. flat tiles empty
    if oof.images is not None:
        s = _score(oof, cfg.model_copy(update={"flat_empty": True}))
        if s >= best:
            cfg, best = cfg.model_copy(update={"flat_empty": True}), s
        log.append((f"flat tiles empty: {cfg.flat_empty}", best))
    # 3. minimum salt area
    areas = [0, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300]
    scores = [_score(oof, cfg.model_copy(update={"min_area": a})) for a in areas]
    if max(scores) > best:
        cfg, best = cfg.model_copy(update={"min_area": areas[int(np.argmax(scores))]}), max(scores)
    log.append((f"min salt area {cfg.min_area} px", best))
    # 4. empty-head gating
    if oof.salt is not None:
        gates = np.round(np.arange(0.1, 0.91, 0.05), 2)
        scores = [_score(oof, cfg.model_copy(update={"empty_threshold": float(g)})) for g in gates]
        if max(scores) > best:
            cfg, best = (
                cfg.model_copy(update={"empty_threshold": float(gates[int(np.argmax(scores))])}),
                max(scores),
            )
        log.append((f"empty-head gate {cfg.empty_threshold}", best))
    # 5. dense CRF
    if try_crf and oof.images is not None:
        s = _score(oof, cfg.model_copy(update={"crf": True}))
        if s > best:
            cfg, best = cfg.model_copy(update={"crf": True}), s
        log.append((f"dense CRF: {cfg.crf} (with CRF {s:.4f})", best))
    return cfg, log


def tune_run(run_dir: str | Path, try_crf: bool = False) -> tuple[PostprocessConfig, list[tuple[str, float]]]:
    """Tune the run's (or ensemble's) post-processing and save ``postprocess.json`` in it."""
    oof = load_oof(run_dir)
    cfg, log = tune_postprocess(oof, try_crf=try_crf)
    save_postprocess(
        Path(run_dir) / POSTPROCESS_FILE,
        cfg,
        tuning=[{"step": s, "oof_score": v} for s, v in log],
        n_oof=len(oof.ids),
    )
    return cfg, log
