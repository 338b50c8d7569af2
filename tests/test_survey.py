"""Surveys at scale (issue 15): SEG-Y and MDIO in, MDIO out block by block, on 2 Dask workers equal to one
process, resume, conversion, irregular grids, training tiles from labelled sections, the synthetic survey."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import segyio
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from saltseg.checkpoints import save_weights
from saltseg.cli import main
from saltseg.errors import DataError, SaltsegError
from saltseg.inference.sliding import predict_large
from saltseg.models import ModelConfig, create_model
from saltseg.predictor import EnsemblePredictor
from saltseg.volume.chunked import predict_survey
from saltseg.volume.segy import to_uint8
from saltseg.volume.survey import open_survey
from saltseg.volume.synth3d import SyntheticSurvey

SHAPE = (12, 20, 110)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(
        arch="vanilla_unet", depth=1, base_channels=4, attention=None, hypercolumn=False, input_size=112
    )
    return create_model(config).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, model: torch.nn.Module) -> Path:
    return save_weights(model, tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic survey and its labels as SEG-Y."""
    root = tmp_path_factory.mktemp("survey")
    SyntheticSurvey(SHAPE, seed=3).write_segy(root / "s.sgy", root / "truth.sgy")
    return root / "s.sgy", root / "truth.sgy"


