"""A full disk (ENOSPC) in any command: one ``error:`` line naming the file and the space left, exit 2,
no traceback, and no temporary file left behind."""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import TINY
from saltseg.cli import main
from saltseg.errors import DiskFullError, SaltsegError
from saltseg.utils.io import atomic_path, atomic_write, find_disk_full, naming_disk_full

FREE = 123_456_789  # what the patched disk_usage reports: "123 MB free"


def no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def patch_free_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every disk report :data:`FREE` bytes free."""
    real = shutil.disk_usage

    def disk_usage(path: Any) -> Any:
        usage = real(path)
        return type(usage)(usage.total, usage.used, FREE)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)


@pytest.fixture(autouse=True)
def _known_free_space(monkeypatch: pytest.MonkeyPatch) -> None:
    patch_free_space(monkeypatch)


def full_at(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, call: int = 1) -> list[int]:
    """Make ``module.name`` raise ENOSPC at its ``call``-th call (counting from 1); the count is returned."""
    real: Callable = getattr(module, name)
    calls = [0]

    def fake(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            raise no_space()
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, fake)
    return calls


def one_disk_full_line(err: str, path: Path | str) -> None:
    """``err`` ends with the one disk-full line for ``path``: no traceback, no other error line."""
    expected = f"error: no space left on device while writing {path} (123 MB free on that disk)"
    lines = err.strip().splitlines()
    assert lines and lines[-1] == expected, err
    assert [x for x in lines if x.startswith("error:")] == [expected], err
    assert "Traceback" not in err and "OSError" not in err, err


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


# ---------------------------------------------------------------------------------------------------
# the atomic write helpers


def test_atomic_write_turns_enospc_in_the_block_into_one_error_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(DiskFullError) as info, atomic_write(target) as f:
        f.write("new\n")
        raise no_space()
    assert str(info.value) == f"no space left on device while writing {target} (123 MB free on that disk)"
    assert info.value.free_bytes == FREE and info.value.path == str(target)
    assert isinstance(info.value, SaltsegError)
    assert target.read_text() == "old\n" and temp_files(tmp_path) == []


def test_atomic_write_enospc_at_fsync_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full_at(monkeypatch, os, "fsync")
    target = tmp_path / "sub" / "out.bin"
    expected = re.escape(f"while writing {target} (123 MB free")
    with pytest.raises(DiskFullError, match=expected), atomic_write(target, "wb") as f:
        f.write(b"x" * 1000)
    assert not target.exists() and temp_files(tmp_path) == []


def test_atomic_write_enospc_at_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full_at(monkeypatch, os, "replace")
    target = tmp_path / "out.txt"
    with pytest.raises(DiskFullError, match="no space left on device"), atomic_write(target) as f:
        f.write("x")
    assert not target.exists() and temp_files(tmp_path) == []


def test_atomic_write_enospc_behind_a_library_error(tmp_path: Path) -> None:
    """torch.save raises a RuntimeError while handling the OSError: the chain is followed."""
    target = tmp_path / "state.ckpt"
    with pytest.raises(DiskFullError, match=re.escape(str(target))), atomic_write(target, "wb"):
        try:
            raise no_space()
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704") from None
    assert temp_files(tmp_path) == []


def test_atomic_path_turns_a_rust_storage_full_error_into_one_error(tmp_path: Path) -> None:
    """safetensors (Rust) reports ``Os { code: 28, kind: StorageFull, ... }`` in its own exception."""
    target = tmp_path / "best.safetensors"
    with (
        pytest.raises(DiskFullError, match=re.escape(f"while writing {target} (")),
        atomic_path(target) as tmp,
    ):
        tmp.write_bytes(b"partial")
        raise ValueError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No sp" })'
        )
    assert not target.exists() and temp_files(tmp_path) == []


def test_other_write_errors_are_not_called_a_full_disk(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), atomic_write(tmp_path / "a.txt"):
        raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(OSError) as info, atomic_path(tmp_path / "b.bin"):
        raise OSError(errno.EIO, "Input/output error")
    assert not isinstance(info.value, DiskFullError) and temp_files(tmp_path) == []
    assert find_disk_full(RuntimeError("boom")) is None
    with pytest.raises(KeyError), naming_disk_full(tmp_path / "c"):
        raise KeyError("c")


def test_free_space_unknown_and_a_file_in_a_folder() -> None:
    assert str(DiskFullError(None, None, where="runs/r1")) == (
        "no space left on device while writing a file in runs/r1 (unknown space free on that disk)"
    )
    assert "2 MB free" in str(DiskFullError("x.csv", 2_500_000))


# ---------------------------------------------------------------------------------------------------
# every command that writes: one line, exit 2, nothing half-written


def test_synth_disk_full_names_the_tile_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import saltseg.data.synth as synth

    full_at(monkeypatch, synth, "_save_mask", call=3)
    out = tmp_path / "synth"
    assert main(["synth", str(out), "--n", "5", "--n-test", "2"]) == 2
    err = capsys.readouterr().err
    mask = re.search(r"while writing (\S+\.png) ", err)
    assert mask, err
    assert Path(mask.group(1)).parent == out / "train" / "masks"
    one_disk_full_line(err, mask.group(1))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_synth_disk_full_in_a_csv_names_the_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import csv

    real_writer = csv.writer

    class FullWriter:
        def __init__(self, f: Any, **kwargs: Any) -> None:
            self.inner = real_writer(f, **kwargs)
            self.header: list[Any] | None = None

        def writerow(self, row: list[Any]) -> Any:
            if self.header == ["id", "z"]:  # the first row of depths.csv
                raise no_space()
            self.header = self.header or row
            return self.inner.writerow(row)

    monkeypatch.setattr(csv, "writer", FullWriter)
    out = tmp_path / "synth"
    assert main(["synth", str(out), "--n", "3"]) == 2
    one_disk_full_line(capsys.readouterr().err, out / "depths.csv")
    assert list(tmp_path.iterdir()) == []


def test_data_folds_disk_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from saltseg.data.synth import write_kaggle_layout

    data = write_kaggle_layout(tmp_path / "d", n_train=12, seed=1)
    full_at(monkeypatch, os, "fsync")
    out = tmp_path / "folds.csv"
    assert main(["data", "folds", str(data), "--k", "2", "--by", "random", "--out", str(out)]) == 2
    one_disk_full_line(capsys.readouterr().err, out)
    assert not out.exists() and temp_files(tmp_path) == []


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from saltseg.checkpoints import save_weights
    from saltseg.models import ModelConfig, create_model

    torch.manual_seed(0)
    config = ModelConfig(arch="vanilla_unet", depth=1, base_channels=4, attention=None, hypercolumn=False)
    return save_weights(create_model(config).eval(), tmp_path_factory.mktemp("w") / "tiny.safetensors")


def test_predict_disk_full_names_the_file_and_leaves_no_temp(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from saltseg.data.synth import write_kaggle_layout

    data = write_kaggle_layout(tmp_path / "d", n_train=0, n_test=6, seed=2)
    out, csv = tmp_path / "pred", tmp_path / "sub.csv"
    argv = ["predict", str(weights), "--images", str(data), "--out", str(out), "--csv", str(csv), "--no-tta"]
    argv += ["--backend", "torch"]  # the outputs' writes only (a graph backend also writes its cache)
    written = []
    for call in range(1, 20):  # a full disk at each file predict writes, in turn
        monkeypatch.undo()
        patch_free_space(monkeypatch)
        full_at(monkeypatch, os, "fsync", call=call)
        code = main(argv)
        err = capsys.readouterr().err
        if code == 0:  # past the last write: the same command finishes once there is space
            break
        assert code == 2, err
        named = re.search(r"while writing (\S+) \(", err)
        assert named, err
        one_disk_full_line(err, named.group(1))
        written.append(Path(named.group(1)))
        assert written[-1].is_relative_to(out) or written[-1] == csv
        assert temp_files(tmp_path) == [], temp_files(tmp_path)
        if csv not in written:  # the submission is never half-written, nor written before the masks
            assert not csv.exists()
    assert code == 0 and csv.exists()
    assert csv in written and out / "masks.csv" in written and out / "meta.json" in written, written


def test_volume_disk_full_names_the_output(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_segy import amplitudes, write_segy

    src = write_segy(tmp_path / "in.sgy", amplitudes())
    before = src.read_bytes()
    out = tmp_path / "out" / "salt.sgy"
    full_at(monkeypatch, os, "replace")
    assert main(["volume", "predict", str(weights), str(src), "--out", str(out), "--backend", "torch"]) == 2
    one_disk_full_line(capsys.readouterr().err, out)
    assert not out.exists() and temp_files(tmp_path) == [] and src.read_bytes() == before


def test_train_disk_full_leaves_no_run_and_the_rerun_is_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from saltseg.data.synth import write_kaggle_layout

    data = write_kaggle_layout(tmp_path / "d", n_train=40, seed=3)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "run"
    argv = ["train", str(cfg), "--data", str(data), "--fold", "0", "--out", str(out), "--no-progress"]
    full_at(monkeypatch, os, "fsync", call=1)  # folds.csv, the first file of a run
    assert main(argv) == 2
    one_disk_full_line(capsys.readouterr().err, out / "folds.csv")
    assert not (out / "config.yaml").exists() and temp_files(tmp_path) == []
    monkeypatch.undo()
    patch_free_space(monkeypatch)
    full_at(monkeypatch, os, "fsync", call=2)  # the rerun gets past "already holds a run" to config.yaml
    assert main(argv) == 2
    one_disk_full_line(capsys.readouterr().err, out / "config.yaml")
    assert not (out / "config.yaml").exists() and temp_files(tmp_path) == []


def test_an_unnamed_enospc_anywhere_names_the_commands_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library's own write (Lightning's checkpoint, a figure) that fails without a file name."""
    import saltseg.data.synth as synth

    def write_kaggle_layout(*args: Any, **kwargs: Any) -> Path:
        try:
            raise no_space()
        except OSError as exc:
            raise RuntimeError("writer failed") from exc

    monkeypatch.setattr(synth, "write_kaggle_layout", write_kaggle_layout)
    out = tmp_path / "somewhere"
    assert main(["synth", str(out)]) == 2
    one_disk_full_line(capsys.readouterr().err, f"a file in {out}")
    assert not out.exists()
