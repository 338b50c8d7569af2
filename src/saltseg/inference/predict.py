"""``saltseg predict``: stream tiles through an ensemble of models (folds, snapshots, runs), with flip
TTA, bf16 + channels_last on CPU, and write compact probabilities and post-processed masks.

Prediction folder::

    PRED/probs/chunk-00000.npz   ids, uint8 probabilities (p * 255), image-level salt probabilities
    PRED/masks.csv              the post-processed masks in Kaggle submission format
    PRED/meta.json              models and weights, TTA, post-processing, timing
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from saltseg.checkpoints import load_model
from saltseg.data.rle import rle_encode
from saltseg.data.tiles import open_dataset, read_csv_column_pairs, read_image
from saltseg.errors import CheckpointError, DataError
from saltseg.evaluation import PRED_MASKS_FILE
from saltseg.inference.postprocess import (
    POSTPROCESS_FILE,
    PostprocessConfig,
    apply_postprocess,
    load_postprocess,
)
from saltseg.inference.tta import autocast_for, predict_batch
from saltseg.utils.io import atomic_write, write_json

CHUNK = 2048


@dataclass
class Member:
    """One model of an ensemble and its weight."""

    path: Path
    weight: float


def _fold_members(fold_dir: Path) -> list[Path]:
    summary = fold_dir / "summary.json"
    if summary.exists():
        return [fold_dir / m for m in json.loads(summary.read_text())["members"]]
    for name in ("best.safetensors",):
        if (fold_dir / name).exists():
            return [fold_dir / name]
    return sorted((fold_dir / "snapshots").glob("*.safetensors"))


def resolve_models(paths: list[str | Path]) -> list[Member]:
    """Expand MODEL arguments into weighted members.

    A ``.safetensors`` file is one model; a fold folder gives its members (snapshots or best); a run
    folder gives every trained fold's members, each fold weighing the same; an ensemble folder
    (``ensemble.json``) gives its runs with their ensemble weights. Weights are normalised to sum to 1.
    """
    members: list[Member] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            members.append(Member(p, 1.0))
        elif (p / "ensemble.json").exists():
            ens = json.loads((p / "ensemble.json").read_text())
            for m in ens["members"]:
                members += [Member(x.path, x.weight * m["weight"]) for x in resolve_models([m["run"]])]
        elif p.is_dir():
            folds = sorted(d for d in p.glob("fold*") if d.is_dir()) if not p.name.startswith("fold") else [p]
            per_fold = [f for f in (_fold_members(d) for d in folds) if f]
            if not per_fold:
                raise CheckpointError(
                    "no trained model found (expected fold*/summary.json or .safetensors)", p
                )
            for files in per_fold:
                members += [Member(f, 1.0 / (len(per_fold) * len(files))) for f in files]
        else:
            raise CheckpointError("model not found", p)
    total = sum(m.weight for m in members)
    return [Member(m.path, m.weight / total) for m in members]


def default_postprocess(paths: list[str | Path]) -> PostprocessConfig:
    """The tuned settings saved beside the first MODEL (run or ensemble folder), else defaults."""
    for raw in paths:
        p = Path(raw)
        for cand in (p / POSTPROCESS_FILE, p.parent / POSTPROCESS_FILE, p.parent.parent / POSTPROCESS_FILE):
            if cand.exists():
                return load_postprocess(cand)
    return PostprocessConfig()


def tile_ids(images: str | Path, split: str = "test") -> tuple[list[str], dict[str, Path]]:
    """Ids and paths of the tiles to predict in ``images`` (Kaggle test split in sample-submission order,
    the labelled or all tiles, or a plain folder of PNGs)."""
    src = open_dataset(images)
    if split == "test":
        ids = list(src.test_ids) if src.layout == "kaggle" else list(src.labelled_ids + src.unlabelled_ids)
        if src.sample_submission is not None and src.layout == "kaggle":
            order = [i for i, _ in read_csv_column_pairs(src.sample_submission, "id", "rle_mask")]
            known = set(ids)
            ids = [i for i in order if i in known] + sorted(known - set(order))
    elif split == "train":
        ids = list(src.labelled_ids)
    else:
        ids = list(src.labelled_ids) + list(src.unlabelled_ids)
    if not ids:
        raise DataError(f"no {split} images to predict", images)
    return ids, {i: src.image_path(i) for i in ids}


def _batches(ids: list[str], paths: dict[str, Path], size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    for s in range(0, len(ids), size):
        chunk = ids[s : s + size]
        imgs = [read_image(paths[i]) for i in chunk]
        odd = next((i for i, im in zip(chunk, imgs, strict=True) if im.shape != imgs[0].shape), None)
        if odd is not None:
            raise DataError(
                f"tile size {read_image(paths[odd]).shape} differs from {imgs[0].shape} of the other tiles",
                paths[odd],
            )
        yield chunk, np.stack(imgs)


class EnsemblePredictor:
    """Weighted average of members' sigmoid probabilities (with flip TTA), batch by batch."""

    def __init__(
        self,
        members: list[Member],
        device: str | None = None,
        hflip: bool = True,
        channels_last: bool = True,
        compile: bool = False,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.members = members
        self.models = []
        for m in members:
            model = load_model(m.path).to(self.device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            if compile:
                model = torch.compile(model)
            self.models.append(model)
        self.weights = [m.weight for m in members]
        self.hflip, self.channels_last = hflip, channels_last
        self.tile_size = self.models[0].config.input_size if self.models else 128

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N,H,W) float32 and image-level salt probabilities (N,) or None."""
        x = torch.from_numpy(images).to(self.device).float().div_(255)[:, None]
        acc = torch.zeros(x.shape[0], *x.shape[2:], device=self.device)
        salt = torch.zeros(x.shape[0], device=self.device)
        salt_w = 0.0
        with autocast_for(self.device):
            for w, model in zip(self.weights, self.models, strict=True):
                out = predict_batch(model, x, hflip=self.hflip, channels_last=self.channels_last)
                acc += w * out["mask"][:, 0]
                if "salt" in out:
                    salt += w * out["salt"]
                    salt_w += w
        return acc.cpu().numpy(), (salt / salt_w).cpu().numpy() if salt_w else None


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
) -> dict:
    """Predict every tile of ``images`` and write the prediction folder ``out``; returns its meta."""
    started = time.time()
    out = Path(out)
    members = resolve_models(models)
    pp = postprocess or default_postprocess(models)
    ids, paths = tile_ids(images, split)
    predictor = EnsemblePredictor(members, hflip=hflip, compile=compile)
    probs_dir = out / "probs"
    if probs_dir.exists():
        shutil.rmtree(probs_dir)
    probs_dir.mkdir(parents=True, exist_ok=True)
    buf_ids: list[str] = []
    buf_probs: list[np.ndarray] = []
    buf_salt: list[np.ndarray] = []
    n_chunks = n_empty = 0

    def flush() -> None:
        nonlocal n_chunks
        if not buf_ids:
            return
        arrays = {"ids": np.array(buf_ids), "probs": np.concatenate(buf_probs)}
        if buf_salt:
            arrays["salt"] = np.concatenate(buf_salt)
        with atomic_write(probs_dir / f"chunk-{n_chunks:05d}.npz", "wb") as f:
            np.savez(f, **arrays)
        n_chunks += 1
        buf_ids.clear(), buf_probs.clear(), buf_salt.clear()

    with atomic_write(out / PRED_MASKS_FILE, newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "rle_mask"])
        for chunk, imgs in _batches(ids, paths, batch_size):
            if imgs.shape[1:] != (101, 101) and max(imgs.shape[1:]) > predictor.tile_size:
                raise DataError(
                    f"tiles are {imgs.shape[2]}x{imgs.shape[1]}, larger than the model input "
                    f"{predictor.tile_size}; use `saltseg volume` for whole sections",
                    paths[chunk[0]],
                )
            probs, salt = predictor(imgs)
            masks = apply_postprocess(probs, pp, imgs, salt)
            n_empty += int((~masks.reshape(len(masks), -1).any(axis=1)).sum())
            for tile_id, m in zip(chunk, masks, strict=True):
                w.writerow([tile_id, rle_encode(m)])
            if save_probs:
                buf_ids.extend(chunk)
                buf_probs.append(np.round(probs * 255).astype(np.uint8))
                if salt is not None:
                    buf_salt.append(salt.astype(np.float32))
                if len(buf_ids) >= CHUNK:
                    flush()
    flush()
    if csv_path is not None:
        with atomic_write(csv_path, "w") as dst:
            dst.write((out / PRED_MASKS_FILE).read_text())
    meta = {
        "models": [{"path": str(m.path), "weight": m.weight} for m in members],
        "images": str(images),
        "split": split,
        "n_tiles": len(ids),
        "n_empty": n_empty,
        "hflip_tta": hflip,
        "postprocess": pp.model_dump(),
        "seconds": round(time.time() - started, 2),
        "tiles_per_second": round(len(ids) / max(time.time() - started, 1e-9), 1),
    }
    write_json(out / "meta.json", meta)
    return meta


def load_prediction_probs(pred_dir: str | Path) -> dict[str, np.ndarray]:
    """All probabilities of a prediction folder: ids, probs (float32 in [0,1]) and salt when present."""
    files = sorted(Path(pred_dir).glob("probs/chunk-*.npz"))
    if not files:
        raise DataError("no probabilities (probs/chunk-*.npz); predict without --no-probs", pred_dir)
    parts = []
    for f in files:
        with np.load(f) as z:
            parts.append({k: z[k] for k in z.files})
    out = {
        "ids": np.concatenate([p["ids"] for p in parts]).astype(str),
        "probs": np.concatenate([p["probs"] for p in parts]).astype(np.float32) / 255.0,
    }
    if all("salt" in p for p in parts):
        out["salt"] = np.concatenate([p["salt"] for p in parts])
    return out