@pytest.fixture(scope="module")
def survey_mdio(survey: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mdio") / "s.mdio"
    assert main(["volume", "convert", str(survey[0]), str(out)]) == 0
    return out


def read_var(path: Path, name: str = "salt_probability") -> np.ndarray:
    from mdio import open_mdio

    return np.asarray(open_mdio(path)[name].values)


def test_synthetic_survey_is_the_same_whatever_the_block_size(survey: tuple[Path, Path]) -> None:
    synth = SyntheticSurvey(SHAPE, seed=3)
    whole, salt = synth.block(0, SHAPE[0])
    part, part_salt = synth.block(5, 9)
    assert np.array_equal(part, whole[5:9]) and np.array_equal(part_salt, salt[5:9])
    assert 0.01 < salt.mean() < 0.9  # some salt, not all
    assert whole[salt].std() < whole[~salt].std()  # salt: weak reflections
    with segyio.open(str(survey[0])) as f, segyio.open(str(survey[1])) as g:
        assert np.allclose(segyio.tools.cube(f), whole) and np.array_equal(segyio.tools.cube(g) > 0.5, salt)


def test_two_dask_workers_equal_one_process_and_the_section_by_section_answer(
    survey: tuple[Path, Path], checkpoint: Path, model: torch.nn.Module, tmp_path: Path
) -> None:
    src = survey[0]
    one = predict_survey([(checkpoint, 1.0)], src, tmp_path / "one.mdio", backend="torch")
    two = predict_survey([(checkpoint, 1.0)], src, tmp_path / "two.mdio", workers=2, backend="torch")
    a, b = read_var(tmp_path / "one.mdio"), read_var(tmp_path / "two.mdio")
    assert a.shape == SHAPE and np.allclose(a, b, atol=1e-6)
    assert one.workers == 0 and two.workers == 2 and len(two.peak_rss_mb_per_worker) >= 1
    assert not (tmp_path / "one.mdio.partial").exists()
    # the same as segmenting each inline on its own with the survey's clip
    s = open_survey(src)
    with segyio.open(str(src)) as f:
        section = np.asarray(f.iline[f.ilines[4]])
    predictor = EnsemblePredictor([model], device="cpu", backend="torch")  # the workers' options
    expected = predict_large(predictor, to_uint8(section, one.clip).T, tile=101, stride=50).T
    assert np.allclose(a[4], expected, atol=1e-5)
    assert s.shape == SHAPE and s.live.all()


def test_fused_axes_are_the_mean_of_inline_and_crossline_passes(
    survey: tuple[Path, Path], checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fused.mdio"
    argv = ["volume", "predict", str(checkpoint), str(survey[0]), "--out", str(out), "--axis", "both"]
    assert main([*argv, "--keep-axes", "--threshold", "0.5", "--backend", "torch", "--quiet"]) == 0
    assert "inline + crossline sections" in capsys.readouterr().out
    p_in, p_x = read_var(out, "salt_probability_inline"), read_var(out, "salt_probability_crossline")
    fused = read_var(out)
    assert np.allclose(fused, (p_in + p_x) / 2, atol=1e-6) and not np.allclose(p_in, p_x)
    assert np.array_equal(read_var(out, "salt_mask"), (fused > 0.5).astype(np.uint8))


def test_a_killed_prediction_resumes_from_the_blocks_written(
    survey: tuple[Path, Path], checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import saltseg.volume.chunked as chunked

    monkeypatch.setattr(chunked, "MAX_BLOCK", 4)  # 3 blocks of inlines
    reference = tmp_path / "ref.mdio"
    predict_survey([(checkpoint, 1.0)], survey[0], reference, backend="torch")
    out = tmp_path / "r.mdio"
    original = chunked.run_section_block
    calls = {"n": 0}

    def dies_on_the_second_block(*args):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(chunked, "run_section_block", dies_on_the_second_block)
    with pytest.raises(KeyboardInterrupt):
        predict_survey([(checkpoint, 1.0)], survey[0], out, backend="torch")
    assert not out.exists() and (tmp_path / "r.mdio.partial").exists()
    with pytest.raises(DataError, match="--resume"):
        predict_survey([(checkpoint, 1.0)], survey[0], out, backend="torch")
    with pytest.raises(DataError, match="other inputs or options"):
        predict_survey([(checkpoint, 1.0)], survey[0], out, backend="torch", stride=25, resume=True)
    monkeypatch.setattr(chunked, "run_section_block", original)
    report = predict_survey([(checkpoint, 1.0)], survey[0], out, backend="torch", resume=True)
    assert report.resumed_blocks == 1 and report.blocks == 3
    assert np.array_equal(read_var(out), read_var(reference))
    with pytest.raises(DataError, match="the output exists"):
        predict_survey([(checkpoint, 1.0)], survey[0], out, backend="torch")


def test_mdio_input_masks_missing_traces_and_matches_segy(
    survey: tuple[Path, Path], survey_mdio: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from_segy = predict_survey([(checkpoint, 1.0)], survey[0], tmp_path / "a.mdio", backend="torch")
    from_mdio = predict_survey([(checkpoint, 1.0)], survey_mdio, tmp_path / "b.mdio", backend="torch")
    assert from_mdio.clip == pytest.approx(from_segy.clip)
    assert np.allclose(read_var(tmp_path / "a.mdio"), read_var(tmp_path / "b.mdio"), atol=1e-6)
    # an irregular survey: traces missing from the file become masked, zero-probability traces
    irregular = tmp_path / "irregular.sgy"
    with segyio.open(str(survey[0])) as f:
        keep = [i for i in range(f.tracecount) if i not in (3, 4, 25)]
        spec = segyio.spec()
        spec.format, spec.samples, spec.tracecount = 5, f.samples, len(keep)
        with segyio.create(str(irregular), spec) as g:
            g.text[0], g.bin = f.text[0], f.bin
            for k, i in enumerate(keep):
                g.header[k], g.trace[k] = f.header[i], f.trace[i]
    with pytest.raises(DataError, match="volume convert"):
        open_survey(irregular)
    converted = tmp_path / "irregular.mdio"
    assert main(["volume", "convert", str(irregular), str(converted)]) == 0
    s = open_survey(converted)
    assert s.shape == SHAPE and int((~s.live).sum()) == 3 and not s.live[0, 3] and not s.live[1, 5]
    predict_survey([(checkpoint, 1.0)], converted, tmp_path / "c.mdio", backend="torch")
    probs = read_var(tmp_path / "c.mdio")
    assert (probs[~s.live] == 0).all() and probs[s.live].max() > 0
    assert np.array_equal(read_var(tmp_path / "c.mdio", "trace_mask"), s.live)


def test_prediction_back_to_segy_with_the_survey_headers(
    survey: tuple[Path, Path], checkpoint: Path, tmp_path: Path
) -> None:
    pred = tmp_path / "p.mdio"
    predict_survey([(checkpoint, 1.0)], survey[0], pred, backend="torch")
    out = tmp_path / "p.sgy"
    assert main(["volume", "convert", str(pred), str(out)]) == 2  # no headers of its own: --like
    assert main(["volume", "convert", str(pred), str(out), "--like", str(survey[0])]) == 0
    with segyio.open(str(out)) as g, segyio.open(str(survey[0])) as f:
        assert np.allclose(segyio.tools.cube(g), read_var(pred))
        assert all(dict(g.header[i]) == dict(f.header[i]) for i in range(f.tracecount))


def test_bad_inputs_and_outputs_are_one_clear_error(
    survey: tuple[Path, Path], checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.sgy"
    garbage.write_bytes(b"not a seg-y file" * 300)
    not_mdio = tmp_path / "x.mdio"
    not_mdio.mkdir()
    (not_mdio / "zarr.json").write_text("{broken")
    nan_survey = tmp_path / "nan.sgy"
    shutil.copy(survey[0], nan_survey)
    with segyio.open(str(nan_survey), "r+") as f:
        trace = np.array(f.trace[7])
        trace[5] = np.nan
        f.trace[7] = trace
    truncated = tmp_path / "truncated.sgy"
    truncated.write_bytes(survey[0].read_bytes()[:-5000])
    existing = tmp_path / "exists.mdio"
    existing.mkdir()
    base = ["volume", "predict", str(checkpoint)]
    for argv, message in [
        ([*base, str(garbage), "--out", str(tmp_path / "o1.mdio")], "not a readable SEG-Y file"),
        ([*base, str(tmp_path / "missing.sgy"), "--out", str(tmp_path / "o2.mdio")], "not found"),
        ([*base, str(truncated), "--out", str(tmp_path / "o5.mdio")], "SEG-Y"),
        ([*base, str(not_mdio), "--out", str(tmp_path / "o3.mdio")], "not a readable MDIO"),
        ([*base, str(nan_survey), "--out", str(tmp_path / "o4.mdio")], "NaN or Inf"),
        ([*base, str(survey[0]), "--out", str(existing)], "the output exists"),
        ([*base, str(survey[0]), "--out", str(survey[0])], "overwrite the input"),
        ([*base, str(survey[0]), "--out", str(tmp_path / "o.sgy"), "--workers", "2"], "write MDIO"),
        ([*base, str(survey[0]), "--out", str(tmp_path / "o.sgy"), "--uncertainty"], "write MDIO"),
        ([*base, str(survey[0]), "--out", str(tmp_path / "o.sgy"), "--amplitude", "fit"], "write MDIO"),
        (["volume", "synth", str(tmp_path / "s.sgy"), "--shape", "4,4"], "--shape"),
        (["volume", "convert", str(garbage), str(tmp_path / "g.mdio")], "MDIO cannot ingest"),
    ]:
        assert main([*argv, "--backend", "torch"] if argv[1] == "predict" else argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: ") and message in err, (argv, err)
    assert not (tmp_path / "o4.mdio").exists() and existing.is_dir() and not any(existing.iterdir())


def test_labelled_sections_become_training_tiles(tmp_path: Path) -> None:
    from saltseg.data.rle import rle_decode
    from saltseg.data.validate import check_dataset

    shape = (3, 110, 110)  # inlines wide and deep enough for 101 x 101 tiles
    synth = SyntheticSurvey(shape, seed=5)
    synth.write_segy(tmp_path / "s.sgy", tmp_path / "truth.sgy")
    out = tmp_path / "tiles"
    argv = ["volume", "tiles", str(tmp_path / "s.sgy"), str(tmp_path / "truth.sgy"), "--out", str(out)]
    argv += ["--stride", "9"]
    assert main([*argv, "--axis", "both"]) == 0
    report = check_dataset(out)
    assert report.ok, report
    rows = (out / "train.csv").read_text().splitlines()[1:]
    depths = (out / "depths.csv").read_text().splitlines()[1:]
    assert len(rows) == len(depths) == 3 * 2 * 2  # 3 inlines x 2 x 2 tiles, no crossline is wide enough
    synth_salt = synth.block(0, shape[0])[1]
    tid, rle = next(r.split(",") for r in rows if r.split(",")[1])
    axis, s, y, x = tid[0], *(int(v) for v in tid[1:].split("_"))
    truth = (synth_salt[s] if axis == "i" else synth_salt[:, s]).T[y : y + 101, x : x + 101]
    assert np.array_equal(rle_decode(rle, (101, 101)), truth)


def test_conversion_and_tiles_refuse_mismatched_or_too_small_inputs(
    survey: tuple[Path, Path], survey_mdio: Path, tmp_path: Path
) -> None:
    from saltseg.volume.convert import mdio_to_segy, write_training_tiles
    from saltseg.volume.store import OutputStore

    other = tmp_path / "other.sgy"
    SyntheticSurvey((5, 20, 110), seed=1).write_segy(other)
    with pytest.raises(DataError, match="the --like SEG-Y is 5 x 20 x 110"):
        mdio_to_segy(survey_mdio, tmp_path / "x.sgy", like=other)
    with pytest.raises(DataError, match="no 101 x 101 tile fits"):
        write_training_tiles(survey[0], survey[1], tmp_path / "tiles")  # sections 20 traces wide
    assert not (tmp_path / "tiles").exists() and not list(tmp_path.glob(".tiles.tmp-*"))
    with pytest.raises(DataError, match="the labels are 5 x 20 x 110"):
        write_training_tiles(survey[0], other, tmp_path / "tiles")
    foreign = tmp_path / "mine.mdio.partial"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("the user's")
    with pytest.raises(DataError, match="not made by saltseg"):
        OutputStore(tmp_path / "mine.mdio").check_new(resume=True)
    assert (foreign / "notes.txt").read_text() == "the user's"


def test_uncertainty_is_the_members_spread_and_the_axes_total_variance(
    survey: tuple[Path, Path], checkpoint: Path, tmp_path: Path
) -> None:
    torch.manual_seed(1)
    other = save_weights(
        create_model(
            ModelConfig(
                arch="vanilla_unet",
                depth=1,
                base_channels=4,
                attention=None,
                hypercolumn=False,
                input_size=112,
            )
        ).eval(),
        tmp_path / "other.safetensors",
    )
    src = survey[0]
    for name, ckpts in (("a", [(checkpoint, 1.0)]), ("b", [(other, 1.0)])):
        predict_survey(ckpts, src, tmp_path / f"{name}.mdio", backend="torch")
    both = [(checkpoint, 0.5), (other, 0.5)]
    predict_survey(both, src, tmp_path / "ab.mdio", backend="torch", uncertainty=True)
    a, b = read_var(tmp_path / "a.mdio"), read_var(tmp_path / "b.mdio")
    spread = read_var(tmp_path / "ab.mdio", "salt_uncertainty")
    assert np.allclose(read_var(tmp_path / "ab.mdio"), (a + b) / 2, atol=1e-4)
    assert np.allclose(spread, np.abs(a - b) / 2, atol=1e-4) and spread.max() > 0.01  # two members
    fused = tmp_path / "fused.mdio"
    predict_survey(
        both, src, fused, backend="torch", uncertainty=True, axes=("inline", "crossline"), keep_axes=True
    )
    p_i, p_x = read_var(fused, "salt_probability_inline"), read_var(fused, "salt_probability_crossline")
    u_i, u_x = read_var(fused, "salt_uncertainty_inline"), read_var(fused, "salt_uncertainty_crossline")
    mean = (p_i + p_x) / 2
    total = np.sqrt((u_i**2 + u_x**2) / 2 + ((p_i - mean) ** 2 + (p_x - mean) ** 2) / 2)
    assert np.allclose(read_var(fused, "salt_uncertainty"), total, atol=1e-5)


def test_sections_resampled_to_the_training_scale_and_back(
    survey: tuple[Path, Path], checkpoint: Path, model: torch.nn.Module, tmp_path: Path
) -> None:
    import torch.nn.functional as F

    src = survey[0]
    report = predict_survey([(checkpoint, 1.0)], src, tmp_path / "half.mdio", backend="torch", scale=0.5)
    half = read_var(tmp_path / "half.mdio")
    assert half.shape == SHAPE and half.min() >= 0.0 and half.max() <= 1.0
    from mdio import open_mdio

    assert open_mdio(tmp_path / "half.mdio").attrs["attributes"]["saltseg"]["scale"] == 0.5
    with segyio.open(str(src)) as f:
        image = to_uint8(np.asarray(f.iline[f.ilines[2]]), report.clip).T.astype(np.float32) / 255

    def resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        return F.interpolate(torch.from_numpy(a)[None, None], size=shape, mode="bilinear")[0, 0].numpy()

    small = resize(image, (round(image.shape[0] / 2), round(image.shape[1] / 2)))
    predictor = EnsemblePredictor([model], device="cpu", backend="torch")
    expected = np.clip(resize(predict_large(predictor, small), image.shape), 0, 1).T
    assert np.allclose(half[2], expected, atol=1e-5)
    with pytest.raises(SaltsegError, match="scale"):
        predict_survey([(checkpoint, 1.0)], src, tmp_path / "x.mdio", scale=0.0)


def test_fitted_amplitudes_match_the_training_tiles_and_ignore_gain_and_shift(
    survey: tuple[Path, Path], checkpoint: Path, tmp_path: Path
) -> None:
    from saltseg.checkpoints import read_metadata
    from saltseg.errors import CheckpointError

    config, _ = read_metadata(checkpoint)
    s = open_survey(survey[0])
    gain, offset = s.amplitude_mapping(config.mean, config.std)
    pixels = offset + gain * s._sampled_live_amplitudes()
    p16, p50, p84 = np.percentile(pixels, [16, 50, 84])
    assert p50 == pytest.approx(255 * config.mean, abs=0.01) and (p84 - p16) / 2 == pytest.approx(
        255 * config.std
    )
    moved = tmp_path / "moved.sgy"  # the same survey, amplitudes x 3 + 500
    shutil.copy(survey[0], moved)
    with segyio.open(str(moved), "r+") as f:
        for i in range(f.tracecount):
            f.trace[i] = np.asarray(f.trace[i]) * 3 + 500
    a = predict_survey([(checkpoint, 1.0)], survey[0], tmp_path / "a.mdio", backend="torch", amplitude="fit")
    predict_survey([(checkpoint, 1.0)], moved, tmp_path / "b.mdio", backend="torch", amplitude="fit")
    diff = np.abs(read_var(tmp_path / "a.mdio") - read_var(tmp_path / "b.mdio"))
    assert diff.mean() < 1e-4 and diff.max() < 0.02  # a float32 rounding may move a pixel by one grey level
    assert a.shape == SHAPE
    plain = ModelConfig(
        arch="vanilla_unet",
        depth=1,
        base_channels=4,
        normalize="div255",
        attention=None,
        hypercolumn=False,
        input_size=112,
    )
    div255 = save_weights(create_model(plain).eval(), tmp_path / "div255.safetensors")
    with pytest.raises(CheckpointError, match="standardise"):
        predict_survey([(div255, 1.0)], survey[0], tmp_path / "c.mdio", backend="torch", amplitude="fit")


def test_volume_predict_killed_at_a_random_point_resumes_to_the_same_bytes(
    checkpoint: Path, tmp_path: Path
) -> None:
    """Issue 13, fault injection: SIGKILL ``saltseg volume predict`` at a random moment (seeded) of a
    3-block survey; ``--resume`` finishes with the uninterrupted cube, and no ``.partial`` is left."""
    from test_resume_ddp import resume, run_then_kill_midway, saltseg_cmd

    survey = tmp_path / "s.sgy"
    SyntheticSurvey((40, 20, 110), seed=4).write_segy(survey)
    argv = [*saltseg_cmd(), "volume", "predict", str(checkpoint), str(survey), "--workers", "0"]
    argv += ["--backend", "torch", "--quiet"]
    ref, out = tmp_path / "ref.mdio", tmp_path / "k.mdio"
    run_then_kill_midway(argv, ref, out, (0.4, 0.95), seed=15)
    if not out.exists():  # (a run that renamed its output before the signal has nothing to resume)
        resume(argv, out)
    assert np.array_equal(read_var(out), read_var(ref))
    assert not (tmp_path / "k.mdio.partial").exists()
