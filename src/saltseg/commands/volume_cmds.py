"""Beyond the competition: ``volume`` (segment a SEG-Y volume) and ``export`` (ONNX)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from saltseg.cli import add_backend_argument, command

MODEL_HELP = "a .safetensors checkpoint, a fold folder or a run folder (all folds' members averaged)"


@command(
    "volume",
    "Segment the salt in a SEG-Y volume (every inline, crossline or a 2-D section) and write it as SEG-Y.",
    "saltseg volume runs/r1 --segy survey.sgy --out salt.sgy --iline 9 --xline 21 --threshold 0.5",
)
def _volume(p: argparse.ArgumentParser):
    p.add_argument("models", nargs="+", type=Path, metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--segy", type=Path, required=True, help="input SEG-Y file")
    p.add_argument("--out", type=Path, required=True, help="output SEG-Y file (the input's headers)")
    p.add_argument(
        "--axis",
        choices=["inline", "crossline", "traces"],
        default="inline",
        help="sections to segment; 'traces' reads all traces in file order as one 2-D section "
        "(used automatically when the 3-D geometry cannot be inferred)",
    )
    p.add_argument("--iline", type=int, default=189, help="trace header byte of the inline number (189)")
    p.add_argument("--xline", type=int, default=193, help="trace header byte of the crossline number (193)")
    p.add_argument("--endian", choices=["big", "little"], default="big", help="byte order of the file")
    p.add_argument("--tile", type=int, default=101, help="window side: the training tile size (101)")
    p.add_argument("--stride", type=int, default=50, help="step between windows (50)")
    p.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=float, help="write a 0/1 mask: probability > THRESHOLD")
    g.add_argument("--probabilities", action="store_true", help="write probabilities (the default)")
    p.add_argument(
        "--clip-percentile",
        type=float,
        default=99.0,
        help="percentile of |amplitude| mapped to the ends of the uint8 range (99)",
    )
    p.add_argument("--clip", type=float, help="absolute clip amplitude (overrides --clip-percentile)")
    p.add_argument("--reverse-polarity", action="store_true", help="negate amplitudes before scaling")
    p.add_argument(
        "--nan-as",
        choices=["error", "zero"],
        default="error",
        help="NaN/Inf amplitudes: an error (default) or zero amplitude, counted in the output",
    )
    p.add_argument("--no-tta", action="store_true", help="no horizontal-flip TTA")
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda:0...")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (CPU speed)")
    add_backend_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")

    def run(args: argparse.Namespace) -> int:
        from saltseg.inference.sliding import load_ensemble
        from saltseg.utils.device import resolve_device
        from saltseg.utils.io import check_output_file
        from saltseg.volume.segment import segment_segy

        check_output_file(args.out, inputs=[args.segy, *args.models])
        device = resolve_device(args.device)
        models, weights = load_ensemble(args.models)
        models = [m.to(device) for m in models]
        step = {"next": 0.0}

        def progress(done: int, total: int) -> None:
            if args.quiet or (done / total < step["next"] and done != total):
                return
            step["next"] = done / total + 0.1
            print(f"  {done}/{total} sections", file=sys.stderr, flush=True)

        report = segment_segy(
            models,
            args.segy,
            args.out,
            weights=weights,
            axis=args.axis,
            iline=args.iline,
            xline=args.xline,
            endian=args.endian,
            tile=args.tile,
            stride=args.stride,
            batch_size=args.batch_size,
            hflip=not args.no_tta,
            threshold=args.threshold,
            clip_percentile=args.clip_percentile,
            clip=args.clip,
            reverse_polarity=args.reverse_polarity,
            nan_as=args.nan_as,
            channels_last=args.channels_last,
            notify=lambda msg: print(f"warning: {args.segy}: {msg}", file=sys.stderr),
            progress=progress,
            backend=args.backend,
            precision=args.precision,
        )
        what = "0/1 mask" if args.threshold is not None else "probabilities"
        sections = f"{report.sections} {report.axis}s" if report.mode == "3d" else "a 2-D section"
        print(
            f"wrote {report.out}: salt {what}, {' x '.join(map(str, report.shape))} "
            f"({sections}, {len(models)} model(s) on {report.backend}, clip {report.clip:.4g}), "
            f"salt in {100 * report.salt_fraction:.1f}% of the samples, {report.seconds:.1f} s"
        )
        if report.non_finite:
            print(f"note: {report.non_finite} NaN/Inf amplitudes were read as zero (--nan-as zero)")
        return 0

    return run


@command(
    "export",
    "Export a model or an ensemble (averaged, flip TTA inside) to one ONNX graph of probabilities.",
    "saltseg export runs/r1 --onnx salt.onnx",
)
def _export(p: argparse.ArgumentParser):
    p.add_argument("models", nargs="+", type=Path, metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--onnx", type=Path, required=True, help="output .onnx file")
    p.add_argument("--no-tta", action="store_true", help="no horizontal-flip TTA inside the graph")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's; < 18 uses TorchScript)")
    p.add_argument("--size", type=int, default=101, help="tile side of the graph's input (101)")
    p.add_argument(
        "--exporter",
        choices=["auto", "dynamo", "torchscript"],
        default="auto",
        help="torch.onnx exporter (auto: dynamo, TorchScript as the fallback)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime vs torch check")

    def run(args: argparse.Namespace) -> int:
        from saltseg.inference.export import export_onnx

        report = export_onnx(
            args.models,
            args.onnx,
            opset=args.opset,
            hflip=not args.no_tta,
            size=args.size,
            verify=not args.no_verify,
            exporter=args.exporter,
        )
        diff = report.max_abs_diff
        check = "" if diff is None else f", max |onnxruntime - torch| {diff:.1e}"
        print(
            f"wrote {report.path}: {len(report.members)} model(s), outputs {', '.join(report.outputs)} "
            f"(batch, 1, {args.size}, {args.size}) input 'image' in [0, 1], opset {report.opset}, "
            f"{report.exporter} exporter{check}"
        )
        return 0

    return run
