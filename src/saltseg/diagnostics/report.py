"""``saltseg report``: one self-contained HTML page about one or more runs (or ensembles).

The page needs nothing but itself: inline CSS, figures as base64 PNG data URIs, no script, no external
address. For each run: its folds, stages, learning curves with snapshots, the out-of-fold score by
coverage class and depth band, the threshold curve, the empty/non-empty confusion and galleries of the
worst and best tiles; for several runs or an ensemble, a side-by-side table of their CV scores.

Every section has an ``id`` (:data:`SECTION_IDS`); in a report of several runs, the ids of the second
and later runs end in ``-2``, ``-3``...
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saltseg.artifacts import names
from saltseg.diagnostics.runs import RunInfo, member_runs, open_run
from saltseg.errors import SaltsegError
from saltseg.metrics.kaggle import coverage, kaggle_scores, score_breakdown
from saltseg.training.study import StudyReport, is_study_dir, read_study
from saltseg.utils.io import atomic_write

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

_CSS = """
:root { --fg:#0f172a; --muted:#475569; --line:#e2e8f0; --bg:#f8fafc; --accent:#2563eb; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width:1240px; margin:0 auto; padding:20px 28px 60px; }
h1 { font-size:24px; margin:4px 0 2px; } h2 { font-size:20px; margin:0 0 10px; }
h3 { font-size:16px; margin:22px 0 8px; color:#1e293b; }
.sub { color:var(--muted); margin:0 0 14px; }
section.run, section.compare { background:#fff; border:1px solid var(--line); border-radius:10px;
       padding:18px 22px; margin:18px 0; box-shadow:0 1px 2px rgba(15,23,42,.05); }
.cards { display:flex; flex-wrap:wrap; gap:10px; margin:6px 0 8px; }
.card { border:1px solid var(--line); border-radius:8px; padding:8px 14px; min-width:130px;
        background:var(--bg); }
.card b { display:block; font-size:20px; } .card span { color:var(--muted); font-size:12px; }
table { border-collapse:collapse; margin:6px 0 10px; font-size:13px; }
th, td { border-bottom:1px solid var(--line); padding:4px 10px; text-align:right; white-space:nowrap; }
th { background:#f1f5f9; font-weight:600; } td.l, th.l { text-align:left; }
tr.hi td { background:#eff6ff; font-weight:600; }
figure { margin:8px 0 16px; } figure img { max-width:100%; height:auto; border:1px solid var(--line);
       border-radius:6px; background:#fff; }
figcaption { color:var(--muted); font-size:12.5px; margin-top:4px; }
.row { display:flex; flex-wrap:wrap; gap:28px; align-items:flex-start; }
.note { color:#92400e; background:#fffbeb; border:1px solid #fde68a; border-radius:6px; padding:6px 10px;
       display:inline-block; margin:4px 0; }
nav a { color:var(--accent); margin-right:14px; text-decoration:none; }
.status-done { color:#15803d; } .status-failed { color:#b91c1c; } .status-stopped { color:#b45309; }
.status-running { color:#1d4ed8; }
code { font-size:12.5px; background:#f1f5f9; padding:1px 4px; border-radius:4px; }
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _f(v: object, nd: int = 4) -> str:
    if v is None:
        return "–"
    try:
        fv = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _e(v)
    return "–" if not np.isfinite(fv) else f"{fv:.{nd}f}"


_NUMERIC = re.compile(r"^[\s–\-+.,:%@×0-9]*$")


def _table(
    headers: list[str], rows: list[list[object]], id_: str | None = None, hi: set[int] | None = None
) -> str:
    """An HTML table (cells are HTML); columns of numbers right-aligned, rows in ``hi`` highlighted."""
    a = f' id="{_e(id_)}"' if id_ else ""
    ncol = len(headers)
    numeric = [
        bool(rows)
        and all(_NUMERIC.match(re.sub(r"<[^>]+>|\([^)]*\)", "", str(r[i]))) for r in rows if i < len(r))
        for i in range(ncol)
    ]
    cls = ["" if numeric[i] else ' class="l"' for i in range(ncol)]
    head = "".join(f"<th{cls[i]}>{_e(h)}</th>" for i, h in enumerate(headers))
    body = []
    for k, r in enumerate(rows):
        cells = "".join(f"<td{cls[i] if i < ncol else ''}>{c}</td>" for i, c in enumerate(r))
        tr = '<tr class="hi">' if hi and k in hi else "<tr>"
        body.append(f"{tr}{cells}</tr>")
    return f"<table{a}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(id_: str, uri: str, caption: str, alt: str) -> str:
    return (
        f'<figure id="{_e(id_)}"><img src="{uri}" alt="{_e(alt)}"><figcaption>{caption}</figcaption></figure>'
    )


def _status(s: str) -> str:
    return f'<span class="status-{_e(s)}">{_e(s)}</span>'


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


def _full_postprocess(run: RunInfo, oof: _Oof, src: object | None) -> str | None:
    """The OOF score with every setting of the run's ``postprocess.json`` (the sections below use
    its threshold only), or why it could not be computed; None without such a file."""
    if run.postprocess is None:
        return None
    from saltseg.data.tiles import load_images
    from saltseg.inference.postprocess import apply_postprocess, load_postprocess

    try:
        cfg = load_postprocess(run.path / names.POSTPROCESS_FILE)
    except SaltsegError as exc:
        return f"postprocess.json not applied: {_e(exc)}"
    what = [f"threshold {cfg.threshold:.2f}"]
    if cfg.crf:
        cfg = cfg.model_copy(update={"crf": False})
        what.append("<i>without</i> its dense CRF (slow)")
    images = None
    if cfg.flat_empty:
        try:
            images = load_images([src.image_path(i) for i in oof.ids]) if src is not None else None  # type: ignore[attr-defined]
        except SaltsegError:
            images = None
        what.append("flat tiles empty" if images is not None else "<i>not</i> flat tiles empty (no images)")
    if cfg.min_area:
        what.append(f"masks under {cfg.min_area} px emptied")
    if cfg.empty_threshold is not None:
        what.append(
            f"salt head below {cfg.empty_threshold:.2f} emptied"
            if oof.salt is not None
            else "<i>no</i> salt head"
        )
    masks = apply_postprocess(oof.probs, cfg, images, oof.salt)
    score = float(kaggle_scores(masks, oof.truth).mean())
    return f"with all of postprocess.json ({', '.join(what)}): OOF score <b>{score:.4f}</b>"


def _stages_table(run: RunInfo, sid) -> str:
    rows = []
    for i, s in enumerate(run.config.get("stages") or []):
        if not isinstance(s, dict):
            continue
        opt = s.get("optimizer") or {}
        sch = s.get("schedule") or {}
        loss = s.get("loss") or {}
        sched = _e(sch.get("name", "")) + (
            f" ×{sch['cycles']}"
            if sch.get("cycles") and sch.get("name") in ("cosine_restarts", "cyclic")
            else ""
        )
        rows.append(
            [
                str(i),
                _e(s.get("name", "")),
                str(s.get("epochs", "")),
                _e(loss.get("name", "")),
                _e(f"{opt.get('name', '')} lr {opt.get('lr', '')}"),
                sched,
                "yes" if s.get("snapshots") else "",
            ]
        )
    if not rows:
        return ""
    model = run.config.get("model") or {}
    arch = (
        " / ".join(str(model[k]) for k in ("arch", "encoder") if model.get(k))
        if isinstance(model, dict)
        else ""
    )
    if isinstance(model, dict) and model.get("arch") == "vanilla_unet":
        arch = f"vanilla_unet (base {model.get('base_channels')}, depth {model.get('depth')})"
    return f'<h3>Stages</h3><p class="sub">model: <code>{_e(arch)}</code></p>' + _table(
        ["#", "stage", "epochs", "loss", "optimizer", "schedule", "snapshots"], rows, sid("tbl-stages")
    )


def _folds_table(run: RunInfo, sid) -> str:
    rows = []
    for f in run.folds:
        s = f.summary
        members = s.member_scores if s else {}
        mem = ", ".join(f"{_e(k.removesuffix('.safetensors'))} {_f(v)}" for k, v in members.items())
        rows.append(
            [
                f"fold {f.index}",
                _status(f.status),
                _e(s.epochs if s else "–"),
                _f(f.minutes, 2),
                _f(f.best_val),
                _f(f.oof_score),
                _e(s.n_val if s else "–"),
                mem or "–",
                _e((s.reason if s else None) or ""),
            ]
        )
    if not rows:
        return '<p class="note">no fold has started yet</p>'
    return "<h3>Folds</h3>" + _table(
        [
            "fold",
            "status",
            "epochs",
            "minutes",
            "best val",
            "OOF score",
            "tiles",
            "members (score)",
            "reason",
        ],
        rows,
        sid("tbl-folds"),
    )


def _learning_section(run: RunInfo, sid) -> str:
    from saltseg.diagnostics.figures import data_uri, learning_curves_figure

    folds = []
    for f in run.folds:
        stages = f.curves(run.stage_names)
        if stages:
            folds.append((f"fold {f.index}", stages, f.snapshots()))
    if not folds:
        return '<h3>Learning curves</h3><p class="note">no training log yet</p>'
    fig = learning_curves_figure(folds)
    return "<h3>Learning curves</h3>" + _figure(
        sid("fig-learning-curves"),
        data_uri(fig),
        "Per epoch, stages in sequence (dashed lines separate them): training and validation loss, Kaggle "
        "score on the validation tiles, learning rate. Stars: snapshots kept for the ensemble "
        "(cycle bests); ring: the fold's best checkpoint.",
        "learning curves",
    )


def _oof_sections(run: RunInfo, oof: _Oof, sid) -> str:
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
    parts = []
    cards = [
        (f"{scores.mean():.4f}", f"OOF score at threshold {t:.2f}"),
        (f"{oof.curve[k_best]:.4f}", f"best on the curve (threshold {THRESHOLDS[k_best]:.2f})"),
        (str(len(scores)), "out-of-fold tiles"),
    ]
    parts.append(
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{a}</b><span>{_e(b)}</span></div>' for a, b in cards)
        + "</div>"
    )
    tuned = run.threshold_source == names.POSTPROCESS_FILE
    src_note = f"tuned in {names.POSTPROCESS_FILE}" if tuned else "default"
    parts.append(f'<p class="sub">threshold used below: <b>{t:.2f}</b> ({src_note})</p>')
    full = _full_postprocess(run, oof, src)
    if full:
        parts.append(f'<p class="sub">{full}</p>')
    if note:
        parts.append(f'<p class="note">{_e(note)}</p>')

    # breakdown
    bd = score_breakdown(scores, oof.truth, depths)
    head = ["group", "tiles", "score", "score lost"]

    def rows(key: str) -> list[list[object]]:
        return [[_e(r["group"]), str(r["count"]), _f(r["score"]), _f(r["lost"])] for r in bd[key]]

    tables = f"<div><b>by coverage of salt</b>{_table(head, rows('coverage'), sid('tbl-coverage'))}</div>"
    if "depth" in bd:
        tables += f"<div><b>by depth (depths.csv)</b>{_table(head, rows('depth'), sid('tbl-depth'))}</div>"
    else:
        tables += '<div><p class="note">no depths.csv in the dataset: no depth breakdown</p></div>'
    parts.append(
        f'<h3 id="{sid("sec-breakdown")}">Score by coverage and depth</h3><div class="row">{tables}</div>'
    )
    parts.append(
        _figure(
            sid("fig-breakdown"),
            data_uri(breakdown_figure(bd)),
            "Mean Kaggle score per coverage class of the true mask and per depth band; "
            "“score lost” is the share of the total score lost on that group (what fixing it would gain).",
            "score breakdown",
        )
    )

    # threshold curve
    parts.append("<h3>Threshold</h3>")
    parts.append(
        _figure(
            sid("fig-threshold"),
            data_uri(threshold_figure([(oof.label, THRESHOLDS, oof.curve)], used=t)),
            f"Out-of-fold Kaggle score when the probabilities are cut at each threshold "
            f"(0.05 to 0.95). Best: <b>{oof.curve[k_best]:.4f}</b> at <b>{THRESHOLDS[k_best]:.2f}</b>.",
            "threshold curve",
        )
    )

    # confusion
    conf = empty_confusion(pred, oof.truth, scores)
    n = len(scores)

    def cell(tv: bool, pv: bool) -> str:
        c, s = conf[(tv, pv)]
        return f"{c} <small>({100 * c / max(n, 1):.1f}%, score {_f(s, 3)})</small>"

    ctab = _table(
        ["truth \\ prediction", "predicted empty", "predicted salt"],
        [
            ["truth empty", cell(False, False), cell(False, True)],
            ["truth has salt", cell(True, False), cell(True, True)],
        ],
        sid("tbl-confusion"),
    )
    extra = ""
    if oof.salt is not None:
        cls = oof.salt > 0.5
        t_any = oof.truth.reshape(n, -1).any(axis=1)
        acc = float((cls == t_any).mean())
        extra = (
            '<p class="sub">image-level salt head (p &gt; 0.5) agrees with the truth on '
            f"{100 * acc:.1f}% of tiles</p>"
        )
    fp = conf[(False, True)][0]
    fn = conf[(True, False)][0]
    parts.append(
        "<h3>Empty vs non-empty</h3>"
        + ctab
        + extra
        + f'<p class="sub">{fp} empty tiles get a false mask (each scores 0); {fn} salt tiles are missed.</p>'
    )

    # galleries
    worst, best = pick_tiles(scores, oof.truth, pred, GALLERY_SIZE)
    kinds = tile_kinds(oof.truth, pred, scores)
    cov = coverage(oof.truth)
    counts = ", ".join(f"{int((kinds == i).sum())} {KINDS[i]}" for i in range(3))
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
        parts.append(
            f"<h3>{key.capitalize()} tiles</h3>"
            + _figure(sid(f"fig-gallery-{key}"), data_uri(fig), cap, f"{key} tiles")
        )
    return "".join(parts)


def _run_section(run: RunInfo, index: int, oof: _Oof | None) -> str:
    def sid(base: str) -> str:
        return base if index == 1 else f"{base}-{index}"

    kind = "ensemble" if run.kind == "ensemble" else "run"
    parts = [f'<section class="run" id="{sid("sec-summary")}">']
    parts.append(f'<h2>{_e(run.name)} <small class="sub">({kind})</small></h2>')
    meta = [f"folder <code>{_e(run.path)}</code>", f"status {_status(run.status)}"]
    if run.data_dir:
        meta.append(f"data <code>{_e(run.data_dir)}</code>")
    if run.minutes is not None:
        meta.append(f"{run.minutes:.1f} training minutes")
    parts.append(f'<p class="sub">{" · ".join(meta)}</p>')
    if run.kind == "run":
        parts.append(_folds_table(run, sid))
        parts.append(_stages_table(run, sid))
        parts.append(_learning_section(run, sid))
    else:
        parts.append(_members_table(run, sid))
    if oof is not None:
        parts.append("<h3>Out-of-fold predictions</h3>" + _oof_sections(run, oof, sid))
    else:
        parts.append('<p class="note">no out-of-fold predictions yet (oof.npz): score sections skipped</p>')
    parts.append("</section>")
    return "".join(parts)


def _members_table(ens: RunInfo, sid) -> str:
    rows = []
    for m, info in member_runs(ens):
        rows.append(
            [
                _e(info.name if info else Path(m.run).name),
                f"<code>{_e(m.run)}</code>",
                _f(m.weight, 3),
                _f(m.cv_score),
                _f(info.best_val if info else None),
                _e(",".join(str(f.index) for f in info.folds) if info else "not found"),
            ]
        )
    rows.append(
        [
            "<b>ensemble</b>",
            f"<code>{_e(ens.path)}</code>",
            "",
            _f(ens.summary.oof_score if ens.summary else None),
            "",
            "",
        ]
    )
    return "<h3>Members</h3>" + _table(
        ["member", "run", "weight", "CV score", "best val", "folds"],
        rows,
        sid("tbl-members"),
        {len(rows) - 1},
    )


def _compare_section(runs: list[RunInfo], oofs: list[_Oof | None]) -> str:
    from saltseg.diagnostics.figures import data_uri, threshold_figure

    rows, hi = [], set()
    scores = []
    for run, oof in zip(runs, oofs, strict=True):
        if run.kind == "ensemble":
            for m, info in member_runs(run):
                rows.append(
                    [
                        "&nbsp;&nbsp;↳ " + _e(info.name if info else Path(m.run).name),
                        "member",
                        f"<code>{_e(m.run)}</code>",
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
        cv = run.oof_score
        scores.append(cv if cv is not None else -1)
        folds = (
            ",".join(str(f.index) for f in run.folds) if run.kind == "run" else f"{len(run.members)} members"
        )
        rows.append(
            [
                f"<b>{_e(run.name)}</b>",
                run.kind,
                f"<code>{_e(run.path)}</code>",
                "",
                _f(cv),
                best,
                str(len(oof.ids)) if oof is not None else "–",
                _f(run.best_val),
                _e(folds),
            ]
        )
        if run.kind == "ensemble":
            hi.add(len(rows) - 1)
    body = _table(
        [
            "name",
            "kind",
            "folder",
            "weight",
            "CV (OOF) score",
            "best threshold",
            "OOF tiles",
            "best val",
            "folds",
        ],
        rows,
        "tbl-compare",
        hi,
    )
    curves = [(o.label, THRESHOLDS, o.curve) for o in oofs if o is not None]
    fig = ""
    if len(curves) >= 2:
        fig = _figure(
            "fig-compare",
            data_uri(threshold_figure(curves)),
            "Out-of-fold score vs threshold of each run.",
            "threshold curves of all runs",
        )
    return f'<section class="compare" id="sec-compare"><h2>Runs side by side</h2>{body}{fig}</section>'


def _study_section(study: StudyReport, index: int) -> str:
    """A ``saltseg search`` folder: its trials best first, the parameters' importances, score vs minutes."""
    from saltseg.diagnostics.figures import data_uri, study_figure

    keys = sorted({k for t in study.trials for k in t.params})
    rows = []
    for t in study.ranked():
        rows.append(
            [
                f"{t.number} (baseline)" if t.baseline else str(t.number),
                _e(t.state.lower()),
                _f(t.value),
                _f(t.last_score),
                "–" if t.epochs is None else str(t.epochs),
                _f(t.minutes, 1),
                *(_e(t.param_text(k, missing="–")) for k in keys),
                f"<code>{_e(t.run or '–')}</code>",
            ]
        )
    best = study.best
    body = [
        f"<p>{len(study.trials)} trials; best: "
        + ("none complete yet" if best is None else f"trial {best.number}, score {_f(best.value)}")
        + " (fold score at threshold 0.5; a pruned trial shows its last validation score).</p>",
        _table(
            ["trial", "state", "score", "last val", "epochs", "minutes", *keys, "run"],
            rows,
            f"tbl-study-{index}",
            {0} if best is not None else None,
        ),
    ]
    if study.importances:
        body.append(
            _table(
                ["parameter", "importance (Optuna)"],
                [[_e(k), f"{v:.3f}"] for k, v in sorted(study.importances.items(), key=lambda kv: -kv[1])],
                f"tbl-importance-{index}",
            )
        )
    points = [
        (t.minutes, t.value if t.state == "COMPLETE" else t.last_score, t.state)
        for t in study.trials
        if t.minutes is not None and (t.value is not None or t.last_score is not None)
    ]
    if points:
        body.append(
            _figure(
                f"fig-study-{index}",
                data_uri(study_figure(points)),
                "Score of each trial against its minutes (hollow: pruned).",
                "search trials",
            )
        )
    return (
        f'<section class="study" id="sec-study-{index}"><h2>Search {_e(study.out)}</h2>'
        + "".join(body)
        + "</section>"
    )


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
    if not run_paths:
        return _page(
            "saltseg report: " + ", ".join(str(s.out) for s in studies),
            [_study_section(s, i) for i, s in enumerate(studies, start=1)],
        )
    runs = [open_run(p) for p in run_paths]
    names = [r.name for r in runs]
    for r in runs:  # two runs of one config: tell them apart by folder
        if names.count(r.name) > 1 and r.path.resolve().name != r.name:
            r.name = f"{r.name} ({r.path.resolve().name})"
    oofs = [_load_oof(r) for r in runs]
    title = "saltseg report: " + ", ".join(r.name for r in runs)
    nav = ""
    if len(runs) > 1:
        links = ['<a href="#sec-compare">side by side</a>'] + [
            f'<a href="#{"sec-summary" if i == 1 else f"sec-summary-{i}"}">{_e(r.name)}</a>'
            for i, r in enumerate(runs, start=1)
        ]
        nav = "<nav>" + "".join(links) + "</nav>"
    body = [nav, *(_study_section(s, i) for i, s in enumerate(studies, start=1))]
    if len(runs) > 1 or any(r.kind == "ensemble" for r in runs):
        body.append(_compare_section(runs, oofs))
    for i, (run, oof) in enumerate(zip(runs, oofs, strict=True), start=1):
        body.append(_run_section(run, i, oof))
    return _page(title, body)


def _page(title: str, sections: list[str]) -> str:
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = [f"<h1>{_e(title)}</h1>", f'<p class="sub">generated {now} by saltseg report</p>', *sections]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def write_report(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Build the report and write it atomically to ``out``."""
    page = build_report(run_dirs)
    out = Path(out)
    with atomic_write(out, encoding="utf-8") as f:
        f.write(page)
    return out
