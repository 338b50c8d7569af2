"""Tests of the diagnostics: ``saltseg report``, ``saltseg show`` and ``saltseg runs``.

A tiny run (synthetic tiles, a 3-level vanilla U-Net, two stages with snapshots) is trained once for
the module; everything else reads its folder.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FIGURES
from saltseg.cli import main
from saltseg.diagnostics.report import (
    COMPARE_IDS,
    SECTION_IDS,
    _missed_sizes,
    build_report,
    empty_confusion,
    pick_tiles,
    threshold_curve,
    write_report,
)
from saltseg.diagnostics.runs import list_runs, open_run, read_stage_log
from saltseg.diagnostics.show import show_tiles
from saltseg.errors import DataError, SaltsegError
from saltseg.submission import write_submission


def _data_dir(run: Path) -> Path:
    return Path(json.loads((run / "data.json").read_text())["data_dir"])


# ------------------------------------------------------------------------------------------------ report


def test_report_templates_escape_text_keep_markup_and_align_numbers() -> None:
    from markupsafe import Markup

    from saltseg.diagnostics.report import FigureView, TableView, _environment

    macros = _environment().get_template("_macros.html.j2").module
    table = TableView(
        ["name <x>", "score"], [["<script>a</script>", "0.8123"], [Markup("<b>b</b>"), "–"]], "tbl-t", {1}
    )
    html = str(macros.table(table))
    assert "&lt;script&gt;a&lt;/script&gt;" in html and "<script>" not in html  # text is escaped
    assert "<b>b</b>" in html and "name &lt;x&gt;" in html  # markup kept, headers escaped
    assert html.startswith('<table id="tbl-t"><thead><tr><th class="l">name &lt;x&gt;</th><th>score</th>')
    assert '<tr class="hi"><td class="l"><b>b</b></td><td>–</td></tr>' in html  # numbers right-aligned
    fig = str(macros.figure(FigureView("fig-x", "data:image/png;base64,AB+/=", "a & b", 'say "hi"')))
    assert fig == (
        '<figure id="fig-x"><img src="data:image/png;base64,AB+/=" alt="say &#34;hi&#34;">'
        "<figcaption>a &amp; b</figcaption></figure>"
    )


def test_report_has_every_section_and_is_self_contained(tiny_run: Path, tmp_path: Path) -> None:
    out = write_report([tiny_run], tmp_path / "r" / "report.html")
    page = out.read_text()
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in page, sid
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "url(" not in page
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == len(FIGURES)
    for fid in FIGURES:
        assert re.search(rf'<figure id="{fid}"><img src="data:image/png;base64,', page), fid
    for src in srcs:
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        assert b"matplotlib" not in png  # no software metadata (it carries a URL)
    assert not [p for p in out.parent.iterdir() if p != out]  # atomic: no temporary left
    # the facts on the page are the run's
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert f"{summary['oof_score']:.4f}" in page
    assert "s1_c0" in page and "lovasz" in page and "warm" in page
    assert "0.50</b> (default)" in page


def test_report_of_run_and_ensemble_side_by_side(tiny_run: Path, tmp_path: Path) -> None:
    ens = tmp_path / "ens"
    ens.mkdir()
    shutil.copy(tiny_run / "fold0" / "oof.npz", ens / "oof.npz")
    members = [{"run": str(tiny_run), "weight": 0.7, "cv_score": 0.4321}, {"run": "gone/run", "weight": 0.3}]
    (ens / "summary.json").write_text(json.dumps({"members": members, "oof_score": 0.5555}))
    (ens / "postprocess.json").write_text(json.dumps({"threshold": 0.3, "min_area": 10}))
    page = build_report([tiny_run, ens])
    for sid in (*COMPARE_IDS, "fig-compare", "tbl-members-2"):
        assert f'id="{sid}"' in page, sid
    run_only = ("tbl-folds", "tbl-stages", "fig-learning-curves")
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in page, sid
        assert (f'id="{sid}-2"' in page) == (sid not in run_only), sid
    assert "0.4321" in page and "0.5555" in page and "0.700" in page and "not found" in page
    assert "0.30</b> (tuned in postprocess.json)" in page
    assert "https://" not in page and "http://" not in page


def test_report_of_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SaltsegError, match="not a run folder"):
        build_report([tmp_path / "empty"])
    with pytest.raises(DataError, match="folder not found"):
        build_report([tmp_path / "missing"])
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not a run folder" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_report_cli(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tiny_run), "--out", str(tmp_path / "rep.html")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "rep.html").stat().st_size > 50_000


# ------------------------------------------------------------------------------------------ the pieces


def test_read_stage_log_groups_sparse_rows_by_epoch(tmp_path: Path) -> None:
    log = tmp_path / "metrics.csv"
    log.write_text(
        "epoch,lr-SGD,stage,step,train_loss_epoch,train_loss_step,val_loss,val_score\n"
        ",0.01,,0,,,,\n"
        "0,,,9,,1.5,,\n"
        "0,,0.0,9,,,1.2,0.30\n"
        "0,,,9,1.4,,,\n"
        ",0.005,,10,,,,\n"
        "1,,0.0,19,,,1.1,0.45\n"
        "1,,,19,1.3,,,\n"
        ",0.001,,20,,,,\n"  # the epoch in progress: no epoch row yet
    )
    epochs, values, lr_name = read_stage_log(log)
    assert epochs.tolist() == [0, 1] and lr_name == "SGD"
    assert values["lr"].tolist() == [0.01, 0.005]
    assert values["train_loss"].tolist() == [1.4, 1.3]
    assert values["val_score"].tolist() == [0.30, 0.45]


def test_run_info_of_the_tiny_run(tiny_run: Path) -> None:
    info = open_run(tiny_run)
    assert info.kind == "run" and info.name == "tiny" and info.status == "done" and info.n_folds == 3
    assert info.threshold == 0.5 and [n for n, _ in info.stage_names] == ["warm", "lovasz"]
    (fold,) = info.folds
    curves = fold.curves(info.stage_names)
    assert [c.epochs.tolist() for c in curves] == [[0], [0, 1]]
    assert all(np.isfinite(c.values[k]).all() for c in curves for k in ("train_loss", "val_score", "lr"))
    snaps = fold.snapshots()
    assert {s.name for s in snaps if s.kind == "snapshot"} == {"s1_c0", "s1_c1"}
    assert all(s.stage == 1 and s.epoch in (0, 1) for s in snaps if s.kind == "snapshot")
    oof = info.load_oof()
    assert oof is not None and oof.probs is not None and oof.probs.shape == oof.truth.shape == (30, 101, 101)


def test_threshold_confusion_and_tile_picks() -> None:
    truth = np.zeros((4, 5, 5), bool)
    truth[1, :2] = True
    truth[2] = True
    probs = np.zeros((4, 5, 5), np.float32)
    probs[1, :2] = 0.6
    probs[2] = 0.4
    probs[3, 0, 0] = 0.9  # a false positive on an empty tile
    curve = threshold_curve(probs, truth, np.array([0.3, 0.5, 0.95]))
    assert curve.tolist() == [0.75, 0.5, 0.5]
    pred = probs > 0.5
    from saltseg.metrics.kaggle import kaggle_scores

    scores = kaggle_scores(pred, truth)
    conf = empty_confusion(pred, truth, scores)
    assert conf[(False, False)][0] == 1 and conf[(False, True)][0] == 1
    assert conf[(True, True)][0] == 1 and conf[(True, False)][0] == 1
    worst, best = pick_tiles(scores, truth, pred, 2)
    assert worst.tolist() == [3, 2]  # grouped by kind: the false mask, then the missed salt
    assert best.tolist() == [1, 0]  # a perfect salt tile before a trivially right empty one


def test_missed_salt_is_sized() -> None:
    truth = np.zeros((4, 10, 10), bool)
    truth[0, :1, :3] = True  # 3 px, missed
    truth[1, :2, :4] = True  # 8 px, missed
    truth[2, :5] = True  # 50 px, found
    pred = np.zeros_like(truth)
    pred[2, :4] = True
    assert _missed_sizes(truth, pred) == (
        "2 of them with at most 10% salt; the missed hold a median 6 px of salt, "
        "the tiles predicted with salt 50 px"
    )
    assert _missed_sizes(truth, truth) is None


# -------------------------------------------------------------------------------------------------- show


def test_show_writes_png(tiny_run: Path, tmp_path: Path) -> None:
    data = _data_dir(tiny_run)
    ids = sorted(p.stem for p in (data / "train" / "images").glob("*.png"))[:2]
    test_id = sorted(p.stem for p in (data / "test" / "images").glob("*.png"))[0]
    pred = tmp_path / "pred"
    write_submission(
        pred / "masks.csv", [ids[0], test_id], [np.ones((101, 101), bool), np.zeros((101, 101), bool)]
    )
    out = show_tiles(data, [*ids, test_id + ".png"], tmp_path / "tiles.png", pred=pred)
    with Image.open(out) as im:
        w, h = im.size
    assert im.format == "PNG" and w > 500 and h > 3 * 250 and out.stat().st_size > 30_000
    out2 = tmp_path / "plain.png"
    assert main(["show", str(data), ids[0], "--out", str(out2)]) == 0
    with Image.open(out2) as im:
        assert im.size[0] < w  # two columns without predictions


def test_show_unknown_id_is_one_clear_error(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = _data_dir(tiny_run)
    with pytest.raises(DataError, match="no tile with id 'nosuchtile'"):
        show_tiles(data, ["nosuchtile"], tmp_path / "x.png")
    assert main(["show", str(data), "nosuchtile", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nosuchtile" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


# -------------------------------------------------------------------------------------------------- runs


def test_runs_lists_run_score_and_failed_queue_entry(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "runs"
    shutil.copytree(tiny_run, root / "tiny", ignore=shutil.ignore_patterns("*.ckpt", "tensorboard"))
    shutil.copytree(
        tiny_run, root / "busy", ignore=shutil.ignore_patterns("*.ckpt", "tensorboard", "summary.json")
    )
    state = json.loads((root / "busy" / "fold0" / "state.json").read_text())
    (root / "busy" / "fold0" / "state.json").write_text(json.dumps({**state, "status": "running"}))
    queue = [
        {"config": "tiny.yaml", "name": "tiny", "run": str(root / "tiny"), "status": "done", "minutes": 0.2},
        {
            "config": "bad.yaml",
            "name": "bad",
            "run": str(root / "bad"),
            "status": "failed",
            "error": "bad.yaml: unknown key 'modle'",
            "minutes": 0.01,
        },
    ]
    (root / "queue.json").write_text(json.dumps(queue))
    score = json.loads((tiny_run / "summary.json").read_text())["oof_score"]

    rows = {r["run"]: r for r in list_runs(root)}
    assert set(rows) == {"tiny", "busy", "bad"}
    assert rows["tiny"]["status"] == "done" and rows["tiny"]["oof_score"] == pytest.approx(score)
    assert rows["tiny"]["folds"] == "0 of 3" and rows["tiny"]["epochs"] == 3
    assert rows["busy"]["status"] == "running" and "last update" in rows["busy"]["note"]
    assert rows["bad"]["status"] == "failed" and "modle" in rows["bad"]["note"]

    assert main(["runs", str(root), "--sort", "score"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and f"{score:.4f}" in out and "failed" in out and "running" in out
    assert out.index("tiny") < out.index("bad")
    assert main(["runs", str(tmp_path / "nothing")]) == 2


def test_learning_curves_join_the_epochs_that_validated() -> None:
    """With ``train.val_every`` only some epochs log a validation: the score line joins those points
    instead of leaving each one alone between gaps (NaN)."""
    from saltseg.diagnostics.figures import learning_curves_figure
    from saltseg.diagnostics.runs import StageCurve

    nan = float("nan")
    epochs = np.arange(6)
    score = np.array([nan, 0.5, nan, nan, 0.6, 0.7])
    values = {
        "train_loss": np.linspace(1.0, 0.5, 6),
        "val_loss": np.where(np.isfinite(score), 1 - score, nan),
        "val_score": score,
        "lr": np.full(6, 1e-3),
    }
    fig = learning_curves_figure([("fold 0", [StageCurve(0, "s0", "bce", epochs, values)], [])])
    score_axis = fig.axes[1]
    line = next(ln for ln in score_axis.get_lines() if ln.get_label() == "val score")
    assert list(line.get_xdata()) == [1, 4, 5]
    assert np.allclose(line.get_ydata(), [0.5, 0.6, 0.7])
