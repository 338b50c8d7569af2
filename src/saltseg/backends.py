"""Inference backends: what runs one ensemble member's forward pass (with its flip TTA).

- ``torch``: the model itself, bf16 autocast (on CUDA and on CPUs with bf16 instructions) and channels-last,
  optionally compiled;
- ``onnxruntime``: the member exported to an ONNX graph (sigmoid and flip TTA inside, the flipped copy
  batched with the original), run by ONNX Runtime's CPU provider in fp32;
- ``openvino``: the same graph compiled by OpenVINO for the CPU, which runs it in bf16 on CPUs with
  AMX / AVX-512 bf16 (its default inference precision there) and in fp32 elsewhere.

``precision`` of the graph backends: ``auto`` (the backend's default), ``fp32``, or ``int8``: the graph
quantised (ONNX QDQ: int8 weights per channel, uint8 activations) with ONNX Runtime's static quantiser,
calibrated on the first tiles the predictor is given (at most :data:`CALIBRATION_TILES`), then run by
either backend (OpenVINO and ONNX Runtime both execute QDQ graphs in int8, with AVX-512 VNNI / AMX).

``auto`` picks the first of :data:`AUTO_ORDER` that is installed and whose output on the first tiles
matches torch fp32 within :data:`TOLERANCE` (measured fastest first on the project's CPU: BENCHMARKS.md,
"Inference backends"); on a CUDA device it is torch. Exported graphs are cached in :func:`cache_dir`
under a hash of the member's weights, so a model is exported once per tile size.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from saltseg.errors import SaltsegError
from saltseg.inference.export import EnsembleProbabilities, export_module
from saltseg.inference.tta import predict_batch
from saltseg.utils.device import cpu_has_native_bf16
from saltseg.utils.io import atomic_path, atomic_write

log = logging.getLogger(__name__)

BackendName = Literal["auto", "torch", "onnxruntime", "openvino"]
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "openvino")
#: ``auto``'s order on a CPU, fastest first (BENCHMARKS.md, "Inference backends").
AUTO_ORDER: tuple[str, ...] = ("openvino", "onnxruntime", "torch")
#: The most a backend's probabilities may differ from torch fp32 on the check tiles: the largest pixel
#: difference, and the mean over pixels (bf16 and fp32 paths).
TOLERANCE = {"max": 0.15, "mean": 0.005}
#: The same for an int8 graph (quantised activations move every pixel a little).
INT8_TOLERANCE = {"max": 0.25, "mean": 0.02}
CHECK_TILES = 8
CALIBRATION_TILES = 256
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "int8")

#: A member's forward pass: (B,1,H,W) float in [0, 1] on the predictor's device -> probabilities:
#: ``mask`` (B,1,H,W) float32 (flip TTA applied) and/or ``salt`` (B,).
MemberRunner = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def autocast_for(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPUs with bf16 instructions and on CUDA GPUs that support it (as in training),
    else fp16 on CUDA; fp32 on other CPUs (emulated bf16 is slower there), elsewhere or when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return torch.autocast("cuda", dtype=torch.bfloat16 if bf16 else torch.float16)
    return contextlib.nullcontext()


def installed(backend: str) -> bool:
    """Whether ``backend``'s package can be imported."""
    return backend == "torch" or importlib.util.find_spec(backend) is not None


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$SALTSEG_CACHE``, else ``~/.cache/saltseg``."""
    root = os.environ.get("SALTSEG_CACHE") or Path.home() / ".cache" / "saltseg"
    return Path(root) / "graphs"


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of ``model``'s configuration and every tensor of its state (names, shapes, bytes)."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "model_dump_json"):
        h.update(config.model_dump_json().encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:20]


def _outputs_of(model: torch.nn.Module, size: tuple[int, int]) -> list[str]:
    with torch.no_grad():
        out = model(torch.full((1, 1, *size), 0.5))
    return [n for n in ("mask", "salt") if n in out]


def member_graph(
    model: torch.nn.Module, size: tuple[int, int], hflip: bool, calibration: np.ndarray | None = None
) -> tuple[Path, list[str]]:
    """The ONNX graph of one member for (H, W) tiles, from the cache or exported now; its outputs.

    With ``calibration`` ((N,1,H,W) float32 tiles), the int8 (QDQ) graph calibrated on them.
    """
    return ensemble_graph([model], [1.0], size, hflip, calibration)


def ensemble_graph(
    models: Sequence[torch.nn.Module],
    weights: Sequence[float],
    size: tuple[int, int],
    hflip: bool,
    calibration: np.ndarray | None = None,
) -> tuple[Path, list[str]]:
    """One ONNX graph of the weighted ensemble of ``models`` (flip TTA inside), cached like a member's.

    Outputs are the averages the ensemble predictor computes: a member without a mask head is left out
    of the mask average, one without a salt head out of the salt average.
    """
    models = [m.eval() for m in models]
    found: set[str] = set()
    for m in models:
        found |= set(_outputs_of(m, size))
    outputs = [n for n in ("mask", "salt") if n in found]
    digest = weights_digest(models[0])
    if len(models) > 1:
        parts = [weights_digest(m) for m in models] + [f"{w:.12g}" for w in weights]
        digest = "ens" + hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]
    key = f"{digest}-{size[0]}x{size[1]}-{'flip' if hflip else 'noflip'}"
    if calibration is not None:
        key += "-int8-" + hashlib.sha256(np.ascontiguousarray(calibration).tobytes()).hexdigest()[:12]
    path = cache_dir() / f"{key}.onnx"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        with contextlib.suppress(ValueError, OSError, KeyError):
            if json.loads(meta.read_text())["outputs"] == outputs:
                return path, outputs
    path.parent.mkdir(parents=True, exist_ok=True)
    if calibration is None:
        # the graph works in float32 on the CPU: export CPU float copies, never the caller's models
        module = EnsembleProbabilities(
            [_cpu_float_copy(m) for m in models], weights, hflip=hflip, outputs=outputs
        )
        export_module(module, path, outputs, size=size, verify=False)
    else:
        fp32, _ = ensemble_graph(models, weights, size, hflip)
        with atomic_path(path) as tmp:
            quantize_graph(fp32, tmp, calibration)
    with atomic_write(meta, "w") as f:
        f.write(json.dumps({"outputs": outputs}))
    return path, outputs


def quantize_graph(src: Path, dst: Path, calibration: np.ndarray, batch: int = 16) -> None:
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations, min-max ranges) of
    the graph ``src`` into ``dst``, calibrated on ``calibration`` (N,1,H,W) float32 tiles."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Tiles(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(range(0, len(calibration), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self._batches, None)
            return None if start is None else {"image": calibration[start : start + batch]}

    logging.disable(logging.WARNING)  # its advice to pre-process the graph, on the root logger
    try:
        quantize_static(
            str(src),
            str(dst),
            Tiles(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    except Exception as exc:  # an operator the quantiser cannot handle, and the like
        lines = str(exc).strip().splitlines()
        raise SaltsegError(
            f"int8 quantisation failed ({lines[0] if lines else type(exc).__name__})"
        ) from None
    finally:
        logging.disable(logging.NOTSET)


def _cpu_float_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).float().eval()


class GraphRunner:
    """A member's exported graph run by ONNX Runtime or OpenVINO on the CPU."""

    def __init__(self, backend: str, path: Path, outputs: list[str], precision: str = "auto") -> None:
        self.backend, self.outputs = backend, outputs
        #: what the backend computes in (int8 graphs: int8 where quantised)
        self.precision = "int8" if precision == "int8" else "fp32"
        if backend == "onnxruntime":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            self._run = lambda x: self._session.run(outputs, {"image": x})
        elif backend == "openvino":
            import openvino as ov

            config = {"PERFORMANCE_HINT": "LATENCY"}
            if precision == "fp32":
                config["INFERENCE_PRECISION_HINT"] = "f32"
            compiled = ov.Core().compile_model(str(path), "CPU", config)
            request = compiled.create_infer_request()
            if precision != "int8":
                hint = compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino Type
                name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
                self.precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(name, name)

            def run(x: np.ndarray) -> list[np.ndarray]:
                result = request.infer({0: x})
                return [np.asarray(result[compiled.output(i)]) for i in range(len(outputs))]

            self._run = run
        else:
            raise SaltsegError(f"unknown graph backend {backend!r}")

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        arrays = self._run(np.ascontiguousarray(x.detach().float().cpu().numpy()))
        out = {
            name: torch.from_numpy(np.asarray(a, np.float32))
            for name, a in zip(self.outputs, arrays, strict=True)
        }
        if "salt" in out:
            out["salt"] = out["salt"].reshape(-1)
        return out


