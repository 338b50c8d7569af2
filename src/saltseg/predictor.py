"""The one predictor: a weighted ensemble of models with flip TTA on one of the inference backends
(:mod:`saltseg.backends`: torch with autocast and channels-last, ONNX Runtime, OpenVINO), used by the OOF
step of training, ``saltseg predict``, sliding windows (``volume``) and the Python API.

Members without a mask head (the separate empty/non-empty classifier) feed only the image-level salt
probability; the mask average is over the members that have one, with their weights renormalised, in
out-of-fold predictions and in prediction alike.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from saltseg.artifacts.folders import Member
from saltseg.backends import (
    CALIBRATION_TILES,
    CHECK_TILES,
    BackendCheck,
    BackendName,
    GraphRunner,
    MemberRunner,
    TorchRunner,
    autocast_for,
    candidates,
    check_precision,
    compare_outputs,
    ensemble_graph,
    member_graph,
)
from saltseg.errors import CheckpointError, SaltsegError
from saltseg.inference.tta import average_outputs, predict_batch

__all__ = [
    "ArrayPrediction",
    "EnsemblePredictor",
    "autocast_for",
    "default_device",
    "one_line",
    "predict_batch",
]

log = logging.getLogger(__name__)


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, else the CUDA GPU when torch finds one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def one_line(message: str, limit: int = 300) -> str:
    """``message`` on one line of at most about ``limit`` characters (pydantic's validation errors span
    several lines with a link to its docs; a state-dict mismatch lists every missing key)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    text = " ".join(ln for ln in lines if not ln.startswith("For further information"))
    if len(text) > limit:
        text = text[:limit].rstrip(", ") + "..."
    return text + ")" * max(text.count("(") - text.count(")"), 0)


@dataclass
class ArrayPrediction:
    """Probabilities of tiles in memory: the ensemble's mask average (None without a mask member), its
    image-level salt probabilities (None without a salt head) and, when asked for, each member's masks."""

    probs: np.ndarray | None
    salt: np.ndarray | None
    member_probs: list[np.ndarray | None] | None = None


