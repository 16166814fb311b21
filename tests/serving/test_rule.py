"""The serving rule and the scope of a merge (weir.serving.rule): pure, on tiny frames."""

from __future__ import annotations

from datetime import timedelta

from chispa import assert_df_equality
from pyspark.sql import SparkSession

from weir.schemas import (
    LAYER_BATCH,
    LAYER_SPEED,
)
from weir.serving.rule import SCOPE_FULL, SCOPE_INCREMENTAL, SCOPE_NONE, merge_scope, serving_rule

from .builders import (
    D1,
    D2,
    D3,
    H1,
    at,
    frame,
    minute,
)

# --- The rule, as a transform ---------------------------------------------------------------


def test_window_ending_at_the_horizon_comes_from_batch_and_the_next_from_speed(
    spark: SparkSession,
) -> None:
    batch = frame(
        spark,
        [
            minute("veh-1", "09:59", 3, LAYER_BATCH),  # window_end == H: batch
            minute("veh-1", "10:00", 9, LAYER_BATCH),  # window_end == H + 1 min: not batch
        ],
    )
    speed = frame(
        spark,
        [
            minute("veh-1", "09:59", 1, LAYER_SPEED),
            minute("veh-1", "10:00", 4, LAYER_SPEED),
        ],
    )
    expected = frame(
        spark, [minute("veh-1", "09:59", 3, LAYER_BATCH), minute("veh-1", "10:00", 4, LAYER_SPEED)]
    )
    assert_df_equality(
        serving_rule(batch, speed, H1), expected, ignore_row_order=True, ignore_nullable=True
    )


def test_without_a_batch_run_every_row_comes_from_speed(spark: SparkSession) -> None:
    batch = frame(spark, [minute("veh-1", "09:00", 3, LAYER_BATCH)])
    speed = frame(spark, [minute("veh-1", "09:00", 1, LAYER_SPEED)])
    assert_df_equality(
        serving_rule(batch, speed, None), speed, ignore_row_order=True, ignore_nullable=True
    )


def test_layer_column_names_the_side_a_row_came_from(spark: SparkSession) -> None:
    # A row carrying the wrong layer in its source table is labelled by the side it is served from.
    batch = frame(spark, [minute("veh-1", "09:00", 3, LAYER_SPEED)])
    speed = frame(spark, [minute("veh-1", "11:00", 1, LAYER_BATCH)])
    layers = {
        (r["window_start"].hour, r["layer"]) for r in serving_rule(batch, speed, H1).collect()
    }
    assert layers == {(9, LAYER_BATCH), (11, LAYER_SPEED)}


def test_first_merge_and_unknown_changes_rebuild_everything() -> None:
    assert merge_scope(None, H1, None, None, None, first_merge=True).kind == SCOPE_FULL
    assert merge_scope(H1, H1, None, frozenset(), frozenset()).kind == SCOPE_FULL
    assert merge_scope(H1, H1, frozenset(), frozenset(), None).kind == SCOPE_FULL


def test_nothing_changed_is_an_empty_scope() -> None:
    scope = merge_scope(H1, H1, frozenset(), frozenset(), frozenset())
    assert scope.is_empty and scope.kind == SCOPE_NONE
    assert merge_scope(None, None, frozenset(), frozenset(), frozenset()).is_empty


def test_a_moved_horizon_switches_exactly_the_windows_between_the_two() -> None:
    later = H1 + timedelta(hours=1)
    scope = merge_scope(H1, later, frozenset(), frozenset(), frozenset())
    assert scope.kind == SCOPE_INCREMENTAL and scope.switched == (H1, later)
    assert merge_scope(later, H1, frozenset(), frozenset(), frozenset()).switched == (H1, later)
    # From minus infinity (no batch run before): everything up to H switches to batch.
    assert merge_scope(None, H1, frozenset(), frozenset(), frozenset()).switched == (None, H1)


def test_changed_dates_of_batch_and_serving_are_whole_dates_speed_only_beyond_h() -> None:
    scope = merge_scope(H1, H1, frozenset({D1}), frozenset({D3}), frozenset({D2}))
    assert scope.dates == {D1, D2} and scope.speed_dates == {D3} and scope.switched is None
    assert merge_scope(H1, H1, frozenset(), None, frozenset()).speed_dates is None


def test_scope_filters_select_exactly_the_rows_in_scope(spark: SparkSession) -> None:
    later = at("10:05")
    rows = frame(
        spark,
        [
            minute("a", "02-27T08:00", 1, LAYER_BATCH),  # D1: batch changed -> in
            minute("a", "02-28T08:00", 1, LAYER_BATCH),  # D2: untouched -> out
            minute("a", "09:59", 1, LAYER_BATCH),  # window_end 10:00 = H1 -> out
            minute("a", "10:00", 1, LAYER_BATCH),  # window_end 10:01 in (H1, 10:05] -> in
            minute("a", "10:04", 1, LAYER_BATCH),  # window_end 10:05 -> in
            minute("a", "10:05", 1, LAYER_SPEED),  # beyond H = 10:05 on D3 (speed changed) -> in
        ],
    )
    scope = merge_scope(H1, later, frozenset({D1}), frozenset({D3}), frozenset())
    picked = rows.where(scope.partition_filter()).where(scope.row_filter())
    starts = sorted(r["window_start"].strftime("%m-%dT%H:%M") for r in picked.collect())
    assert starts == ["02-27T08:00", "03-01T10:00", "03-01T10:04", "03-01T10:05"]
    # Speed changes only on D1 leave the rows beyond H on D3 out.
    quiet = merge_scope(later, later, frozenset(), frozenset({D1}), frozenset())
    assert rows.where(quiet.partition_filter()).where(quiet.row_filter()).count() == 0
