"""Speed benchmark, in one run: training and inference images/s of saltseg's default path (channels_last,
with bf16 autocast where the device has bf16: ``autocast_for``, the rule training and prediction follow;
the CPU default config's model) against the plain fp32 eager loop on the same architecture
and batch (smp's U-Net for an smp config, saltseg's own model otherwise), reported as ratios; optionally
the wall time and peak memory of a full 18000-tile submission with flip TTA (``saltseg predict`` in a
subprocess). ``--device`` (default: the GPU when there is one) runs both sides on that device.

Usage:
    python benchmarks/speed.py --config configs/cpu_fast.yaml [--device cpu|cuda] \
        [--submission MODEL --data ../shared/data/tgs-salt]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from saltseg.backends import autocast_for
from saltseg.models import create_model
from saltseg.training.config import load_config
from saltseg.utils.device import resolve_device


class PaddedSmp(torch.nn.Module):
    """The plain smp U-Net on reflect-padded 101 -> 128 tiles, cropped back (the reference model)."""

    def __init__(self, encoder: str, decoder_channels: list[int]) -> None:
        super().__init__()
        self.net = smp.Unet(
            encoder, encoder_weights=None, in_channels=1, classes=1, decoder_channels=decoder_channels
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mask": self.net(F.pad(x, (13, 14, 13, 14), mode="reflect"))[..., 13:114, 13:114]}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that host clocks time it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_rate(
    model: torch.nn.Module, fast: bool, batch: int, steps: int, device: torch.device, compile: bool = False
) -> float:
    x = torch.rand(batch, 1, 101, 101, device=device)
    y = (torch.rand(batch, 1, 101, 101, device=device) > 0.5).float()
    model = model.to(device)
    if fast:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    if compile:
        model = torch.compile(model)  # what train.compile does; its first steps compile
    model.train()
    t0 = 0.0
    for i in range(steps + 2):
        if i == 2:
            sync(device)
            t0 = time.perf_counter()
        with autocast_for(device, enabled=fast):
            out = model(x)["mask"]
        loss = F.binary_cross_entropy_with_logits(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return batch * steps / (time.perf_counter() - t0)


@torch.no_grad()
def infer_rate(
    model: torch.nn.Module, fast: bool, batch: int, steps: int, device: torch.device, compile: bool = False
) -> float:
    x = torch.rand(batch, 1, 101, 101, device=device)
    model = model.to(device).eval()
    if fast:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    t0 = 0.0
    for i in range(steps + 2):
        if i == 2:
            sync(device)
            t0 = time.perf_counter()
        with autocast_for(device, enabled=fast):
            model(x)
    sync(device)
    return batch * steps / (time.perf_counter() - t0)


def run_predict(models: list[str], data: Path, out: str | Path, *extra: str) -> tuple[list[str], float]:
    """Run ``saltseg predict`` (batch 128) in a subprocess; its command line and wall seconds."""
    cmd = [
        sys.executable,
        "-m",
        "saltseg.cli",
        "predict",
        *models,
        "--images",
        str(data),
        "--out",
        str(out),
        "--batch-size",
        "128",
        *extra,
    ]
    t0 = time.time()
    subprocess.run(cmd, check=True, capture_output=True)
    return cmd, time.time() - t0


def submission(models: list[str], data: Path, out: Path, *extra: str) -> dict:
    """Time ``saltseg predict`` on the 18000 test tiles with flip TTA; peak RSS of the child process."""
    cmd, wall = run_predict(models, data, out, "--csv", str(out / "submission.csv"), *extra)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    check = subprocess.run(
        [sys.executable, "-m", "saltseg.cli", "submission", "check", str(out / "submission.csv"), str(data)],
        capture_output=True,
        text=True,
    )
    return {
        "command": " ".join(["saltseg", *cmd[3:]]),
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_kb / 1024),
        "submission_check": check.stdout.strip().splitlines()[-1] if check.stdout else check.stderr.strip(),
    }


def predict_throughput(models: list[str], data: Path, *extra: str) -> dict:
    """Tiles/s of ``saltseg predict`` on the 3199 labelled tiles, with and without flip TTA."""
    out = {}
    for tta in (True, False):
        name = "tta" if tta else "no_tta"
        _, wall = run_predict(
            models,
            data,
            f"runs/bench_throughput_{name}",
            "--split",
            "train",
            "--no-probs",
            *([] if tta else ["--no-tta"]),
            *extra,
        )
        out[f"tiles_per_s_{name}"] = round(3199 / wall, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("configs/cpu_fast.yaml"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:1...")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (training, inference)")
    ap.add_argument("--submission", nargs="*", help="MODEL(s) for the 18000-tile submission timing")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/tgs-salt"))
    ap.add_argument(
        "--predict-args", default="", help='extra saltseg predict options, e.g. "--best-member --compile"'
    )
    args = ap.parse_args()
    extra = args.predict_args.split()
    device = resolve_device(args.device)
    cfg = load_config(args.config)
    torch.manual_seed(0)
    ours = create_model(cfg.model)
    # the same architecture on both sides: the plain smp U-Net for an smp config, else saltseg's own
    # model (the default's residual U-Net) in the plain fp32 eager loop
    if cfg.model.arch == "unet":
        ref: torch.nn.Module = PaddedSmp(cfg.model.encoder, list(cfg.model.decoder_channels))
        reference = f"smp Unet {cfg.model.encoder}, fp32 eager"
    else:
        ref, reference = create_model(cfg.model), f"the same {cfg.model.arch}, fp32 eager"
    res: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": cfg.model.arch if cfg.model.arch != "unet" else f"unet {cfg.model.encoder}",
        "reference": reference,
        "batch": args.batch,
    }
    res["train_ref_fp32"] = train_rate(ref, False, args.batch, args.steps, device)
    res["train_saltseg"] = train_rate(ours, True, args.batch, args.steps, device)
    res["infer_ref_fp32"] = infer_rate(ref, False, args.batch * 2, args.steps, device)
    res["infer_saltseg"] = infer_rate(ours, True, args.batch * 2, args.steps, device)
    if args.compile:
        res["train_saltseg_compiled"] = train_rate(
            create_model(cfg.model), True, args.batch, args.steps, device, compile=True
        )
        res["infer_saltseg_compiled"] = infer_rate(
            create_model(cfg.model), True, args.batch * 2, args.steps, device, compile=True
        )
    res["train_ratio"] = res["train_saltseg"] / res["train_ref_fp32"]
    res["infer_ratio"] = res["infer_saltseg"] / res["infer_ref_fp32"]
    for k, v in res.items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}", flush=True)
    if args.submission:
        res["predict_args"] = extra
        res["predict"] = predict_throughput(args.submission, args.data, *extra)
        print(json.dumps(res["predict"]))
        res["submission"] = submission(args.submission, args.data, Path("runs/bench_submission"), *extra)
        print(json.dumps(res["submission"], indent=1))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    suffix = "" if device.type == "cpu" else f"-{device.type}"
    Path(f"benchmarks/results/speed-{stamp}{suffix}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