class EnsemblePredictor:
    """Weighted average of models' sigmoid probabilities (with flip TTA), batch by batch.

    Build it from loaded models (``EnsemblePredictor(models, weights)``) or from checkpoint files
    (:meth:`load`). ``backend`` is ``torch`` (the default here), ``onnxruntime``, ``openvino`` or
    ``auto`` (:func:`saltseg.backends.candidates`); a graph backend is checked against torch fp32 on the
    first tiles it predicts (:attr:`check`), and ``auto`` falls back to the next backend when the check
    or the export fails. :attr:`backend` names the one in use once a batch has been predicted.
    ``fuse`` runs a graph backend's members as one graph (the weighted average and flip TTA inside it:
    one call per batch instead of one per member); torch runs members one by one either way, and a
    fused predictor cannot return each member's masks.
    """

    def __init__(
        self,
        models: Sequence[torch.nn.Module],
        weights: Sequence[float] | None = None,
        device: str | torch.device | None = None,
        hflip: bool = True,
        channels_last: bool = True,
        compile: bool = False,
        autocast: bool = True,
        backend: BackendName = "torch",
        precision: str = "auto",
        fuse: bool = False,
    ) -> None:
        if not models:
            raise CheckpointError("no model given")
        self.device = default_device(device)
        weights = [1.0 / len(models)] * len(models) if weights is None else [float(w) for w in weights]
        if len(weights) != len(models):
            raise ValueError(f"{len(weights)} weights for {len(models)} models")
        self.weights = weights
        self.hflip, self.channels_last, self.autocast = hflip, channels_last, autocast
        self.precision = precision
        self.fuse = fuse and len(models) > 1
        self._torch = [
            TorchRunner(m, self.device, hflip, channels_last, autocast, compile=compile) for m in models
        ]
        self.models = [r.model for r in self._torch]
        if compile and backend == "auto":  # compiling is a torch path: asked for, it is the backend
            backend = "torch"
        self._candidates = candidates(backend, self.device)
        check_precision(precision, self._candidates)
        self._explicit = backend != "auto"
        self.backend: str | None = "torch" if self._candidates == ["torch"] else None
        self.check: BackendCheck | None = None
        self._graphs: dict[tuple[int, int], list[MemberRunner]] = {}
        # the largest tile side every model takes: its input square, unless it resizes its input
        sizes = [
            math.inf if cfg.resize_to else int(cfg.input_size)
            for cfg in (getattr(m, "config", None) for m in models)
            if cfg is not None
        ]
        self.tile_size = min(sizes) if sizes else 128

    @classmethod
    def load(cls, members: Sequence[Member], **kwargs: object) -> EnsemblePredictor:
        """Load every member's checkpoint (safetensors) and weigh it."""
        from saltseg.checkpoints import load_model

        models = []
        for m in members:
            try:
                models.append(load_model(m.path))
            except CheckpointError as exc:  # some messages quote a multi-line validation error
                raise CheckpointError(one_line(exc.message), m.path) from None
        return cls(models, [m.weight for m in members], **kwargs)  # type: ignore[arg-type]

    def _graph_runners(self, backend: str, x: torch.Tensor) -> list[GraphRunner]:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        calibration = (
            np.ascontiguousarray(x[:CALIBRATION_TILES].float().cpu().numpy())
            if self.precision == "int8"
            else None
        )
        if self.fuse:
            graph = ensemble_graph(self.models, self.weights, size, self.hflip, calibration)
            return [GraphRunner(backend, *graph, precision=self.precision)]
        return [
            GraphRunner(backend, *member_graph(m, size, self.hflip, calibration), precision=self.precision)
            for m in self.models
        ]

    def _reference(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Every member in torch fp32 on ``x`` (the accuracy check's reference; one weighted average
        when the members are fused)."""
        with torch.no_grad():
            outs = [predict_batch(m, x.to(self.device), self.hflip, self.channels_last) for m in self.models]
        return [average_outputs(outs, self.weights)] if self.fuse else outs

    def _runners(self, x: torch.Tensor) -> list[MemberRunner]:
        """The members' runners for tiles of ``x``'s size, choosing the backend on the first call."""
        size = (int(x.shape[-2]), int(x.shape[-1]))
        if self.backend == "torch":
            return self._torch
        if size in self._graphs:
            return self._graphs[size]
        tried = [self.backend] if self.backend else self._candidates
        if self.precision == "int8":  # int8 is asked for: no silent fallback to torch
            tried = [b for b in tried if b != "torch"]
        sample = x[:CHECK_TILES]
        for backend in tried:
            if backend == "torch":
                self.backend = "torch"
                return self._torch
            try:
                runners = self._graph_runners(backend, x)
                check = compare_outputs(backend, [r(sample) for r in runners], self._reference(sample))
                check.precision = runners[0].precision
            except Exception as exc:  # the exporter's, the quantiser's or the runtime's own errors too
                reason = (
                    exc.message if isinstance(exc, SaltsegError) else one_line(f"{type(exc).__name__}: {exc}")
                )
                if self._explicit or self.backend:
                    raise SaltsegError(f"backend {backend} cannot run the model: {reason}") from None
                log.warning("backend %s unusable (%s); trying the next one", backend, reason)
                continue
            if not check.passed:
                if self._explicit or self.backend:
                    raise SaltsegError(f"backend {check.describe()} fails the accuracy check")
                log.warning("backend %s fails the accuracy check; trying the next one", check.describe())
                continue
            self.backend, self.check = backend, check
            self._graphs[size] = runners
            return runners
        if self.precision == "int8":
            raise SaltsegError("no graph backend could run the int8 model (see the warnings above)")
        self.backend = "torch"
        return self._torch

    def prepare(self, images: np.ndarray) -> None:
        """Choose the backend (and calibrate an int8 graph) on uint8 tiles (N,H,W) before predicting
        them batch by batch: int8 is calibrated on up to :data:`CALIBRATION_TILES` of these, not on the
        first batch only."""
        self._runners(
            torch.from_numpy(np.ascontiguousarray(images[:CALIBRATION_TILES])).float().div_(255)[:, None]
        )

    @torch.no_grad()
    def predict_unit(
        self, x: torch.Tensor, with_members: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, list[torch.Tensor | None]]:
        """The ensemble on a batch (B,1,H,W) in [0, 1]: mask probabilities (B,H,W) or None, salt
        probabilities (B,) or None, and (``with_members``) each member's masks (None for a classifier)."""
        runners = self._runners(x)
        weights = self.weights
        if len(runners) != len(weights):  # one fused graph: the average is computed inside it
            if with_members:
                raise SaltsegError("a fused ensemble cannot return each member's masks (fuse=False)")
            weights = [1.0]
        outs = [run(x) for run in runners]
        average = average_outputs(outs, weights)
        probs = average["mask"][:, 0] if "mask" in average else None
        per_member = [out["mask"][:, 0] if "mask" in out else None for out in outs] if with_members else []
        return probs, average.get("salt"), per_member

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N,H,W) float32 of uint8 tiles (N,H,W) (zeros when no member has a mask head),
        and image-level salt probabilities (or None)."""
        x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255)[:, None]
        probs, salt, _ = self.predict_unit(x)
        out = np.zeros(images.shape, np.float32) if probs is None else probs.float().cpu().numpy()
        return out, None if salt is None else salt.float().cpu().numpy()

    def predict_tiles(
        self, images: np.ndarray, batch_size: int = 64, with_members: bool = False
    ) -> ArrayPrediction:
        """The ensemble over uint8 tiles (N,H,W) already in memory, ``batch_size`` at a time; every
        member runs once per tile (``with_members`` keeps each member's masks as well)."""
        n = len(images)
        probs: np.ndarray | None = None
        salt: np.ndarray | None = None
        members: list[np.ndarray | None] = [None] * len(self.models)
        for s in range(0, n, batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).float().div_(255)[:, None]
            p, sb, per = self.predict_unit(x, with_members)
            if p is not None:
                probs = np.zeros(images.shape, np.float32) if probs is None else probs
                probs[s : s + batch_size] = p.float().cpu().numpy()
            if sb is not None:
                salt = np.zeros(n, np.float32) if salt is None else salt
                salt[s : s + batch_size] = sb.float().cpu().numpy()
            for k, m in enumerate(per):
                if m is not None:
                    if members[k] is None:
                        members[k] = np.zeros(images.shape, np.float32)
                    members[k][s : s + batch_size] = m.float().cpu().numpy()  # type: ignore[index]
        return ArrayPrediction(probs, salt, members if with_members else None)

    def predict_array(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict_tiles` as (probabilities, zeros without a mask member; salt or None)."""
        pred = self.predict_tiles(images, batch_size)
        probs = np.zeros(images.shape, np.float32) if pred.probs is None else pred.probs
        return probs, pred.salt
