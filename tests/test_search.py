"""``saltseg search``: space files, pruning, resuming a study, and the study in ``runs`` / ``report``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from saltseg.cli import main
from saltseg.errors import ConfigError
from saltseg.training import search as search_mod
from saltseg.training.search import load_space, run_search
from saltseg.training.study import STUDY_FILE, STUDY_NAME, TRIAL_FILE, read_study

pytestmark = pytest.mark.slow

BASE = """\
name: tiny_search
model: {arch: vanilla_unet, base_channels: 4, depth: 2, attention: null, hypercolumn: false}
data: {folds: 3}
stages:
  - {name: one, epochs: 3, loss: {name: bce_dice}, optimizer: {name: adam, lr: 0.003}}
train: {batch_size: 16, val_tta: false}
"""
SPACE = "stages.0.optimizer.lr: {log: [0.001, 0.01]}\n"
LR_KEY = "stages.0.optimizer.lr"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from saltseg.data.synth import write_kaggle_layout

    return write_kaggle_layout(tmp_path_factory.mktemp("search") / "data", n_train=36, n_test=2, seed=5)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path / "base.yaml", tmp_path / "space.yaml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "mapping of config keys"),
        ("a.b: 3\n", "expected one of"),
        ("a.b: {log: [0.0, 1.0]}\n", "log needs low > 0"),
        ("a.b: {float: [2.0, 1.0]}\n", "low < high"),
        ("a.b: {int: [1.5, 4]}\n", "whole numbers"),
        ("a.b: {choices: []}\n", "non-empty list"),
        ("a.b: {float: [0, 1], stepp: 2}\n", "unknown entries"),
        ("a: [unclosed\n", "not valid YAML at line"),
        ("a.b: {int: [1, 2]}\na.b: {int: [1, 3]}\n", "key 'a.b' appears twice"),
    ],
)
def test_bad_space_files_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_space(path)
    assert str(path) in str(err.value)


def test_space_kinds_parse(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(
        "a: {log: [0.001, 0.1]}\nb: {float: [0, 1], step: 0.25}\nc: {int: [2, 8]}\nd: {choices: [x, 3]}\n"
    )
    specs = {s.key: s for s in load_space(path)}
    assert (specs["a"].kind, specs["b"].step, specs["c"].corners(), specs["d"].choices) == (
        "log",
        0.25,
        [2, 8],
        ("x", 3),
    )


def test_baseline_params_are_the_configs_own_values_inside_the_space(files: tuple[Path, Path]) -> None:
    from saltseg.training.config import load_config
    from saltseg.training.search import ParamSpec, baseline_params

    cfg = load_config(files[0])
    lr = ParamSpec(LR_KEY, "log", 0.001, 0.01)
    batch = ParamSpec("train.batch_size", "choices", choices=(8, 16, 32))
    wd = ParamSpec("stages.0.optimizer.weight_decay", "float", 0.0, 0.1, step=0.05)  # a default, not in BASE
    assert baseline_params(cfg, [lr, batch, wd]) == {LR_KEY: 0.003, "train.batch_size": 16, wd.key: 0.0}
    # one value outside its distribution (or a key the config lacks): no baseline trial at all
    assert baseline_params(cfg, [ParamSpec(LR_KEY, "log", 0.01, 0.1)]) is None
    assert baseline_params(cfg, [ParamSpec("train.batch_size", "choices", choices=(8, 32))]) is None
    assert baseline_params(cfg, [ParamSpec("stages.0.optimizer.weight_decay", "float", 0.01, 0.1)]) is None
    assert baseline_params(cfg, [ParamSpec("stages.3.optimizer.lr", "log", 0.001, 0.01)]) is None
    assert baseline_params(cfg, [ParamSpec("train.batch_size", "int", 0, 64, step=5)]) is None  # off the grid


def test_space_key_that_breaks_the_config_is_refused_before_any_trial(
    data: Path, files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base, space = files
    space.write_text("model.encoderz: {choices: [resnet18]}\n")
    code = main(
        ["search", str(base), str(space), "--data", str(data), "--trials", "1", "--out", str(tmp_path / "s")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "model.encoderz" in err and "unknown key" in err
    space.write_text("stages.0.optimizer.lr: {float: [-1.0, 0.01]}\n")
    assert (
        main(
            [
                "search",
                str(base),
                str(space),
                "--data",
                str(data),
                "--trials",
                "1",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    assert "stages.0.optimizer.lr" in capsys.readouterr().err
    assert not (tmp_path / "s" / STUDY_FILE).exists()


def _seed_study(out: Path, scores: list[float], n: int = 2) -> None:
    """Put ``n`` complete trials with high per-epoch scores into a new study at ``out``."""
    import optuna

    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=f"sqlite:///{out / STUDY_FILE}", direction="maximize"
    )
    dist = {LR_KEY: optuna.distributions.FloatDistribution(0.001, 0.01, log=True)}
    for _ in range(n):
        study.add_trial(
            optuna.trial.create_trial(
                params={LR_KEY: 0.003},
                distributions=dist,
                value=scores[-1],
                intermediate_values=dict(enumerate(scores)),
            )
        )


def test_a_trial_behind_the_others_is_pruned(data: Path, files: tuple[Path, Path], tmp_path: Path) -> None:
    base, space = files
    out = tmp_path / "study"
    _seed_study(out, [1.0, 1.0, 1.0])  # two earlier trials scored perfectly at every epoch
    result = run_search(
        base, space, data, out, trials=3, pruner="median", seed=0, overrides=["stages.0.epochs=6"]
    )
    report = read_study(out)
    states = sorted(t.state for t in report.trials)
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"] and result.pruned == 1
    pruned = next(t for t in report.trials if t.state == "PRUNED")
    record = json.loads((out / pruned.run / TRIAL_FILE).read_text())
    assert (
        record["state"] == "pruned" and record["epochs"] == 3
    )  # at the first step the pruner may act, not 6
    assert pruned.last_score is not None and pruned.last_score < 1.0


def test_search_runs_resumes_and_shows_in_runs_and_report(
    data: Path, files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base, space = files
    out = tmp_path / "s"
    args = ["search", str(base), str(space), "--data", str(data), "--out", str(out), "--pruner", "none"]
    assert main([*args, "--trials", "1", "--seed", "1"]) == 0
    first = read_study(out)
    assert [t.state for t in first.trials] == ["COMPLETE"]
    # a new study runs the base config's own values first: the line the other trials are read against
    assert first.baseline is first.trials[0] and first.trials[0].params == {LR_KEY: 0.003}
    run0 = out / "trials" / "trial_0000"
    assert (run0 / "config.yaml").exists() and (run0 / "fold0" / "summary.json").exists()
    stamp = (run0 / "fold0" / "summary.json").stat().st_mtime
    # resumed with a larger target: only the missing trial runs
    assert main([*args, "--trials", "2", "--seed", "1"]) == 0
    report = read_study(out)
    assert [t.state for t in report.trials] == ["COMPLETE", "COMPLETE"]
    assert (run0 / "fold0" / "summary.json").stat().st_mtime == stamp
    assert report.best is not None and report.best.value == max(t.value for t in report.trials)
    assert main([*args, "--trials", "2"]) == 0  # already complete: nothing to do
    assert len(read_study(out).trials) == 2
    capsys.readouterr()
    # the study in `saltseg runs` and `saltseg report`
    assert main(["runs", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 complete" in text and LR_KEY in text and "trial_0001" in text and "0 (baseline)" in text
    page = tmp_path / "report.html"
    assert main(["report", str(out), "--out", str(page)]) == 0
    html = page.read_text()
    assert "sec-study-1" in html and "fig-study-1" in html and "sec-summary" in html
    # another space in the same folder is refused, not mixed in
    space.write_text("stages.0.optimizer.lr: {log: [0.0001, 0.01]}\n")
    (tmp_path / "space2.yaml").write_text(space.read_text())
    args2 = ["search", str(base), str(tmp_path / "space2.yaml"), "--data", str(data), "--out", str(out)]
    assert main([*args2, "--trials", "3"]) == 2
    assert "other space" in capsys.readouterr().err


def test_a_killed_trial_is_failed_by_its_heartbeat_and_retried(
    data: Path, files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    base, space = files
    out = tmp_path / "s"
    out.mkdir()
    monkeypatch.setattr(search_mod, "HEARTBEAT_S", 1)
    storage = search_mod._storage(out)
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="maximize")
    trial = study.ask({LR_KEY: optuna.distributions.FloatDistribution(0.001, 0.01, log=True)})
    trial.set_user_attr("run", "trials/trial_0000")  # as the objective does when a trial starts
    storage.record_heartbeat(trial._trial_id)  # a process that started the trial, then died
    time.sleep(3.5)  # longer than the grace period (2 heartbeats of 1 s)
    run_search(base, space, data, out, trials=1, pruner="none", seed=0)
    trials = read_study(out).trials
    assert sorted(t.state for t in trials) == ["COMPLETE", "FAIL"]
    done = next(t for t in trials if t.state == "COMPLETE")
    assert done.run == "trials/trial_0000"  # the retry works in the killed trial's run folder
    assert done.params[LR_KEY] == pytest.approx(trial.params[LR_KEY])


def test_minutes_fit_each_trials_epochs_to_the_budget(
    data: Path, files: tuple[Path, Path], tmp_path: Path
) -> None:
    from saltseg.training.config import load_config

    base, space = files
    out = tmp_path / "s"
    run_search(base, space, data, out, trials=1, minutes=0.1, pruner="none", seed=0)
    (trial,) = read_study(out).trials
    cfg = load_config(out / trial.run / "config.yaml")
    assert trial.state == "COMPLETE"
    assert cfg.train.max_minutes == 0.1 and cfg.stages[0].epochs != 3  # fitted, not the base's 3 epochs
