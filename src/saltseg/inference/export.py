"""Export a model or an ensemble to one ONNX graph that outputs salt probabilities.

The graph takes ``image``: (batch, 1, size, size) float32 in [0, 1] (uint8 tile / 255; the batch axis is
dynamic) and returns ``mask``: (batch, 1, size, size) salt probabilities, the weighted average of the
members' sigmoid outputs (with the horizontal-flip TTA inside the graph unless ``hflip=False``), plus
``salt``: (batch,) image-level probabilities when the members have an image-level head. Normalisation,
padding to the network size and cropping back all happen inside the graph.

The file carries metadata (``metadata_props``): the member checkpoints and weights, TTA, input size.

Example:
    >>> from saltseg.inference.export import export_onnx
    >>> export_onnx(["runs/r1"], "salt.onnx")
    >>> import onnxruntime as ort
    >>> session = ort.InferenceSession("salt.onnx")
    >>> mask = session.run(["mask"], {"image": tiles.astype("float32")[:, None] / 255})[0]
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from saltseg.errors import CheckpointError, SaltsegError
from saltseg.inference.tta import average_outputs, predict_batch
from saltseg.utils.io import atomic_path

__all__ = ["EnsembleProbabilities", "ExportReport", "export_module", "export_onnx"]


class EnsembleProbabilities(nn.Module):
    """Weighted average of the members' sigmoid probabilities, with optional flip TTA.

    Args:
        members: Models returning dicts of logits (``mask`` (B,1,H,W) and/or ``salt`` (B,)).
        weights: One weight per member (normalised to sum to 1).
        hflip: Also predict the mirrored image and average (the mask mirrored back); the mirrored copy
            goes through each member in the same call as the original (one batch of 2B).
        outputs: Which outputs to return, in order (``"mask"``, ``"salt"``); members lacking one are
            left out of that output's average.
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        weights: Sequence[float] | None = None,
        hflip: bool = True,
        outputs: Sequence[str] = ("mask",),
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        w = [1.0] * len(members) if weights is None else [float(v) for v in weights]
        if len(w) != len(members) or not members:
            raise ValueError(f"need one weight per member, got {len(w)} for {len(members)}")
        self.weights = [v / sum(w) for v in w]
        self.hflip = hflip
        self.outputs = tuple(outputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 1, H, W) in [0, 1] -> the configured outputs, probabilities."""
        outs = [predict_batch(m, x, hflip=self.hflip, batch_views=True) for m in self.members]
        average = average_outputs(outs, self.weights)
        return tuple(average[name] for name in self.outputs)


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote."""

    path: Path
    members: list[Path]
    outputs: list[str]
    opset: int
    exporter: str
    max_abs_diff: float | None


def _probe_outputs(members: Sequence[nn.Module], size: int) -> list[str]:
    x = torch.full((1, 1, size, size), 0.5)
    names: set[str] = set()
    with torch.no_grad():
        for m in members:
            names |= {n for n in m(x) if n in ("mask", "salt")}
    return [n for n in ("mask", "salt") if n in names]


Exporter = Literal["auto", "dynamo", "torchscript"]
DYNAMO_MIN_OPSET = 18  # the dynamo exporter cannot go below opset 18 (no Pad adapter to 17)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _export_to(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    outputs: list[str],
    opset: int | None,
    exporter: Exporter = "auto",
) -> str:
    """Export ``module`` to ``path``; returns the exporter used.

    ``auto`` uses the torch.export-based (dynamo) exporter, or the TorchScript one when ``opset`` is
    below 18 or the dynamo export fails.
    """
    if exporter == "dynamo" and opset is not None and opset < DYNAMO_MIN_OPSET:
        raise SaltsegError(f"the dynamo exporter needs opset >= {DYNAMO_MIN_OPSET}, got {opset}")
    tries = (
        [exporter]
        if exporter != "auto"
        else (
            ["torchscript"] if opset is not None and opset < DYNAMO_MIN_OPSET else ["dynamo", "torchscript"]
        )
    )
    errors: list[str] = []
    for name in tries:
        kwargs: dict[str, Any] = (
            {
                "dynamo": True,
                "external_data": False,  # one self-contained file (fine below 2 GB)
                "dynamic_shapes": {"x": {0: torch.export.Dim("batch", min=1, max=65536)}},
                "opset_version": opset,
            }
            if name == "dynamo"
            else {
                "dynamo": False,
                "dynamic_axes": {"image": {0: "batch"}, **{n: {0: "batch"} for n in outputs}},
                "opset_version": opset or 17,
            }
        )
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, (example,), str(path), input_names=["image"], output_names=outputs, **kwargs
                )
            return name
        except Exception as exc:  # the next exporter, if any
            errors.append(f"{name}: {_first_line(exc)}")
    raise SaltsegError("ONNX export failed (" + "; ".join(errors) + ")")


