"""Training runs: every fold of an experiment through its stages, with resume, keep-best, snapshots,
SWA, out-of-fold probabilities and a summary per fold and per run.

The run folder's layout is :mod:`saltseg.artifacts.names`; this module writes it through
:class:`~saltseg.artifacts.RunDir` and :class:`~saltseg.artifacts.FoldDir`.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from saltseg.artifacts import (
    FoldDir,
    FoldState,
    FoldSummary,
    RunDir,
    RunSummary,
    load_probs,
    read_data_dir,
    save_probs,
)
from saltseg.augment import build_transforms
from saltseg.checkpoints import average_weights, load_model, read_metadata, save_weights
from saltseg.data.folds import load_folds, make_folds, save_folds
from saltseg.errors import SaltsegError
from saltseg.metrics.kaggle import kaggle_scores
from saltseg.models import create_model
from saltseg.predictor import EnsemblePredictor
from saltseg.training.callbacks import (
    AppendingCSVLogger,
    AtomicCheckpointIO,
    EpochSeed,
    SnapshotKeeper,
    TrainingGuard,
)
from saltseg.training.config import ExperimentConfig, dump_config
from saltseg.training.data import LabelledTiles, SaltDataModule, TileDataset, load_pseudo_labels
from saltseg.training.module import SaltModule
from saltseg.utils.io import atomic_write

log = logging.getLogger(__name__)


class _DropLightningNoise(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger and a chatty info line; keeps the rest."""

    NOISE = ("litlogger", "to estimate number of stepping batches")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in self.NOISE)


