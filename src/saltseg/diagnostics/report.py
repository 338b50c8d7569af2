"""``saltseg report``: one self-contained HTML page about one or more runs (or ensembles).

The page needs nothing but itself: inline CSS, figures as base64 PNG data URIs, no script, no external
address. For each run: its folds, stages, learning curves with snapshots, the out-of-fold score by
coverage class and depth band, the threshold curve, the empty/non-empty confusion and galleries of the
worst and best tiles; for several runs or an ensemble, a side-by-side table of their CV scores.

Every section has an ``id`` (:data:`SECTION_IDS`); in a report of several runs, the ids of the second
and later runs end in ``-2``, ``-3``...

The page is rendered from the jinja2 templates in ``diagnostics/templates`` (autoescaped): this module
computes what they show (tables as :class:`TableView`, figures as :class:`FigureView`), the templates
hold the HTML.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from markupsafe import Markup

from saltseg.artifacts import names
from saltseg.diagnostics.runs import RunInfo, member_runs, open_run
from saltseg.errors import SaltsegError
from saltseg.metrics.kaggle import SMALL_SALT_CLASS, coverage, coverage_class, kaggle_scores, score_breakdown
from saltseg.training.study import StudyReport, is_study_dir, read_study
from saltseg.utils.io import atomic_write

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger(__name__)

THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
GALLERY_SIZE = 12
SECTION_IDS = (
    "sec-summary",
    "tbl-folds",
    "tbl-stages",
    "fig-learning-curves",
    "sec-breakdown",
    "tbl-coverage",
    "tbl-depth",
    "fig-breakdown",
    "fig-threshold",
    "tbl-confusion",
    "fig-gallery-worst",
    "fig-gallery-best",
)
COMPARE_IDS = ("sec-compare", "tbl-compare")

Cell = str | Markup
"""A table cell: text (escaped by the template) or :class:`Markup` (HTML kept as it is)."""


def _f(v: object, nd: int = 4) -> str:
    """A number for a cell: ``nd`` decimals, a dash for None / NaN; other values as text."""
    if v is None:
        return "–"
    try:
        fv = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v)
    return "–" if not np.isfinite(fv) else f"{fv:.{nd}f}"


def _code(x: object) -> Markup:
    return Markup("<code>{}</code>").format(x)


def _bold(x: object) -> Markup:
    return Markup("<b>{}</b>").format(x)


def _status(s: str) -> Markup:
    return Markup('<span class="status-{0}">{0}</span>').format(s)


_NUMERIC = re.compile(r"^[\s–\-+.,:%@×0-9]*$")


@dataclass
class TableView:
    """A table for the page: headers, rows of cells, highlighted rows; columns of numbers right-aligned."""

    headers: list[str]
    rows: list[list[Cell]]
    id: str | None = None
    hi: set[int] = field(default_factory=set)

    @cached_property
    def left(self) -> list[bool]:
        """Per column: left-aligned (text) rather than right-aligned (numbers only, tags ignored); worked
        out once per table, not once per cell the template writes."""

        def numeric(i: int) -> bool:
            cells = [re.sub(r"<[^>]+>|\([^)]*\)", "", str(r[i])) for r in self.rows if i < len(r)]
            return bool(self.rows) and all(_NUMERIC.match(c) for c in cells)

        return [not numeric(i) for i in range(len(self.headers))]


@dataclass
class FigureView:
    """A figure for the page: a PNG data URI, its caption (text or Markup) and alt text."""

    id: str
    uri: str
    caption: Cell
    alt: str


@cache
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("saltseg.diagnostics", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


# ---------------------------------------------------------------------------------------------- analysis


def threshold_curve(probs: np.ndarray, truth: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """Mean Kaggle score of ``probs > t`` for each threshold."""
    return np.array([kaggle_scores(probs > t, truth).mean() for t in thresholds])


def empty_confusion(
    pred: np.ndarray, truth: np.ndarray, scores: np.ndarray
) -> dict[tuple[bool, bool], tuple[int, float]]:
    """(truth non-empty, prediction non-empty) -> (tiles, mean score)."""
    n = len(truth)
    t = truth.reshape(n, -1).any(axis=1)
    p = pred.reshape(n, -1).any(axis=1)
    out = {}
    for tv in (False, True):
        for pv in (False, True):
            sel = (t == tv) & (p == pv)
            out[(tv, pv)] = (int(sel.sum()), float(scores[sel].mean()) if sel.any() else float("nan"))
    return out


KINDS = ("false mask", "missed salt", "partial overlap", "right")


def tile_kinds(truth: np.ndarray, pred: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Index into :data:`KINDS` per tile: a mask on an empty tile, salt predicted empty, a wrong
    outline (both non-empty, score < 1), or right (score 1)."""
    n = len(scores)
    t = truth.reshape(n, -1).any(axis=1)
    p = pred.reshape(n, -1).any(axis=1)
    kinds = np.full(n, 3, dtype=int)
    kinds[~t & p] = 0
    kinds[t & ~p] = 1
    kinds[t & p & (scores < 1)] = 2
    return kinds


