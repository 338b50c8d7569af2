"""The rules that depend on where training runs: which process writes, precision, DataLoader workers,
the evaluation device, and Lightning's log noise."""

from __future__ import annotations

import logging
import os
import warnings

import torch

from saltseg.training.config import ExperimentConfig
from saltseg.utils.device import cpu_has_native_bf16

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


def is_multi_process(cfg: ExperimentConfig) -> bool:
    """Whether ``cfg`` trains in several processes: a launcher's ranks (torchrun, SLURM), several nodes,
    or Lightning's DDP over several devices."""
    if cfg.train.num_nodes > 1 or "RANK" in os.environ or "LOCAL_RANK" in os.environ:
        return True
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return True
    devices = cfg.train.devices
    if isinstance(devices, list):
        return len(devices) > 1
    if devices in ("auto", -1, "-1"):
        return eval_device(cfg).type == "cuda" and torch.cuda.device_count() > 1
    try:
        return int(devices) > 1
    except ValueError:  # "0,1": a list of device indices
        return len([d for d in str(devices).split(",") if d.strip()]) > 1


def resolve_precision(cfg: ExperimentConfig) -> str:
    """``auto`` precision: bf16-mixed on CPUs with bf16 instructions (AMX / AVX-512 BF16), 32-true on
    other CPUs (emulated bf16 is many times slower there), 16-mixed (or bf16) on CUDA."""
    p = cfg.train.precision
    if p != "auto":
        return p
    if cfg.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def resolve_num_workers(cfg: ExperimentConfig) -> int:
    """``auto`` DataLoader workers: none on the CPU, up to 8 (one core left) when training on a GPU."""
    workers = cfg.train.num_workers
    if workers != "auto":
        return int(workers)
    return max(1, min(8, (os.cpu_count() or 2) - 1)) if eval_device(cfg).type == "cuda" else 0


def eval_device(cfg: ExperimentConfig) -> torch.device:
    """Where the rank-zero process predicts OOF tiles and recomputes SWA BatchNorm statistics."""
    if cfg.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")
