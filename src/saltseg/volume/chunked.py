"""Segment a whole 3-D survey block by block, in this process or on a Dask cluster.

The survey (:class:`~saltseg.volume.survey.Survey`: SEG-Y or MDIO) is cut into blocks of whole inlines
(and, for a fused answer, of whole crosslines). Every block is one task: read its sections, scale them
to uint8 with the one amplitude clip fitted for the whole survey, segment each section with the blended
sliding window (:func:`saltseg.inference.sliding.predict_large`), and write the block into the output
dataset (:class:`~saltseg.volume.store.OutputStore`). A section is whole inside its block, so the
windows, their blending and therefore the result are the same in one process and on any number of
workers; each worker process loads the models once and keeps them for all its blocks.

``axes=("inline", "crossline")`` segments both families of sections and writes their mean (the salt
of a 3-D body seen from two directions: less striping between neighbouring sections). Missing traces of
an irregular grid (MDIO's ``trace_mask``) are read as zero amplitude and written as zero, never counted.

Where the tasks run: ``workers=0`` in this process; ``workers=N`` a local Dask cluster of N processes
(threads split between them); ``scheduler="tcp://host:8786"`` any running Dask cluster whose workers
see the same files (the same code). A killed run resumes (``resume=True``) from the blocks written.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from saltseg.backends import BackendName
from saltseg.errors import DataError, SaltsegError
from saltseg.volume.segment import check_section_options
from saltseg.volume.segy import to_uint8
from saltseg.volume.store import OutputStore, Variable
from saltseg.volume.survey import Axis3D, Survey, open_survey

__all__ = ["BlockResult", "SurveyReport", "predict_survey"]

log = logging.getLogger(__name__)

PROBABILITY, MASK, SPREAD = "salt_probability", "salt_mask", "salt_uncertainty"
BLOCK_BYTES = 64 * 2**20  # amplitudes of one block (float32): bounds a worker's memory
MAX_BLOCK = 16


@dataclass(frozen=True)
class SurveyJob:
    """Everything a task needs, small enough to send to every worker."""

    survey: Survey
    checkpoints: tuple[tuple[str, float], ...]  # (path, weight)
    store: str  # the output path (``OUT``; tasks write into ``OUT.partial``)
    clip: float
    reverse_polarity: bool = False
    nan_as: Literal["error", "zero"] = "error"
    tile: int = 101
    stride: int = 50
    batch_size: int = 64
    hflip: bool = True
    threshold: float | None = None
    backend: BackendName = "auto"
    precision: str = "auto"
    threads: int | None = None  # torch / runtime threads per worker process (None: leave as is)
    scale: float = 1.0  # sections resampled by this factor before the windows, the answer back
    mapping: tuple[float, float] | None = None  # (gain, offset) to uint8 instead of the clip
    uncertainty: bool = False  # also the spread of the ensemble's members (and of the axes when fused)


@dataclass
class BlockResult:
    """What one task did."""

    variable: str
    start: int
    stop: int
    traces: int
    seconds: float
    salt_samples: int = 0
    non_finite: int = 0
    backend: str = "torch"
    worker: str = ""  # host:pid
    peak_rss_mb: float = 0.0


@dataclass
class SurveyReport:
    """What :func:`predict_survey` did."""

    out: Path
    shape: tuple[int, int, int]
    axes: tuple[str, ...]
    clip: float
    blocks: int
    resumed_blocks: int
    workers: int
    seconds: float
    salt_fraction: float | None  # of the live samples (final answer); None when resumed at the end
    live_traces: int
    non_finite: int
    backend: str
    peak_rss_mb_per_worker: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the CLI."""
        ni, nx, ns = self.shape
        salt = (
            "" if self.salt_fraction is None else f", salt in {100 * self.salt_fraction:.1f}% of live samples"
        )
        peak = max(self.peak_rss_mb_per_worker.values(), default=0.0)
        return (
            f"wrote {self.out}: {ni} x {nx} x {ns} ({' + '.join(self.axes)} sections, {self.blocks} "
            f"blocks on {self.workers or 'this process'}{' workers' if self.workers else ''}, "
            f"{self.backend}, clip "
            f"{self.clip:.4g}){salt}, {self.seconds:.1f} s, peak {peak:.0f} MB per worker"
        )


# --------------------------------------------------------------------------- worker side

_PREDICTORS: dict[tuple, object] = {}  # one ensemble per worker process, kept for all its blocks


