"""Post-processing of probabilities into final masks: threshold, flat tiles forced empty, minimum salt
area, empty-head gating, and an optional dense CRF. Settings are tuned on out-of-fold predictions by
:mod:`saltseg.inference.tune` and saved as ``postprocess.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from saltseg.errors import ConfigError, SaltsegError
from saltseg.utils.io import write_json

POSTPROCESS_FILE = "postprocess.json"


class PostprocessConfig(BaseModel):
    """Settings that turn probabilities into masks (applied in the order of the fields).

    Attributes:
        threshold: Pixel probability above which a pixel is salt.
        flat_empty: Tiles of a single flat grey value (no signal) are forced empty.
        min_area: Masks with fewer salt pixels than this are emptied.
        empty_threshold: If set and the model has an image-level head, tiles whose salt probability is
            below it are emptied.
        crf: Refine with a dense CRF (pydensecrf2) before thresholding.
        crf_iterations, crf_sxy, crf_srgb, crf_compat: CRF inference steps and pairwise kernel settings.
    """

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, gt=0, lt=1)
    flat_empty: bool = True
    min_area: int = Field(0, ge=0)
    empty_threshold: float | None = Field(None, ge=0, le=1)
    crf: bool = False
    crf_iterations: int = Field(5, ge=1)
    crf_sxy: float = Field(3.0, gt=0)
    crf_srgb: float = Field(10.0, gt=0)
    crf_compat: float = Field(5.0, gt=0)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        where = ".".join(str(x) for x in e["loc"]) or "settings"
        what = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"{where}: {what}")
    return "; ".join(parts)


def validate_postprocess(raw: object, source: str | Path = "post-processing settings") -> PostprocessConfig:
    """Validate a mapping of settings (one-line :class:`ConfigError` naming the bad key)."""
    try:
        return PostprocessConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid post-processing settings ({_validation_message(exc)})", source) from None


def load_postprocess(path: str | Path) -> PostprocessConfig:
    """Read a ``postprocess.json`` (one clear error for a bad file)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("post-processing file not found", path) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON ({exc})", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"unreadable post-processing file ({exc})", path) from None
    if not isinstance(raw, dict):
        raise ConfigError("post-processing settings must be a JSON object", path)
    raw.pop("notes", None)
    return validate_postprocess(raw, path)


def save_postprocess(path: str | Path, cfg: PostprocessConfig, **extra: object) -> None:
    """Write settings (plus ``extra`` notes such as the tuning log, under ``notes``) atomically."""
    write_json(path, {**cfg.model_dump(), "notes": extra})


def flat_tiles(images: np.ndarray) -> np.ndarray:
    """True for tiles whose pixels all have one value."""
    flat = images.reshape(len(images), -1)
    return flat.min(axis=1) == flat.max(axis=1)


def dense_crf(prob: np.ndarray, image: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """Refine one tile's salt probability with a fully connected CRF; returns the refined probability."""
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError as exc:  # pragma: no cover - installed with the crf extra
        raise SaltsegError("dense CRF needs pydensecrf2: pip install 'saltseg[crf]'") from exc
    h, w = prob.shape
    p = np.clip(prob.astype(np.float32), 1e-5, 1 - 1e-5)
    d = dcrf.DenseCRF2D(w, h, 2)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(np.stack([1 - p, p]))))
    d.addPairwiseGaussian(sxy=cfg.crf_sxy, compat=3)
    rgb = np.ascontiguousarray(np.repeat(image[..., None], 3, axis=-1).astype(np.uint8))
    d.addPairwiseBilateral(sxy=cfg.crf_sxy * 10, srgb=cfg.crf_srgb, rgbim=rgb, compat=cfg.crf_compat)
    q = np.array(d.inference(cfg.crf_iterations)).reshape(2, h, w)
    return q[1]


def apply_postprocess(
    probs: np.ndarray,
    cfg: PostprocessConfig,
    images: np.ndarray | None = None,
    salt: np.ndarray | None = None,
) -> np.ndarray:
    """Turn probabilities (N,H,W) into boolean masks with ``cfg``.

    ``images`` (uint8, N,H,W) are needed for ``flat_empty`` and ``crf``; ``salt`` (N,) for
    ``empty_threshold``.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if cfg.crf:
        if images is None:
            raise ValueError("dense CRF needs the images")
        probs = np.stack([dense_crf(p, im, cfg) for p, im in zip(probs, images, strict=True)])
    masks = probs > cfg.threshold
    if cfg.flat_empty and images is not None:
        masks[flat_tiles(images)] = False
    if cfg.min_area > 0:
        masks[masks.reshape(len(masks), -1).sum(axis=1) < cfg.min_area] = False
    if cfg.empty_threshold is not None and salt is not None:
        masks[np.asarray(salt) < cfg.empty_threshold] = False
    return masks
