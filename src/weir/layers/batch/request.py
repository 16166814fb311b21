"""What a batch run is asked to do, validated before Spark starts or anything is read.

``weir batch rebuild`` and ``jobs/batch/rebuild.py`` turn their arguments into a
:class:`RebuildRequest` here; every problem is a :class:`~weir.config.ConfigError` naming the
argument (exit 2, nothing written).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Optional
from urllib.parse import urlparse

from weir.config import ConfigError
from weir.control import MODE_FULL, MODE_INCREMENTAL, MODE_RANGE, BatchRun
from weir.control.runs import iso

UTC = timezone.utc
CUTOFF_EXAMPLE = "2026-03-01T10:00:00Z"

# ISO-8601 instant: date, `T`, hours and minutes, optional seconds and fraction (kept to the
# microsecond), then `Z` or a numeric offset. An instant without an offset is ambiguous.
_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(?:(Z)|([+-])(\d{2}):?(\d{2}))"
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class RebuildRequest:
    """What a batch run was asked to do, validated: an aware UTC cutoff and a mode."""

    cutoff: datetime
    mode: str = MODE_INCREMENTAL
    date_from: Optional[date] = None
    date_to: Optional[date] = None
    input: Optional[str] = None  # a prefix of raw JSON-lines files to adopt first (a URI)


def default_cutoff(now: datetime) -> datetime:
    """The default cutoff: now, floored to the hour (UTC; docs/contract.md)."""
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def batch_horizon(cutoff: datetime, allowed_lateness_minutes: int) -> datetime:
    """H = C - allowed lateness, floored to the minute (docs/contract.md, the serving rule)."""
    shifted = cutoff.astimezone(UTC) - timedelta(minutes=allowed_lateness_minutes)
    return shifted.replace(second=0, microsecond=0)


def parse_cutoff(text: str, key: str = "--cutoff") -> datetime:
    """An ISO-8601 instant with ``Z`` or an offset, as an aware UTC datetime.

    ``2026-03-01T10:00:00Z``, ``2026-03-01T12:00+02:00`` and ``2026-03-01T10:00:00.5Z`` are
    accepted; a missing offset or an impossible date raises :class:`ConfigError` naming ``key``.
    """
    bad = ConfigError(
        key, f"{text!r} is not an ISO-8601 instant with Z or an offset, e.g. {CUTOFF_EXAMPLE}"
    )
    match = _INSTANT.fullmatch(text.strip())
    if match is None:
        raise bad
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(0)
        if not zulu:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            offset = -offset if sign == "-" else offset
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")[:6]),
            tzinfo=timezone(offset),
        )
    except ValueError:
        raise bad from None
    return moment.astimezone(UTC)


def _parse_date(text: str, key: str) -> date:
    try:
        if not _DATE.fullmatch(text.strip()):
            raise ValueError(text)
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(key, f"{text!r} is not a date YYYY-MM-DD") from None


def input_uri(text: str) -> str:
    """The URI of an ``--input`` prefix: a URI as given, a local path as ``file://`` + absolute.

    No trailing slash, so the prefix is the same key (RAW's ``source_stream``) however it was
    typed. A local folder must exist (checked here, before Spark starts); a remote prefix is
    checked by the run before anything is written.
    """
    text = text.strip()
    if not text:
        raise ConfigError("--input", "an empty path; give the folder or prefix of raw files")
    if urlparse(text).scheme not in ("", "file"):
        return text.rstrip("/")
    local = text[len("file://") :] if text.startswith("file://") else text
    local = os.path.abspath(os.path.expanduser(local))
    if not os.path.isdir(local):
        raise ConfigError("--input", f"{text!r} is not a folder (raw JSON-lines files under it)")
    return f"file://{local}".rstrip("/")


def rebuild_request(
    cutoff: Optional[str] = None,
    date_from: Optional[str] = None,
    date_to: Optional[str] = None,
    full: bool = False,
    now: Optional[datetime] = None,
    input_path: Optional[str] = None,
) -> RebuildRequest:
    """Validate the arguments of ``weir batch rebuild``; :class:`ConfigError` names the bad one.

    The cutoff defaults to ``now`` floored to the hour and may not lie in the future (a run
    reads records already received). ``--from``/``--to`` go together and exclude ``--full``.
    ``--input`` (files to adopt into RAW first) combines with any mode.
    """
    request = _mode_request(cutoff, date_from, date_to, full, now)
    if input_path is None:
        return request
    return dataclasses.replace(request, input=input_uri(input_path))


def _mode_request(
    cutoff: Optional[str],
    date_from: Optional[str],
    date_to: Optional[str],
    full: bool,
    now: Optional[datetime],
) -> RebuildRequest:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    moment = default_cutoff(now) if cutoff is None else parse_cutoff(cutoff)
    if moment > now:
        raise ConfigError(
            "--cutoff",
            f"{iso(moment)} is in the future (now {iso(now)}); "
            "a batch run reads records already received",
        )
    if (date_from is None) != (date_to is None):
        missing = "--to" if date_to is None else "--from"
        raise ConfigError(missing, "--from and --to go together (a range of event dates)")
    if date_from is None or date_to is None:
        return RebuildRequest(cutoff=moment, mode=MODE_FULL if full else MODE_INCREMENTAL)
    if full:
        raise ConfigError("--full", "--full rebuilds every date; drop it or drop --from/--to")
    first, last = _parse_date(date_from, "--from"), _parse_date(date_to, "--to")
    if first > last:
        raise ConfigError("--from", f"{first} is after --to {last}")
    return RebuildRequest(cutoff=moment, mode=MODE_RANGE, date_from=first, date_to=last)


def check_cutoff_moves_forward(request: RebuildRequest, latest: Optional[BatchRun]) -> None:
    """Only ``--full`` may rebuild the view as of a cutoff before the last successful run's:
    an incremental or range run would mix two cutoffs in one view. :class:`ConfigError`."""
    if request.mode == MODE_FULL or latest is None or request.cutoff >= latest.cutoff:
        return
    raise ConfigError(
        "--cutoff",
        f"{iso(request.cutoff)} is before the cutoff {iso(latest.cutoff)} of the last "
        f"successful run {latest.run_id}; only --full rebuilds the view as of an earlier cutoff",
    )
