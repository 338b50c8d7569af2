"""Training subcommands: ``train``, ``experiments``, ``lr-find``, ``pipeline``, ``refit``, ``search``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from saltseg.commands.registry import command
from saltseg.errors import SaltsegError

if TYPE_CHECKING:
    from saltseg.artifacts import RefitSummary


def _accept_overrides_anywhere(p: argparse.ArgumentParser) -> None:
    """Let ``key.path=value`` overrides come after the options too (``train CFG --out R a.b=1``).

    argparse consumes the positional ``overrides`` together with ``config`` and would reject later ones
    as unrecognised; this collects every leftover ``key=value`` word into ``overrides`` instead.
    """
    parse_known = p.parse_known_args

    def parse_known_args(args=None, namespace=None):  # type: ignore[no-untyped-def]
        ns, extras = parse_known(args, namespace)
        rest = []
        for word in extras:
            if "=" in word and not word.startswith("-"):
                ns.overrides = [*(ns.overrides or []), word]
            else:
                rest.append(word)
        return ns, rest

    p.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _overrides(args: argparse.Namespace) -> list[str]:
    """The ``key=value`` overrides, plus those the options stand for (``--skip-missing``)."""
    extra = ["data.skip_missing=true"] if getattr(args, "skip_missing", False) else []
    return [*(args.overrides or []), *extra]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", type=Path, required=True, help="dataset folder (Kaggle layout or images/+masks/)"
    )
    p.add_argument(
        "--skip-missing",
        action="store_true",
        help="train on the complete tiles when some lack their image or mask (data.skip_missing=true)",
    )
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="override any config key")
    _accept_overrides_anywhere(p)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


@command(
    "train",
    "Train an experiment config on one fold or all folds.",
    "saltseg train configs/cpu_fast.yaml --data ../shared/data/tgs-salt --fold 0 --out runs/r1 "
    "stages.0.epochs=2",
)
def _train(p: argparse.ArgumentParser):
    p.add_argument("config", type=Path)
    _add_common(p)
    p.add_argument("--out", type=Path, required=True, help="run folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fold", type=int, action="append", help="fold to train (repeatable); default all")
    g.add_argument("--folds", choices=["all"], help="train every fold")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")

    def run(args: argparse.Namespace) -> int:
        from saltseg.training.config import load_config
        from saltseg.training.train import train_run

        cfg = load_config(args.config, _overrides(args))
        summary = train_run(
            cfg,
            args.data,
            args.out,
            folds_to_run=args.fold,
            resume=args.resume,
            progress=not args.no_progress,
        )
        if summary is None:  # an extra process of a multi-process run: rank zero reports
            return 0
        for f in summary.folds:
            reason = f" ({f.reason})" if f.reason else ""
            print(
                f"fold {f.fold}: {f.status}{reason}, best val {_fmt(f.best_val_score)}, "
                f"oof {_fmt(f.oof_score)} ({f.minutes} min)"
            )
        if summary.oof_score is not None:
            print(f"oof score: {summary.oof_score:.4f} over {summary.n_oof} tiles")
        return 0

    return run


@command(
    "experiments",
    "Run a queue of experiment configs; a failing one is recorded and the next runs.",
    "saltseg experiments configs/a.yaml configs/b.yaml --data DATA --out runs/queue --fold 0",
)
def _experiments(p: argparse.ArgumentParser):
    p.add_argument("configs", type=Path, nargs="+")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="folder holding one run folder per config")
    p.add_argument("--fold", type=int, action="append", help="fold(s) to train; default all")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="key.path=value",
        help="override applied to every config (repeatable)",
    )

    def run(args: argparse.Namespace) -> int:
        from saltseg.training.experiments import format_queue, run_queue

        results = run_queue(args.configs, args.data, args.out, args.fold, args.overrides)
        format_queue(results)
        return 0 if all(r["status"] == "done" for r in results) else 1

    return run


@command(
    "lr-find",
    "Learning-rate range test (Lightning's tuner); saves the plot and suggests an LR.",
    "saltseg lr-find configs/cpu_fast.yaml --data DATA --out runs/lr",
)
def _lr_find(p: argparse.ArgumentParser):
    p.add_argument("config", type=Path)
    _add_common(p)
    p.add_argument("--out", type=Path, default=Path("lr_find"), help="folder for lr_find.png")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--steps", type=int, default=100)

    def run(args: argparse.Namespace) -> int:
        from saltseg.training.config import load_config
        from saltseg.training.lr_find import lr_find

        cfg = load_config(args.config, _overrides(args))
        lr, plot = lr_find(cfg, args.data, args.out, fold=args.fold, steps=args.steps)
        if lr != lr:  # NaN: the curve was too short or too flat
            print(f"no suggested lr (too few steps for a suggestion; try more --steps)  (plot: {plot})")
        else:
            print(f"suggested lr: {lr:.3g}  (plot: {plot})")
        return 0

    return run


@command(
    "pipeline",
    "The whole pipeline: train every fold (optionally fitted to a time budget), tune post-processing on "
    "the out-of-fold predictions, write the report, and predict the test tiles into a submission.",
    "saltseg pipeline configs/cpu_fast.yaml --data ../shared/data/tgs-salt --out runs/full --minutes 150 "
    "--test ../shared/data/tgs-salt",
)
def _pipeline(p: argparse.ArgumentParser):
    p.add_argument("config", type=Path)
    _add_common(p)
    p.add_argument("--out", type=Path, required=True, help="pipeline folder")
    p.add_argument(
        "--minutes",
        type=float,
        help="training budget: each fold's epochs are scaled to fit its share (default: the config's "
        "pipeline.minutes)",
    )
    p.add_argument("--test", type=Path, help="unlabelled tiles to predict into OUT/submission.csv")
    rounds = p.add_mutually_exclusive_group()
    rounds.add_argument(
        "--pseudo-rounds",
        type=int,
        metavar="N",
        help="N more rounds, each trained with the calibrated, confident test predictions of the best "
        "round so far (default: the config's pipeline.pseudo_rounds)",
    )
    rounds.add_argument(
        "--pseudo-round", action="store_const", const=1, dest="pseudo_rounds", help="--pseudo-rounds 1"
    )
    p.add_argument(
        "--distill",
        action="store_true",
        default=None,
        help="then train one student (fold 0 held out) on the labelled tiles plus every test tile with the "
        "best round's calibrated probabilities as soft targets",
    )
    p.add_argument(
        "--refit",
        action="store_true",
        default=None,
        help="then train the final round's config on every labelled tile (OUT/refit) and predict the "
        "submission with that one model (default: the config's pipeline.refit)",
    )
    p.add_argument(
        "--no-calibrate",
        action="store_false",
        dest="calibrate",
        default=None,
        help="apply the confidence rule to the raw probabilities (no temperature fitted on the OOF)",
    )
    p.add_argument(
        "--test-members",
        choices=["best", "all"],
        help="test prediction with each fold's best model (the default) or with every snapshot too",
    )
    p.add_argument("--confidence", type=float, help="pseudo-label confidence (default: the config's, 0.97)")
    p.add_argument("--resume", action="store_true", help="continue a killed pipeline")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")

    def run(args: argparse.Namespace) -> int:
        from saltseg.pipeline import run_pipeline
        from saltseg.training.config import load_config

        if args.minutes is not None and args.minutes <= 0:
            raise SaltsegError(f"--minutes must be positive, got {args.minutes}")
        cfg = load_config(args.config, _overrides(args))
        r = run_pipeline(
            cfg,
            args.data,
            args.out,
            minutes=args.minutes,
            test_images=args.test,
            pseudo_rounds=args.pseudo_rounds,
            pseudo_confidence=args.confidence,
            calibrate=args.calibrate,
            distill=args.distill,
            refit=args.refit,
            resume=args.resume,
            progress=not args.no_progress,
            test_members=args.test_members,
        )
        for k, rd in sorted(r.rounds.items()):
            pseudo = r.pseudo.get(k - 1)
            if pseudo:
                print(
                    f"round{k} pseudo-labels: {pseudo.passed} of {pseudo.candidates} test tiles passed "
                    f"(temperature {pseudo.temperature:.3f}), {pseudo.selected} kept: "
                    + ", ".join(f"{c} {n}" for c, n in pseudo.per_coverage_class.items())
                )
            for f in rd.folds:
                print(f"round{k} fold {f.fold}: {f.status}, oof {_fmt(f.oof_score)} ({f.minutes} min)")
            for step in rd.tuning:
                print(f"round{k} {step.step:<36} oof {step.oof_score:.4f}")
        if r.student is not None and r.distill_targets is not None:
            st = r.student
            print(
                f"student (one model, {r.distill_targets.selected} soft test tiles): fold 0 "
                f"{_fmt(st.student_fold0_oof_thr05)} vs the teacher's fold-0 model "
                f"{_fmt(st.teacher_fold0_oof_thr05)} -> {st.run}"
            )
        if r.refit is not None:
            print(_refit_line(r.refit))
        if r.submission is not None:
            s = r.submission
            print(f"submission: {s.csv} ({s.tiles} tiles, {s.members} models, {s.seconds} s)")
        print(f"out-of-fold score {r.oof_score:.4f} over {r.n_oof} tiles in {r.minutes} min -> {args.out}")
        return 0

    return run


def _refit_line(r: RefitSummary) -> str:
    t = r.training
    return (
        f"refit on all {r.n_tiles} labelled tiles: {t.status}, {t.epochs} of {t.planned_epochs} epochs in "
        f"{t.minutes} min (the folds scored best at epochs {r.cv_best_epochs or '-'})"
    )


@command(
    "refit",
    "Train a cross-validated run's config on every labelled tile (no tile held out): one model for the "
    "final prediction, with the run's epochs and tuned post-processing.",
    "saltseg refit runs/r1 --out runs/r1_refit && saltseg predict runs/r1_refit --images TEST --out PRED",
)
def _refit(p: argparse.ArgumentParser):
    p.add_argument("run", type=Path, help="run folder whose folds were trained (and tuned)")
    p.add_argument("--out", type=Path, required=True, help="refit folder (one model)")
    p.add_argument("--data", type=Path, help="dataset folder (default: the run's)")
    p.add_argument("--resume", action="store_true", help="continue a killed refit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")

    def run(args: argparse.Namespace) -> int:
        from saltseg.training.refit import refit_run

        r = refit_run(args.run, args.out, args.data, resume=args.resume, progress=not args.no_progress)
        print(f"{_refit_line(r)} -> {args.out}")
        return 0

    return run


@command(
    "search",
    "Search config values with Optuna (TPE sampler); trials behind the others stop early (pruning). "
    "The study is kept in OUT/study.db: a killed search resumes, several processes can share it.",
    "saltseg search configs/cpu_fast.yaml space.yaml --data DATA --trials 20 --minutes 10 --out runs/search",
)
def _search(p: argparse.ArgumentParser):
    p.add_argument("config", type=Path, help="base experiment config")
    p.add_argument(
        "space",
        type=Path,
        help="search space YAML: key.path: {log: [lo, hi]} | {float: [lo, hi]} | {int: [lo, hi]} | "
        "{choices: [...]}",
    )
    _add_common(p)
    p.add_argument("--out", type=Path, required=True, help="search folder (study.db, trials/)")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    p.add_argument("--minutes", type=float, help="fit each trial's epochs to this many minutes")
    p.add_argument("--fold", type=int, default=0, help="validation fold of every trial (default 0)")
    p.add_argument("--pruner", choices=["median", "hyperband", "none"], default="median")
    p.add_argument("--seed", type=int, help="seed of the TPE sampler")
    p.add_argument("--progress", action="store_true", help="show the progress bar of each trial")

    def run(args: argparse.Namespace) -> int:
        from saltseg.diagnostics.runs import format_study
        from saltseg.training.search import run_search

        r = run_search(
            args.config,
            args.space,
            args.data,
            args.out,
            trials=args.trials,
            minutes=args.minutes,
            fold=args.fold,
            pruner=args.pruner,
            overrides=_overrides(args),
            seed=args.seed,
            progress=args.progress,
        )
        from rich.console import Console

        Console(width=160).print(format_study(r.report))
        top = r.report.best
        best = "-" if top is None else f"{top.value:.4f} ({top.run})"
        print(f"{r.finished} finished trials ({r.pruned} pruned); best {best} -> {args.out}")
        return 0

    return run


@command(
    "config",
    "List the shipped configs (with the score each reached), or print one resolved, to copy and edit.",
    "saltseg config show cpu_fast > my.yaml",
)
def _config(p: argparse.ArgumentParser):
    sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    sub.add_parser(
        "list",
        help="every shipped config: name, what it is, its recorded score",
        description="Every shipped config (usable by name: saltseg train cpu_fast ...).\n\nexample:\n"
        "  saltseg config list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s = sub.add_parser(
        "show",
        help="print a config with every default filled in",
        description="Print a config (shipped name or file), resolved with every default written out.\n\n"
        "example:\n  saltseg config show cpu_fast stages.0.epochs=3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("config", help="shipped config name or YAML file")
    s.add_argument("overrides", nargs="*", metavar="key.path=value", help="override any config key")

    def run(args: argparse.Namespace) -> int:
        from saltseg.training.config import builtin_configs, dump_config, load_config

        if args.config_command == "list":
            from rich.console import Console
            from rich.table import Table

            table = Table(title="shipped configs (saltseg train NAME --data DATA ...)", title_justify="left")
            for col in ("name", "what", "score"):
                table.add_column(col, overflow="fold")
            for c in builtin_configs().values():
                table.add_row(c.name, c.summary, c.score)
            console = Console()
            (console if console.is_terminal else Console(width=160)).print(table)
            return 0
        print(dump_config(load_config(args.config, _overrides(args))), end="")
        return 0

    return run


@command(
    "recipe",
    "Run a whole multi-stage recipe (several models, pseudo-label pretraining, fine-tuning every fold, the "
    "weighted blend, the submission) from one file of steps; --scale shortens every stage to rehearse it.",
    "saltseg recipe first_place --data ../shared/data/tgs-salt --test ../shared/data/tgs-salt "
    "--out runs/fp_cpu --scale 0.01",
)
def _recipe(p: argparse.ArgumentParser):
    p.add_argument("recipe", help="a shipped recipe name (first_place) or a recipe file")
    p.add_argument("--data", type=Path, required=True, help="labelled dataset")
    p.add_argument("--test", type=Path, help="unlabelled tiles (pseudo-label steps and the submission)")
    p.add_argument("--out", type=Path, required=True, help="recipe folder: one folder per step")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every stage's epochs (at least 1)")
    p.add_argument(
        "--folds",
        type=lambda v: [int(k) for k in v.split(",")],
        help="train only these folds in every step (comma-separated; a rehearsal: --folds 0)",
    )
    p.add_argument("--resume", action="store_true", help="continue a killed recipe")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")

    def run(args: argparse.Namespace) -> int:
        from saltseg.recipe import load_recipe, run_recipe

        recipe = load_recipe(args.recipe)
        state = run_recipe(
            recipe,
            args.data,
            args.out,
            test_images=args.test,
            scale=args.scale,
            resume=args.resume,
            progress=not args.no_progress,
            folds=args.folds,
        )
        for name, step in state.steps.items():
            score = f", oof {step.oof_tuned:.4f}" if step.oof_tuned is not None else ""
            extra = f", {step.selected} pseudo-labelled tiles" if step.kind == "pseudo" else ""
            print(f"{name} ({step.kind}){score}{extra}, {step.minutes} min")
        if state.submission is not None:
            print(f"submission: {state.submission.csv} ({state.submission.tiles} tiles)")
        print(f"recipe {recipe.name} done in {state.minutes} min -> {args.out}")
        return 0

    return run