def pick_tiles(
    scores: np.ndarray, truth: np.ndarray, pred: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``n`` worst and ``n`` best tiles.

    Worst: up to a third from each kind of failure (false mask, missed salt, partial overlap), each the
    lowest scores first and then the largest area disagreement; the rest from any failure; grouped by
    kind. Best: tiles with salt by highest score (then larger salt), then right empty tiles.
    """
    k = len(scores)
    if k == 0:
        return np.zeros(0, int), np.zeros(0, int)
    kinds = tile_kinds(truth, pred, scores)
    disagree = (truth ^ pred).reshape(k, -1).mean(axis=1)
    order = np.lexsort((-disagree, scores))
    bad = order[kinds[order] < 3]
    quota = max(n // 3, 1)
    picked: list[int] = []
    for kind in range(3):
        picked += bad[kinds[bad] == kind][:quota].tolist()
    for i in bad.tolist():
        if len(picked) >= n:
            break
        if i not in picked:
            picked.append(i)
    rank = {int(i): r for r, i in enumerate(order)}
    worst = np.array(sorted(picked[:n], key=lambda i: (kinds[i], rank[i])), dtype=int)
    has_salt = truth.reshape(k, -1).any(axis=1)
    taken = set(worst.tolist())
    best = [int(i) for i in np.lexsort((-coverage(truth), -scores, ~has_salt)) if int(i) not in taken]
    return worst, np.array(best[:n], dtype=int)


# -------------------------------------------------------------------------------------------- the page


@dataclass
class _Oof:
    label: str
    ids: np.ndarray
    probs: np.ndarray
    truth: np.ndarray
    salt: np.ndarray | None
    fold: np.ndarray
    curve: np.ndarray


def _load_oof(run: RunInfo) -> _Oof | None:
    d = run.load_oof()
    if d is None or d.probs is None or d.fold is None:
        return None
    return _Oof(
        run.name, np.array(d.ids), d.probs, d.truth, d.salt, d.fold, threshold_curve(d.probs, d.truth)
    )


def _dataset(run: RunInfo) -> tuple[object | None, str | None]:
    """The run's dataset (TileSource) or a note saying why images/depths are unavailable."""
    if run.data_dir is None:
        return None, "no data.json: tile images and depths are not shown"
    from saltseg.data.tiles import open_dataset

    try:
        return open_dataset(run.data_dir), None
    except SaltsegError as exc:
        return None, f"dataset unavailable ({exc}): tile images and depths are not shown"


def _images(src: object | None, ids: list[str]) -> list[np.ndarray | None]:
    from saltseg.data.tiles import read_image

    out: list[np.ndarray | None] = []
    for i in ids:
        try:
            out.append(read_image(src.image_path(i)) if src is not None else None)  # type: ignore[attr-defined]
        except SaltsegError:
            out.append(None)
    return out


def _full_postprocess(run: RunInfo, oof: _Oof, src: object | None) -> Markup | None:
    """The OOF score with every setting of the run's ``postprocess.json`` (the sections below use
    its threshold only), or why it could not be computed; None without such a file."""
    if run.postprocess is None:
        return None
    from saltseg.data.tiles import load_images
    from saltseg.inference.postprocess import apply_postprocess, load_postprocess

    try:
        cfg = load_postprocess(run.path / names.POSTPROCESS_FILE)
    except SaltsegError as exc:
        return Markup("postprocess.json not applied: {}").format(exc)
    what: list[Cell] = [f"threshold {cfg.threshold:.2f}"]
    if cfg.crf:
        cfg = cfg.model_copy(update={"crf": False})
        what.append(Markup("<i>without</i> its dense CRF (slow)"))
    images = None
    if cfg.flat_empty:
        try:
            images = load_images([src.image_path(i) for i in oof.ids]) if src is not None else None  # type: ignore[attr-defined]
        except SaltsegError:
            images = None
        what.append(
            "flat tiles empty" if images is not None else Markup("<i>not</i> flat tiles empty (no images)")
        )
    if cfg.min_area:
        what.append(f"masks under {cfg.min_area} px emptied")
    if cfg.empty_threshold is not None:
        what.append(
            f"salt head below {cfg.empty_threshold:.2f} emptied"
            if oof.salt is not None
            else Markup("<i>no</i> salt head")
        )
    masks = apply_postprocess(oof.probs, cfg, images, oof.salt)
    score = float(kaggle_scores(masks, oof.truth).mean())
    return Markup("with all of postprocess.json ({}): OOF score <b>{:.4f}</b>").format(
        Markup(", ").join(what), score
    )


def _stages_table(run: RunInfo, sid) -> tuple[str, TableView | None]:
    """The model's name and the table of the run's stages (None without stages)."""
    rows: list[list[Cell]] = []
    for i, s in enumerate(run.config.get("stages") or []):
        if not isinstance(s, dict):
            continue
        opt = s.get("optimizer") or {}
        sch = s.get("schedule") or {}
        loss = s.get("loss") or {}
        sched = str(sch.get("name", "")) + (
            f" ×{sch['cycles']}"
            if sch.get("cycles") and sch.get("name") in ("cosine_restarts", "cyclic")
            else ""
        )
        rows.append(
            [
                str(i),
                str(s.get("name", "")),
                str(s.get("epochs", "")),
                str(loss.get("name", "")),
                f"{opt.get('name', '')} lr {opt.get('lr', '')}",
                sched,
                "yes" if s.get("snapshots") else "",
            ]
        )
    model = run.config.get("model") or {}
    arch = (
        " / ".join(str(model[k]) for k in ("arch", "encoder") if model.get(k))
        if isinstance(model, dict)
        else ""
    )
    if isinstance(model, dict) and model.get("arch") == "vanilla_unet":
        arch = f"vanilla_unet (base {model.get('base_channels')}, depth {model.get('depth')})"
    if not rows:
        return arch, None
    headers = ["#", "stage", "epochs", "loss", "optimizer", "schedule", "snapshots"]
    return arch, TableView(headers, rows, sid("tbl-stages"))


def _folds_table(run: RunInfo, sid) -> TableView | None:
    rows: list[list[Cell]] = []
    for f in run.folds:
        s = f.summary
        members = s.member_scores if s else {}
        mem = ", ".join(f"{k.removesuffix('.safetensors')} {_f(v)}" for k, v in members.items())
        rows.append(
            [
                f"fold {f.index}",
                _status(f.status),
                str(s.epochs if s else "–"),
                _f(f.minutes, 2),
                _f(f.best_val),
                _f(f.oof_score),
                str(s.n_val if s else "–"),
                mem or "–",
                (s.reason if s else None) or "",
            ]
        )
    if not rows:
        return None
    headers = [
        "fold",
        "status",
        "epochs",
        "minutes",
        "best val",
        "OOF score",
        "tiles",
        "members (score)",
        "reason",
    ]
    return TableView(headers, rows, sid("tbl-folds"))


def _learning_figure(run: RunInfo, sid) -> FigureView | None:
    from saltseg.diagnostics.figures import data_uri, learning_curves_figure

    folds = []
    for f in run.folds:
        stages = f.curves(run.stage_names)
        if stages:
            folds.append((f"fold {f.index}", stages, f.snapshots()))
    if not folds:
        return None
    return FigureView(
        sid("fig-learning-curves"),
        data_uri(learning_curves_figure(folds)),
        "Per epoch, stages in sequence (dashed lines separate them): training and validation loss, Kaggle "
        "score on the validation tiles, learning rate. Stars: snapshots kept for the ensemble "
        "(cycle bests); ring: the fold's best checkpoint.",
        "learning curves",
    )


def _oof_view(run: RunInfo, oof: _Oof, sid) -> dict[str, Any]:
    """What the page shows of the out-of-fold predictions (``oof_part`` in ``run.html.j2``)."""
    from saltseg.diagnostics.figures import breakdown_figure, data_uri, gallery_figure, threshold_figure

    t = run.threshold
    pred = oof.probs > t
    scores = kaggle_scores(pred, oof.truth)
    k_best = int(np.argmax(oof.curve))
    src, note = _dataset(run)
    depths = None
    if src is not None and src.depths:  # type: ignore[attr-defined]
        depths = src.depth_array(list(oof.ids))  # type: ignore[attr-defined]
        if not np.isfinite(depths).any():
            depths = None
    n = len(scores)
    tuned = run.threshold_source == names.POSTPROCESS_FILE

    bd = score_breakdown(scores, oof.truth, depths)
    head = ["group", "tiles", "score", "score lost"]

    def breakdown(key: str, id_: str) -> TableView:
        rows: list[list[Cell]] = [
            [str(r["group"]), str(r["count"]), _f(r["score"]), _f(r["lost"])] for r in bd[key]
        ]
        return TableView(head, rows, sid(id_))

    conf = empty_confusion(pred, oof.truth, scores)

    def cell(tv: bool, pv: bool) -> Markup:
        c, sc = conf[(tv, pv)]
        return Markup("{} <small>({:.1f}%, score {})</small>").format(c, 100 * c / max(n, 1), _f(sc, 3))

    confusion = TableView(
        ["truth \\ prediction", "predicted empty", "predicted salt"],
        [
            ["truth empty", cell(False, False), cell(False, True)],
            ["truth has salt", cell(True, False), cell(True, True)],
        ],
        sid("tbl-confusion"),
    )
    head_agreement = None
    if oof.salt is not None:
        t_any = oof.truth.reshape(n, -1).any(axis=1)
        head_agreement = 100 * float(((oof.salt > 0.5) == t_any).mean())

    worst, best = pick_tiles(scores, oof.truth, pred, GALLERY_SIZE)
    kinds = tile_kinds(oof.truth, pred, scores)
    cov = coverage(oof.truth)
    counts = ", ".join(f"{int((kinds == i).sum())} {KINDS[i]}" for i in range(3))
    galleries = []
    for key, idx in (("worst", worst), ("best", best)):
        if idx.size == 0:
            continue
        ids = [str(oof.ids[i]) for i in idx]
        titles = [
            f"{oof.ids[i]}\n{KINDS[kinds[i]]} · {scores[i]:.2f} · salt {100 * cov[i]:.0f}%" for i in idx
        ]
        fig = gallery_figure(_images(src, ids), oof.truth[idx], pred[idx], titles)
        if key == "worst":
            cap = (
                f"Failures, grouped by kind, lowest score first (a third each where there are enough). "
                f"Of {n} tiles: {counts}; {int((scores == 0).sum())} score 0."
            )
        else:
            cap = "The highest-scoring tiles with salt (right empty tiles only after them)."
        cap += " Green: true salt outline; red: prediction. Titles: id, kind · score · true salt cover."
        galleries.append(
            (
                f"{key.capitalize()} tiles",
                FigureView(sid(f"fig-gallery-{key}"), data_uri(fig), cap, f"{key} tiles"),
            )
        )
    return {
        "cards": [
            (f"{scores.mean():.4f}", f"OOF score at threshold {t:.2f}"),
            (f"{oof.curve[k_best]:.4f}", f"best on the curve (threshold {THRESHOLDS[k_best]:.2f})"),
            (str(n), "out-of-fold tiles"),
        ],
        "threshold": t,
        "threshold_source": f"tuned in {names.POSTPROCESS_FILE}" if tuned else "default",
        "full_postprocess": _full_postprocess(run, oof, src),
        "note": note,
        "breakdown_id": sid("sec-breakdown"),
        "coverage": breakdown("coverage", "tbl-coverage"),
        "depth": breakdown("depth", "tbl-depth") if "depth" in bd else None,
        "breakdown_figure": FigureView(
            sid("fig-breakdown"),
            data_uri(breakdown_figure(bd)),
            "Mean Kaggle score per coverage class of the true mask and per depth band; "
            "“score lost” is the share of the total score lost on that group (what fixing it would gain).",
            "score breakdown",
        ),
        "threshold_figure": FigureView(
            sid("fig-threshold"),
            data_uri(threshold_figure([(oof.label, THRESHOLDS, oof.curve)], used=t)),
            Markup(
                "Out-of-fold Kaggle score when the probabilities are cut at each threshold "
                "(0.05 to 0.95). Best: <b>{:.4f}</b> at <b>{:.2f}</b>."
            ).format(oof.curve[k_best], THRESHOLDS[k_best]),
            "threshold curve",
        ),
        "confusion": confusion,
        "head_agreement": head_agreement,
        "false_masks": conf[(False, True)][0],
        "missed": conf[(True, False)][0],
        "missed_sizes": _missed_sizes(oof.truth, pred),
        "galleries": galleries,
    }


def _missed_sizes(truth: np.ndarray, pred: np.ndarray) -> str | None:
    """How big the missed salt is: how many missed tiles hold at most 10% salt, and the median true salt
    area of the missed tiles against that of the tiles predicted with salt; None when none is missed."""
    n = len(truth)
    area = truth.reshape(n, -1).sum(axis=1)
    found = pred.reshape(n, -1).any(axis=1)
    missed = (area > 0) & ~found
    if not missed.any():
        return None
    small = int((missed & (coverage_class(truth) == SMALL_SALT_CLASS)).sum())
    median = float(np.median(area[missed]))
    text = f"{small} of them with at most 10% salt; the missed hold a median {median:.0f} px of salt"
    hit = (area > 0) & found
    if hit.any():
        text += f", the tiles predicted with salt {np.median(area[hit]):.0f} px"
    return text


def _run_view(run: RunInfo, index: int, oof: _Oof | None) -> dict[str, Any]:
    """What the page shows of one run or ensemble (``run_section`` in ``run.html.j2``)."""

    def sid(base: str) -> str:
        return base if index == 1 else f"{base}-{index}"

    meta: list[Cell] = [
        Markup("folder {}").format(_code(run.path)),
        Markup("status {}").format(_status(run.status)),
    ]
    if run.data_dir:
        meta.append(Markup("data {}").format(_code(run.data_dir)))
    if run.minutes is not None:
        meta.append(f"{run.minutes:.1f} training minutes")
    view: dict[str, Any] = {
        "id": sid("sec-summary"),
        "name": run.name,
        "kind": "ensemble" if run.kind == "ensemble" else "run",
        "meta": meta,
        "oof": _oof_view(run, oof, sid) if oof is not None else None,
    }
    if run.kind == "run":
        arch, stages = _stages_table(run, sid)
        view.update(
            folds=_folds_table(run, sid), arch=arch, stages=stages, learning=_learning_figure(run, sid)
        )
    else:
        view.update(members=_members_table(run, sid))
    return view


def _members_table(ens: RunInfo, sid) -> TableView:
    rows: list[list[Cell]] = []
    for m, info in member_runs(ens):
        rows.append(
            [
                info.name if info else Path(m.run).name,
                _code(m.run),
                _f(m.weight, 3),
                _f(m.cv_score),
                _f(info.best_val if info else None),
                ",".join(str(f.index) for f in info.folds) if info else "not found",
            ]
        )
    rows.append(
        [_bold("ensemble"), _code(ens.path), "", _f(ens.summary.oof_score if ens.summary else None), "", ""]
    )
    return TableView(
        ["member", "run", "weight", "CV score", "best val", "folds"],
        rows,
        sid("tbl-members"),
        {len(rows) - 1},
    )


def _compare_view(runs: list[RunInfo], oofs: list[_Oof | None]) -> dict[str, Any]:
    """The runs side by side (``compare_section`` in ``compare.html.j2``)."""
    from saltseg.diagnostics.figures import data_uri, threshold_figure

    rows: list[list[Cell]] = []
    hi: set[int] = set()
    for run, oof in zip(runs, oofs, strict=True):
        if run.kind == "ensemble":
            for m, info in member_runs(run):
                rows.append(
                    [
                        Markup("&nbsp;&nbsp;↳ {}").format(info.name if info else Path(m.run).name),
                        "member",
                        _code(m.run),
                        _f(m.weight, 3),
                        _f(m.cv_score),
                        "–",
                        "–",
                        _f(info.best_val if info else None),
                        "",
                    ]
                )
        best = (
            f"{oof.curve.max():.4f} @ {THRESHOLDS[int(np.argmax(oof.curve))]:.2f}" if oof is not None else "–"
        )
        folds = (
            ",".join(str(f.index) for f in run.folds) if run.kind == "run" else f"{len(run.members)} members"
        )
        rows.append(
            [
                _bold(run.name),
                run.kind,
                _code(run.path),
                "",
                _f(run.oof_score),
                best,
                str(len(oof.ids)) if oof is not None else "–",
                _f(run.best_val),
                folds,
            ]
        )
        if run.kind == "ensemble":
            hi.add(len(rows) - 1)
    headers = [
        "name",
        "kind",
        "folder",
        "weight",
        "CV (OOF) score",
        "best threshold",
        "OOF tiles",
        "best val",
        "folds",
    ]
    curves = [(o.label, THRESHOLDS, o.curve) for o in oofs if o is not None]
    figure = None
    if len(curves) >= 2:
        figure = FigureView(
            "fig-compare",
            data_uri(threshold_figure(curves)),
            "Out-of-fold score vs threshold of each run.",
            "threshold curves of all runs",
        )
    return {"table": TableView(headers, rows, "tbl-compare", hi), "figure": figure}


def _study_view(study: StudyReport, index: int) -> dict[str, Any]:
    """A ``saltseg search`` folder: its trials best first, the parameters' importances, score vs minutes."""
    from saltseg.diagnostics.figures import data_uri, study_figure

    keys = sorted({k for t in study.trials for k in t.params})
    rows: list[list[Cell]] = [
        [
            f"{t.number} (baseline)" if t.baseline else str(t.number),
            t.state.lower(),
            _f(t.value),
            _f(t.last_score),
            "–" if t.epochs is None else str(t.epochs),
            _f(t.minutes, 1),
            *(t.param_text(k, missing="–") for k in keys),
            _code(t.run or "–"),
        ]
        for t in study.ranked()
    ]
    best = study.best
    trials = TableView(
        ["trial", "state", "score", "last val", "epochs", "minutes", *keys, "run"],
        rows,
        f"tbl-study-{index}",
        {0} if best is not None else set(),
    )
    importances = None
    if study.importances:
        importances = TableView(
            ["parameter", "importance (Optuna)"],
            [[k, f"{v:.3f}"] for k, v in sorted(study.importances.items(), key=lambda kv: -kv[1])],
            f"tbl-importance-{index}",
        )
    points = [
        (t.minutes, t.value if t.state == "COMPLETE" else t.last_score, t.state)
        for t in study.trials
        if t.minutes is not None and (t.value is not None or t.last_score is not None)
    ]
    figure = None
    if points:
        figure = FigureView(
            f"fig-study-{index}",
            data_uri(study_figure(points)),
            "Score of each trial against its minutes (hollow: pruned).",
            "search trials",
        )
    return {
        "id": f"sec-study-{index}",
        "out": str(study.out),
        "n_trials": len(study.trials),
        "best": None if best is None else {"number": best.number, "score": _f(best.value)},
        "trials": trials,
        "importances": importances,
        "figure": figure,
    }


def build_report(run_dirs: list[str | Path]) -> str:
    """The HTML page for ``run_dirs`` (run or ensemble folders, or ``saltseg search`` folders).

    A search folder adds its study section, and the run of its best trial is reported like a run.
    """
    if not run_dirs:
        raise SaltsegError("give at least one run folder")
    studies = [read_study(p) for p in run_dirs if is_study_dir(p)]
    run_paths: list[str | Path] = [p for p in run_dirs if not is_study_dir(p)]
    for study in studies:
        if study.best is not None and study.best.run:
            run_paths.append(study.out / study.best.run)
    study_views = [_study_view(s, i) for i, s in enumerate(studies, start=1)]
    if not run_paths:
        return _page("saltseg report: " + ", ".join(str(s.out) for s in studies), study_views)
    runs = [open_run(p) for p in run_paths]
    run_names = [r.name for r in runs]
    for r in runs:  # two runs of one config: tell them apart by folder
        if run_names.count(r.name) > 1 and r.path.resolve().name != r.name:
            r.name = f"{r.name} ({r.path.resolve().name})"
    oofs = [_load_oof(r) for r in runs]
    nav = []
    if len(runs) > 1:
        nav = [("sec-compare", "side by side")] + [
            ("sec-summary" if i == 1 else f"sec-summary-{i}", r.name) for i, r in enumerate(runs, start=1)
        ]
    compare = _compare_view(runs, oofs) if len(runs) > 1 or any(r.kind == "ensemble" for r in runs) else None
    run_views = [_run_view(run, i, oof) for i, (run, oof) in enumerate(zip(runs, oofs, strict=True), start=1)]
    return _page("saltseg report: " + ", ".join(r.name for r in runs), study_views, compare, run_views, nav)


def _page(
    title: str,
    studies: list[dict[str, Any]],
    compare: dict[str, Any] | None = None,
    runs: list[dict[str, Any]] | None = None,
    nav: list[tuple[str, str]] | None = None,
) -> str:
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=title,
            generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            nav=nav or [],
            studies=studies,
            compare=compare,
            runs=runs or [],
        )
    )


def write_report(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Build the report and write it atomically to ``out``."""
    page = build_report(run_dirs)
    out = Path(out)
    with atomic_write(out, encoding="utf-8") as f:
        f.write(page)
    return out
