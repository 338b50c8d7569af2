"""Inference backends, in one run: forward passes per second of one model on torch fp32 eager (the 1.0x
line), torch bf16 + channels-last, ONNX Runtime and OpenVINO; the model's FLOPs per tile and the GFLOP/s
each path achieves against the machine's measured matrix-multiply peak (fp32 and bf16); tiles/s of 1 and
5 models with and without flip TTA through ``EnsemblePredictor``; optionally the 18000-tile submission
(``saltseg predict --backend B``) and the fold-0 score of each backend against torch fp32.

Usage:
    python benchmarks/backends.py --config configs/cpu_fast.yaml [--checkpoint FOLD/model.safetensors]
        [--submission MODEL ... --data ../shared/data/tgs-salt] [--score-run RUN]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from saltseg.backends import installed
from saltseg.checkpoints import load_model
from saltseg.errors import SaltsegError
from saltseg.models import create_model
from saltseg.predictor import EnsemblePredictor
from saltseg.training.config import load_config
from saltseg.utils.device import cpu_has_native_bf16


def gemm_peak(dtype: torch.dtype, n: int = 2048, reps: int = 6) -> float:
    """GFLOP/s of a large square matrix multiply in ``dtype``: this machine's practical peak."""
    a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def flops_per_tile(model: torch.nn.Module) -> float:
    """Forward FLOPs of one 101x101 tile (one pass, no TTA), counted by torch's FlopCounterMode."""
    x = torch.rand(1, 1, 101, 101)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(x)
    return float(counter.get_total_flops())


def passes_per_s(predictor: EnsemblePredictor, images: np.ndarray, batch: int, repeats: int = 2) -> float:
    """Network passes per second (tiles x members x views) of ``predictor`` over ``images``."""
    predictor.predict_tiles(images[:batch], batch_size=batch)  # warm-up, backend choice and export
    t0 = time.perf_counter()
    for _ in range(repeats):
        predictor.predict_tiles(images, batch_size=batch)
    seconds = (time.perf_counter() - t0) / repeats
    views = 2 if predictor.hflip else 1
    return len(images) * len(predictor.models) * views / seconds


def paths(models: list[torch.nn.Module]) -> dict[str, dict]:
    """The paths compared: name -> EnsemblePredictor options."""
    out = {
        "torch fp32 eager": {"backend": "torch", "autocast": False, "channels_last": False},
        "torch autocast + channels-last": {"backend": "torch"},  # bf16 where the CPU has it
    }
    if installed("onnxruntime"):
        out["onnxruntime fp32"] = {"backend": "onnxruntime"}
        out["onnxruntime int8"] = {"backend": "onnxruntime", "precision": "int8"}
    if installed("openvino"):
        out["openvino fp32"] = {"backend": "openvino", "precision": "fp32"}
        out["openvino (its default precision)"] = {"backend": "openvino"}
        out["openvino int8"] = {"backend": "openvino", "precision": "int8"}
    return out


def run_predict(cmd: list[str]) -> tuple[float, int | None]:
    """Run ``cmd``; its wall seconds and peak resident memory in MB (from ``/usr/bin/time`` where it
    exists: ``getrusage(RUSAGE_CHILDREN)`` would count this process's own memory, copied at the fork)."""
    timer = ["/usr/bin/time", "-f", "peak_kb=%M"] if Path("/usr/bin/time").exists() else []
    t0 = time.time()
    done = subprocess.run([*timer, *cmd], check=True, capture_output=True, text=True)
    wall = time.time() - t0
    peaks = [line for line in done.stderr.splitlines() if line.startswith("peak_kb=")]
    return wall, round(int(peaks[-1].split("=")[1]) / 1024) if peaks else None


def submission(models: list[str], data: Path, backend: str, out: Path) -> dict:
    """``saltseg predict MODELS --images DATA --csv`` on the 18000 test tiles; wall time and check.
    ``backend`` is ``BACKEND`` or ``BACKEND:PRECISION``."""
    name, _, precision = backend.partition(":")
    cmd = [sys.executable, "-m", "saltseg.cli", "predict", *models, "--images", str(data), "--out", str(out)]
    cmd += ["--batch-size", "128", "--csv", str(out / "submission.csv"), "--backend", name]
    cmd += ["--precision", precision] if precision else []
    wall, peak_mb = run_predict(cmd)
    check = subprocess.run(
        [sys.executable, "-m", "saltseg.cli", "submission", "check", str(out / "submission.csv"), str(data)],
        capture_output=True,
        text=True,
    )
    meta = json.loads((out / "meta.json").read_text())
    return {
        "command": " ".join(["saltseg", *cmd[3:]]),
        "wall_s": round(wall, 1),
        "backend": meta.get("backend"),
        "backend_check": meta.get("backend_check"),
        "peak_rss_mb": peak_mb,
        "submission_check": (check.stdout or check.stderr).strip().splitlines()[-1],
    }