def export_module(
    module: nn.Module,
    out_file: str | Path,
    outputs: Sequence[str],
    size: int | tuple[int, int] = 101,
    opset: int | None = None,
    metadata: dict[str, str] | None = None,
    verify: bool = True,
    atol: float = 1e-4,
    exporter: Exporter = "auto",
) -> ExportReport:
    """Export ``module`` (``(B,1,H,W) -> tuple of outputs``, ``size`` = H = W or (H, W)) to ``out_file``
    atomically.

    With ``verify``, runs the exported graph with onnxruntime on a batch of 3 random tiles (a batch
    size different from the export's, so the dynamic axis is exercised) and checks it against torch.
    """
    import onnx

    out_file = Path(out_file)
    module = module.eval().float()
    hw = (size, size) if isinstance(size, int) else tuple(size)
    example = torch.rand(2, 1, *hw, generator=torch.Generator().manual_seed(0))
    with atomic_path(out_file) as tmp:
        used = _export_to(module, example, tmp, list(outputs), opset, exporter)
        model = onnx.load(str(tmp))
        for key, value in (metadata or {}).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        model.producer_name = "saltseg"
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
        opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        diff = _verify(module, tmp, hw, atol, out_file) if verify else None
    return ExportReport(out_file, [], list(outputs), int(opset_used), used, diff)


def _verify(module: nn.Module, path: Path, hw: tuple[int, int], atol: float, name: Path) -> float:
    import onnxruntime as ort

    x = torch.rand(3, 1, *hw, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = module(x)
    diff = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected, strict=True))
    if not diff <= atol:
        raise SaltsegError(f"the exported graph differs from torch by {diff:.2g} (> {atol:g})", name)
    return diff


def export_onnx(
    model_paths: Sequence[str | Path],
    out_file: str | Path,
    opset: int | None = None,
    hflip: bool = True,
    size: int = 101,
    verify: bool = True,
    exporter: Exporter = "auto",
) -> ExportReport:
    """Export the model(s) named by ``model_paths`` (checkpoints, fold, run or ensemble folders) as one
    ONNX graph averaging their probabilities (see the module docstring).

    Args:
        model_paths: MODEL arguments, as for ``saltseg predict``.
        out_file: The ``.onnx`` file (written atomically, weights inside the file).
        opset: ONNX opset (default: the exporter's).
        hflip: Put the horizontal-flip TTA inside the graph.
        size: Tile side of the graph's input.
        verify: Check onnxruntime against torch after exporting.
        exporter: ``dynamo`` (torch.export based), ``torchscript`` (legacy, faster, any opset) or
            ``auto`` (dynamo; TorchScript for opset < 18 or when dynamo fails).

    Raises:
        CheckpointError: If a checkpoint is missing or corrupt.
        SaltsegError: If the export fails or does not match torch.
    """
    from saltseg.artifacts import resolve_models
    from saltseg.checkpoints import load_model

    if size < 1:
        raise SaltsegError(f"size must be positive, got {size}")
    pairs = [(m.path, m.weight) for m in resolve_models(list(model_paths))]
    members = [load_model(p) for p, _ in pairs]
    outputs = _probe_outputs(members, size)
    if not outputs:
        raise CheckpointError("the models have neither a mask nor a salt output")
    module = EnsembleProbabilities(members, [w for _, w in pairs], hflip=hflip, outputs=outputs)
    metadata = {
        "saltseg_members": json.dumps([{"path": str(p), "weight": w} for p, w in pairs]),
        "saltseg_hflip": str(hflip).lower(),
        "saltseg_input": f"image: (batch, 1, {size}, {size}) float32 in [0, 1] (uint8 tile / 255)",
        "saltseg_outputs": ", ".join(f"{n}: probabilities" for n in outputs),
    }
    report = export_module(
        module, out_file, outputs, size=size, opset=opset, metadata=metadata, verify=verify, exporter=exporter
    )
    report.members = [p for p, _ in pairs]
    return report
