"""How every entry point runs: logging set up once, errors mapped to exit codes, signals.

The spark-submit scripts under ``jobs/`` and the ``weir`` console script both end in
:func:`run_job`, so a job behaves the same whichever way it was started:

* logging is configured here, once (one format, on stderr; py4j's chatter off), and nowhere
  in the library;
* :class:`~weir.config.ConfigError` exits 2 (nothing was written), a
  :class:`~weir.errors.WeirError` exits with its ``exit_code`` (1, or 3 for failed
  data-quality checks), with the reason as one line;
* long-running work (a stream, a merge loop) gets a stop event that SIGTERM / SIGINT set
  (:func:`weir.signals.stop_on_signals`): it finishes its unit of work and returns.
"""

from __future__ import annotations

import argparse
import logging
import re
import threading
from typing import Callable, Optional

from weir.config import DEFAULT_CONF_PATH, ConfigError
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK, WeirError
from weir.signals import stop_on_signals

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# What a looping command (`--every`) accepts as its interval.
MIN_INTERVAL_SECONDS = 1
MAX_INTERVAL_SECONDS = 86_400

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

log = logging.getLogger("weir")

Report = Callable[[str, str], None]  # (what kind of failure, the reason)


def configure_logging(level: int = logging.INFO) -> None:
    """Log records of ``level`` and above to stderr, one line each. Entry points only.

    A second call changes only the level: the handler and format are set once per process.
    """
    logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.getLogger().setLevel(level)
    logging.getLogger("py4j").setLevel(logging.WARNING)


def _log_failure(kind: str, reason: str) -> None:
    log.error("%s %s", kind, reason)


def run_job(
    work: Callable[[], Optional[int]],
    *,
    report: Report = _log_failure,
    log_level: Optional[int] = logging.INFO,
) -> int:
    """Run ``work`` and return the process exit code (docs/contract.md, "Command line ...").

    ``work`` returns None (success) or an exit code of its own. ``report(kind, reason)`` shows
    a failure in one line (the log by default; the CLI prints it). ``log_level`` None leaves logging
    as the caller configured it.
    """
    if log_level is not None:
        configure_logging(log_level)
    try:
        code = work()
    except ConfigError as error:
        report("configuration error", str(error))
        return EXIT_BAD_CONFIG
    except WeirError as error:
        report("failed", str(error))
        return error.exit_code
    return EXIT_OK if code is None else code


def run_until_stopped(work: Callable[[threading.Event], object], finishing: str) -> None:
    """Call ``work(stop)`` with an event that SIGTERM / SIGINT set; ``finishing`` says in the
    log what the work completes before it returns (a second signal interrupts it)."""
    with stop_on_signals(threading.Event(), finishing) as stop:
        work(stop)


def conf_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--conf FILE`` option every job takes (default conf/local.yaml)."""
    parser.add_argument("--conf", default=DEFAULT_CONF_PATH, help="configuration file (YAML)")


def parse_duration(text: str, key: str = "--duration") -> float:
    """``90``, ``90s``, ``5m``, ``2h``, ``1d`` -> seconds; :class:`ConfigError` naming ``key``."""
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(key, f"{text!r} is not a duration such as 90s, 5m or 2h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def interval_seconds(text: str, key: str = "--every") -> int:
    """A loop's interval (``120``, ``90s``, ``5m``, ``1h``) in whole seconds, 1 s to 1 day.

    The one check behind every ``--every``; :class:`ConfigError` naming ``key`` otherwise.
    """
    seconds = parse_duration(text, key)
    if seconds != int(seconds) or not MIN_INTERVAL_SECONDS <= seconds <= MAX_INTERVAL_SECONDS:
        raise ConfigError(
            key, f"{text!r} is not a whole number of seconds from 1 s to 1 day (86400)"
        )
    return int(seconds)


__all__ = [
    "conf_argument",
    "configure_logging",
    "interval_seconds",
    "parse_duration",
    "run_job",
    "run_until_stopped",
]
