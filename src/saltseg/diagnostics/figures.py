"""Matplotlib figures of the diagnostics (object-oriented API, no pyplot state: safe in any process).

Every function returns a :class:`matplotlib.figure.Figure`; :func:`png_bytes` renders it without any
metadata (no software name or URL in the file) and :func:`data_uri` embeds it in HTML.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from saltseg.diagnostics.runs import Snapshot, StageCurve

TRUTH_COLOR = "#22c55e"  # green contour
PRED_COLOR = "#ef4444"  # red fill + contour
COLORS = {"train": "#2563eb", "val": "#f97316", "score": "#16a34a", "lr": "#7c3aed"}
SERIES = ["#2563eb", "#f97316", "#16a34a", "#dc2626", "#7c3aed", "#0891b2", "#ca8a04", "#db2777"]


def png_bytes(fig: Figure, dpi: int = 100, software: str | None = None) -> bytes:
    """The figure as PNG bytes, with no metadata but ``software`` (the command that drew it) if given."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": software})
    return buf.getvalue()


def data_uri(fig: Figure, dpi: int = 100) -> str:
    """The figure as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig, dpi)).decode("ascii")


def _new(figsize: tuple[float, float]) -> Figure:
    return Figure(figsize=figsize, layout="constrained")


def _apply_rc(ax) -> None:
    ax.grid(True, alpha=0.3)
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)


# ------------------------------------------------------------------------------------ learning curves


def _stage_offsets(stages: list[StageCurve]) -> dict[int, int]:
    offsets, x = {}, 0
    for s in stages:
        offsets[s.index] = x
        x += int(s.epochs.max()) + 1 if s.epochs.size else 0
    return offsets


def learning_curves_figure(folds: list[tuple[str, list[StageCurve], list[Snapshot]]]) -> Figure:
    """One row per fold: train/validation loss, Kaggle validation score, learning rate per epoch.

    Epochs of all stages follow each other on one axis; dashed lines separate the stages, named at the
    top; snapshots are stars on the score panel, the fold's best checkpoint a ring.
    """
    n = max(len(folds), 1)
    fig = _new((12, 2.9 * n + 0.3))
    axes = fig.subplots(n, 3, squeeze=False)
    for row, (title, stages, snaps) in enumerate(folds):
        ax_loss, ax_score, ax_lr = axes[row]
        offsets = _stage_offsets(stages)
        for s in stages:
            x = s.epochs + offsets[s.index]
            first = s is stages[0]
            v = s.values
            ax_loss.plot(
                x, v["train_loss"], "o-", ms=3, color=COLORS["train"], label="train" if first else None
            )
            # with train.val_every only some epochs validate: their points joined, not left as dots
            seen = np.isfinite(v["val_score"]) | np.isfinite(v["val_loss"])
            for ax, key, color, label in (
                (ax_loss, "val_loss", COLORS["val"], "validation"),
                (ax_score, "val_score", COLORS["score"], "val score"),
            ):
                ax.plot(x[seen], v[key][seen], "o-", ms=3, color=color, label=label if first else None)
            lr = v["lr"]
            if np.isfinite(lr).any():
                ax_lr.plot(x, lr, "o-", ms=3, color=COLORS["lr"])
        total = max(
            (offsets[s.index] + (int(s.epochs.max()) + 1 if s.epochs.size else 0) for s in stages), default=1
        )
        for ax in (ax_loss, ax_score, ax_lr):
            _apply_rc(ax)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(-0.5, total - 0.5)
            for k, s in enumerate(stages):
                end = offsets[stages[k + 1].index] if k + 1 < len(stages) else total
                if k % 2 == 1:
                    ax.axvspan(offsets[s.index] - 0.5, end - 0.5, color="#e2e8f0", alpha=0.45, lw=0)
                if k:
                    ax.axvline(offsets[s.index] - 0.5, color="#64748b", ls="--", lw=1)
                label = (
                    s.name if not s.loss or s.loss == s.name or ax is not ax_loss else f"{s.name} ({s.loss})"
                )
                ax.text(
                    offsets[s.index] - 0.45,
                    0.99,
                    label,
                    transform=ax.get_xaxis_transform(),
                    ha="left",
                    va="top",
                    fontsize=7.5,
                    color="#334155",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7},
                )
        lrs = np.concatenate([s.values["lr"] for s in stages]) if stages else np.zeros(0)
        lrs = lrs[np.isfinite(lrs) & (lrs > 0)]
        if lrs.size and lrs.max() / lrs.min() > 20:
            ax_lr.set_yscale("log")
        if snaps:
            for kind, marker, size, face in (("snapshot", "*", 150, "#facc15"), ("best", "o", 110, "none")):
                pts = [
                    (offsets[p.stage] + p.epoch, p.val_score, p.name)
                    for p in snaps
                    if p.kind == kind and p.stage in offsets and p.val_score is not None
                ]
                if not pts:
                    continue
                xs, ys, _names = zip(*pts, strict=True)
                ax_score.scatter(
                    xs,
                    ys,
                    marker=marker,
                    s=size,
                    facecolor=face,
                    edgecolor="#0f172a",
                    zorder=5,
                    linewidths=1.0,
                    label="snapshots" if kind == "snapshot" else "best checkpoint",
                )
                if kind == "snapshot":
                    for x, y, name in pts:
                        ax_score.annotate(
                            name,
                            (x, y),
                            xytext=(0, -13),
                            textcoords="offset points",
                            ha="center",
                            fontsize=7,
                            color="#0f172a",
                        )
        ax_loss.set_title(f"{title}: loss")
        ax_score.set_title(f"{title}: Kaggle validation score")
        ax_lr.set_title(f"{title}: learning rate")
        ax_loss.set_ylabel("loss")
        ax_score.set_ylabel("score")
        ax_lr.set_ylabel("lr")
        for ax in (ax_loss, ax_score, ax_lr):
            ax.set_xlabel("epoch (stages in sequence)")
            ax.margins(y=0.22)
        ax_loss.legend(loc="best", fontsize=7.5, framealpha=0.8)
        ax_score.legend(loc="best", fontsize=7.5, framealpha=0.8)
    return fig


# ------------------------------------------------------------------------------------------ breakdowns


def breakdown_figure(groups: dict[str, list[dict]]) -> Figure:
    """Bars of the mean score per group (coverage class, depth band), tile counts and lost share above."""
    fig = _new((5.8 * len(groups), 3.4))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (title, rows) in zip(axes, groups.items(), strict=True):
        names = [str(r["group"]) for r in rows]
        scores = [float(r["score"]) for r in rows]
        bars = ax.bar(names, scores, color=SERIES[0] if title == "coverage" else SERIES[5], alpha=0.85)
        for b, r in zip(bars, rows, strict=True):
            ax.annotate(
                f"n={r['count']}\n-{100 * float(r['lost']):.1f}%",
                (b.get_x() + b.get_width() / 2, b.get_height()),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7.5,
            )
        _apply_rc(ax)
        ax.set_ylim(0, 1.22)
        ax.set_ylabel("mean Kaggle score")
        ax.set_title(f"score by {title} (n = tiles, -x% = share of total score lost)")
        ax.tick_params(axis="x", labelsize=8)
    return fig


def threshold_figure(
    curves: Sequence[tuple[str, np.ndarray, np.ndarray]], used: float | None = None
) -> Figure:
    """Kaggle score against the probability threshold, the best threshold of each curve starred."""
    fig = _new((7.5, 3.6))
    ax = fig.subplots()
    for i, (label, t, s) in enumerate(curves):
        color = SERIES[i % len(SERIES)]
        k = int(np.argmax(s))
        ax.plot(t, s, "o-", ms=3, color=color, label=f"{label} (best {s[k]:.4f} at {t[k]:.2f})")
        ax.scatter([t[k]], [s[k]], marker="*", s=180, color=color, edgecolor="#0f172a", zorder=5)
    if used is not None:
        ax.axvline(used, color="#64748b", ls=":", lw=1.2, label=f"threshold used: {used:.2f}")
    _apply_rc(ax)
    ax.set_xlabel("probability threshold")
    ax.set_ylabel("mean Kaggle score (out-of-fold)")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("score vs threshold")
    return fig


def study_figure(points: Sequence[tuple[float, float, str]]) -> Figure:
    """Score of each search trial against its minutes: complete trials filled, pruned ones hollow.

    Args:
        points: ``(minutes, score, state)``; the score of a pruned trial is its last validation score.
    """
    fig = _new((7.5, 3.6))
    ax = fig.subplots()
    for state, marker, face in (("COMPLETE", "o", SERIES[0]), ("PRUNED", "o", "none")):
        pts = [(m, v) for m, v, s in points if s == state]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(
                xs, ys, marker=marker, s=40, facecolors=face, edgecolors=SERIES[0], label=state.lower()
            )
    _apply_rc(ax)
    ax.set_xlabel("minutes of the trial")
    ax.set_ylabel("fold score")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("search trials: score vs minutes")
    return fig


# ------------------------------------------------------------------------------------------- tile plots


def draw_tile(
    ax,
    image: np.ndarray | None,
    truth: np.ndarray | None = None,
    pred: np.ndarray | None = None,
    title: str = "",
) -> None:
    """The image in grey, the truth as a green contour, the prediction as a red fill with contour."""
    shape = (
        image.shape
        if image is not None
        else (truth.shape if truth is not None else getattr(pred, "shape", (101, 101)))
    )
    if image is not None:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(np.full(shape, 40, np.uint8), cmap="gray", vmin=0, vmax=255)
        ax.text(
            shape[1] / 2,
            shape[0] / 2,
            "image\nnot found",
            ha="center",
            va="center",
            color="#cbd5e1",
            fontsize=7,
        )
    if pred is not None and pred.any():
        overlay = np.zeros((*pred.shape, 4))
        overlay[pred] = (0.94, 0.27, 0.27, 0.25)
        ax.imshow(overlay, interpolation="nearest")
        _outline(ax, pred, PRED_COLOR, 1.0)
    if truth is not None and truth.any():
        _outline(ax, truth, TRUTH_COLOR, 1.6)
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=7.5)


def _outline(ax, mask: np.ndarray, color: str, width: float) -> None:
    """Contour of a mask, padded so that salt touching (or filling) the tile is outlined at its edge."""
    h, w = mask.shape
    padded = np.pad(mask.astype(float), 1)
    ax.contour(
        np.arange(-1, w + 1), np.arange(-1, h + 1), padded, levels=[0.5], colors=[color], linewidths=width
    )


def _legend(fig: Figure, truth: bool = True, pred: bool = True) -> None:
    handles = []
    if truth:
        handles.append(Line2D([], [], color=TRUTH_COLOR, lw=2, label="truth contour"))
    if pred:
        handles.append(Patch(facecolor=(0.94, 0.27, 0.27, 0.35), edgecolor=PRED_COLOR, label="prediction"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)


def gallery_figure(
    images: Sequence[np.ndarray | None],
    truths: np.ndarray,
    preds: np.ndarray,
    titles: Sequence[str],
    cols: int = 6,
) -> Figure:
    """A grid of tiles with truth and prediction overlaid, one title per tile."""
    n = len(titles)
    rows = max(1, -(-n // cols))
    fig = _new((2.0 * cols, 2.25 * rows + 0.3))
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.set_axis_off()
            continue
        draw_tile(ax, images[k], truths[k], preds[k], titles[k])
    _legend(fig)
    return fig


def show_figure(
    ids: Sequence[str],
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray | None],
    preds: Sequence[np.ndarray | None] | None,
    notes: Sequence[str] = (),
) -> Figure:
    """One row per tile: image, image with truth mask, and (with predictions) image with prediction."""
    cols = 3 if preds is not None else 2
    fig = _new((2.6 * cols, 2.7 * len(ids) + 0.3))
    axes = fig.subplots(len(ids), cols, squeeze=False)
    for k, tile_id in enumerate(ids):
        note = notes[k] if k < len(notes) else ""
        truth = truths[k]
        draw_tile(axes[k, 0], images[k], title=f"{tile_id}\nimage")
        mask_title = (
            "no mask (unlabelled)"
            if truth is None
            else (f"truth mask, salt {100 * truth.mean():.0f}%" if truth.any() else "truth mask: empty")
        )
        draw_tile(axes[k, 1], images[k], truth=truth, title=f"{tile_id}\n{mask_title}")
        if truth is not None and truth.any():
            overlay = np.zeros((*truth.shape, 4))
            overlay[truth] = (0.13, 0.77, 0.37, 0.3)
            axes[k, 1].imshow(overlay, interpolation="nearest")
        if preds is not None:
            pred = preds[k]
            draw_tile(
                axes[k, 2],
                images[k],
                truth=truth,
                pred=pred,
                title=f"{tile_id}\n" + (note or ("prediction" if pred is not None else "not predicted")),
            )
    _legend(fig, truth=any(t is not None for t in truths), pred=preds is not None)
    return fig