def quiet_lightning() -> None:
    """Silence known, harmless Lightning/torch noise without hiding real warnings."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningNoise) for f in lg.filters):
            lg.addFilter(_DropLightningNoise())
    # Lightning 2.6 still uses torch's deprecated LeafSpec: a FutureWarning on every fit, not ours to fix.
    warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)` is deprecated.*", FutureWarning)


def is_launcher_rank_zero() -> bool:
    """False in the extra processes of a multi-process run (Lightning's DDP children, torchrun, SLURM).

    Known before any Trainer exists (from the launcher's environment variables), so that only the
    global-zero process writes the run folder, prints and summarises.
    """
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"]) == 0
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")) or 0)
    return local == 0 and node == 0


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the last checkpoint is kept, ``--resume`` continues from it."""


class TrainingFailed(SaltsegError):
    """A run stopped by a guard (NaN loss) or an error; the message says why."""


def resolve_precision(cfg: ExperimentConfig) -> str:
    """``auto`` precision: bf16-mixed on CPU, 16-mixed (or bf16) on CUDA."""
    p = cfg.train.precision
    if p != "auto":
        return p
    if cfg.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed"


def resolve_num_workers(cfg: ExperimentConfig) -> int:
    """``auto`` DataLoader workers: none on the CPU, up to 8 (one core left) when training on a GPU."""
    workers = cfg.train.num_workers
    if workers != "auto":
        return int(workers)
    return max(1, min(8, (os.cpu_count() or 2) - 1)) if eval_device(cfg).type == "cuda" else 0


def build_datamodule(
    cfg: ExperimentConfig,
    tiles: LabelledTiles,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    pseudo: tuple[np.ndarray, np.ndarray] | None = None,
) -> SaltDataModule:
    """The fold's data module: ``cfg``'s batch size and augmentations, workers for the device."""
    return SaltDataModule(
        tiles,
        train_idx,
        val_idx,
        cfg.train.batch_size,
        build_transforms(cfg.augment),
        resolve_num_workers(cfg),
        pseudo,
    )


def _fold_split(ids: list[str], folds: dict[str, int], fold: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.array([folds[i] for i in ids])
    val = np.flatnonzero(f == fold)
    if val.size == 0:
        raise SaltsegError(f"fold {fold} has no tiles (folds are 0..{f.max()})")
    return np.flatnonzero(f != fold), val


def fold_assignment(cfg: ExperimentConfig, tiles: LabelledTiles) -> dict[str, int]:
    """The config's K-fold split of ``tiles``."""
    depths = tiles.source.depth_array(tiles.ids) if tiles.source.depths else None
    need_cov = cfg.data.stratify in ("coverage", "depth_coverage")
    return make_folds(
        tiles.ids,
        k=cfg.data.folds,
        by=cfg.data.stratify,
        depths=depths,
        coverages=tiles.coverages() if need_cov else None,
        seed=cfg.data.fold_seed,
    )


def prepare_fold_split(
    cfg: ExperimentConfig, tiles: LabelledTiles, fold: int, folds: dict[str, int] | None = None
) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """The fold's model (standardised with its training tiles' statistics) and train/validation indices."""
    train_idx, val_idx = _fold_split(
        tiles.ids, folds if folds is not None else fold_assignment(cfg, tiles), fold
    )
    model_cfg = cfg.model
    if model_cfg.normalize == "standardize":
        mean, std = tiles.pixel_stats(train_idx)
        model_cfg = model_cfg.model_copy(update={"mean": mean, "std": std})
    model = create_model(model_cfg)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, train_idx, val_idx


def _trainer(
    cfg: ExperimentConfig,
    stage_dir: Path,
    fold_dir: Path,
    stage_index: int,
    epochs: int,
    callbacks: list[L.Callback],
    max_seconds: float | None,
    progress: bool,
) -> L.Trainer:
    ckpt = ModelCheckpoint(
        dirpath=stage_dir,
        filename="last",
        save_last=False,
        save_top_k=1,
        every_n_epochs=1,
        save_on_train_epoch_end=False,
        enable_version_counter=False,
    )
    cbs = [ckpt, LearningRateMonitor(logging_interval="epoch"), EpochSeed(cfg.seed, stage_index), *callbacks]
    if progress:
        cbs.append(RichProgressBar(leave=True))
    loggers = [
        AppendingCSVLogger(FoldDir(fold_dir).logs_dir, name=f"stage{stage_index}", version=""),
        TensorBoardLogger(FoldDir(fold_dir).logs_dir, name="tensorboard", version=f"stage{stage_index}"),
    ]
    kwargs = {}
    if max_seconds is not None:
        kwargs["max_time"] = {"seconds": max(int(max_seconds), 1)}
    log_every = cfg.train.log_every_n_steps
    if cfg.train.limit_train_batches is not None:
        kwargs["limit_train_batches"] = cfg.train.limit_train_batches
        if isinstance(cfg.train.limit_train_batches, int):
            log_every = max(min(log_every, cfg.train.limit_train_batches), 1)
    return L.Trainer(
        max_epochs=epochs,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        strategy=cfg.train.strategy,
        num_nodes=cfg.train.num_nodes,
        precision=resolve_precision(cfg),
        callbacks=cbs,
        logger=loggers,
        num_sanity_val_steps=0,
        enable_progress_bar=progress,
        log_every_n_steps=log_every,
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        default_root_dir=fold_dir,
        **kwargs,
    )


def predict_tiles(
    models: list[torch.nn.Module],
    images: np.ndarray,
    batch_size: int = 64,
    hflip: bool = True,
    channels_last: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Average probability of ``models`` on uint8 tiles (N,H,W): (N,H,W) float32 and salt probs or None."""
    device = next(models[0].parameters()).device
    predictor = EnsemblePredictor(models, device=device, hflip=hflip, channels_last=channels_last)
    return predictor.predict_array(images, batch_size)


def eval_device(cfg: ExperimentConfig) -> torch.device:
    """Where the rank-zero process predicts OOF tiles and recomputes SWA BatchNorm statistics."""
    if cfg.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _swa(cfg: ExperimentConfig, fold: FoldDir, members: list[Path], dm: SaltDataModule) -> Path | None:
    src = members if cfg.swa.members == "snapshots" else sorted(fold.swa_dir.glob("epoch*.safetensors"))
    if len(src) < 2:
        log.warning("SWA skipped: fewer than two checkpoints to average")
        return None
    device = eval_device(cfg)
    model = load_model(src[0])
    model.load_state_dict(average_weights(src))
    model.to(device)
    loader = torch.utils.data.DataLoader(dm.train_dataset(), batch_size=cfg.train.batch_size, shuffle=True)
    # batches are (image, mask): update_bn feeds the images
    torch.optim.swa_utils.update_bn(loader, model, device=device)
    return save_weights(model, fold.swa_file, swa_of=[p.name for p in src])


def train_fold(
    cfg: ExperimentConfig,
    tiles: LabelledTiles,
    folds: dict[str, int],
    fold: int,
    fold_dir: Path,
    resume: bool = False,
    progress: bool = True,
    callbacks: list[L.Callback] | None = None,
) -> FoldSummary | None:
    """Train one fold through all stages; returns its summary (also written to ``summary.json``), or
    None in the extra processes of a multi-process run.

    ``callbacks`` are added to every stage's Trainer (for example the search's pruning reporter).
    """
    fd = FoldDir(fold_dir)
    state = fd.read_state() if resume else FoldState()
    if resume and state.status in ("done", "stopped"):
        done = fd.read_summary()
        if done is not None:
            return done
    if resume and state.status == "failed":
        raise TrainingFailed(
            f"fold {fold} failed earlier ({state.reason}); it cannot be resumed: train it again into a new "
            "--out (for example with a lower learning rate)"
        )
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model, train_idx, val_idx = prepare_fold_split(cfg, tiles, fold, folds)
    pseudo = load_pseudo_labels(cfg.data.pseudo_labels) if cfg.data.pseudo_labels else None
    dm = build_datamodule(cfg, tiles, train_idx, val_idx, pseudo)
    n_train = len(train_idx)  # labelled tiles: every stage trains on them
    if n_train // cfg.train.batch_size == 0:  # the last partial batch is dropped: no step would run
        raise SaltsegError(
            f"train.batch_size {cfg.train.batch_size} is larger than fold {fold}'s {n_train} training "
            "tiles: no training step would run; give a smaller train.batch_size"
        )
    fold_dir.mkdir(parents=True, exist_ok=True)  # after the checks: `saltseg runs` shows no half-made fold
    module = SaltModule(model, cfg)
    started = time.time()
    total_epochs = sum(s.epochs for s in cfg.stages)
    budget = cfg.train.max_minutes * 60 if cfg.train.max_minutes else None
    guard_reason, failed = None, False
    is_zero = True
    for si, stage in enumerate(cfg.stages):
        stage_dir = fd.stage_dir(si)
        if si in state.completed:
            model.load_state_dict(load_model(fd.stage_end(si)).state_dict())
            continue
        module.set_stage(si)
        dm.use_pseudo = pseudo is not None and (
            cfg.data.pseudo_mode == "mix" or si < cfg.data.pretrain_stages
        )
        keeper = SnapshotKeeper(
            fold_dir,
            si,
            stage,
            state.best,
            swa_k=cfg.swa.k
            if cfg.swa.enabled and cfg.swa.members == "last" and si == len(cfg.stages) - 1
            else 0,
        )
        guard = TrainingGuard(cfg.train.stall_epochs, state.best)
        extra: list[L.Callback] = [keeper, guard, *(callbacks or [])]
        if cfg.train.early_stopping:
            extra.append(
                L.pytorch.callbacks.EarlyStopping("val_score", mode="max", patience=cfg.train.early_stopping)
            )
        max_seconds = None
        if budget is not None:
            spent = state.seconds + time.time() - started
            max_seconds = (
                max(budget - spent, 1) * stage.epochs / max(sum(s.epochs for s in cfg.stages[si:]), 1)
            )
        trainer = _trainer(cfg, stage_dir, fold_dir, si, stage.epochs, extra, max_seconds, progress)
        ckpt = fd.stage_checkpoint(si)
        if resume and ckpt.exists():
            _check_checkpoint(ckpt)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*exists and is not empty.*")
            try:
                trainer.fit(
                    module,
                    datamodule=dm,
                    ckpt_path=ckpt if resume and ckpt.exists() else None,
                    weights_only=True,
                )
            except SystemExit:
                if not trainer.interrupted:
                    raise
                # Lightning met Ctrl-C, shut down and calls sys.exit(1): say so, exit 130, resumable
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise TrainingInterrupted(f"continue with --resume (run folder {fold_dir.parent})") from None
        if keeper.best_score > state.best:
            state.best_score = keeper.best_score
        is_zero = trainer.is_global_zero
        if not is_zero:
            if guard.reason:  # every rank took the same decision (see TrainingGuard)
                break
            continue
        save_weights(model, fd.stage_end(si), stage=si, epochs=trainer.current_epoch)
        state.completed.append(si)
        state.seconds += time.time() - started
        started = time.time()
        fd.write_state(state)
        if guard.reason:
            guard_reason, failed = guard.reason, guard.failed
            break
    if not is_zero:
        return None
    members = fd.snapshots()
    if not members and fd.best_file.exists():
        members = [fd.best_file]
    if not members:
        members = [fd.stage_end(state.completed[-1])]
    if cfg.swa.enabled and not failed:
        swa_path = _swa(cfg, fd, members, dm)
        if swa_path is not None:
            members = [swa_path] if cfg.swa.replace else [*members, swa_path]
    summary = _finish_fold(cfg, tiles, val_idx, fold, fd, members, state, total_epochs, guard_reason, failed)
    state.status, state.reason = summary.status, guard_reason
    fd.write_state(state)
    if failed:
        raise TrainingFailed(f"fold {fold} stopped: {guard_reason}")
    return summary


def _predict_oof(
    cfg: ExperimentConfig,
    tiles: LabelledTiles,
    val_idx: np.ndarray,
    ids: list[str],
    fold: FoldDir,
    members: list[Path],
) -> tuple[float | None, dict[str, float]]:
    """Predict the fold's validation tiles with its members into ``oof.npz`` (each member runs once);
    the members' average's and each member's score at threshold 0.5 (None without a mask head)."""
    images, truth = tiles.arrays(val_idx)
    predictor = EnsemblePredictor(
        [load_model(p) for p in members], device=eval_device(cfg), channels_last=cfg.train.channels_last
    )
    pred = predictor.predict_tiles(images, batch_size=cfg.train.batch_size * 2, with_members=len(members) > 1)
    save_probs(fold.oof_file, ids, pred.probs, pred.salt, truth)
    if pred.probs is None:
        return None, {}
    score = float(kaggle_scores(pred.probs > 0.5, truth).mean())
    per_member = pred.member_probs or [pred.probs]
    member_scores = {
        p.name: float(kaggle_scores(mp > 0.5, truth).mean())
        for p, mp in zip(members, per_member, strict=True)
        if mp is not None
    }
    return score, member_scores


def _finish_fold(
    cfg: ExperimentConfig,
    tiles: LabelledTiles,
    val_idx: np.ndarray,
    fold: int,
    fd: FoldDir,
    members: list[Path],
    state: FoldState,
    total_epochs: int,
    reason: str | None,
    failed: bool,
) -> FoldSummary:
    ids = [tiles.ids[i] for i in val_idx]
    # epochs trained: fewer than planned when train.max_minutes, early stopping or a guard ended a stage
    trained = sum(int(read_metadata(fd.stage_end(si))[1].get("epochs", 0)) for si in state.completed)
    oof_score: float | None = None
    member_scores: dict[str, float] = {}
    if not failed:  # a diverged fold's weights hold NaN: nothing to predict with (and load_model refuses)
        oof_score, member_scores = _predict_oof(cfg, tiles, val_idx, ids, fd, members)
    summary = FoldSummary(
        name=cfg.name,
        fold=fold,
        status="failed" if failed else ("stopped" if reason else "done"),
        reason=reason,
        epochs=trained,
        planned_epochs=total_epochs,
        minutes=round(state.seconds / 60, 2),
        best_val_score=state.best_score,
        oof_score=oof_score,
        n_val=len(ids),
        members=[str(p.relative_to(fd.path)) for p in members],
        member_scores=member_scores,
    )
    fd.write_summary(summary)
    return summary


def _differences(a: object, b: object, prefix: str = "") -> list[str]:
    """Dotted keys where two nested dicts / lists / values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{prefix}{i}.")
        ]
    return [] if a == b else [prefix.rstrip(".")]


def _check_checkpoint(ckpt: Path) -> None:
    """A stage checkpoint ``--resume`` continues from must load (safely); a damaged one is one error."""
    try:
        torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle opcode, foreign file: all mean "damaged"
        raise SaltsegError(
            f"damaged checkpoint ({type(exc).__name__}); delete it and resume again to restart this "
            "stage from its first epoch (the completed stages are kept)",
            ckpt,
        ) from None


def _check_resume_matches(cfg: ExperimentConfig, data_dir: str | Path, out: Path) -> None:
    """``--resume`` must continue the same run: same resolved config, same data folder."""
    from saltseg.training.config import load_config

    old = load_config(RunDir(out).config_file)
    changed = _differences(old.model_dump(mode="json"), cfg.model_dump(mode="json"))
    if changed:
        raise SaltsegError(
            f"--resume with another config than the run's (differs in {', '.join(changed[:5])}); resume "
            "without those overrides, or train into a new --out",
            out,
        )
    recorded = read_data_dir(out)
    if recorded is None:
        return  # an older run without data.json: the tile ids are still compared
    if recorded != Path(data_dir).resolve():
        raise SaltsegError(f"--resume with other data ({data_dir}) than the run's ({recorded})", out)


def prepare_run(
    cfg: ExperimentConfig, data_dir: str | Path, out: Path, resume: bool
) -> tuple[LabelledTiles, dict[str, int]]:
    """Create (or reopen) a run folder: resolved config, folds and tiles.

    Only the launcher's rank zero writes; the other processes of a multi-process run read the folds
    (or compute the same deterministic split).
    """
    writer = is_launcher_rank_zero()
    run = RunDir(out)
    if writer and not resume and run.config_file.exists():
        raise SaltsegError(
            f"run folder {out} already holds a run; use --resume to continue it or choose another --out"
        )
    if writer and resume and run.config_file.exists():
        _check_resume_matches(cfg, data_dir, out)
    tiles = LabelledTiles.load(data_dir, cache=cfg.data.cache, skip_missing=cfg.data.skip_missing)
    folds_csv = run.folds_file
    if not writer:
        return tiles, load_folds(folds_csv) if folds_csv.exists() else fold_assignment(cfg, tiles)
    out.mkdir(parents=True, exist_ok=True)
    if resume and folds_csv.exists():
        folds = load_folds(folds_csv)
        if set(folds) != set(tiles.ids):
            raise SaltsegError(
                f"--resume with other tiles: the run was split over {len(folds)} tiles, {data_dir} has "
                f"{len(tiles.ids)} ({len(set(folds) ^ set(tiles.ids))} differ); train into a new --out",
                out,
            )
    else:
        folds = fold_assignment(cfg, tiles)
        save_folds(folds_csv, folds)
    with atomic_write(run.config_file) as f:
        f.write(dump_config(cfg))
    run.write_data_dir(data_dir)
    return tiles, folds


def train_run(
    cfg: ExperimentConfig,
    data_dir: str | Path,
    out: str | Path,
    folds_to_run: list[int] | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: list[L.Callback] | None = None,
) -> RunSummary | None:
    """Train the chosen folds (default: all) of ``cfg`` on ``data_dir`` into run folder ``out``; returns
    the run's summary (None in the extra processes of a multi-process run).

    ``callbacks``: extra Lightning callbacks given to every stage of every fold.
    """
    out = Path(out)
    todo = list(range(cfg.data.folds)) if folds_to_run is None else folds_to_run
    for k in todo:  # before anything is written: a corrected rerun must not find a half-made run
        if not 0 <= k < cfg.data.folds:
            raise SaltsegError(f"fold {k} does not exist (folds are 0..{cfg.data.folds - 1})")
    tiles, folds = prepare_run(cfg, data_dir, out, resume)
    for k in todo:
        try:
            train_fold(
                cfg, tiles, folds, k, out / f"fold{k}", resume=resume, progress=progress, callbacks=callbacks
            )
        except TrainingFailed:
            if is_launcher_rank_zero():
                summarize_run(out)  # the run summary lists the failed fold too
            raise
    if not is_launcher_rank_zero():
        return None
    return summarize_run(out)


def summarize_run(out: Path) -> RunSummary:
    """Collect fold summaries and the OOF score over every finished fold into ``RUN/summary.json``."""
    run = RunDir(Path(out))
    summary = RunSummary(run=str(out), folds=run.fold_summaries())
    parts = [load_probs(f) for f in run.oof_files()]
    parts = [d for d in parts if "probs" in d]
    if parts:
        preds = np.concatenate([d["probs"] for d in parts]) > 0.5
        truth = np.concatenate([d["truth"] for d in parts])
        summary.oof_score = float(kaggle_scores(preds, truth).mean())
        summary.n_oof = len(preds)
    summary.write(run.summary_file)
    return summary


__all__ = [
    "TileDataset",
    "TrainingFailed",
    "predict_tiles",
    "summarize_run",
    "train_fold",
    "train_run",
]
