"""Tune post-processing on out-of-fold probabilities with the exact metric, one step at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from saltseg.artifacts import OutOfFold, PostprocessConfig, open_oof_source, save_postprocess
from saltseg.data.tiles import load_images, open_dataset
from saltseg.errors import DataError
from saltseg.inference.postprocess import apply_postprocess
from saltseg.metrics.kaggle import kaggle_scores

OOF = OutOfFold  # the name tuning has always used for out-of-fold predictions


def load_oof(run_dir: str | Path, with_images: bool = True) -> OutOfFold:
    """Out-of-fold predictions of every fold of a run (or of an ensemble), with their images when the
    recorded data folder is still there."""
    source = open_oof_source(run_dir)
    oof = source.load_oof()
    data_dir = source.data_dir()
    if with_images and data_dir is not None and data_dir.exists():
        src = open_dataset(data_dir)
        oof.images = load_images([src.image_path(i) for i in oof.ids])
    return oof


def _score(oof: OOF, cfg: PostprocessConfig) -> float:
    return float(kaggle_scores(apply_postprocess(oof.probs, cfg, oof.images, oof.salt), oof.truth).mean())


def tune_postprocess(
    oof: OOF, try_crf: bool = False, try_seeds: bool = True
) -> tuple[PostprocessConfig, list[tuple[str, float]]]:
    """Search each step in turn, keeping a setting only when it raises the OOF score (``try_seeds``: the
    hysteresis step, a lower threshold inside regions that hold a confident pixel).

    Returns the tuned settings and ``[(step description, OOF score after it), ...]``.
    """
    if oof.probs is None:
        raise DataError("the out-of-fold predictions hold no masks (a classifier alone); nothing to tune")
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
    # 1b. hysteresis: a lower threshold for the regions that hold a pixel above a seed threshold
    if try_seeds:
        pairs = [
            (float(lo), float(seed))
            for lo in np.round(np.arange(0.30, cfg.threshold - 0.01, 0.05), 2)
            for seed in np.round(np.arange(cfg.threshold - 0.05, 0.81, 0.05), 2)
            if seed > lo + 0.04
        ]
        tried = [cfg.model_copy(update={"threshold": lo, "seed_threshold": sd}) for lo, sd in pairs]
        scores = [_score(oof, c) for c in tried]
        if scores and max(scores) > best:
            cfg, best = tried[int(np.argmax(scores))], max(scores)
        log.append((f"seeded regions: {_seeds(cfg)}", best))
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


def _seeds(cfg: PostprocessConfig) -> str:
    if cfg.seed_threshold is None:
        return "off"
    return f"threshold {cfg.threshold:.2f} where a pixel > {cfg.seed_threshold:.2f}"


def tune_run(run_dir: str | Path, try_crf: bool = False) -> tuple[PostprocessConfig, list[tuple[str, float]]]:
    """Tune the run's (or ensemble's) post-processing and save ``postprocess.json`` in it."""
    oof = load_oof(run_dir)
    cfg, log = tune_postprocess(oof, try_crf=try_crf)
    save_postprocess(
        open_oof_source(run_dir).postprocess_file,
        cfg,
        tuning=[{"step": s, "oof_score": v} for s, v in log],
        n_oof=len(oof.ids),
    )
    return cfg, log
