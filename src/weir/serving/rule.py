"""The Lambda serving rule, and the scope of an incremental merge: pure, no Spark session.

The rule (docs/contract.md, "The serving rule"): the unified ``telemetry_minute`` table holds
BATCH rows with ``window_end <= H`` and SPEED rows with ``window_end > H``, where H is the
horizon of the latest successful complete batch run; with no batch run yet, H is minus
infinity and every row comes from SPEED. ``layer`` says which side a row came from.

A merge does not rebuild the table: :func:`merge_scope` works out, from what changed since the
previous merge, which rows can differ (docs/serving.md carries the argument that the result
always equals a full rebuild).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Optional

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from weir.control.runs import UTC, iso
from weir.delta import date_literals
from weir.schemas import LAYER_BATCH, LAYER_SPEED, MINUTE_PARTITION_COLUMNS, MINUTE_SCHEMA

SCOPE_FULL = "full"
SCOPE_INCREMENTAL = "incremental"
SCOPE_NONE = "none"

PARTITION_COLUMN = MINUTE_PARTITION_COLUMNS[0]
_MINUTE = timedelta(minutes=1)


def serving_rule(batch: DataFrame, speed: DataFrame, horizon: Optional[datetime]) -> DataFrame:
    """BATCH rows with ``window_end <= horizon`` ∪ SPEED rows with ``window_end > horizon``.

    ``horizon`` None (no batch run yet) is minus infinity: SPEED only. ``layer`` is set to the
    side each row comes from. Columns in ``MINUTE_SCHEMA`` order.
    """
    columns = [c for c in MINUTE_SCHEMA.fieldNames() if c != "layer"]

    def side(rows: DataFrame, layer: str) -> DataFrame:
        return rows.select(*columns, F.lit(layer).alias("layer")).select(
            *MINUTE_SCHEMA.fieldNames()
        )

    if horizon is None:
        return side(speed, LAYER_SPEED)
    cut = F.lit(horizon)
    return side(batch.where(F.col("window_end") <= cut), LAYER_BATCH).unionByName(
        side(speed.where(F.col("window_end") > cut), LAYER_SPEED)
    )


def _floor_date(moment: datetime) -> date:
    """The event date of the earliest window whose ``window_end`` is after ``moment``."""
    return (moment - _MINUTE).astimezone(UTC).date()


def _in_dates(dates: Iterable[date], column: str = PARTITION_COLUMN) -> Column:
    return F.col(column).isin(sorted(set(dates)))


@dataclass(frozen=True)
class MergeScope:
    """The rows a merge re-derives; everything outside is unchanged since the previous merge.

    ``everything``: the whole table. Otherwise the union of: whole event ``dates``; the rows
    whose ``window_end`` is in ``switched = (low, high]`` (``low`` None: no lower bound), which
    change side because H moved; and the SPEED side beyond ``horizon`` on ``speed_dates``
    (None: on every date).
    """

    everything: bool
    horizon: Optional[datetime] = None
    dates: frozenset = frozenset()
    switched: Optional[tuple[Optional[datetime], datetime]] = None
    speed_dates: Optional[frozenset] = frozenset()

    @property
    def kind(self) -> str:
        if self.everything:
            return SCOPE_FULL
        return SCOPE_NONE if self.is_empty else SCOPE_INCREMENTAL

    @property
    def is_empty(self) -> bool:
        return (
            not self.everything
            and not self.dates
            and self.switched is None
            and self.speed_dates is not None
            and not self.speed_dates
        )

    def row_filter(self) -> Optional[Column]:
        """The exact rows in scope (None: all rows)."""
        if self.everything:
            return None
        parts: list[Column] = []
        if self.dates:
            parts.append(_in_dates(self.dates))
        if self.switched is not None:
            low, high = self.switched
            part = F.col("window_end") <= F.lit(high)
            if low is not None:
                part = part & (F.col("window_end") > F.lit(low))
            parts.append(part)
        if self.speed_dates is None or self.speed_dates:
            part = None if self.horizon is None else F.col("window_end") > F.lit(self.horizon)
            if self.speed_dates is not None:
                on_dates = _in_dates(self.speed_dates)
                part = on_dates if part is None else part & on_dates
            if part is None:
                return None  # every SPEED row on every date, and H is minus infinity
            parts.append(part)
        return _any(parts)

    def partition_filter(self) -> Optional[Column]:
        """A predicate on the partition column alone that contains the scope (for pruning)."""
        if self.everything:
            return None
        parts: list[Column] = []
        if self.dates:
            parts.append(_in_dates(self.dates))
        if self.switched is not None:
            low, high = self.switched
            part = F.col(PARTITION_COLUMN) <= F.lit(high.astimezone(UTC).date())
            if low is not None:
                part = part & (F.col(PARTITION_COLUMN) >= F.lit(_floor_date(low)))
            parts.append(part)
        if self.speed_dates is None or self.speed_dates:
            part = None
            if self.horizon is not None:
                part = F.col(PARTITION_COLUMN) >= F.lit(_floor_date(self.horizon))
            if self.speed_dates is not None:
                on_dates = _in_dates(self.speed_dates)
                part = on_dates if part is None else part & on_dates
            if part is None:
                return None
            parts.append(part)
        return _any(parts)

    def describe(self) -> str:
        if self.everything or self.is_empty:
            return self.kind
        pieces = []
        if self.dates:
            pieces.append(f"dates {date_literals(self.dates)}")
        if self.switched is not None:
            low, high = self.switched
            pieces.append(f"window_end in ({iso(low) if low else '-inf'}, {iso(high)}]")
        if self.speed_dates is None:
            pieces.append("speed beyond H on every date")
        elif self.speed_dates:
            pieces.append(f"speed beyond H on {date_literals(self.speed_dates)}")
        return "; ".join(pieces)


def _any(parts: list[Column]) -> Optional[Column]:
    if not parts:
        return F.lit(False)
    combined = parts[0]
    for part in parts[1:]:
        combined = combined | part
    return combined


def merge_scope(
    previous_horizon: Optional[datetime],
    horizon: Optional[datetime],
    batch_dates: Optional[frozenset],
    speed_dates: Optional[frozenset],
    serving_dates: Optional[frozenset],
    *,
    first_merge: bool = False,
) -> MergeScope:
    """The scope of a merge from what changed since the previous one (pure; tested).

    ``*_dates``: the event dates with data-changing commits in BATCH, SPEED and the unified
    table since the versions the previous merge read (None: unknown). ``first_merge`` (no
    previous merge recorded), unknown BATCH or unified-table changes: everything.
    """
    if first_merge or batch_dates is None or serving_dates is None:
        return MergeScope(everything=True, horizon=horizon)
    switched = None
    if previous_horizon != horizon:
        bounds = [moment for moment in (previous_horizon, horizon) if moment is not None]
        # One side None (minus infinity): everything up to the other switches side.
        low = min(bounds) if len(bounds) == 2 else None
        switched = (low, max(bounds))
    return MergeScope(
        everything=False,
        horizon=horizon,
        dates=frozenset(batch_dates) | frozenset(serving_dates),
        switched=switched,
        speed_dates=None if speed_dates is None else frozenset(speed_dates),
    )
