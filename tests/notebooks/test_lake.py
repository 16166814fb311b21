"""`weir.notebook`: finding the conf from a notebook's folder, the parameters, and the sentences
a notebook shows instead of a traceback when a table is absent or empty."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pyspark.sql import SparkSession

from weir.config import WeirConfig
from weir.notebook import (
    DateRange,
    Lake,
    NotebookError,
    empty_lake_sentence,
    is_derby_locked,
    local_lake_is_empty,
    locate_conf,
    notebook_tables,
    open_lake,
    parse_date,
    resolve_range,
    session_mismatches,
    sql_string,
)
from weir.schemas import BATCH_RUN_SCHEMA, STREAM_PROGRESS_SCHEMA

from .conftest import notebook_config

DELTA = "io.delta.sql.DeltaSparkSessionExtension"


# --- Finding the configuration ------------------------------------------------------------------


def test_a_relative_conf_is_found_from_a_notebook_folder_below_the_project(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "local.yaml").write_text("env: local\n")
    (tmp_path / "notebooks").mkdir()

    found, folder = locate_conf("conf/local.yaml", start=tmp_path / "notebooks")

    assert (found, folder) == (tmp_path / "conf" / "local.yaml", tmp_path)


def test_open_lake_resolves_relative_paths_in_the_conf_against_the_project_folder(
    weir_config: WeirConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So a notebook in notebooks/ opens `.lake` of the project, as `weir` run there would."""
    document = notebook_config(weir_config, tmp_path).model_dump()
    document["lake"] = {"root": ".lake", "landing": None}
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "nb.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")

    with pytest.raises(NotebookError, match=rf"The lake at file://{tmp_path}/\.lake is empty"):
        open_lake("conf/nb.yaml")
    assert Path.cwd() == tmp_path / "notebooks"


def test_a_conf_that_is_nowhere_above_is_a_sentence_naming_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(NotebookError, match=r"^CONF = 'conf/none\.yaml': not found in "):
        locate_conf("conf/none.yaml", start=tmp_path)


def test_a_bad_conf_is_a_sentence_naming_the_key(tmp_path: Path) -> None:
    conf = tmp_path / "bad.yaml"
    conf.write_text("env: elsewhere\n")

    with pytest.raises(NotebookError, match=r"^CONF = '.*bad\.yaml': \d+ problems:\n  env: "):
        open_lake(str(conf))


# --- Parameters ---------------------------------------------------------------------------------


def test_default_dates_are_the_last_day_with_data_and_the_day_before() -> None:
    assert resolve_range(None, None, date(2026, 3, 1)) == DateRange(
        date(2026, 2, 28), date(2026, 3, 1)
    )


def test_given_dates_win_over_the_data() -> None:
    days = resolve_range("2026-01-05", "2026-01-07", date(2026, 3, 1))

    assert days == DateRange(date(2026, 1, 5), date(2026, 1, 7))
    assert days.sql("event_date") == ("event_date BETWEEN DATE'2026-01-05' AND DATE'2026-01-07'")
    assert str(days) == "2026-01-05 to 2026-01-07"


@pytest.mark.parametrize("text", ["yesterday", "2026-1-5", "2026-02-30", 20260105])
def test_a_date_parameter_that_is_not_a_date_is_a_sentence_naming_it(text) -> None:
    with pytest.raises(NotebookError, match=r"^DATE_FROM = "):
        parse_date(text, "DATE_FROM")


def test_date_from_after_date_to_is_refused() -> None:
    with pytest.raises(NotebookError, match=r"DATE_FROM .* is after DATE_TO"):
        resolve_range("2026-01-08", "2026-01-07", None)


def test_a_device_parameter_is_quoted_as_a_sql_string() -> None:
    assert sql_string("veh-00001") == "'veh-00001'"
    assert sql_string("x' OR '1'='1") == "'x\\' OR \\'1\\'=\\'1'"


# --- What the notebook shows instead of a traceback ---------------------------------------------


def test_a_notebook_error_renders_as_its_sentence_alone() -> None:
    assert NotebookError("No merge yet.")._render_traceback_() == ["No merge yet."]


