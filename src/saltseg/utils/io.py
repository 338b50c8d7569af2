"""Atomic file writing: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from saltseg.errors import DiskFullError

_NO_SPACE = (os.strerror(errno.ENOSPC), "StorageFull")  # as C libraries and Rust (safetensors) say it


def find_disk_full(exc: BaseException) -> BaseException | None:
    """The exception in the chain of ``exc`` that says the disk is full, or None.

    An :class:`OSError` with errno ENOSPC, or an error whose message says "No space left on device"
    (safetensors, segyio); the chain (``__cause__`` / ``__context__``) is followed because libraries
    re-raise their own errors (``torch.save`` raises a RuntimeError while handling the OSError).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return current
        if not isinstance(current, DiskFullError) and any(s in str(current) for s in _NO_SPACE):
            return current
        current = current.__cause__ or current.__context__
    return None


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the disk holding ``path`` (its nearest existing folder), or None if unknown."""
    p = Path(path).absolute()
    for folder in (p, *p.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def disk_full_error(path: str | Path) -> DiskFullError:
    """The one-line error for a full disk while writing ``path``, with the space left on its disk."""
    return DiskFullError(path, free_bytes(Path(path).parent))


@contextlib.contextmanager
def naming_disk_full(path: str | Path) -> Iterator[None]:
    """Turn a full disk inside the block into a :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, DiskFullError) or find_disk_full(exc) is None:
            raise
        raise disk_full_error(path) from exc


