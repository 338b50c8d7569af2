"""The CUDA paths, where a GPU is present (skipped elsewhere, with the reason): training with the default
``accelerator: auto`` runs on the GPU in bf16 with worker processes feeding it, predictions and sliding
windows on the GPU match the CPU's, and DDP over the GPUs (NCCL) runs with the same command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from saltseg.checkpoints import load_model
from saltseg.data.synth import write_kaggle_layout
from saltseg.inference.predict import load_prediction_probs, predict_folder
from saltseg.inference.sliding import predict_large
from saltseg.training.config import parse_config
from saltseg.training.train import eval_device, resolve_precision, train_run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch finds none here)"),
]

CONFIG = {
    "name": "tiny_gpu",
    "seed": 0,
    "data": {"folds": 2},
    "model": {"arch": "unet", "encoder": "resnet18", "decoder_channels": [32, 16, 8, 8, 4]},
    "augment": {"hflip": 0.5},
    "stages": [{"epochs": 2, "loss": {"name": "bce_dice"}, "optimizer": {"name": "adam", "lr": 0.003}}],
    "train": {"batch_size": 16, "limit_train_batches": 4, "num_workers": 2},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kaggle_layout(tmp_path_factory.mktemp("gpu") / "data", n_train=64, n_test=40, seed=0)


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory: pytest.TempPathFactory, data: Path) -> tuple[Path, int]:
    """Both folds of the tiny config trained with the defaults (``accelerator: auto``); peak GPU bytes."""
    torch.cuda.reset_peak_memory_stats()
    out = tmp_path_factory.mktemp("gpu") / "run"
    train_run(parse_config(CONFIG), data, out, progress=False)
    return out, torch.cuda.max_memory_allocated()


def test_auto_training_runs_on_the_gpu(gpu_run: tuple[Path, int]) -> None:
    run, peak = gpu_run
    cfg = parse_config(CONFIG)
    assert resolve_precision(cfg) == ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")
    assert eval_device(cfg).type == "cuda"
    assert peak > 1 << 20, "training allocated next to nothing on the GPU"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_oof"] == 64 and 0.0 <= summary["oof_score"] <= 1.0
    for k in (0, 1):
        fold = json.loads((run / f"fold{k}" / "summary.json").read_text())
        assert fold["status"] == "done" and fold["epochs"] == 2
        assert (run / f"fold{k}" / "best.safetensors").exists()


def test_gpu_prediction_matches_the_cpu(gpu_run: tuple[Path, int], data: Path, tmp_path: Path) -> None:
    run, _ = gpu_run
    metas = {d: predict_folder([run], data, tmp_path / d, device=d, batch_size=16) for d in ("cuda", "cpu")}
    gpu, cpu = (load_prediction_probs(tmp_path / d) for d in ("cuda", "cpu"))
    assert gpu["ids"].tolist() == cpu["ids"].tolist() and len(gpu["ids"]) == 40
    diff = np.abs(gpu["probs"] - cpu["probs"])
    # both run in bf16 autocast, with different kernels: close, not equal (a few pixels near 0.5 of this
    # barely trained model differ by up to 0.25)
    assert diff.mean() < 0.005, diff.mean()
    assert ((gpu["probs"] > 0.5) == (cpu["probs"] > 0.5)).mean() > 0.99
    assert metas["cuda"].n_tiles == metas["cpu"].n_tiles == 40


def test_sliding_windows_on_the_gpu(gpu_run: tuple[Path, int]) -> None:
    run, _ = gpu_run
    model = load_model(run / "fold0" / "best.safetensors")
    section = np.random.default_rng(0).integers(0, 256, (230, 310), dtype=np.uint8)
    on_cpu = predict_large(model.cpu(), section, batch_size=8)
    on_gpu = predict_large(model.cuda(), section, batch_size=8)
    assert on_gpu.shape == on_cpu.shape == section.shape
    assert np.abs(on_gpu - on_cpu).mean() < 0.01


def test_ddp_over_the_gpus(tmp_path: Path, data: Path) -> None:
    """``train.strategy=ddp`` over every GPU (at most 2) with NCCL; only rank 0 writes and prints."""
    devices = min(torch.cuda.device_count(), 2)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    exe = Path(sys.executable).with_name("saltseg")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "saltseg.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    proc = subprocess.run(
        [
            *cmd,
            "train",
            str(config),
            "--data",
            str(data),
            "--fold",
            "0",
            "--out",
            str(tmp_path / "ddp"),
            "--no-progress",
            "train.accelerator=gpu",
            f"train.devices={devices}",
            "train.strategy=ddp",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert f"Starting with {devices} processes" in output or devices == 1
    assert "GPU available: True" in output and "used: True" in output
    assert proc.stdout.count("fold 0: done") == 1
    summary = json.loads((tmp_path / "ddp" / "fold0" / "summary.json").read_text())
    assert summary["status"] == "done" and summary["epochs"] == 2
