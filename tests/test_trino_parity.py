"""The Athena path, proven: a real Trino reads Weir's tables through the Glue catalog Weir wrote.

One demo-sized flow (`weir demo`'s steps: simulate into Kafka, stream, batch, merge, data
quality, catalog sync) runs with ``catalog.kind: glue`` on a private stack with Trino (one
Trino for the module). Then:

* every SQL query the README and docs show (`weir query … "SQL"` lines, found in the files) and
  every query the notebooks run on a catalogued table returns the same rows in Spark SQL and in
  Trino; the notebook queries that use Spark-only SQL are listed with the reason, and Trino is
  shown to refuse them (so the list is a fact, not a guess);
* Trino describes ``telemetry_minute`` as Glue does: the same columns, types and partition
  column; timestamps come back in UTC without a shift, nulls as nulls;
* the same lake copied to S3 (the local endpoint) and catalogued with ``s3a://`` locations is
  read by Trino through its S3 file system, row for row;
* a Delta table whose schema the declared one no longer describes makes the Glue sync fail,
  naming the column, and leaves Glue as it was.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml
from pyspark.sql import SparkSession

from weir.aws import aws_client
from weir.catalog import (
    CatalogTable,
    catalog_tables,
    glue_drift,
    hive_type,
    sync_catalog,
    sync_glue,
    sync_spark_catalog,
)
from weir.cli import main
from weir.config import WeirConfig, config_from_mapping
from weir.demo import sample_query
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK, EXIT_RUNTIME_FAILURE, WeirError
from weir.infra import private_stack
from weir.lake import LakeLayout, local_path
from weir.query import QueryResult, run_spark, run_trino
from weir.schemas import MINUTE_PARTITION_COLUMNS, MINUTE_SCHEMA

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATABASE = "weir"  # as the docs spell it: their queries run unchanged


@dataclass(frozen=True)
class Parity:
    config: WeirConfig
    spark: SparkSession
    first_day: str
    last_day: str
    device: str


def run_flow(spark: SparkSession, config: WeirConfig) -> None:
    """`weir demo`'s flow, demo-sized, without its summary: simulate into Kafka (the fault
    mix), stream --available-now, batch rebuild, merge, one data-quality run (so dq_results
    exists), then `weir catalog sync` with ``catalog.kind: glue`` and, for Spark SQL by
    name, the same tables in the session's metastore."""
    from weir.control.runs import utc_now
    from weir.layers.batch import RebuildRequest, rebuild_batch
    from weir.layers.streaming import run_stream
    from weir.quality import run_checks
    from weir.serving import run_merge
    from weir.simulate.run import SimulateOptions, run_simulation

    now = utc_now().replace(microsecond=0)
    sent = run_simulation(
        config,
        SimulateOptions(
            devices=4,
            rate=0,
            count=4 * 15 * 12,
            sink="kafka",
            seed=7,
            start=now - timedelta(minutes=15),
            interval_s=5.0,
        ),
    )
    assert sent.status == "completed"
    run_stream(spark, config, "kafka", available_now=True)
    rebuild_batch(spark, config, RebuildRequest(cutoff=utc_now().replace(microsecond=0)))
    run_merge(spark, config)
    run_checks(spark, config, ("unified",))
    sync_catalog(spark, config)
    sync_spark_catalog(spark, DATABASE, catalog_tables(LakeLayout.from_config(config)))


@pytest.fixture(scope="module")
def parity(
    spark: SparkSession, weir_config: WeirConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Parity]:
    """A demo-sized flow catalogued in Glue (moto), a Trino on it, the tables in Spark's
    metastore too; the data's date range and busiest device for the queries' parameters."""
    folder = tmp_path_factory.mktemp("trino")
    document = weir_config.model_dump()
    document["lake"] = {"root": f"file://{folder / 'lake'}", "landing": None}
    document["catalog"] = {"kind": "glue", "database": DATABASE}
    base = config_from_mapping(document, environ={})
    with private_stack(base, folder / "state", with_trino=True) as config:
        run_flow(spark, config)
        days = spark.sql(
            f"SELECT min(event_date), max(event_date) FROM {DATABASE}.telemetry_minute"
        ).first()
        busiest = spark.sql(
            f"SELECT device_id FROM {DATABASE}.telemetry_minute GROUP BY device_id "
            "ORDER BY sum(event_count) DESC, device_id LIMIT 1"
        ).first()[0]
        yield Parity(config, spark, days[0].isoformat(), days[1].isoformat(), busiest)


