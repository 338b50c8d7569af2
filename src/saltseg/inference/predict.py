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
import math
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
from saltseg.errors import CheckpointError, DataError, SaltsegError
from saltseg.evaluation import PRED_MASKS_FILE
from saltseg.inference.postprocess import (
    POSTPROCESS_FILE,
    PostprocessConfig,
    apply_postprocess,
    load_postprocess,
)
from saltseg.inference.tta import autocast_for, predict_batch
from saltseg.submission import HEADER as SUBMISSION_HEADER
from saltseg.submission import is_submission_csv
from saltseg.utils.io import atomic_write, check_output_file, write_json

CHUNK = 2048


@dataclass
class Member:
    """One model of an ensemble and its weight."""

    path: Path
    weight: float


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"unreadable {path.name} ({exc})", path) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"unreadable {path.name} (not a JSON object)", path)
    return data


def _is_fold_dir(p: Path) -> bool:
    if (p / "best.safetensors").is_file() or (p / "snapshots").is_dir():
        return True
    return (p / "summary.json").is_file() and "members" in _read_json(p / "summary.json")


def _fold_members(fold_dir: Path, best_only: bool = False) -> list[Path]:
    """The models of a trained fold (none for a fold that failed: its weights diverged); with
    ``best_only`` just the member that scored best on the fold's validation tiles."""
    summary = fold_dir / "summary.json"
    if summary.exists():
        s = _read_json(summary)
        if s.get("status") == "failed":
            return []
        members = s.get("members")
        if isinstance(members, list) and members:
            if best_only:
                scores = s.get("member_scores") if isinstance(s.get("member_scores"), dict) else {}
                members = [max(members, key=lambda m: float(scores.get(Path(str(m)).name, -1.0)))]
            return [fold_dir / str(m) for m in members]
    if (fold_dir / "best.safetensors").exists():
        return [fold_dir / "best.safetensors"]
    return sorted((fold_dir / "snapshots").glob("*.safetensors"))


