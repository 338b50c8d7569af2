"""Post-processing settings (``postprocess.json``): the typed record ``saltseg tune`` writes and
``saltseg predict`` applies (see :mod:`saltseg.inference.postprocess` for the steps themselves)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from saltseg.errors import ConfigError
from saltseg.utils.io import write_json


class PostprocessConfig(BaseModel):
    """Settings that turn probabilities into masks (applied in the order of the fields).

    Attributes:
        threshold: Pixel probability above which a pixel is salt.
        seed_threshold: If set (above ``threshold``), hysteresis: a salt region (8-connected pixels
            above ``threshold``) is kept only when one of its pixels lies above ``seed_threshold``, so a
            low threshold can grow the masks that a confident pixel starts without adding faint ones.
        flat_empty: Tiles of a single flat grey value (no signal) are forced empty.
        min_area: Masks with fewer salt pixels than this are emptied.
        empty_threshold: If set and the model has an image-level head, tiles whose salt probability is
            below it are emptied.
        crf: Refine with a dense CRF (pydensecrf2) before thresholding.
        crf_iterations, crf_sxy, crf_srgb, crf_compat: CRF inference steps and pairwise kernel settings.
    """

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, gt=0, lt=1)
    seed_threshold: float | None = Field(None, gt=0, lt=1)
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