def test_a_session_without_delta_or_with_another_metastore_is_named() -> None:
    wanted = {
        "spark.sql.extensions": DELTA,
        "spark.hadoop.javax.jdo.option.ConnectionURL": "jdbc:derby:;databaseName=/a",
    }
    running = {
        "spark.sql.extensions": "com.example.Other",
        "spark.hadoop.javax.jdo.option.ConnectionURL": "jdbc:derby:;databaseName=/b",
    }

    assert session_mismatches(running, wanted) == [
        f"spark.sql.extensions lacks {DELTA}",
        "spark.hadoop.javax.jdo.option.ConnectionURL is 'jdbc:derby:;databaseName=/b', "
        "not 'jdbc:derby:;databaseName=/a'",
    ]
    assert session_mismatches({**wanted, "spark.sql.extensions": f"x.Ext,{DELTA}"}, wanted) == []


def test_derby_held_by_another_session_is_recognised_through_the_cause_chain() -> None:
    try:
        try:
            raise RuntimeError("ERROR XSDB6: Another instance of Derby may have already booted")
        except RuntimeError as cause:
            raise ValueError("Unable to instantiate SessionHiveMetaStoreClient") from cause
    except ValueError as error:
        assert is_derby_locked(error)
    assert not is_derby_locked(ValueError("Table or view not found"))


@pytest.fixture
def lake(spark: SparkSession, weir_config: WeirConfig, tmp_path: Path) -> Lake:
    """A Lake over an empty folder, in the test session's SparkSession (path-based only)."""
    return Lake(spark, notebook_config(weir_config, tmp_path), "conf/test.yaml")


def test_an_empty_lake_says_so_and_how_to_fill_it(lake: Lake) -> None:
    assert local_lake_is_empty(lake.layout)
    assert lake.missing("telemetry_minute") == empty_lake_sentence(lake.layout, "conf/test.yaml")
    assert "`make demo` fills a local lake" in lake.missing("telemetry_minute")


def test_an_absent_table_names_the_command_that_writes_it(lake: Lake, spark: SparkSession) -> None:
    spark.createDataFrame([], BATCH_RUN_SCHEMA).write.format("delta").save(lake.layout.batch_runs)

    assert not local_lake_is_empty(lake.layout)
    assert lake.missing("dq_results") == (
        "No dq_results yet: no data-quality run exists yet (no Delta table at "
        f"{lake.layout.dq_results}). `weir dq run --conf conf/test.yaml` writes it; run it, "
        "then this notebook again."
    )
    with pytest.raises(NotebookError, match="No stream_progress yet: no stream has run yet"):
        lake.table("stream_progress")


def test_a_table_without_rows_says_so(lake: Lake, spark: SparkSession) -> None:
    location = lake.layout.stream_progress
    spark.createDataFrame([], STREAM_PROGRESS_SCHEMA).write.format("delta").save(location)

    assert lake.missing("stream_progress") == (
        f"stream_progress holds no rows yet ({location}): no stream has run yet. "
        "`weir stream --conf conf/test.yaml` fills it."
    )


def test_a_view_table_reads_the_latest_rows_at_each_call(lake: Lake, spark: SparkSession) -> None:
    location = lake.layout.merge_runs

    def append(run_id: str) -> None:
        spark.sql(
            f"SELECT '{run_id}' AS run_id, 'succeeded' AS status, current_timestamp() AS started_at"
        ).write.format("delta").mode("append").save(location)

    append("merge-1")
    first = lake.query(f"SELECT run_id FROM {lake.table('merge_runs')}").run_id.tolist()
    append("merge-2")
    second = lake.query(f"SELECT run_id FROM {lake.table('merge_runs')}").run_id.tolist()

    assert lake.table("merge_runs") == "merge_runs"
    assert (first, sorted(second)) == (["merge-1"], ["merge-1", "merge-2"])


def test_an_unknown_table_lists_the_known_ones(lake: Lake) -> None:
    with pytest.raises(NotebookError, match="no table 'telemetry'; the notebooks read "):
        lake.table("telemetry")


def test_catalogued_tables_are_the_catalogs_and_the_rest_are_views(lake: Lake) -> None:
    tables = notebook_tables(lake.layout)

    assert {name for name, t in tables.items() if t.catalogued} == {
        "telemetry_minute",
        "raw_telemetry",
        "quarantine_telemetry",
        "dq_results",
    }
    assert tables["speed_minute"].location == lake.layout.speed
    assert tables["batch_minute"].location == lake.layout.batch


@pytest.fixture
def new_york_clock() -> Iterator[None]:
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()


def test_query_returns_timestamps_in_utc_whatever_the_local_zone(
    lake: Lake, new_york_clock: None
) -> None:
    frame = lake.query("SELECT TIMESTAMP'2026-01-01 12:00:00' AS moment")

    assert frame.moment[0] == pd.Timestamp("2026-01-01 12:00:00")