def _new_file_mode(target: Path) -> int:
    """The permissions a plain ``open(target, "w")`` would give: the old file's, else 0o666 less umask.

    ``tempfile.mkstemp`` creates files readable by their owner only (0o600); without this the renamed
    file would keep those permissions.
    """
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` and rename it onto ``path`` only if the block succeeds.

    On any failure the temporary file is removed; a full disk (ENOSPC) becomes a
    :class:`~saltseg.errors.DiskFullError` naming ``path`` and the space left on its disk.

    Example:
        >>> with atomic_write("out.csv") as f:
        ...     f.write("id,rle_mask\\n")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if not isinstance(exc, DiskFullError) and find_disk_full(exc) is not None:
            raise disk_full_error(path) from exc
        raise


def atomic_path(path: str | Path) -> contextlib.AbstractContextManager[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    For libraries that want a file name rather than a file object (safetensors, matplotlib, numpy). A full
    disk becomes a :class:`~saltseg.errors.DiskFullError` naming ``path``, as in :func:`atomic_write`.
    """

    @contextlib.contextmanager
    def _ctx() -> Iterator[Path]:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=target.suffix or ".tmp", dir=target.parent
        )
        os.close(fd)
        try:
            yield Path(tmp)
            if os.path.exists(tmp):
                os.chmod(tmp, _new_file_mode(target))
            os.replace(tmp, target)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if not isinstance(exc, DiskFullError) and find_disk_full(exc) is not None:
                raise disk_full_error(target) from exc
            raise

    return _ctx()


#: The name of an :func:`atomic_write` / :func:`atomic_path` temporary: ``tempfile.mkstemp`` with the
#: prefix ``.NAME.``, 8 random characters, and the suffix ``.tmp`` or NAME's own (``.x.npz.k3j_9a2b.npz``).
_ATOMIC_TEMPORARY = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]+)")


def temporary_target(name: str) -> str | None:
    """The file name whose atomic write left a temporary named ``name``, or None for any other name."""
    m = _ATOMIC_TEMPORARY.fullmatch(name)
    if m is None:
        return None
    target, suffix = m.group("target"), m.group("suffix")
    return target if suffix == ".tmp" or target.endswith(suffix) else None


def _remove(stale: list[Path]) -> list[Path]:
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return sorted(stale)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporary files an atomic write of ``path`` left beside it when its process was killed;
    returns what was removed. Call it only where no other process writes ``path`` at the same time."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    candidates = path.parent.glob(f".{glob.escape(path.name)}.*")
    return _remove([p for p in candidates if temporary_target(p.name) == path.name and p.is_file()])


def remove_stale_temporaries_in(folder: str | Path) -> list[Path]:
    """Delete, anywhere under ``folder``, the temporary files of atomic writes whose process was killed;
    returns what was removed. Call it only on a saltseg folder being resumed, where no other process
    writes."""
    return _remove([p for p in Path(folder).rglob(".*") if temporary_target(p.name) and p.is_file()])


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")


MARKER_FILE = ".saltseg"
"""Marker written into folders saltseg creates and may later empty (``demo --fresh``); holds their kind."""


def _same_or_inside(path: Path, other: Path) -> bool:
    """True when ``path`` is ``other`` or lies inside the folder ``other`` (links resolved)."""
    p, o = path.resolve(), other.resolve()
    return p == o or (o.is_dir() and p.is_relative_to(o))


def looks_like_dataset(folder: Path) -> bool:
    """True for the root of a Kaggle-layout dataset: a ``train/images`` or ``test/images`` folder beside
    its ``depths.csv``, ``train.csv`` or ``sample_submission.csv``."""
    has_tiles = any((folder / split / "images").is_dir() for split in ("train", "test"))
    has_csv = any((folder / f).is_file() for f in ("depths.csv", "train.csv", "sample_submission.csv"))
    return has_tiles and has_csv


def check_output_file(
    out: str | Path,
    inputs: Sequence[str | Path] = (),
    datasets: Sequence[str | Path] = (),
    may_replace: Callable[[Path], bool] | None = None,
) -> None:
    """Refuse an output file that would replace an input or write into a dataset folder.

    Args:
        out: The file a command is about to write.
        inputs: Files or folders the command reads: ``out`` may not be one of those files, nor an existing
            file inside those folders unless ``may_replace(out)`` (an earlier output of the same kind).
        datasets: Dataset folders the command reads: ``out`` may never lie inside them.
        may_replace: Tells whether an existing file inside an input folder is the command's own kind of
            output (for example a submission CSV written by an earlier ``predict``).

    Raises:
        DataError: Naming ``out`` and what it would destroy; also when ``out`` is a folder.
    """
    from saltseg.errors import DataError

    out = Path(out)
    if out.is_dir():
        raise DataError("the output is a folder; give a file name", out)
    for ds in [*datasets, *([out.parent] if looks_like_dataset(out.parent) else [])]:
        if Path(ds).is_dir() and _same_or_inside(out, Path(ds)):
            raise DataError(
                f"the output lies inside the dataset folder {ds}; saltseg never writes into a dataset", out
            )
    for src in map(Path, inputs):
        if not src.exists():
            continue
        same = out.resolve() == src.resolve()
        inside = src.is_dir() and out.exists() and _same_or_inside(out, src)
        if same or (inside and not (may_replace and may_replace(out))):
            raise DataError(f"the output would overwrite the input {src}; choose another output", out)


def refuse_foreign_file(out: str | Path, is_own: Callable[[Path], bool], what: str) -> None:
    """Refuse an existing ``out`` that is not ``what`` (an earlier output of the same command).

    Raises:
        DataError: ``out`` is a folder, or an existing file for which ``is_own(out)`` is false.
    """
    from saltseg.errors import DataError

    out = Path(out)
    if out.is_dir():
        raise DataError("the output is a folder; give a file name", out)
    if out.exists() and not is_own(out):
        raise DataError(f"exists and is not {what}; saltseg replaces only its own outputs", out)


def claim_output_dir(out: str | Path, kind: str, fresh: bool = False) -> Path:
    """Make ``out`` a saltseg folder of ``kind`` (marker file inside), or check that it already is.

    A missing or empty folder is created and marked. An existing folder must carry the marker of the same
    kind: saltseg never writes into, nor with ``fresh`` empties, a folder it did not make.

    Raises:
        DataError: ``out`` is a file, or a non-empty folder without the marker of ``kind``.
    """
    import shutil

    from saltseg.errors import DataError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError("the output exists and is a file, not a folder", out)
    marker = out / MARKER_FILE
    if out.is_dir() and any(out.iterdir()):
        try:
            found = marker.read_text().strip()
        except (OSError, UnicodeDecodeError):
            found = None
        if found != kind:
            raise DataError(
                f"the folder exists and was not made by saltseg {kind}; it is left untouched: choose a new "
                "or empty --out",
                out,
            )
        if fresh:
            for child in out.iterdir():
                if child.name != MARKER_FILE:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        marker.write_text(kind + "\n")
    return out
