"""A run killed with SIGKILL in the middle of an epoch continues with ``--resume`` exactly as if it had
never stopped; multi-process (DDP, gloo on CPU) training works with the same command line."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from saltseg.cli import main
from saltseg.data.synth import write_kaggle_layout

pytestmark = pytest.mark.slow

CONFIG = {
    "name": "tiny",
    "seed": 0,
    "data": {"folds": 4},
    "model": {
        "arch": "vanilla_unet",
        "base_channels": 4,
        "depth": 2,
        "input_size": 128,
        "attention": None,
        "hypercolumn": False,
    },
    "augment": {"hflip": 0.5, "brightness": 0.5},
    "stages": [
        {
            "epochs": 2,
            "loss": {"name": "bce_dice"},
            "optimizer": {"name": "adam", "lr": 0.003},
            "schedule": {"name": "cosine"},
        }
    ],
    "train": {"batch_size": 8, "accelerator": "cpu", "devices": 1, "limit_train_batches": 3},
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kaggle_layout(tmp_path_factory.mktemp("synth") / "data", n_train=64, n_test=0, seed=0)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    return path


def saltseg_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("saltseg")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "saltseg.cli"]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    return {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_then_kill_midway(argv: list[str], ref: Path, out: Path, span: tuple[float, float], seed: int) -> bool:
    """Run ``argv --out ref`` to the end (timed), then ``argv --out out`` killed with SIGKILL at a seeded
    random share ``span`` of that time; True when the signal landed before the run finished."""
    import random

    t0 = time.monotonic()
    subprocess.run([*argv, "--out", str(ref)], env=child_env(), check=True, capture_output=True)
    took = time.monotonic() - t0
    proc = subprocess.Popen([*argv, "--out", str(out)], env=child_env(), stdout=subprocess.DEVNULL)
    time.sleep(random.Random(seed).uniform(*span) * took)
    proc.send_signal(signal.SIGKILL)
    return proc.wait() == -signal.SIGKILL


def resume(argv: list[str], out: Path) -> None:
    """Run ``argv --out out --resume`` and require it to succeed."""
    rerun = subprocess.run([*argv, "--out", str(out), "--resume"], env=child_env(), capture_output=True)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]


def read_metrics(fold: Path) -> list[dict[str, str]]:
    path = fold / "logs" / "stage0" / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def val_rows(rows: list[dict[str, str]]) -> list[tuple[int, float]]:
    return [(int(r["epoch"]), float(r["val_loss"])) for r in rows if r.get("val_loss")]


def wait_for(cond, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before it could be killed")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.02)


def test_sigkill_mid_epoch_then_resume(tmp_path: Path, data_dir: Path, config: Path) -> None:
    epochs = 8
    args = ["--data", str(data_dir), "--fold", "0", "--no-progress", f"stages.0.epochs={epochs}"]
    run = tmp_path / "killed"
    fold = run / "fold0"
    log = open(tmp_path / "killed.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [*saltseg_cmd(), "train", str(config), "--out", str(run), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=child_env(),
    )
    try:
        ckpt = fold / "stage0" / "last.ckpt"
        # the end of epoch 0 is checkpointed and logged; then kill it a moment later, inside epoch 1
        wait_for(lambda: ckpt.exists() and val_rows(read_metrics(fold)), proc)
        time.sleep(0.15)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (fold / "summary.json").exists()

    # The checkpoint is plain tensors and containers: it loads with weights_only=True.
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    killed_at = state["epoch"]
    assert 0 <= killed_at < epochs - 1 and state["global_step"] >= 3
    rows_before = read_metrics(fold)

    assert main(["train", str(config), "--out", str(run), "--resume", *args]) == 0

    summary = json.loads((fold / "summary.json").read_text())
    assert summary["status"] == "done" and summary["epochs"] == epochs
    rows = read_metrics(fold)
    assert rows[: len(rows_before)] == rows_before, "the log of the killed attempt is kept"
    resumed = [int(r["epoch"]) for r in rows[len(rows_before) :] if r.get("epoch")]
    assert resumed and min(resumed) == killed_at + 1, "training continued, it did not restart at epoch 0"
    assert [e for e, _ in val_rows(rows)] == list(range(epochs))
    assert json.loads((fold / "state.json").read_text())["status"] == "done"

    # ... and exactly as an uninterrupted run: same batches, augmentations, LR schedule and weights.
    straight = tmp_path / "straight"
    assert main(["train", str(config), "--out", str(straight), *args]) == 0
    reference = val_rows(read_metrics(straight / "fold0"))
    assert [e for e, _ in reference] == list(range(epochs))
    assert [v for _, v in val_rows(rows)] == pytest.approx([v for _, v in reference], rel=1e-6)
    done = json.loads((straight / "fold0" / "summary.json").read_text())
    assert done["best_val_score"] == pytest.approx(summary["best_val_score"])
    assert done["oof_score"] == pytest.approx(summary["oof_score"])


def test_ddp_two_cpu_processes(tmp_path: Path, data_dir: Path, config: Path) -> None:
    """``train.devices=2 train.strategy=ddp``: Lightning re-runs the console script for rank 1; only
    rank 0 writes the run folder and prints the result."""
    run = tmp_path / "ddp"
    proc = subprocess.run(
        [
            *saltseg_cmd(),
            "train",
            str(config),
            "--data",
            str(data_dir),
            "--fold",
            "0",
            "--out",
            str(run),
            "--no-progress",
            "train.accelerator=cpu",
            "train.devices=2",
            "train.strategy=ddp",
            "train.limit_train_batches=2",
            "stages.0.epochs=2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "GLOBAL_RANK: 1" in output and "Starting with 2 processes" in output
    assert proc.stdout.count("oof score:") == 1, "only rank 0 prints"
    assert proc.stdout.count("fold 0: done") == 1
    fold = run / "fold0"
    summary = json.loads((fold / "summary.json").read_text())
    assert summary["status"] == "done" and summary["epochs"] == 2
    assert json.loads((run / "summary.json").read_text())["n_oof"] == summary["n_val"] == 16
    # one writer: one TensorBoard event file (its name holds the writer's pid), one row per validation
    events = list((fold / "logs" / "tensorboard" / "stage0").glob("events.out.tfevents*"))
    assert len(events) == 1
    assert [e for e, _ in val_rows(read_metrics(fold))] == [0, 1]
    expected = {
        "config.yaml",
        "data.json",
        "folds.csv",
        "summary.json",
        "fold0/best.safetensors",
        "fold0/oof.npz",
        "fold0/state.json",
        "fold0/summary.json",
        "fold0/stage0/end.safetensors",
        "fold0/stage0/last.ckpt",
        "fold0/logs/stage0/metrics.csv",
        "fold0/logs/tensorboard/stage0/hparams.yaml",
        f"fold0/logs/tensorboard/stage0/{events[0].name}",
    }
    written = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}
    assert written == expected
    # the checkpoint holds the (unwrapped) module's weights and the DDP run's step count: 2 batches x 2
    state = torch.load(fold / "stage0" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 4


@pytest.mark.parametrize(
    ("env", "zero"),
    [
        ({}, True),
        ({"LOCAL_RANK": "0", "NODE_RANK": "0", "WORLD_SIZE": "2"}, True),  # Lightning's rank 0
        ({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"}, False),  # its child
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),  # first process of the second node
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),  # torchrun
        ({"RANK": "3", "LOCAL_RANK": "1"}, False),
        ({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, True),
        ({"SLURM_NTASKS": "4", "SLURM_PROCID": "2"}, False),
    ],
)
def test_launcher_rank(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], zero: bool) -> None:
    from saltseg.training.train import is_launcher_rank_zero

    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert is_launcher_rank_zero() is zero