def fold_scores(run: Path, data: Path) -> dict[str, float]:
    """The fold's Kaggle score at threshold 0.5 of each backend on its validation tiles (flip TTA)."""
    from saltseg.artifacts import RunDir, resolve_models
    from saltseg.metrics.kaggle import kaggle_scores
    from saltseg.training.data import LabelledTiles

    oof = RunDir(run).load_oof()
    tiles = LabelledTiles.load(data)
    index = {tile_id: i for i, tile_id in enumerate(tiles.ids)}
    images, truth = tiles.arrays(np.array([index[i] for i in oof.ids]))
    members = resolve_models([run])
    models = [load_model(m.path) for m in members]
    scores = {}
    for name, opts in paths(models).items():
        predictor = EnsemblePredictor(models, [m.weight for m in members], **opts)
        try:
            pred = predictor.predict_tiles(images)
        except SaltsegError as exc:
            print(name, exc.message, flush=True)
            continue
        scores[name] = float(kaggle_scores(pred.probs > 0.5, truth).mean())
        print(name, round(scores[name], 4), predictor.check.describe() if predictor.check else "", flush=True)
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("configs/cpu_fast.yaml"))
    ap.add_argument("--checkpoint", type=Path, help="a trained model instead of random weights")
    ap.add_argument("--tiles", type=int, default=1024, help="random tiles per measurement")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--submission", nargs="*", help="MODEL(s) for the 18000-tile submission timing")
    ap.add_argument(
        "--submission-backends", nargs="*", default=["torch", "auto"], help="BACKEND or BACKEND:PRECISION"
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/data/tgs-salt"))
    ap.add_argument("--score-run", type=Path, help="a run trained on fold 0: each backend's fold score")
    ap.add_argument("--skip-rates", action="store_true", help="only the fold scores and submissions")
    ap.add_argument("--only", nargs="*", help="measure only the paths whose name contains one of these")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = load_config(args.config)
    model = load_model(args.checkpoint) if args.checkpoint else create_model(cfg.model)
    five = [model] + [create_model(cfg.model) for _ in range(4)]
    images = np.random.default_rng(0).integers(0, 256, (args.tiles, 101, 101), dtype=np.uint8)
    flops = flops_per_tile(model)
    peaks = {"fp32": gemm_peak(torch.float32)}
    if cpu_has_native_bf16():  # emulated bf16 takes minutes for this GEMM and is no peak
        peaks["bf16"] = gemm_peak(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    res: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads",
        "cpu_native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "model": f"{cfg.model.arch}, input {cfg.model.input_size}, {n_params} parameters",
        "gflop_per_tile": round(flops / 1e9, 3),
        "gemm_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "rows": [],
    }
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1), flush=True)
    base = None
    measured = {} if args.skip_rates else paths([model])
    if args.only:
        keep = {"torch fp32 eager"} | {n for n in measured if any(w in n for w in args.only)}
        measured = {n: o for n, o in measured.items() if n in keep}
    for name, opts in measured.items():
        graph = opts["backend"] != "torch"  # graph backends also run the five members as one graph
        for n_models, tta, fuse in ((1, False, False), (1, True, False), (5, True, False), (5, True, True)):
            if fuse and not graph:
                continue
            members = [model] if n_models == 1 else five
            predictor = EnsemblePredictor(members, hflip=tta, fuse=fuse, **opts)
            try:
                rate = passes_per_s(predictor, images, args.batch)
            except SaltsegError as exc:  # a backend that fails its accuracy check: a result too
                res["rows"].append(
                    {"path": name, "models": n_models, "tta": tta, "fused": fuse, "error": exc.message}
                )
                print(json.dumps(res["rows"][-1]), flush=True)
                continue
            if name == "torch fp32 eager" and n_models == 1 and not tta:
                base = rate
            row = {
                "path": name,
                "backend": predictor.backend,
                "models": n_models,
                "tta": tta,
                "fused": fuse,
                "passes_per_s": round(rate, 1),
                "tiles_per_s": round(rate / n_models / (2 if tta else 1), 1),
                "vs_fp32_eager": round(rate / base, 2) if base else None,
                "gflops": round(rate * flops / 1e9, 1),
                # of the fastest peak this CPU has: bf16 where it has bf16 instructions, else fp32
                "share_of_peak": round(rate * flops / 1e9 / peaks.get("bf16", peaks["fp32"]), 3),
                "check": predictor.check.describe() if predictor.check else None,
            }
            res["rows"].append(row)
            print(json.dumps(row), flush=True)
    if args.score_run:
        res["fold_scores"] = fold_scores(args.score_run, args.data)
        print(json.dumps(res["fold_scores"], indent=1), flush=True)
    if args.submission:
        res["submission"] = {}
        for backend in args.submission_backends:
            out = Path(f"runs/bench_submission_{backend.replace(':', '_')}")
            res["submission"][backend] = submission(args.submission, args.data, backend, out)
            print(json.dumps(res["submission"][backend], indent=1), flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path(f"benchmarks/results/backends-{stamp}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