# --- What is compared, and how ---------------------------------------------------------------


def comparable(value: Any) -> Any:
    """One value as both engines should agree on it: timestamps as naive UTC (Spark's are in
    the session zone, UTC; Trino's carry their zone) rounded half up to the millisecond
    (Trino, like Athena, reads a Delta timestamp as ``timestamp(3)``, rounding computed_at's
    microseconds), decimals as floats, floats to 9 places (sums and averages of the same
    doubles may differ in the last bits with the order)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        milliseconds = (value.microsecond + 500) // 1000
        return value.replace(microsecond=0) + timedelta(milliseconds=milliseconds)
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 9)
    return value


def rows_of(result: QueryResult) -> list[tuple]:
    return sorted((tuple(comparable(v) for v in row) for row in result.rows), key=repr)


def assert_same_rows(parity: Parity, sql: str) -> QueryResult:
    spark_result = run_spark(parity.spark, sql)
    trino_result = run_trino(parity.config, sql)
    assert [c.lower() for c in trino_result.columns] == [c.lower() for c in spark_result.columns]
    assert rows_of(trino_result) == rows_of(spark_result), sql
    return spark_result


# --- The queries the README and the docs show ------------------------------------------------

# A command line in a code block: `weir query [options] "SQL"`.
_WEIR_QUERY = re.compile(r'(?m)^(?:\$ )?weir query[^"\n]*"([^"]+)"')


def documented_queries() -> list[tuple[str, str]]:
    """(file, SQL) of every `weir query … "SQL"` in README.md and docs/, plus the demo's sample
    query (the README's summary prints it)."""
    found = [
        (
            "weir.demo.sample_query (README, docs/demo.md)",
            sample_query(f"{DATABASE}.telemetry_minute"),
        )
    ]
    for path in [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]:
        for match in _WEIR_QUERY.finditer(path.read_text(encoding="utf-8")):
            found.append((path.name, match.group(1)))
    return found


DOCUMENTED = documented_queries()


def test_the_docs_show_weir_query_on_both_engines() -> None:
    files = {source for source, _ in DOCUMENTED}
    assert {"README.md", "serving.md"} <= files, files


@pytest.mark.slow
@pytest.mark.parametrize("sql", [sql for _, sql in DOCUMENTED], ids=[s for s, _ in DOCUMENTED])
def test_every_documented_query_returns_the_same_rows_in_spark_and_trino(
    parity: Parity, sql: str
) -> None:
    result = assert_same_rows(parity, sql)

    assert result.rows, f"the query returned nothing, so it proved nothing: {sql}"


# --- The notebooks' queries --------------------------------------------------------------------


@dataclass(frozen=True)
class NotebookQuery:
    """A notebook's query as it runs on a catalogued table, its parameters filled in from
    ``{db}``, ``{days}`` (a ``BETWEEN`` on the partition column), ``{device}``. Transcribed
    from the notebooks: a notebook edit needs a matching edit here."""

    notebook: str
    sql: str
    spark_only: Optional[str] = None  # why Trino (and Athena) cannot run it as written

    def text(self, parity: Parity, days_column: str = "event_date") -> str:
        days = f"{days_column} BETWEEN DATE'{parity.first_day}' AND DATE'{parity.last_day}'"
        return self.sql.format(db=DATABASE, days=days, device=f"'{parity.device}'")


NOTEBOOK_QUERIES = [
    NotebookQuery(
        "01 events per minute",
        "SELECT window_start, layer, sum(event_count) AS events, count(*) AS devices "
        "FROM {db}.telemetry_minute WHERE {days} GROUP BY window_start, layer "
        "ORDER BY window_start",
    ),
    NotebookQuery(
        "01 events per device",
        "SELECT device_id, sum(event_count) AS events, count(*) AS minutes_reported "
        "FROM {db}.telemetry_minute WHERE {days} GROUP BY device_id "
        "ORDER BY events DESC, device_id",
    ),
    NotebookQuery(
        "01 latest position",
        "SELECT device_id, max_by(lat_last, window_start) AS lat, "
        "max_by(lon_last, window_start) AS lon, max_by(status_last, window_start) AS status "
        "FROM {db}.telemetry_minute WHERE {days} AND lat_last IS NOT NULL "
        "AND lon_last IS NOT NULL GROUP BY device_id",
    ),
    NotebookQuery(
        "01 device track",
        "SELECT window_start, lat_last, lon_last FROM {db}.telemetry_minute "
        "WHERE {days} AND device_id = {device} AND lat_last IS NOT NULL ORDER BY window_start",
    ),
    NotebookQuery(
        "01 latest status",
        "SELECT device_id, max(window_end) AS last_seen, "
        "round((unix_timestamp(current_timestamp()) - unix_timestamp(max(window_end))) / 60) "
        "AS minutes_since, "
        "max_by(status_last, IF(status_last IS NULL, NULL, window_start)) AS status, "
        "max_by(battery_pct_min, IF(battery_pct_min IS NULL, NULL, window_start)) AS battery_pct "
        "FROM {db}.telemetry_minute WHERE {days} GROUP BY device_id ORDER BY last_seen, device_id",
        spark_only="unix_timestamp() and current_timestamp() with parentheses are Spark's "
        "(Trino: to_unixtime(current_timestamp)), and the result moves with the clock",
    ),
    NotebookQuery(
        "02 busiest device",
        "SELECT device_id FROM {db}.telemetry_minute WHERE {days} "
        "GROUP BY device_id ORDER BY sum(event_count) DESC, device_id LIMIT 1",
    ),
    NotebookQuery(
        "02 device minutes",
        "SELECT window_start, window_end, layer, event_count, temperature_c_avg, "
        "temperature_c_min, temperature_c_max, humidity_pct_avg, battery_pct_min, speed_kmh_avg, "
        "speed_kmh_max, lat_last, lon_last, status_last FROM {db}.telemetry_minute "
        "WHERE {days} AND device_id = {device} ORDER BY window_start",
    ),
    NotebookQuery(
        "02 out-of-range readings",
        "SELECT substring_index(reason, ':', -1) AS field, "
        "get_json_object(payload, '$.event_time') AS event_time_text, ingest_time "
        "FROM {db}.quarantine_telemetry WHERE {days} AND reason LIKE 'out_of_range:%'",
        spark_only="substring_index() and get_json_object() are Spark's "
        "(Trino: split_part, json_extract_scalar)",
    ),
    NotebookQuery(
        "03 quarantine by hour",
        "SELECT date_trunc('HOUR', ingest_time) AS hour, reason, count(*) AS records "
        "FROM {db}.quarantine_telemetry WHERE {days} GROUP BY 1, 2",
    ),
    NotebookQuery(
        "03 raw by hour",
        "SELECT date_trunc('HOUR', ingest_time) AS hour, count(*) AS records "
        "FROM {db}.raw_telemetry WHERE {days} GROUP BY 1",
    ),
    NotebookQuery(
        "03 data-quality results",
        "SELECT run_id, run_time, suite, table_name, expectation, severity, success, "
        "observed_value, threshold FROM {db}.dq_results WHERE {days} ORDER BY run_time",
        spark_only="to_date() with one argument is Spark's (Trino: CAST(run_time AS DATE))",
    ),
    NotebookQuery(
        "04 staleness of telemetry_minute",
        "SELECT 'telemetry_minute (newest window end)' AS what, "
        "(unix_timestamp(current_timestamp()) - unix_timestamp(max(window_end))) / 60 AS minutes "
        "FROM {db}.telemetry_minute",
        spark_only="unix_timestamp() and current_timestamp() with parentheses are Spark's, "
        "and the result moves with the clock",
    ),
]
# Not here: the notebooks' reads of _control/merge_runs, _control/batch_runs and the
# streaming progress table, which are not catalogued (temporary views over their paths):
# neither Glue nor Trino nor Athena knows them.

_DAYS_COLUMN = {"quarantine_telemetry": "ingest_date", "raw_telemetry": "ingest_date"}
_DQ_DAYS = "to_date(run_time)"


def _notebook_sql(query: NotebookQuery, parity: Parity) -> str:
    if "dq_results" in query.sql:
        return query.text(parity, _DQ_DAYS)
    table = next((t for t in _DAYS_COLUMN if t in query.sql), None)
    return query.text(parity, _DAYS_COLUMN.get(table, "event_date"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "query", [q for q in NOTEBOOK_QUERIES if q.spark_only is None], ids=lambda q: q.notebook
)
def test_every_portable_notebook_query_returns_the_same_rows_in_spark_and_trino(
    parity: Parity, query: NotebookQuery
) -> None:
    result = assert_same_rows(parity, _notebook_sql(query, parity))

    assert result.rows, f"{query.notebook} returned nothing, so it proved nothing"


@pytest.mark.slow
@pytest.mark.parametrize(
    "query", [q for q in NOTEBOOK_QUERIES if q.spark_only], ids=lambda q: q.notebook
)
def test_the_spark_only_notebook_queries_run_in_spark_and_trino_refuses_them(
    parity: Parity, query: NotebookQuery
) -> None:
    sql = _notebook_sql(query, parity)

    run_spark(parity.spark, sql)
    with pytest.raises(WeirError, match=r"Trino: (FUNCTION_NOT_FOUND|SYNTAX_ERROR)"):
        run_trino(parity.config, sql)


# --- Types, partitioning, timestamps, nulls -------------------------------------------------

_TRINO_TYPE = {"string": "varchar", "timestamp": "timestamp(3) with time zone"}


@pytest.mark.slow
def test_trino_describes_telemetry_minute_as_glue_does(parity: Parity) -> None:
    glue = aws_client(parity.config, "glue")
    table = glue.get_table(DatabaseName=DATABASE, Name="telemetry_minute")["Table"]
    glue_columns = [
        (c["Name"], _TRINO_TYPE.get(c["Type"], c["Type"]))
        for c in table["StorageDescriptor"]["Columns"] + table["PartitionKeys"]
    ]

    described = run_trino(parity.config, f"DESCRIBE {DATABASE}.telemetry_minute").rows
    created = run_trino(parity.config, f"SHOW CREATE TABLE {DATABASE}.telemetry_minute").rows

    assert sorted((name, kind) for name, kind, *_ in described) == sorted(glue_columns)
    assert [k["Name"] for k in table["PartitionKeys"]] == list(MINUTE_PARTITION_COLUMNS)
    assert "partitioned_by = ARRAY['event_date']" in created[0][0]


@pytest.mark.slow
def test_every_row_of_telemetry_minute_agrees_timestamps_in_utc_nulls_and_layer(
    parity: Parity,
) -> None:
    sql = f"SELECT * FROM {DATABASE}.telemetry_minute"
    trino = run_trino(parity.config, sql)

    result = assert_same_rows(parity, sql)

    column = {name: i for i, name in enumerate(trino.columns)}
    window_starts = [row[column["window_start"]] for row in trino.rows]
    assert all(ts.utcoffset().total_seconds() == 0 for ts in window_starts)
    assert all(ts.second == 0 and ts.microsecond == 0 for ts in window_starts)
    computed = [row[column["computed_at"]] for row in trino.rows]
    assert all(ts.microsecond % 1000 == 0 for ts in computed), "Trino reads milliseconds"
    assert {row[column["layer"]] for row in trino.rows} == {"batch", "speed"}
    assert any(None in row for row in result.rows), "the flow's faults leave some nulls"


# --- The same lake on S3 --------------------------------------------------------------------


@pytest.mark.slow
def test_the_lake_on_s3a_is_read_by_trino_through_its_s3_file_system(parity: Parity) -> None:
    local = LakeLayout.from_config(parity.config)
    s3 = aws_client(parity.config, "s3")
    s3.create_bucket(Bucket="weir-trino")
    source = Path(local_path(local.serving))
    for file in source.rglob("*"):
        if file.is_file():
            key = f"lake/serving/telemetry_minute/{file.relative_to(source).as_posix()}"
            s3.upload_file(str(file), "weir-trino", key)
    on_s3 = LakeLayout(root="s3a://weir-trino/lake")
    serving = next(t for t in catalog_tables(on_s3) if t.name == "telemetry_minute")

    sync_glue(parity.config, "weir_s3", [serving])

    sql = "SELECT * FROM {db}.telemetry_minute"
    from_s3 = run_trino(parity.config, sql.format(db="weir_s3"))
    from_files = run_trino(parity.config, sql.format(db=DATABASE))
    location = aws_client(parity.config, "glue").get_table(
        DatabaseName="weir_s3", Name="telemetry_minute"
    )["Table"]["StorageDescriptor"]["Location"]
    assert location == "s3://weir-trino/lake/serving/telemetry_minute/"
    assert rows_of(from_s3) == rows_of(from_files) and from_s3.rows


# --- A schema Glue would describe wrongly ---------------------------------------------------


def test_glue_drift_names_extra_missing_retyped_and_repartitioned_columns() -> None:
    declared = CatalogTable("t", "file:///t", MINUTE_SCHEMA, MINUTE_PARTITION_COLUMNS)
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    fields = [f for f in MINUTE_SCHEMA.fields if f.name != "status_last"]
    fields = [StructField(f.name, StringType()) if f.name == "event_count" else f for f in fields]
    actual = StructType([*fields, StructField("firmware", LongType())])

    assert glue_drift(declared, MINUTE_SCHEMA, ["event_date"]) == []
    assert glue_drift(declared, actual, ["device_id"]) == [
        "column firmware bigint is in the Delta table but not declared (Glue would not list it)",
        "column status_last is declared but not in the Delta table (Glue would list it)",
        "column event_count is string in the Delta table but declared bigint",
        "partitioned by (device_id) in the Delta table but declared (event_date)",
    ]
    assert hive_type(LongType()) == "bigint"


@pytest.mark.slow
def test_a_schema_change_glue_would_not_describe_fails_the_sync_and_leaves_glue_alone(
    parity: Parity, tmp_path: Path
) -> None:
    glue = aws_client(parity.config, "glue")
    before = glue.get_table(DatabaseName=DATABASE, Name="quarantine_telemetry")["Table"]
    lake = LakeLayout.from_config(parity.config)
    # A copy of the lake whose quarantine table gained a column by schema evolution.
    drifted_root = tmp_path / "lake"
    drifted = LakeLayout(root=f"file://{drifted_root}")
    (
        parity.spark.read.format("delta")
        .load(lake.quarantine)
        .limit(5)
        .selectExpr("*", "CAST(1 AS BIGINT) AS firmware")
        .write.format("delta")
        .partitionBy("ingest_date")
        .save(drifted.quarantine)
    )
    document = parity.config.model_dump()
    document["lake"] = {"root": drifted.root, "landing": None}
    moved = config_from_mapping(document, environ={})

    with pytest.raises(WeirError, match=r"quarantine_telemetry: column firmware bigint"):
        sync_catalog(parity.spark, moved)

    after = glue.get_table(DatabaseName=DATABASE, Name="quarantine_telemetry")["Table"]
    assert after["VersionId"] == before["VersionId"]
    assert after["StorageDescriptor"]["Location"] == before["StorageDescriptor"]["Location"]


# --- weir query -------------------------------------------------------------------------------


def test_query_results_render_as_csv_and_json_with_utc_timestamps_and_nulls() -> None:
    from zoneinfo import ZoneInfo

    from weir.query import render

    result = QueryResult(
        ["device_id", "window_start", "temperature_c_avg"],
        [
            ("d1", datetime(2026, 12, 5, 11, 0, tzinfo=ZoneInfo("Europe/Paris")), 21.5),
            ("d2", datetime(2026, 12, 5, 10, 1), None),
        ],
    )

    assert render(result, "csv") == (
        "device_id,window_start,temperature_c_avg\n"
        "d1,2026-12-05 10:00:00,21.5\n"
        "d2,2026-12-05 10:01:00,\n"
    )
    assert json.loads(render(result, "json")) == [
        {"device_id": "d1", "window_start": "2026-12-05 10:00:00", "temperature_c_avg": 21.5},
        {"device_id": "d2", "window_start": "2026-12-05 10:01:00", "temperature_c_avg": None},
    ]


def test_weir_query_refuses_an_unknown_engine_or_format_before_running(
    capsys: pytest.CaptureFixture,
) -> None:
    assert main(["query", "--engine", "athena", "SELECT 1"]) == EXIT_BAD_CONFIG
    assert main(["query", "--format", "xml", "SELECT 1"]) == EXIT_BAD_CONFIG
    assert "--engine" in capsys.readouterr().err


@pytest.mark.slow
def test_weir_query_on_trino_prints_what_trino_returns(
    parity: Parity, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    conf = tmp_path / "weir.yaml"
    conf.write_text(yaml.safe_dump(parity.config.model_dump()))
    sql = f"SELECT layer, count(*) AS windows FROM {DATABASE}.telemetry_minute GROUP BY layer"
    capsys.readouterr()

    code = main(["query", "--engine", "trino", "--format", "json", "--conf", str(conf), sql])

    assert code == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    expected = run_trino(parity.config, sql)
    assert sorted((r["layer"], r["windows"]) for r in printed) == sorted(expected.rows)
    failing = main(["query", "--engine", "trino", "--conf", str(conf), "SELECT * FROM nowhere"])
    assert failing == EXIT_RUNTIME_FAILURE
    assert "Trino: TABLE_NOT_FOUND" in " ".join(capsys.readouterr().err.split())
