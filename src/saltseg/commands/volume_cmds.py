"""Beyond the competition: ``volume`` (surveys: predict, convert, tiles, synth) and ``export`` (ONNX)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from saltseg.commands.registry import add_backend_argument, command

MODEL_HELP = "a .safetensors checkpoint, a fold folder or a run folder (all folds' members averaged)"


VOLUME_EXAMPLE = """saltseg volume synth survey.sgy --shape 64,64,256 --labels salt_truth.sgy
  saltseg volume convert survey.sgy survey.mdio --iline 189 --xline 193
  saltseg volume predict runs/r1 survey.mdio --out salt.mdio --workers 2 --axis both
  saltseg volume predict runs/r1 survey.sgy --out salt.sgy          (one process, SEG-Y headers kept)
  saltseg volume tiles survey.sgy salt_truth.sgy --out my_tiles     (Kaggle-layout tiles for train)"""


def _segy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--iline", type=int, default=189, help="trace header byte of the inline number (189)")
    p.add_argument("--xline", type=int, default=193, help="trace header byte of the crossline number (193)")


def _progress_printer(quiet: bool, unit: str) -> Callable[[int, int], None]:
    step = {"next": 0.0}

    def progress(done: int, total: int) -> None:
        if quiet or (done / max(total, 1) < step["next"] and done != total):
            return
        step["next"] = done / max(total, 1) + 0.1
        print(f"  {done}/{total} {unit}", file=sys.stderr, flush=True)

    return progress


@command(
    "volume",
    "Whole seismic surveys: segment (in one process or on a Dask cluster), convert SEG-Y <-> MDIO, cut "
    "labelled sections into training tiles, make a synthetic survey.",
    VOLUME_EXAMPLE,
)
def _volume(p: argparse.ArgumentParser):
    sub = p.add_subparsers(dest="volume_command", metavar="ACTION", required=True)
    fmt = argparse.RawDescriptionHelpFormatter
    pr = sub.add_parser(
        "predict",
        help="segment the salt of a survey (SEG-Y or MDIO) into MDIO or SEG-Y",
        description="Salt probability (or a 0/1 mask) of every sample. To MDIO (.mdio): block by block, in "
        "this process or on a Dask cluster (--workers N, --scheduler ADDR), resumable, inline and/or "
        "crossline sections (--axis both: their mean). To SEG-Y (.sgy): one process, the input's headers."
        "\n\nexample:\n  saltseg volume predict runs/r1 survey.mdio --out salt.mdio --workers 2 --axis both",
        formatter_class=fmt,
    )
    pr.add_argument("models", nargs="+", type=Path, metavar="MODEL", help=MODEL_HELP)
    pr.add_argument("survey", type=Path, help="input survey: SEG-Y or MDIO (.mdio)")
    pr.add_argument("--out", type=Path, required=True, help="output: .mdio (chunked) or .sgy (input headers)")
    pr.add_argument(
        "--axis",
        choices=["inline", "crossline", "both", "traces"],
        default="inline",
        help="sections to segment: inline, crossline, both (MDIO output: their mean), or traces (SEG-Y "
        "output: all traces in file order as one 2-D section, used automatically without a 3-D geometry)",
    )
    pr.add_argument("--workers", type=int, default=0, help="local Dask worker processes (0: this process)")
    pr.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786)")
    pr.add_argument("--threads", type=int, help="threads per worker (default: the cores split between them)")
    pr.add_argument("--resume", action="store_true", help="continue an unfinished MDIO prediction")
    pr.add_argument("--keep-axes", action="store_true", help="--axis both: keep each axis' probabilities")
    pr.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="resample every section by this factor before segmenting it (to the training tiles' scale), "
        "the answer back to the survey's grid (MDIO output)",
    )
    pr.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write salt_uncertainty: the spread of the ensemble's members (and of the two axes with "
        "--axis both) (MDIO output)",
    )
    _segy_options(pr)
    pr.add_argument("--endian", choices=["big", "little"], default="big", help="byte order of a SEG-Y file")
    pr.add_argument("--tile", type=int, default=101, help="window side: the training tile size (101)")
    pr.add_argument("--stride", type=int, default=50, help="step between windows (50)")
    pr.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    g = pr.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=float, help="write a 0/1 mask too: probability > THRESHOLD")
    g.add_argument("--probabilities", action="store_true", help="write probabilities only (the default)")
    pr.add_argument(
        "--clip-percentile",
        type=float,
        default=99.0,
        help="percentile of |amplitude| mapped to the ends of the uint8 range (99)",
    )
    pr.add_argument("--clip", type=float, help="absolute clip amplitude (overrides --clip-percentile)")
    pr.add_argument(
        "--amplitude",
        choices=["clip", "fit"],
        default="clip",
        help="amplitudes to uint8: clip (128 + 127 a / clip, the default) or fit (the survey's median and "
        "spread mapped to the training tiles' pixel mean and std, from the model's metadata; MDIO output)",
    )
    pr.add_argument("--reverse-polarity", action="store_true", help="negate amplitudes before scaling")
    pr.add_argument(
        "--nan-as",
        choices=["error", "zero"],
        default="error",
        help="NaN/Inf amplitudes: an error (default) or zero amplitude, counted in the output",
    )
    pr.add_argument("--no-tta", action="store_true", help="no horizontal-flip TTA")
    pr.add_argument("--device", default="auto", help="torch device of the SEG-Y path: auto, cpu, cuda:0...")
    pr.add_argument("--channels-last", action="store_true", help="channels-last memory format (CPU speed)")
    add_backend_argument(pr)
    pr.add_argument("--quiet", action="store_true", help="no progress lines")

    cv = sub.add_parser(
        "convert",
        help="SEG-Y -> MDIO (missing traces masked) or MDIO -> SEG-Y",
        description="Convert between SEG-Y and MDIO by the output's suffix. SEG-Y -> MDIO uses MDIO's "
        "ingestion (the grid built from the inline / crossline header bytes, missing traces padded and "
        "masked); a saltseg prediction -> SEG-Y takes the headers of the survey it was predicted from "
        "(--like).\n\nexample:\n  saltseg volume convert survey.sgy survey.mdio --iline 9 --xline 21\n"
        "  saltseg volume convert salt.mdio salt.sgy --like survey.sgy",
        formatter_class=fmt,
    )
    cv.add_argument("src", type=Path)
    cv.add_argument("dst", type=Path)
    _segy_options(cv)
    cv.add_argument("--domain", choices=["time", "depth"], default="time", help="vertical axis of the survey")
    cv.add_argument("--like", type=Path, help="MDIO -> SEG-Y: the SEG-Y whose headers to copy")

    ti = sub.add_parser(
        "tiles",
        help="cut labelled sections into Kaggle-layout training tiles",
        description="Cut inline (and crossline) sections of a survey and its label cube (salt > 0.5, same "
        "grid; SEG-Y or MDIO) into 101 x 101 tiles: train/images, train/masks, train.csv, depths.csv."
        "\n\nexample:\n  saltseg volume tiles survey.sgy salt_truth.sgy --out tiles --every 4\n"
        "  saltseg train configs/cpu_fast.yaml --data tiles --fold 0 --out runs/mine",
        formatter_class=fmt,
    )
    ti.add_argument("survey", type=Path)
    ti.add_argument("labels", type=Path)
    ti.add_argument("--out", type=Path, required=True)
    ti.add_argument("--axis", choices=["inline", "crossline", "both"], default="inline")
    ti.add_argument("--every", type=int, default=1, help="every N-th section (1)")
    ti.add_argument("--tile", type=int, default=101)
    ti.add_argument("--stride", type=int, default=101, help="step between tiles in a section (101)")
    _segy_options(ti)

    sy = sub.add_parser(
        "synth",
        help="write a synthetic 3-D survey (salt diapirs) and its exact label cube as SEG-Y",
        description="A synthetic post-stack survey: folded, faulted layers and salt diapirs, with the 0/1 "
        "label cube (--labels) on the same headers.\n\nexample:\n  saltseg volume synth survey.sgy "
        "--shape 64,64,256 --labels truth.sgy",
        formatter_class=fmt,
    )
    sy.add_argument("out", type=Path)
    sy.add_argument("--shape", default="64,64,256", help="inlines,crosslines,samples (64,64,256)")
    sy.add_argument("--labels", type=Path, help="also write the salt labels (1 = salt) as SEG-Y")
    sy.add_argument("--seed", type=int, default=0)

    def run(args: argparse.Namespace) -> int:
        return {"predict": _predict, "convert": _convert, "tiles": _tiles, "synth": _synth}[
            args.volume_command
        ](args)

    return run


def _predict(args: argparse.Namespace) -> int:
    from saltseg.errors import SaltsegError
    from saltseg.volume.survey import SEGY_SUFFIXES, survey_format

    if args.out.suffix.lower() in SEGY_SUFFIXES:
        chunked = args.workers or args.scheduler or args.axis == "both" or args.resume
        if chunked or args.scale != 1.0 or args.uncertainty or args.amplitude != "clip":
            raise SaltsegError(
                "--workers, --scheduler, --resume, --axis both, --scale, --uncertainty and --amplitude fit "
                "write MDIO: give "
                "--out NAME.mdio (then `saltseg volume convert NAME.mdio NAME.sgy --like SURVEY.sgy`)"
            )
        if survey_format(args.survey) != "segy":
            raise SaltsegError("a SEG-Y output needs a SEG-Y input; give --out NAME.mdio for an MDIO survey")
        return _predict_segy(args)
    if args.axis == "traces":
        raise SaltsegError("--axis traces is for a SEG-Y output (one 2-D section); give --out NAME.sgy")
    from saltseg.artifacts import resolve_models
    from saltseg.volume.chunked import predict_survey

    members = resolve_models(list(args.models))
    report = predict_survey(
        [(m.path, m.weight) for m in members],
        args.survey,
        args.out,
        axes=("inline", "crossline") if args.axis == "both" else (args.axis,),
        workers=args.workers,
        scheduler=args.scheduler,
        threads=args.threads,
        resume=args.resume,
        **_section_options(args),
        backend=args.backend,
        precision=args.precision,
        keep_axes=args.keep_axes,
        scale=args.scale,
        uncertainty=args.uncertainty,
        amplitude=args.amplitude,
        progress=_progress_printer(args.quiet, "traces"),
    )
    print(report.describe())
    if args.scale != 1.0:
        print(
            f"note: every section was resampled by {args.scale:g} to segment it, the answer back to the grid"
        )
    _print_non_finite(report.non_finite)
    if report.resumed_blocks:
        print(f"note: {report.resumed_blocks} of {report.blocks} blocks were already written (--resume)")
    return 0


def _section_options(args: argparse.Namespace) -> dict:
    """The options both survey paths (one-process SEG-Y and block by block) take from the command line."""
    return {
        "iline": args.iline,
        "xline": args.xline,
        "endian": args.endian,
        "tile": args.tile,
        "stride": args.stride,
        "batch_size": args.batch_size,
        "hflip": not args.no_tta,
        "threshold": args.threshold,
        "clip_percentile": args.clip_percentile,
        "clip": args.clip,
        "reverse_polarity": args.reverse_polarity,
        "nan_as": args.nan_as,
    }


def _print_non_finite(count: int) -> None:
    if count:
        print(f"note: {count} NaN/Inf amplitudes were read as zero (--nan-as zero)")


def _predict_segy(args: argparse.Namespace) -> int:
    from saltseg.inference.sliding import load_ensemble
    from saltseg.utils.device import resolve_device
    from saltseg.utils.io import check_output_file
    from saltseg.volume.segment import segment_segy

    check_output_file(args.out, inputs=[args.survey, *args.models])
    device = resolve_device(args.device)
    models, weights = load_ensemble(args.models)
    models = [m.to(device) for m in models]
    report = segment_segy(
        models,
        args.survey,
        args.out,
        weights=weights,
        axis=args.axis,
        **_section_options(args),
        channels_last=args.channels_last,
        notify=lambda msg: print(f"warning: {args.survey}: {msg}", file=sys.stderr),
        progress=_progress_printer(args.quiet, "sections"),
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
    _print_non_finite(report.non_finite)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from saltseg.errors import SaltsegError
    from saltseg.volume.convert import mdio_to_segy, segy_to_mdio
    from saltseg.volume.survey import survey_format

    src_fmt, dst_fmt = survey_format(args.src), survey_format(args.dst)
    if src_fmt == "segy" and dst_fmt == "mdio":
        out = segy_to_mdio(args.src, args.dst, args.iline, args.xline, args.domain)
    elif src_fmt == "mdio" and dst_fmt == "segy":
        out = mdio_to_segy(args.src, args.dst, like=args.like)
    else:
        raise SaltsegError(
            f"convert goes SEG-Y -> MDIO or MDIO -> SEG-Y (by the suffixes), got {src_fmt} -> {dst_fmt}"
        )
    from saltseg.volume.survey import open_survey

    if dst_fmt == "mdio":
        survey = open_survey(out)
        missing = int((~survey.live).sum())
        print(
            f"wrote {out}: {' x '.join(map(str, survey.shape))} (inline x crossline x samples), "
            f"{missing} missing trace(s) padded and masked"
        )
    else:
        print(f"wrote {out}")
    return 0


def _tiles(args: argparse.Namespace) -> int:
    from saltseg.volume.convert import write_training_tiles

    report = write_training_tiles(
        args.survey,
        args.labels,
        args.out,
        axes=("inline", "crossline") if args.axis == "both" else (args.axis,),
        every=args.every,
        tile=args.tile,
        stride=args.stride,
        iline=args.iline,
        xline=args.xline,
    )
    print(
        f"wrote {report.out}: {report.tiles} tiles ({report.salt_tiles} with salt) from {report.sections} "
        "sections, in the Kaggle layout"
    )
    return 0


def _synth(args: argparse.Namespace) -> int:
    from saltseg.errors import SaltsegError
    from saltseg.utils.io import check_output_file
    from saltseg.volume.synth3d import write_synthetic_segy

    try:
        shape = tuple(int(v) for v in args.shape.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise SaltsegError(f"--shape must be inlines,crosslines,samples, got {args.shape!r}")
    for path in [args.out, *([args.labels] if args.labels else [])]:
        check_output_file(path)
        if Path(path).exists():
            raise SaltsegError(f"{path}: the output exists; choose a new one (saltseg never replaces it)")
    write_synthetic_segy(args.out, shape, seed=args.seed, labels=args.labels)  # type: ignore[arg-type]
    extra = f" and its salt labels {args.labels}" if args.labels else ""
    print(f"wrote {args.out}{extra}: {' x '.join(map(str, shape))} (inline x crossline x samples)")
    return 0


def _is_saltseg_onnx(path: Path) -> bool:
    """True when ``path`` is an ONNX graph ``saltseg export`` wrote (its ``saltseg_members`` metadata)."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX (protobuf's errors have no common base)
        return False
    return any(prop.key == "saltseg_members" for prop in model.metadata_props)


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
        from saltseg.utils.io import check_output_file, refuse_foreign_file

        # never over a model it reads, nor over a file that is not a graph saltseg exported
        check_output_file(args.onnx, inputs=args.models, may_replace=_is_saltseg_onnx)
        refuse_foreign_file(args.onnx, _is_saltseg_onnx, "an ONNX graph saltseg exported")
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
