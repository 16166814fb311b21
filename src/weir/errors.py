"""Errors a user can meet, each mapped to an exit code by the CLI (DESIGN.md §8)."""

from __future__ import annotations

from weir.config import ConfigError

EXIT_OK = 0
EXIT_RUNTIME_FAILURE = 1
EXIT_BAD_CONFIG = 2


class WeirError(Exception):
    """A failure at run time with a reason the user can act on (exit code 1)."""


__all__ = ["EXIT_BAD_CONFIG", "EXIT_OK", "EXIT_RUNTIME_FAILURE", "ConfigError", "WeirError"]
