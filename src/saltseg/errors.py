"""User-facing errors: one clear line naming the file and the problem, and a non-zero exit."""

from __future__ import annotations

from pathlib import Path


class SaltsegError(Exception):
    """An error caused by the user's input (a file, a config, an argument).

    The CLI prints ``error: <message>`` on one line and exits with status 2, without a traceback.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.message = message  # the problem alone, without the path
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ConfigError(SaltsegError):
    """A config file or override that is invalid (unknown key, wrong type, bad value)."""


class DataError(SaltsegError):
    """A data file that is missing, unreadable or inconsistent."""


class RLEError(DataError):
    """A malformed run-length-encoded mask string."""


class CheckpointError(SaltsegError):
    """A checkpoint that is corrupt, foreign, or does not match its config."""


class DiskFullError(SaltsegError):
    """The disk filled up while saltseg wrote a file: names the file and the space left on its disk."""

    def __init__(
        self, path: str | Path | None, free_bytes: int | None, where: str | Path | None = None
    ) -> None:
        free = "unknown space" if free_bytes is None else f"{free_bytes // 1_000_000} MB"
        if path is not None:
            what = str(path)
        elif where is not None:
            what = f"a file in {where}"
        else:
            what = "an output file"
        message = f"no space left on device while writing {what} ({free} free on that disk)"
        self.path = None if path is None else str(path)
        self.message = message
        self.free_bytes = free_bytes
        Exception.__init__(self, message)