def _predictor(job: SurveyJob):
    key = (job.checkpoints, job.hflip, job.backend, job.precision)
    if key not in _PREDICTORS:
        import torch

        from saltseg.checkpoints import load_model
        from saltseg.predictor import EnsemblePredictor

        if job.threads:
            torch.set_num_threads(job.threads)
        models = [load_model(p) for p, _ in job.checkpoints]
        _PREDICTORS.clear()
        _PREDICTORS[key] = EnsemblePredictor(
            models,
            [w for _, w in job.checkpoints],
            device="cpu" if not torch.cuda.is_available() else None,
            hflip=job.hflip,
            backend=job.backend,
            precision=job.precision,
        )
    return _PREDICTORS[key]


def _peak_rss_mb() -> float:
    """This process's peak resident memory: Linux's ``VmHWM`` (of this address space only; ``ru_maxrss``
    would carry over the memory of the process that spawned it), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of a 2-D float array to ``shape``."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    return F.interpolate(x, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def _segment_section(
    job: SurveyJob, section: np.ndarray, live: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """(traces, samples) amplitudes -> (traces, samples) float32 probabilities (0 on missing traces) and,
    with ``job.uncertainty``, the members' spread."""
    from saltseg.inference.sliding import predict_large, predict_large_with_spread

    amps = np.nan_to_num(section, nan=0.0, posinf=0.0, neginf=0.0)
    if job.mapping is not None:
        gain, offset = job.mapping
        image = np.clip(np.rint(offset + gain * amps.T), 0, 255).astype(np.uint8)
    else:
        image = to_uint8(amps, job.clip, job.reverse_polarity).T
    shape = image.shape
    if job.scale != 1.0:  # to the training tiles' scale, and the answer back to the section's
        size = (max(1, round(shape[0] * job.scale)), max(1, round(shape[1] * job.scale)))
        image = _resample(image.astype(np.float32) / 255.0, size)
    options = {"tile": job.tile, "stride": job.stride, "batch_size": job.batch_size}
    if job.uncertainty:
        probs, spread = predict_large_with_spread(_predictor(job), image, **options)
    else:
        probs, spread = predict_large(_predictor(job), image, **options), None
    if job.scale != 1.0:
        probs = np.clip(_resample(probs, shape), 0.0, 1.0)
        spread = None if spread is None else np.maximum(_resample(spread, shape), 0.0)
    probs = probs.T.copy()
    probs[~live] = 0.0
    if spread is not None:
        spread = spread.T.copy()
        spread[~live] = 0.0
    return probs, spread


def run_section_block(
    job: SurveyJob, variable: Variable, start: int, stop: int, write_mask: bool
) -> BlockResult:
    """One task: segment sections ``[start, stop)`` along ``variable.axis`` and write them."""
    t0 = time.perf_counter()
    survey, store = job.survey, OutputStore(job.store)
    amps = survey.read(variable.axis, start, stop)
    live = survey.live[start:stop] if variable.axis == "inline" else survey.live[:, start:stop]
    bad = int((~np.isfinite(amps[live])).sum())
    if bad and job.nan_as == "error":
        raise DataError(
            f"{bad} amplitude(s) of {variable.axis}s {start}-{stop - 1} are NaN or Inf; give --nan-as zero "
            "to read them as zero amplitude (they are counted in the report)",
            survey.path,
        )
    probs = np.zeros(amps.shape, np.float32)
    spread = np.zeros(amps.shape, np.float32) if job.uncertainty else None
    for k in range(stop - start):
        where = (k,) if variable.axis == "inline" else (slice(None), k)
        p, u = _segment_section(job, amps[where], live[where])
        probs[where] = p
        if spread is not None and u is not None:
            spread[where] = u
    store.write(variable, start, probs)
    if spread is not None:
        store.write(
            Variable(variable.name.replace(PROBABILITY, SPREAD), "float32", variable.axis), start, spread
        )
    salt = 0
    if write_mask and job.threshold is not None:
        mask = (probs > job.threshold).astype(np.uint8)
        store.write(Variable(MASK, "uint8", variable.axis), start, mask)
    if variable.name == PROBABILITY:
        salt = int((probs > (0.5 if job.threshold is None else job.threshold)).sum())
    return BlockResult(
        variable=variable.name,
        start=start,
        stop=stop,
        traces=int(live.sum()),
        seconds=time.perf_counter() - t0,
        salt_samples=salt,
        non_finite=bad,
        backend=getattr(_predictor(job), "backend", None) or "torch",
        worker=f"{os.uname().nodename}:{os.getpid()}",
        peak_rss_mb=_peak_rss_mb(),
    )


