"""The pure-Python steps around the Spark passes: the volume band, freshness, totals, and how
GX's results become ``observed_value`` text."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from weir.quality import metrics as m
from weir.quality.validate import observed_text

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)


def hours(*counts: int) -> dict[datetime, int]:
    return {T0 + timedelta(hours=n): count for n, count in enumerate(counts) if count is not None}


def test_hour_still_filling_is_not_judged() -> None:
    newest = T0 + timedelta(hours=3, minutes=20)  # the 03:00 hour is still filling
    volumes = m.hourly_volume(hours(10, 10, 10, 1), newest, trailing_hours=24)
    assert [v.hour for v in volumes] == [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)]


def test_newest_window_ending_on_the_hour_completes_that_hour() -> None:
    volumes = m.hourly_volume(hours(10, 10), T0 + timedelta(hours=2), trailing_hours=24)
    assert [v.events for v in volumes] == [10, 10]


def test_hour_without_windows_counts_as_zero_events() -> None:
    by_hour = {T0: 10, T0 + timedelta(hours=2): 10}
    volumes = m.hourly_volume(by_hour, T0 + timedelta(hours=3), trailing_hours=24)
    assert [(v.events, v.ratio) for v in volumes] == [(10, None), (0, 0.0), (10, 2.0)]


def test_ratio_is_against_the_median_of_the_trailing_hours_only() -> None:
    volumes = m.hourly_volume(hours(100, 1, 1, 1, 3), T0 + timedelta(hours=5), trailing_hours=3)
    assert [v.hour for v in volumes] == [T0 + timedelta(hours=n) for n in (2, 3, 4)]
    assert [v.trailing_median for v in volumes] == [50.5, 1.0, 1.0]
    assert volumes[-1].ratio == 3.0


def test_no_windows_no_hours() -> None:
    assert m.hourly_volume({}, None, trailing_hours=24) == []


def test_freshness_is_minutes_from_newest_window_to_now() -> None:
    assert m.freshness_minutes(T0, T0 + timedelta(minutes=7, seconds=30)) == 7.5
    assert m.freshness_minutes(None, T0) is None


def test_view_totals_add_hours_and_count_duplicates_as_rows_beyond_distinct_keys() -> None:
    empty = {name: 0 for name in ("rows",)}
    row = {
        **empty,
        "rows": 3,
        "_distinct_keys": 2,
        "newest_window_end": 5_000_000,
        **{m.null_column(c): 0 for c in m.key_columns(m.MINUTE_SCHEMA)},
        **{f"_out_of_range_{c}": 0 for c in m.bounded_columns()},
        **{f"_non_null_{c}": 3 for c in m.bounded_columns()},
    }
    other = {**row, "rows": 1, "_distinct_keys": 1, "_out_of_range_lat_last": 1}
    totals = m.view_totals([row, other])
    assert totals["rows"] == 4
    assert totals[m.DUPLICATE_KEYS] == 1
    assert totals[m.in_range_column("lat_last")] == pytest.approx(5 / 6)
    assert totals[m.NEWEST_WINDOW_END] == datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC)


def test_bounded_columns_take_the_contract_bounds_of_their_field() -> None:
    bounded = m.bounded_columns()
    assert bounded["speed_kmh_max"] == (0.0, 400.0)
    assert bounded["lon_last"] == (-180.0, 180.0)
    assert "event_count" not in bounded and "status_last" not in bounded


@pytest.mark.parametrize(
    ("result", "text"),
    [
        ({"observed_value": 3}, "3"),
        ({"observed_value": 0.0333333333}, "0.0333333"),
        ({"observed_value": ["a", "b"]}, "a, b"),
        ({"observed_value": "StringType"}, "StringType"),
        ({"observed_value": None}, None),
        (
            {
                "element_count": 5,
                "missing_count": 1,
                "unexpected_count": 2,
                "partial_unexpected_list": [0.5, 0.25],
            },
            "2 of 4 outside (0.5, 0.25)",
        ),
    ],
    ids=["integer", "ratio", "column-list", "type", "nothing-observed", "rows-outside"],
)
def test_observed_text(result: dict, text: str) -> None:
    assert observed_text(result) == text
