"""Surveys at scale, in one run: synthetic SEG-Y surveys of growing size segmented into MDIO probability
cubes by ``saltseg.volume.predict_survey`` on 0 (this process), 1 and 2 Dask workers: seconds, traces/s
and the peak memory of each worker (flat as the cube grows?); the largest survey on 0 and 2 workers
compared sample for sample; and the IoU of the predicted salt against the synthetic truth with inline
sections only vs inline + crossline fused (on the smallest survey).

Usage:
    python benchmarks/volume.py --model RUN/fold0/best.safetensors [--sizes 0.25 0.5 1 2] [--workers 1 2]
        [--stride 101] [--dir /tmp/saltseg-volume]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from saltseg.volume import SyntheticSurvey, predict_survey

SAMPLES = 1024  # samples per trace of every synthetic survey


def shape_for(gigabytes: float) -> tuple[int, int, int]:
    """A square survey of about ``gigabytes`` of float32 amplitudes with :data:`SAMPLES` samples."""
    side = round(math.sqrt(gigabytes * 1e9 / 4 / SAMPLES))
    return side, side, SAMPLES


def probabilities(path: Path, name: str = "salt_probability") -> np.ndarray:
    from mdio import open_mdio

    return np.asarray(open_mdio(path)[name].values)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a .safetensors checkpoint")
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0], help="GB of amplitudes")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Dask workers for every size")
    ap.add_argument("--stride", type=int, default=101, help="window stride (101: no overlap)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--no-tta", action="store_true", help="no flip TTA (half the passes)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/saltseg-volume"))
    ap.add_argument("--json", type=Path, help="results file (default benchmarks/results/volume-DATE.json)")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
    results: dict = {
        "date": stamp,
        "machine": platform.processor() or platform.machine(),
        "model": args.model,
        "stride": args.stride,
        "tta": not args.no_tta,
        "runs": [],
    }
    members = [(args.model, 1.0)]

    def run(src: Path, out: Path, workers: int, **kw: object) -> dict:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)  # of a killed earlier run
        t0 = time.perf_counter()
        report = predict_survey(
            members,
            src,
            out,
            workers=workers,
            stride=args.stride,
            backend=args.backend,
            hflip=not args.no_tta,
            **kw,
        )
        seconds = time.perf_counter() - t0
        traces = report.live_traces * len(report.axes)
        row = {
            "survey": src.name,
            "shape": list(report.shape),
            "gb": round(np.prod(report.shape) * 4 / 1e9, 3),
            "workers": workers,
            "axes": list(report.axes),
            "seconds": round(seconds, 1),
            "traces_per_s": round(traces / seconds, 1),
            "peak_rss_mb_per_worker": {k: round(v) for k, v in report.peak_rss_mb_per_worker.items()},
            "backend": report.backend,
        }
        print(json.dumps(row), flush=True)
        results["runs"].append(row)
        return row

    surveys = []
    for gb in sorted(args.sizes):
        shape = shape_for(gb)
        src = args.dir / f"synth-{gb:g}gb.sgy"
        if not src.exists():
            t0 = time.perf_counter()
            SyntheticSurvey(shape, seed=0).write_segy(src, args.dir / f"synth-{gb:g}gb-truth.sgy")
            print(f"wrote {src} {shape} in {time.perf_counter() - t0:.0f} s", flush=True)
        surveys.append((gb, shape, src))
    for gb, _, src in surveys:
        for w in args.workers:
            run(src, args.dir / f"out-{gb:g}-{w}.mdio", w)
    # equality: the largest survey in this process against 2 workers
    gb, shape, src = surveys[-1]
    two = args.dir / f"out-{gb:g}-2.mdio"
    if two.exists():
        run(src, args.dir / f"out-{gb:g}-0.mdio", 0)
        diff = 0.0
        from mdio import open_mdio

        a, b = open_mdio(args.dir / f"out-{gb:g}-0.mdio"), open_mdio(two)
        for i in range(0, shape[0], 16):
            block = slice(i, i + 16)
            da = a["salt_probability"].isel(inline=block).values
            db = b["salt_probability"].isel(inline=block).values
            diff = max(diff, float(np.abs(da - db).max()))
        results["largest_0_vs_2_workers_max_abs_diff"] = diff
        print(f"largest survey, this process vs 2 workers: max |diff| {diff:.2e}", flush=True)
    # inline only vs fused, against the synthetic truth (smallest survey)
    gb, shape, src = surveys[0]
    truth = SyntheticSurvey(shape, seed=0).block(0, shape[0])[1]
    fused = args.dir / f"out-{gb:g}-fused.mdio"
    run(src, fused, max(args.workers), axes=("inline", "crossline"), keep_axes=True)
    results["iou_inline"] = iou(probabilities(fused, "salt_probability_inline") > 0.5, truth)
    results["iou_crossline"] = iou(probabilities(fused, "salt_probability_crossline") > 0.5, truth)
    results["iou_fused"] = iou(probabilities(fused) > 0.5, truth)
    print({k: v for k, v in results.items() if k.startswith("iou")}, flush=True)
    out = args.json or Path(__file__).parent / "results" / f"volume-{stamp}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
