"""Errors a user can meet, each with its exit code (docs/architecture.md, "Exit codes").

Every entry point (the `weir` CLI and the spark-submit jobs) maps them the same way through
:func:`weir.entry.run_job`: ``ConfigError`` exits 2, a ``WeirError`` exits with its
``exit_code`` (1 unless a subclass says otherwise), success 0.
"""

from __future__ import annotations

from weir.config import ConfigError

EXIT_OK = 0
EXIT_RUNTIME_FAILURE = 1
EXIT_BAD_CONFIG = 2
EXIT_CHECKS_FAILED = 3

# Run records keep an error's first line, up to this many characters.
MAX_ERROR_CHARS = 2000


class WeirError(Exception):
    """A failure at run time with a reason the user can act on (exit code 1)."""

    exit_code = EXIT_RUNTIME_FAILURE


class ChecksFailedError(WeirError):
    """Data-quality checks ran and a critical one failed: the data is bad, the run was not.

    Exit code 3, so a scheduler can tell bad data from a job that could not run.
    """

    exit_code = EXIT_CHECKS_FAILED


def describe_error(error: BaseException) -> str:
    """``Type: first line of the message``, at most MAX_ERROR_CHARS: what a run record keeps."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:MAX_ERROR_CHARS]


__all__ = [
    "EXIT_BAD_CONFIG",
    "EXIT_CHECKS_FAILED",
    "EXIT_OK",
    "EXIT_RUNTIME_FAILURE",
    "MAX_ERROR_CHARS",
    "ChecksFailedError",
    "ConfigError",
    "WeirError",
    "describe_error",
]
