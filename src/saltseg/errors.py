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