class TorchRunner:
    """A member run by torch: bf16 autocast where supported, channels-last, optionally compiled."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        hflip: bool = True,
        channels_last: bool = True,
        autocast: bool = True,
        compile: bool = False,
    ) -> None:
        model = model.to(device).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._forward = torch.compile(model) if compile else model
        self.device, self.hflip, self.channels_last, self.autocast = device, hflip, channels_last, autocast

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with autocast_for(self.device, enabled=self.autocast):
            return predict_batch(self._forward, x.to(self.device), self.hflip, self.channels_last)


@dataclass
class BackendCheck:
    """How a backend's probabilities compared with torch fp32 on the first tiles it predicted."""

    backend: str
    max_diff: float
    mean_diff: float
    tiles: int
    precision: str = "fp32"

    @property
    def passed(self) -> bool:
        """Within :data:`TOLERANCE` (:data:`INT8_TOLERANCE` for an int8 graph)."""
        tol = INT8_TOLERANCE if self.precision == "int8" else TOLERANCE
        return self.max_diff <= tol["max"] and self.mean_diff <= tol["mean"]

    def describe(self) -> str:
        """One line for the command's output."""
        return (
            f"{self.backend} {self.precision} (probabilities within {self.max_diff:.3f} of torch fp32 at "
            f"most, {self.mean_diff:.4f} on average, on {self.tiles} tiles)"
        )