def resolve_models(paths: list[str | Path], best_only: bool = False) -> list[Member]:
    """Expand MODEL arguments into weighted members.

    A ``.safetensors`` file is one model; a fold folder gives its members (snapshots or best; with
    ``best_only`` the one that scored best on its validation tiles); a run
    folder gives every trained fold's members, each fold weighing the same (failed folds are skipped);
    an ensemble folder (``ensemble.json``) gives its runs with their ensemble weights (runs of weight 0
    are left out). Weights are normalised to sum to 1.
    """
    if not paths:
        raise CheckpointError("no model given")
    members: list[Member] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            members.append(Member(p, 1.0))
        elif (p / "ensemble.json").is_file():
            ens = _read_json(p / "ensemble.json")
            try:
                entries = [(Path(m["run"]), float(m["weight"])) for m in ens["members"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(f"unreadable ensemble.json ({exc!r})", p / "ensemble.json") from None
            for run, weight in entries:
                if weight > 0:
                    members += [Member(x.path, x.weight * weight) for x in resolve_models([run], best_only)]
        elif p.is_dir():
            folds = [p] if _is_fold_dir(p) else sorted(d for d in p.glob("fold*") if d.is_dir())
            per_fold = [f for f in (_fold_members(d, best_only) for d in folds) if f]
            if not per_fold:
                raise CheckpointError(
                    "no trained model found (expected fold*/summary.json or .safetensors; "
                    "failed folds are skipped)",
                    p,
                )
            for files in per_fold:
                members += [Member(f, 1.0 / (len(per_fold) * len(files))) for f in files]
        else:
            raise CheckpointError("model not found", p)
    total = sum(m.weight for m in members)
    if not members or total <= 0:
        raise CheckpointError("no model with a positive weight", paths[0])
    return [Member(m.path, m.weight / total) for m in members]


def _postprocess_folders(p: Path) -> list[Path]:
    """Folders whose ``postprocess.json`` applies to MODEL ``p``: the folder itself (or the file's) and
    its parents up to the run or ensemble folder it belongs to (nothing above that)."""
    start = p if p.is_dir() else p.parent
    chain = [start, *list(start.parents)[:3]]
    for k, d in enumerate(chain):
        if (d / "config.yaml").is_file() or (d / "ensemble.json").is_file():
            return chain[: k + 1]
    return [start]


def default_postprocess(paths: list[str | Path]) -> PostprocessConfig:
    """The tuned settings saved with the first MODEL that has some (in its run or ensemble folder, or
    beside a checkpoint file), else the defaults."""
    for raw in paths:
        for folder in _postprocess_folders(Path(raw)):
            if (folder / POSTPROCESS_FILE).exists():
                return load_postprocess(folder / POSTPROCESS_FILE)
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


def _one_line(message: str, limit: int = 300) -> str:
    """``message`` on one line of at most about ``limit`` characters (pydantic's validation errors span
    several lines with a link to its docs; a state-dict mismatch lists every missing key)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    text = " ".join(ln for ln in lines if not ln.startswith("For further information"))
    if len(text) > limit:
        text = text[:limit].rstrip(", ") + "..."
    return text + ")" * max(text.count("(") - text.count(")"), 0)


class EnsemblePredictor:
    """Weighted average of models' sigmoid probabilities (with flip TTA), batch by batch.

    Build it from loaded models (``EnsemblePredictor(models, weights)``) or from checkpoint files
    (:meth:`load`). Models without a pixel head (the empty/non-empty classifier) contribute only to the
    image-level salt probability.
    """

    def __init__(
        self,
        models: list[torch.nn.Module],
        weights: list[float] | None = None,
        device: str | torch.device | None = None,
        hflip: bool = True,
        channels_last: bool = True,
        compile: bool = False,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.models = []
        for model in models:
            model = model.to(self.device).eval()
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            self.models.append(torch.compile(model) if compile else model)
        self.weights = weights or [1.0 / len(models)] * len(models)
        self.hflip, self.channels_last = hflip, channels_last
        # the largest tile side every model takes: its input square, unless it resizes its input
        sizes = [
            math.inf if cfg.resize_to else int(cfg.input_size)
            for cfg in (getattr(m, "config", None) for m in models)
            if cfg is not None
        ]
        self.tile_size = min(sizes) if sizes else 128

    @classmethod
    def load(cls, members: list[Member], **kwargs: object) -> EnsemblePredictor:
        """Load every member's checkpoint (safetensors) and weigh it."""
        models = []
        for m in members:
            try:
                models.append(load_model(m.path))
            except CheckpointError as exc:  # some messages quote a multi-line validation error
                raise CheckpointError(_one_line(exc.message), m.path) from None
        return cls(models, [m.weight for m in members], **kwargs)  # type: ignore[arg-type]

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N,H,W) float32 of uint8 tiles (N,H,W), and image-level salt probabilities
        (or None)."""
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).float().div_(255)[:, None]
        acc = torch.zeros(x.shape[0], *x.shape[2:], device=self.device)
        salt = torch.zeros(x.shape[0], device=self.device)
        mask_w = salt_w = 0.0
        with autocast_for(self.device):
            for w, model in zip(self.weights, self.models, strict=True):
                out = predict_batch(model, x, hflip=self.hflip, channels_last=self.channels_last)
                if "mask" in out:
                    acc += w * out["mask"][:, 0]
                    mask_w += w
                if "salt" in out:
                    salt += w * out["salt"]
                    salt_w += w
        probs = (acc / mask_w) if mask_w else acc
        return probs.float().cpu().numpy(), (salt / salt_w).float().cpu().numpy() if salt_w else None

    def predict_array(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`__call__` over uint8 tiles (N,H,W) already in memory, ``batch_size`` at a time."""
        out = np.zeros(images.shape, dtype=np.float32)
        salt: np.ndarray | None = None
        for s in range(0, len(images), batch_size):
            probs, salt_b = self(images[s : s + batch_size])
            out[s : s + batch_size] = probs
            if salt_b is not None:
                salt = np.zeros(len(images), dtype=np.float32) if salt is None else salt
                salt[s : s + batch_size] = salt_b
        return out, salt


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
) -> dict:
    """Predict every tile of ``images`` and write the prediction folder ``out``; returns its meta.

    Probabilities are written chunk by chunk (:data:`CHUNK` tiles at most held in memory) into a
    temporary folder that replaces ``out/probs`` only when every tile was predicted, so that a failed
    prediction leaves an earlier one in ``out`` intact.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    started = time.time()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError("the prediction folder is a file", out)
    if csv_path is not None:  # never the dataset's own sample_submission.csv, nor a model file
        check_output_file(csv_path, inputs=list(models), datasets=[images], may_replace=is_submission_csv)
    members = resolve_models(models, best_only)
    pp = postprocess or default_postprocess(models)
    ids, paths = tile_ids(images, split)
    predictor = EnsemblePredictor.load(members, hflip=hflip, compile=compile, device=device)
    out.mkdir(parents=True, exist_ok=True)
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
        arrays = {"ids": np.array(buf_ids), "probs": np.concatenate(buf_probs)}
        if buf_salt:
            arrays["salt"] = np.concatenate(buf_salt)
        with atomic_write(tmp_probs / f"chunk-{n_chunks:05d}.npz", "wb") as f:
            np.savez(f, **arrays)
        n_chunks += 1
        buf_ids.clear(), buf_probs.clear(), buf_salt.clear()

    try:
        with atomic_write(out / PRED_MASKS_FILE, newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(SUBMISSION_HEADER)
            for chunk, imgs in _batches(ids, paths, batch_size):
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
                for tile_id, m in zip(chunk, masks, strict=True):
                    w.writerow([tile_id, rle_encode(m)])
                if save_probs:
                    buf_ids.extend(chunk)
                    buf_probs.append(np.round(np.clip(probs, 0, 1) * 255).astype(np.uint8))
                    if salt is not None:
                        buf_salt.append(np.nan_to_num(salt, nan=0.0).astype(np.float32))
                    if len(buf_ids) >= CHUNK:
                        flush()
            flush()
    except BaseException:
        shutil.rmtree(tmp_probs, ignore_errors=True)
        raise
    probs_dir = out / "probs"
    if probs_dir.exists():
        shutil.rmtree(probs_dir)
    if save_probs:
        tmp_probs.rename(probs_dir)
    else:
        shutil.rmtree(tmp_probs)
    if csv_path is not None:
        with atomic_write(csv_path, "w") as dst:
            dst.write((out / PRED_MASKS_FILE).read_text())
    meta = {
        "models": [{"path": str(m.path), "weight": m.weight} for m in members],
        "images": str(images),
        "split": split,
        "n_tiles": len(ids),
        "n_empty": n_empty,
        "n_chunks": n_chunks,
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
