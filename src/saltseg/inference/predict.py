"""``saltseg predict``: stream tiles through an ensemble of models (folds, snapshots, runs), with flip
TTA, bf16 (where the CPU has bf16 instructions) + channels_last on CPU, and write compact probabilities
and post-processed masks.

Prediction folder::

    PRED/probs/chunk-00000.npz   ids, uint8 probabilities, image-level salt (saltseg.artifacts.probs)
    PRED/masks.csv              the post-processed masks in Kaggle submission format
    PRED/meta.json              models and weights, TTA, post-processing, timing
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from saltseg.artifacts import (
    Member,
    ModelWeight,
    PostprocessConfig,
    PredictionDir,
    PredictionMeta,
    find_postprocess,
    names,
    resolve_models,
)
from saltseg.artifacts import probs as prob_store
from saltseg.backends import CALIBRATION_TILES, BackendName
from saltseg.data.tiles import open_dataset, read_csv_column_pairs, read_image
from saltseg.errors import DataError, SaltsegError
from saltseg.inference.postprocess import apply_postprocess
from saltseg.predictor import EnsemblePredictor
from saltseg.submission import is_submission_csv, open_submission
from saltseg.utils.io import atomic_write, check_output_file, remove_stale_temporaries
from saltseg.utils.threads import prefetch

CHUNK = 2048

__all__ = [
    "EnsemblePredictor",
    "Member",
    "default_postprocess",
    "load_prediction_probs",
    "predict_folder",
    "resolve_models",
    "tile_ids",
]


def default_postprocess(paths: list[str | Path]) -> PostprocessConfig:
    """The tuned settings saved with the first MODEL that has some (in its run or ensemble folder, or
    beside a checkpoint file), else the defaults."""
    return find_postprocess(paths) or PostprocessConfig()


def tile_ids(images: str | Path, split: str = "test") -> tuple[list[str], dict[str, Path]]:
    """Ids and paths of the tiles to predict in ``images`` (Kaggle test split in sample-submission order,
    the labelled or all tiles, or a plain folder of PNGs)."""
    src = open_dataset(images)
    if split == "test":
        ids = list(src.test_ids) if src.layout == "kaggle" else list(src.labelled_ids + src.unlabelled_ids)
        if src.sample_submission is not None and src.layout == "kaggle":
            order = [i for i, _ in read_csv_column_pairs(src.sample_submission, "id", "rle_mask")]
            known = set(ids)
            missing = [i for i in order if i not in known]
            if missing:  # the submission would silently lack these rows
                raise DataError(
                    f"lists {len(missing)} id(s) with no test image (first: {', '.join(missing[:3])}); "
                    "restore the images or remove the ids",
                    src.sample_submission,
                )
            ids = order + sorted(known - set(order))
    elif split == "train":
        ids = list(src.labelled_ids)
    else:
        ids = list(src.labelled_ids) + list(src.unlabelled_ids)
    if not ids:
        raise DataError(f"no {split} images to predict", images)
    return ids, {i: src.image_path(i) for i in ids}


def _batches(ids: list[str], paths: dict[str, Path], size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """Tiles in batches of ``size``, every tile of the same size as the first one."""
    first: tuple[str, tuple[int, ...]] | None = None
    for s in range(0, len(ids), size):
        chunk = ids[s : s + size]
        imgs = [read_image(paths[i]) for i in chunk]
        if first is None:
            first = (chunk[0], imgs[0].shape)
        for tile_id, im in zip(chunk, imgs, strict=True):
            if im.shape != first[1]:
                raise DataError(
                    f"tile is {im.shape[1]}x{im.shape[0]}, unlike tile {first[0]!r} "
                    f"({first[1][1]}x{first[1][0]}); predict tiles of one size at a time",
                    paths[tile_id],
                )
        yield chunk, np.stack(imgs)


def predict_folder(
    models: list[str | Path],
    images: str | Path,
    out: str | Path,
    csv_path: str | Path | None = None,
    split: str = "test",
    hflip: bool = True,
    batch_size: int = 64,
    postprocess: PostprocessConfig | None = None,
    save_probs: bool = True,
    compile: bool = False,
    best_only: bool = False,
    device: str | torch.device | None = None,
    backend: BackendName = "auto",
    precision: str = "auto",
    fuse: bool = False,
) -> PredictionMeta:
    """Predict every tile of ``images`` and write the prediction folder ``out``; returns its meta.

    ``fuse`` runs the members as one graph on a graph backend (see :class:`EnsemblePredictor`).

    Probabilities are written chunk by chunk (:data:`CHUNK` tiles at most held in memory) into a
    temporary folder that replaces ``out/probs`` only when every tile was predicted, so that a failed
    prediction leaves an earlier one in ``out`` intact.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    started = time.time()
    out = Path(out)
    folder = PredictionDir(out)
    if out.exists() and not out.is_dir():
        raise DataError("the prediction folder is a file", out)
    folder.refuse_foreign()  # a folder of someone else's files is never written into
    if csv_path is not None:  # never the dataset's own sample_submission.csv, nor a model file
        check_output_file(csv_path, inputs=list(models), datasets=[images], may_replace=is_submission_csv)
    members = resolve_models(models, best_only)
    pp = postprocess or default_postprocess(models)
    ids, paths = tile_ids(images, split)
    predictor = EnsemblePredictor.load(
        members,
        hflip=hflip,
        compile=compile,
        device=device,
        backend=backend,
        precision=precision,
        fuse=fuse,
    )
    out.mkdir(parents=True, exist_ok=True)
    for target in (folder.masks_file, folder.meta_file, *([Path(csv_path)] if csv_path else [])):
        remove_stale_temporaries(target)  # left by a predict that was killed
    tmp_probs = out / ".probs.tmp"
    if tmp_probs.exists():
        shutil.rmtree(tmp_probs)
    tmp_probs.mkdir()
    buf_ids: list[str] = []
    buf_probs: list[np.ndarray] = []
    buf_salt: list[np.ndarray] = []
    n_chunks = n_empty = 0

    def flush() -> None:
        nonlocal n_chunks
        if not buf_ids:
            return
        salt = np.concatenate(buf_salt) if buf_salt else None
        path = tmp_probs / names.chunk_name(n_chunks)
        prob_store.save_probs(path, buf_ids, np.concatenate(buf_probs), salt, compress=False)
        n_chunks += 1
        buf_ids.clear(), buf_probs.clear(), buf_salt.clear()

    if precision == "int8":  # calibrate on more tiles than one batch holds
        first = next(_batches(ids, paths, min(len(ids), CALIBRATION_TILES)))[1]
        if max(first.shape[1:]) <= predictor.tile_size:
            predictor.prepare(first)
    try:
        with open_submission(folder.masks_file) as add_rows:
            for chunk, imgs in prefetch(_batches(ids, paths, batch_size)):  # the next batch is read meanwhile
                h, wd = imgs.shape[1:]
                if max(h, wd) > predictor.tile_size:
                    raise DataError(
                        f"tiles are {wd}x{h}, larger than the model input {predictor.tile_size}; "
                        "use `saltseg volume` for whole sections",
                        paths[chunk[0]],
                    )
                try:
                    probs, salt = predictor(imgs)
                except SaltsegError as exc:  # e.g. a tile too small for the model's padding
                    raise DataError(
                        f"cannot predict this {wd}x{h} tile: {exc.message}", paths[chunk[0]]
                    ) from None
                probs = np.nan_to_num(probs, nan=0.0)  # a diverged member gives NaN
                masks = apply_postprocess(probs, pp, imgs, salt)
                n_empty += int((~masks.reshape(len(masks), -1).any(axis=1)).sum())
                add_rows(chunk, masks)
                if save_probs:
                    buf_ids.extend(chunk)
                    buf_probs.append(prob_store.encode_probs(probs))  # uint8: a quarter of the memory
                    if salt is not None:
                        buf_salt.append(salt)
                    if len(buf_ids) >= CHUNK:
                        flush()
            flush()
    except BaseException:
        shutil.rmtree(tmp_probs, ignore_errors=True)
        raise
    probs_dir = folder.probs_dir
    if probs_dir.exists():
        shutil.rmtree(probs_dir)
    if save_probs:
        tmp_probs.rename(probs_dir)
    else:
        shutil.rmtree(tmp_probs)
    if csv_path is not None:
        with atomic_write(csv_path, "w") as dst:
            dst.write(folder.masks_file.read_text())
    meta = PredictionMeta(
        models=[ModelWeight(path=str(m.path), weight=m.weight) for m in members],
        images=str(images),
        split=split,
        n_tiles=len(ids),
        n_empty=n_empty,
        n_chunks=n_chunks,
        hflip_tta=hflip,
        postprocess=pp.model_dump(),
        backend=predictor.backend or "torch",
        backend_check=predictor.check.describe() if predictor.check else None,
        seconds=round(time.time() - started, 2),
        tiles_per_second=round(len(ids) / max(time.time() - started, 1e-9), 1),
    )
    meta.write(folder.meta_file)
    return meta


def load_prediction_probs(pred_dir: str | Path) -> dict[str, np.ndarray]:
    """All probabilities of a prediction folder: ids, probs (float32 in [0,1]) and salt when present."""
    return PredictionDir(Path(pred_dir)).load_probs()