def compare_outputs(
    backend: str, got: list[dict[str, torch.Tensor]], want: list[dict[str, torch.Tensor]]
) -> BackendCheck:
    """:class:`BackendCheck` of members' outputs ``got`` against the torch fp32 outputs ``want``."""
    max_diff = mean_diff = 0.0
    tiles = 0
    for g, w in zip(got, want, strict=True):
        for name in w:
            d = (g[name].float().cpu() - w[name].float().cpu()).abs()
            max_diff = max(max_diff, float(d.max()) if d.numel() else 0.0)
            mean_diff = max(mean_diff, float(d.mean()) if d.numel() else 0.0)
            tiles = max(tiles, int(w[name].shape[0]))
    if not (np.isfinite(max_diff) and np.isfinite(mean_diff)):
        max_diff = mean_diff = float("inf")
    return BackendCheck(backend, max_diff, mean_diff, tiles)


def check_precision(precision: str, backends: list[str]) -> None:
    """Refuse an unknown ``precision``, or int8 with torch alone."""
    if precision not in PRECISIONS:
        raise SaltsegError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "int8" and backends == ["torch"]:
        raise SaltsegError("int8 needs a graph backend (onnxruntime or openvino), not torch")


def candidates(requested: str, device: torch.device) -> list[str]:
    """The backends to try, in order, for ``requested`` on ``device``.

    Raises:
        SaltsegError: For an unknown backend, one that is not installed, or a graph backend on a GPU.
    """
    if requested == "auto":
        return ["torch"] if device.type != "cpu" else [b for b in AUTO_ORDER if installed(b)]
    if requested not in BACKENDS:
        raise SaltsegError(f"unknown backend {requested!r}; choose one of auto, {', '.join(BACKENDS)}")
    if not installed(requested):
        raise SaltsegError(f"backend {requested} is not installed (pip install {requested})")
    if requested != "torch" and device.type != "cpu":
        raise SaltsegError(f"backend {requested} runs on the CPU here; use --device cpu or --backend torch")
    return [requested]