def run_fuse_block(job: SurveyJob, sources: tuple[str, ...], start: int, stop: int) -> BlockResult:
    """One task: the mean of the per-axis probabilities of inlines ``[start, stop)``."""
    t0 = time.perf_counter()
    store = OutputStore(job.store)
    per_axis = [store.read(name, "inline", start, stop) for name in sources]
    probs = np.mean(per_axis, axis=0, dtype=np.float32)
    store.write(Variable(PROBABILITY, "float32", "inline"), start, probs)
    if job.uncertainty:  # the law of total variance over the axes' member spreads and their means
        spreads = [store.read(name.replace(PROBABILITY, SPREAD), "inline", start, stop) for name in sources]
        var = np.mean([u.astype(np.float64) ** 2 for u in spreads], axis=0)
        var += np.mean([(m - probs) ** 2 for m in per_axis], axis=0)
        store.write(Variable(SPREAD, "float32", "inline"), start, np.sqrt(var).astype(np.float32))
    threshold = 0.5 if job.threshold is None else job.threshold
    if job.threshold is not None:
        store.write(Variable(MASK, "uint8", "inline"), start, (probs > threshold).astype(np.uint8))
    live = job.survey.live[start:stop]
    return BlockResult(
        variable=PROBABILITY,
        start=start,
        stop=stop,
        traces=int(live.sum()),
        seconds=time.perf_counter() - t0,
        salt_samples=int((probs > threshold).sum()),
        worker=f"{os.uname().nodename}:{os.getpid()}",
        peak_rss_mb=_peak_rss_mb(),
    )


# --------------------------------------------------------------------------- client side


def _training_pixel_stats(checkpoints: Sequence[str | Path]) -> tuple[float, float]:
    """The training tiles' pixel mean and std (of image/255) the members keep in their metadata, averaged.

    Raises:
        CheckpointError: A member does not standardise its input (no statistics of its training tiles).
    """
    from saltseg.checkpoints import read_metadata
    from saltseg.errors import CheckpointError

    stats = []
    for path in checkpoints:
        config, _ = read_metadata(path)
        if config.normalize != "standardize":
            raise CheckpointError(
                "--amplitude fit needs models that standardise their input (model.normalize: standardize); "
                "this one divides by 255 and keeps no statistics of its training tiles: use --amplitude clip",
                path,
            )
        stats.append((config.mean, config.std))
    return float(np.mean([m for m, _ in stats])), float(np.mean([s for _, s in stats]))


