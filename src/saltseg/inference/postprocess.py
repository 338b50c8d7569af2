"""Post-processing of probabilities into final masks: threshold (with optional hysteresis seeds), flat
tiles forced empty, minimum salt area, empty-head gating, and an optional dense CRF. Settings
(:class:`PostprocessConfig`, in :mod:`saltseg.artifacts.postprocess`) are tuned on out-of-fold
predictions by :mod:`saltseg.inference.tune` and saved as ``postprocess.json``."""

from __future__ import annotations

import numpy as np

from saltseg.artifacts.names import POSTPROCESS_FILE
from saltseg.artifacts.postprocess import (
    PostprocessConfig,
    load_postprocess,
    save_postprocess,
    validate_postprocess,
)
from saltseg.errors import SaltsegError

__all__ = [
    "POSTPROCESS_FILE",
    "PostprocessConfig",
    "apply_postprocess",
    "dense_crf",
    "flat_tiles",
    "keep_seeded_regions",
    "load_postprocess",
    "save_postprocess",
    "validate_postprocess",
]


def flat_tiles(images: np.ndarray) -> np.ndarray:
    """True for tiles whose pixels all have one value."""
    flat = images.reshape(len(images), -1)
    return flat.min(axis=1) == flat.max(axis=1)


def keep_seeded_regions(masks: np.ndarray, probs: np.ndarray, seed_threshold: float) -> np.ndarray:
    """``masks`` (N,H,W bool) with only the 8-connected regions of each tile that hold a pixel of
    ``probs`` above ``seed_threshold``."""
    from scipy import ndimage

    within_tile = np.zeros((3, 3, 3), dtype=bool)
    within_tile[1] = True  # 8-connected inside a tile, never across tiles
    labels, n = ndimage.label(masks, structure=within_tile)
    seeded = np.zeros(n + 1, dtype=bool)
    seeded[labels[probs > seed_threshold]] = True
    seeded[0] = False  # the background
    return seeded[labels]


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
    if cfg.seed_threshold is not None:
        masks = keep_seeded_regions(masks, probs, cfg.seed_threshold)
    if cfg.flat_empty and images is not None:
        masks[flat_tiles(images)] = False
    if cfg.min_area > 0:
        masks[masks.reshape(len(masks), -1).sum(axis=1) < cfg.min_area] = False
    if cfg.empty_threshold is not None and salt is not None:
        masks[np.asarray(salt) < cfg.empty_threshold] = False
    return masks
