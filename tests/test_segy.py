"""Tests of saltseg.volume and ``saltseg volume``: SEG-Y in, salt probabilities out as SEG-Y."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import segyio
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from saltseg.checkpoints import save_weights
from saltseg.cli import main
from saltseg.data.synth import generate_tiles
from saltseg.errors import DataError, SaltsegError
from saltseg.inference.sliding import predict_large
from saltseg.models import ModelConfig, create_model
from saltseg.volume import read_volume, segment_segy, to_uint8
from saltseg.volume.segy import open_segy, sample_format

ILINES, XLINES, NS = [10, 11, 12], [20, 21, 22, 23], 120


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(
        arch="vanilla_unet", depth=1, base_channels=4, attention=None, hypercolumn=False, input_size=128
    )
    model = create_model(config).eval()
    head = model.net.heads.mask[-1]
    with torch.no_grad():  # contrasted predictions centred on 0.5, so that mistakes show
        head.weight.mul_(30)
        logits = model(torch.from_numpy(generate_tiles(4, seed=3).images[:, None]).float() / 255)["mask"]
        head.bias.sub_(logits.median())
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, model) -> Path:
    return save_weights(model, tmp_path_factory.mktemp("model") / "tiny.safetensors")


def amplitudes() -> np.ndarray:
    """(ilines, xlines, samples) amplitudes from synthetic seismic images (depth down the samples)."""
    images = generate_tiles(len(ILINES), seed=4, size=NS).images  # (3, 120, 120): samples x traces
    return ((images[:, :, : len(XLINES)].astype(np.float32) - 128.0) * 25.0).transpose(0, 2, 1)


def write_segy(
    path: Path,
    cube: np.ndarray,
    iline: int = 189,
    xline: int = 193,
    fmt: int = 1,
    sorting: int = segyio.TraceSortingFormat.INLINE_SORTING,
) -> Path:
    spec = segyio.spec()
    spec.iline, spec.xline, spec.format, spec.sorting = iline, xline, fmt, sorting
    spec.ilines, spec.xlines, spec.offsets = ILINES, XLINES, [1]
    spec.samples = np.arange(NS) * 4.0
    pairs = [(il, xl) for il in ILINES for xl in XLINES]
    if sorting == segyio.TraceSortingFormat.CROSSLINE_SORTING:
        pairs = [(il, xl) for xl in XLINES for il in ILINES]
    with segyio.create(str(path), spec) as f:
        f.text[0] = segyio.tools.wrap("C 1 SYNTHETIC SALT TEST VOLUME")
        for tr, (il, xl) in enumerate(pairs):
            f.header[tr] = {
                iline: il,
                xline: xl,
                segyio.su.cdpx: 1000 * il,
                segyio.su.cdpy: 1000 * xl,
                segyio.su.offset: 1,
                segyio.su.ns: NS,
                segyio.su.dt: 4000,
            }
            data = cube[ILINES.index(il), XLINES.index(xl)]
            f.trace[tr] = np.ascontiguousarray(data.astype(np.int16) if fmt == 3 else data)
        f.bin.update(tsort=sorting, hdt=4000, hns=NS)
    return path


def expected_probs(model, cube: np.ndarray, clip: float) -> np.ndarray:
    return np.stack([predict_large(model, to_uint8(section, clip).T).T for section in cube])


@pytest.mark.parametrize(
    ("fmt", "sorting"),
    [(1, segyio.TraceSortingFormat.INLINE_SORTING), (3, segyio.TraceSortingFormat.CROSSLINE_SORTING)],
)
def test_volume_command_keeps_geometry_and_headers(tmp_path: Path, checkpoint, model, capsys, fmt, sorting):
    cube = amplitudes()
    src = write_segy(tmp_path / "in.sgy", cube, fmt=fmt, sorting=sorting)
    out = tmp_path / "out" / "salt.sgy"
    # on the CPU, as the expected probabilities (tests/test_gpu.py compares the GPU with the CPU)
    argv = [
        "volume",
        "predict",
        str(checkpoint),
        str(src),
        "--out",
        str(out),
        "--quiet",
        "--device",
        "cpu",
        "--backend",
        "torch",
    ]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["salt.sgy"]  # no temporary left
    with segyio.open(str(src)) as f, segyio.open(str(out)) as g:
        assert list(g.ilines) == ILINES and list(g.xlines) == XLINES and g.sorting == f.sorting
        assert np.array_equal(g.samples, f.samples)
        assert g.text[0] == f.text[0]
        assert all(dict(g.header[i]) == dict(f.header[i]) for i in range(f.tracecount))
        assert sample_format(g) == (1 if fmt == 1 else 5)  # float formats kept, integers -> IEEE
        assert {k: v for k, v in g.bin.items() if k != segyio.BinField.Format} == {
            k: v for k, v in f.bin.items() if k != segyio.BinField.Format
        }
        got = np.stack([g.iline[il] for il in ILINES])
    assert got.shape == (3, 4, NS) and got.min() >= 0.0 and got.max() <= 1.0
    clip = float(np.percentile(np.abs(cube.astype(np.int16) if fmt == 3 else cube), 99))
    np.testing.assert_allclose(got, expected_probs(model, cube, clip), atol=1e-5)


def test_threshold_crossline_and_api(tmp_path: Path, model) -> None:
    src = write_segy(tmp_path / "in.sgy", amplitudes())
    notes: list[str] = []
    report = segment_segy(
        [model], src, tmp_path / "mask.sgy", axis="crossline", threshold=0.5, notify=notes.append
    )
    assert report.mode == "3d" and report.axis == "crossline" and report.sections == 4 and not notes
    assert report.shape == (3, 4, NS) and 0.0 <= report.salt_fraction <= 1.0
    volume = read_volume(tmp_path / "mask.sgy")
    assert volume.mode == "3d" and volume.data.shape == (3, 4, NS)
    assert set(np.unique(volume.data)) <= {0.0, 1.0}
    assert report.salt_fraction == pytest.approx(volume.data.mean())


def test_non_standard_header_bytes(tmp_path: Path, checkpoint, capsys) -> None:
    cube = amplitudes()
    src = write_segy(tmp_path / "odd.sgy", cube, iline=9, xline=21)
    out = tmp_path / "odd_salt.sgy"
    argv = ["volume", "predict", str(checkpoint), str(src), "--out", str(out), "--quiet"]
    assert main([*argv, "--iline", "9", "--xline", "21"]) == 0
    assert "warning" not in capsys.readouterr().err
    with segyio.open(str(out), iline=9, xline=21) as g:
        assert list(g.ilines) == ILINES and list(g.xlines) == XLINES

    # Without the byte locations: trace mode (one 2-D section of 12 traces), with a clear warning.
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "trace mode" in err and "--iline" in err and "byte 189" in err
    with pytest.raises(RuntimeError):
        segyio.open(str(out))
    with segyio.open(str(out), ignore_geometry=True) as g, segyio.open(str(src), ignore_geometry=True) as f:
        assert g.tracecount == 12 and len(g.samples) == NS
        assert all(dict(g.header[i]) == dict(f.header[i]) for i in range(12))
        data = g.trace.raw[:]
    assert data.min() >= 0.0 and data.max() <= 1.0
    volume = read_volume(src)
    assert volume.mode == "traces" and volume.data.shape == (1, 12, NS) and "trace mode" in volume.note


def test_read_volume_and_scaling(tmp_path: Path) -> None:
    cube = amplitudes()
    src = write_segy(tmp_path / "in.sgy", cube, fmt=5)
    volume = read_volume(src)
    assert volume.mode == "3d" and volume.note is None
    np.testing.assert_array_equal(volume.data, cube)
    assert list(volume.ilines) == ILINES and list(volume.xlines) == XLINES and volume.samples[1] == 4.0
    u = to_uint8(np.array([0.0, 10.0, -10.0, 50.0, np.nan]), clip=10.0)
    assert u.tolist() == [128, 255, 1, 255, 128]
    assert to_uint8(np.array([10.0]), clip=10.0, reverse_polarity=True).tolist() == [1]


def test_bad_files_are_one_line_errors(tmp_path: Path, checkpoint, capsys) -> None:
    garbage = tmp_path / "garbage.sgy"
    garbage.write_bytes(b"this is not a SEG-Y file " * 400)
    truncated = tmp_path / "truncated.sgy"
    truncated.write_bytes(write_segy(tmp_path / "ok.sgy", amplitudes()).read_bytes()[:-100])
    for path, message in [
        (garbage, "not a readable SEG-Y file"),
        (truncated, "not a readable SEG-Y file"),
        (tmp_path / "missing.sgy", "SEG-Y file not found"),
    ]:
        out = tmp_path / "never.sgy"
        assert main(["volume", "predict", str(checkpoint), str(path), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {path}: {message}") and "\n" not in err
        assert not out.exists()
    with pytest.raises(SaltsegError, match="trace header field"):
        segment_segy([], tmp_path / "ok.sgy", tmp_path / "x.sgy", iline=1000)
    with pytest.raises(DataError), open_segy(garbage):
        pass


def test_failure_leaves_no_output(tmp_path: Path) -> None:
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            raise RuntimeError("boom")

    src = write_segy(tmp_path / "in.sgy", amplitudes())
    with pytest.raises(RuntimeError, match="boom"):
        segment_segy([Broken()], src, tmp_path / "out" / "salt.sgy")
    assert list((tmp_path / "out").iterdir()) == []


def test_long_2d_line_is_processed_in_overlapping_blocks(tmp_path: Path, model, monkeypatch) -> None:
    import saltseg.volume.segment as segment_module

    n = 300
    image = generate_tiles(1, seed=6, size=n).images[0][:NS]  # (samples, traces)
    spec = segyio.spec()
    spec.format, spec.samples, spec.tracecount = 5, np.arange(NS) * 2.0, n
    src = tmp_path / "line.sgy"
    with segyio.create(str(src), spec) as f:
        for i in range(n):
            f.header[i] = {segyio.su.cdp: 1000 + i, segyio.su.ns: NS}
            f.trace[i] = np.ascontiguousarray(image[:, i].astype(np.float32) - 128.0)
    whole = segment_segy([model], src, tmp_path / "whole.sgy")
    monkeypatch.setattr(segment_module, "TRACE_BLOCK", 70)
    blocks = segment_segy([model], src, tmp_path / "blocks.sgy")
    assert whole.mode == blocks.mode == "traces" and (whole.sections, blocks.sections) == (1, 5)
    a, b = read_volume(tmp_path / "whole.sgy").data[0], read_volume(tmp_path / "blocks.sgy").data[0]
    assert a.shape == b.shape == (n, NS) and b.min() > 0.0  # every trace written
    assert np.abs(a - b).mean() < 0.02


def test_volume_never_overwrites_its_input_or_writes_a_folder(tmp_path: Path, checkpoint, capsys) -> None:
    survey = write_segy(tmp_path / "survey.sgy", amplitudes())
    before = survey.read_bytes()
    for out, message in [
        (survey, "would overwrite the input"),
        (tmp_path / "." / "survey.sgy", "would overwrite the input"),
        (checkpoint, "would overwrite the input"),
        (tmp_path, "the output exists"),  # a folder: an MDIO output, never replaced
    ]:
        assert main(["volume", "predict", str(checkpoint), str(survey), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
    assert survey.read_bytes() == before
    with pytest.raises(DataError, match="overwrite the input"):
        segment_segy([], survey, survey)


def test_nan_amplitudes_are_an_error_or_counted_zeros(tmp_path: Path, checkpoint, model, capsys) -> None:
    cube = amplitudes()
    cube[1, 2, 10:15] = np.nan
    cube[2, 0, 0] = np.inf
    survey = write_segy(tmp_path / "nan.sgy", cube)
    out = tmp_path / "salt.sgy"
    assert main(["volume", "predict", str(checkpoint), str(survey), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
    assert err.startswith(f"error: {survey}: ") and "NaN or Inf" in err and "--nan-as zero" in err
    assert not out.exists()
    argv = ["volume", "predict", str(checkpoint), str(survey), "--out", str(out), "--nan-as", "zero"]
    argv += ["--backend", "torch"]  # as segment_segy below
    assert main([*argv, "--clip", "3000"]) == 0  # one clip for both (a percentile sees other samples)
    assert "6 NaN/Inf amplitudes were read as zero" in capsys.readouterr().out
    zeroed = np.nan_to_num(cube, nan=0.0, posinf=0.0)
    ref = tmp_path / "ref.sgy"
    report = segment_segy([model], write_segy(tmp_path / "zero.sgy", zeroed), ref, clip=3000)
    assert report.non_finite == 0
    assert np.array_equal(read_volume(out).data, read_volume(tmp_path / "ref.sgy").data)