def block_size(survey: Survey, axis: Axis3D) -> int:
    """Sections per block: at most :data:`MAX_BLOCK`, and at most :data:`BLOCK_BYTES` of amplitudes."""
    ni, nx, ns = survey.shape
    per_section = (nx if axis == "inline" else ni) * ns * 4
    return int(max(1, min(MAX_BLOCK, BLOCK_BYTES // max(per_section, 1))))


class _Runner:
    """Runs tasks in this process (``workers=0``) or on a Dask cluster, and reports each result."""

    def __init__(self, workers: int, scheduler: str | None) -> None:
        self.client = None
        self.cluster = None
        self.workers = workers
        if scheduler is None and workers == 0:
            return
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - a pinned dependency
            raise SaltsegError(f"Dask's distributed scheduler is not installed ({exc})") from None
        if scheduler is not None:
            try:
                self.client = Client(scheduler, timeout="30s")
            except OSError as exc:
                raise SaltsegError(f"cannot reach the Dask scheduler {scheduler} ({exc})") from None
            self.workers = len(self.client.scheduler_info().get("workers", {}))
        else:
            self.cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            self.client = Client(self.cluster)

    def map(self, fn: Callable, calls: Sequence[tuple], on_result: Callable[[BlockResult], None]) -> None:
        if self.client is None:
            for args in calls:
                on_result(fn(*args))
            return
        from dask.distributed import as_completed

        futures = [self.client.submit(fn, *args, pure=False) for args in calls]
        try:
            for fut in as_completed(futures):
                on_result(fut.result())
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def predict_survey(
    checkpoints: Sequence[tuple[str | Path, float]],
    src: str | Path,
    out: str | Path,
    *,
    axes: Sequence[Axis3D] = ("inline",),
    workers: int = 0,
    scheduler: str | None = None,
    threads: int | None = None,
    resume: bool = False,
    iline: int = 189,
    xline: int = 193,
    endian: Literal["big", "little"] = "big",
    tile: int = 101,
    stride: int = 50,
    batch_size: int = 64,
    hflip: bool = True,
    threshold: float | None = None,
    clip_percentile: float = 99.0,
    clip: float | None = None,
    reverse_polarity: bool = False,
    nan_as: Literal["error", "zero"] = "error",
    backend: BackendName = "auto",
    precision: str = "auto",
    keep_axes: bool = False,
    scale: float = 1.0,
    uncertainty: bool = False,
    amplitude: Literal["clip", "fit"] = "clip",
    progress: Callable[[int, int], None] | None = None,
) -> SurveyReport:
    """Write the salt probability of every sample of the 3-D survey ``src`` into the MDIO dataset ``out``.

    Args:
        checkpoints: ``(checkpoint, weight)`` pairs (:func:`saltseg.artifacts.resolve_models`).
        src: SEG-Y with a regular 3-D geometry, or MDIO.
        out: The output dataset (``.mdio``); it must not exist.
        axes: ``("inline",)``, ``("crossline",)`` or both (their mean is the answer).
        workers: 0: this process; N: a local Dask cluster of N worker processes.
        scheduler: Address of a running Dask scheduler (overrides ``workers``).
        threads: Threads per worker process (default: the cores split between local workers).
        resume: Continue an unfinished prediction of the same inputs and options.
        threshold: Also write ``salt_mask`` (uint8) = probability > threshold.
        keep_axes: Keep the per-axis probabilities of a fused answer (``salt_probability_inline``...).
        scale: Resample every section by this factor before segmenting it (to the scale of the training
            tiles: e.g. 0.5 when a survey's salt bodies look twice as large), the answer back to the
            section's grid; recorded in the dataset's attributes.
        amplitude: ``clip``: amplitudes mapped to uint8 with ``128 + 127 a / clip`` (the clip a percentile
            of |a|); ``fit``: the linear map that gives the survey (robustly: median and 16-84 percentile
            spread) the pixel mean and standard deviation of the model's training tiles, which a
            standardising model keeps in its metadata (``model.mean`` / ``model.std``).
        uncertainty: Also write ``salt_uncertainty``: the weighted standard deviation of the ensemble's
            members (flip TTA inside each), and with ``axes`` both, of the two axes as well (total
            variance); zero for one model on one axis.
        progress: Called with ``(traces done, traces total)`` over all passes.
        The other arguments are those of :func:`saltseg.volume.segment_segy`.
    """
    from mdio import __version__ as mdio_version

    axes = tuple(dict.fromkeys(axes))
    if not axes or any(a not in ("inline", "crossline") for a in axes):
        raise SaltsegError(f"axes must be inline and/or crossline, got {list(axes)}")
    check_section_options(threshold, tile, stride, batch_size, clip, nan_as)
    if workers < 0:
        raise SaltsegError(f"workers must be 0 (this process) or more, got {workers}")
    if not 0.05 <= scale <= 20:
        raise SaltsegError(f"the scale must be between 0.05 and 20, got {scale}")
    started = time.perf_counter()
    store = OutputStore(out)
    for given in [src, *(p for p, _ in checkpoints)]:
        if Path(out).resolve() == Path(given).resolve():
            raise DataError(f"the output would overwrite the input {given}; choose another --out", out)
    store.check_new(resume)
    survey = open_survey(src, iline, xline, endian)
    amp_clip = float(clip) if clip is not None else survey.amplitude_clip(clip_percentile)
    if amplitude not in ("clip", "fit"):
        raise SaltsegError(f"amplitude must be clip or fit, got {amplitude!r}")
    mapping = None
    if amplitude == "fit":
        mean, std = _training_pixel_stats([p for p, _ in checkpoints])
        gain, offset = survey.amplitude_mapping(mean, std)
        # reversed polarity: the map of -a, whose median is minus the survey's
        mapping = (-gain, 2 * 255.0 * mean - offset) if reverse_polarity else (gain, offset)
    if threads is None and workers and scheduler is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
    job = SurveyJob(
        survey=survey,
        checkpoints=tuple((str(Path(p).resolve()), float(w)) for p, w in checkpoints),
        store=str(Path(out)),
        clip=amp_clip,
        reverse_polarity=reverse_polarity,
        nan_as=nan_as,
        tile=tile,
        stride=stride,
        batch_size=batch_size,
        hflip=hflip,
        threshold=threshold,
        backend=backend,
        precision=precision,
        threads=threads,
        scale=float(scale),
        uncertainty=uncertainty,
        mapping=mapping,
    )
    fused = len(axes) > 1
    passes = [Variable(f"{PROBABILITY}_{a}" if fused else PROBABILITY, "float32", a) for a in axes]
    variables = list(passes) + ([Variable(PROBABILITY, "float32", "inline")] if fused else [])
    if threshold is not None:
        variables.append(Variable(MASK, "uint8", "inline" if fused else axes[0]))
    if uncertainty:
        variables += [Variable(v.name.replace(PROBABILITY, SPREAD), "float32", v.axis) for v in passes]
        if fused:
            variables.append(Variable(SPREAD, "float32", "inline"))
    # one block size for both axes: every variable is chunked (block, block, samples), so a block of
    # inlines or of crosslines covers whole chunks (written without a lock) and reading one axis' blocks
    # from the other's results touches only the chunks it needs (the fusion's memory stays flat)
    size = min(block_size(survey, "inline"), block_size(survey, "crossline"))
    blocks = {"inline": size, "crossline": size}
    plan = {
        "survey": str(survey.path),
        "shape": list(survey.shape),
        "checkpoints": [list(c) for c in job.checkpoints],
        "axes": list(axes),
        "clip": amp_clip,
        "blocks": blocks,
        "options": [reverse_polarity, nan_as, tile, stride, hflip, threshold, backend, precision, scale],
        "uncertainty": uncertainty,
        "mapping": list(mapping) if mapping else None,
    }
    attrs = {
        "apiVersion": mdio_version,
        "name": "saltseg salt prediction",
        "attributes": {
            "defaultVariableName": PROBABILITY,
            "saltseg": {
                "source": str(survey.path),
                "axes": list(axes),
                "clip": amp_clip,
                "threshold": threshold,
                "scale": scale,
                "amplitude_mapping": list(mapping) if mapping else None,
            },
        },
    }
    store.create(survey, variables, blocks, plan, attrs, resume)

    ni = survey.shape[0]
    live_traces = int(survey.live.sum())
    total = live_traces * (len(passes) + int(fused))
    done = {"traces": 0, "salt": 0, "bad": 0, "blocks": 0, "resumed": 0, "backend": "torch"}
    peaks: dict[str, float] = {}

    def on_result(r: BlockResult) -> None:
        done["traces"] += r.traces
        done["bad"] += r.non_finite
        done["blocks"] += 1
        if r.variable == PROBABILITY:
            done["salt"] += r.salt_samples
        if r.variable != PROBABILITY or not fused:
            done["backend"] = r.backend
        peaks[r.worker] = max(peaks.get(r.worker, 0.0), r.peak_rss_mb)
        if progress is not None:
            progress(done["traces"], total)

    runner = _Runner(workers, scheduler)
    try:
        for var in passes:
            step = blocks[var.axis]
            n = survey.length(var.axis)
            calls = []
            for a in range(0, n, step):
                if store.is_done(var.name, a):
                    done["resumed"] += 1
                    done["traces"] += int(
                        (
                            survey.live[a : a + step]
                            if var.axis == "inline"
                            else survey.live[:, a : a + step]
                        ).sum()
                    )
                    continue
                calls.append((job, var, a, min(n, a + step), not fused))
            runner.map(run_section_block, calls, on_result)
        if fused:
            step = blocks["inline"]
            calls = []
            for a in range(0, ni, step):
                if store.is_done(PROBABILITY, a):
                    done["resumed"] += 1
                    continue
                calls.append((job, tuple(v.name for v in passes), a, min(ni, a + step)))
            runner.map(run_fuse_block, calls, on_result)
    except SaltsegError:
        store.discard()  # bad input (NaN amplitudes...): nothing to resume from
        raise
    finally:
        runner.close()
    if fused and not keep_axes:
        for var in passes:
            store.drop(var.name)
            store.drop(var.name.replace(PROBABILITY, SPREAD))
    result = store.finish()
    live_samples = live_traces * survey.shape[2]
    return SurveyReport(
        out=result,
        shape=survey.shape,
        axes=axes,
        clip=amp_clip,
        blocks=done["blocks"] + done["resumed"],
        resumed_blocks=done["resumed"],
        workers=runner.workers,
        seconds=time.perf_counter() - started,
        salt_fraction=None if done["resumed"] else done["salt"] / max(live_samples, 1),
        live_traces=live_traces,
        non_finite=done["bad"],
        backend=done["backend"],
        peak_rss_mb_per_worker=peaks,
    )
