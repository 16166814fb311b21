"""`weir batch rebuild --input`: adopting a lake of raw JSON-lines files (docs/batch.md).

The input is a Firehose-style prefix ``<prefix>/YYYY/MM/DD/HH/<object>`` (object names
without extension, one gzip-compressed); each file's modification time is set, since it
becomes the records' ingest_time.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from weir.cli import main
from weir.config import ConfigError, WeirConfig
from weir.control import MODE_FULL, MODE_INCREMENTAL, RUN_SUCCEEDED, BatchRun, batch_runs
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK
from weir.lake import LakeLayout
from weir.layers.batch import RebuildRequest, adopt, adopt_files, input_uri, rebuild_batch

from .builders import (
    assert_view,
    expected_view,
    lake_entries,
    minute,
    utc,
    view,
    write_conf,
)

JOB = Path(__file__).resolve().parents[3] / "jobs" / "batch" / "rebuild.py"
CUTOFF = "2026-03-03T00:00:00Z"
LATER_CUTOFF = "2026-03-04T00:00:00Z"
DAY_1_FILE = "2026/03/01/10/telemetry-1-2026-03-01-10-04-00-0a1b"
DAY_2_FILE = "2026/03/02/08/telemetry-1-2026-03-02-08-04-00-2c3d.gz"
DAY_3_FILE = "2026/03/03/09/telemetry-1-2026-03-03-09-04-00-4e5f"


def event(event_id: str, device_id: str, event_time: str, temp: float) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "device_id": device_id,
            "event_time": utc(event_time).isoformat().replace("+00:00", "Z"),
            "temperature_c": temp,
        }
    )


DAY_1_LINES = [
    event("e1", "dev-a", "03-01T10:00:05", 20.0),
    event("e2", "dev-a", "03-01T10:00:40", 22.0),
    '{"event_id": "e7", "device_id": ',  # malformed
    event("e1", "dev-a", "03-01T10:00:05", 20.0),  # a producer retry: counted once
]
DAY_2_LINES = [
    event("e3", "dev-b", "03-02T08:00:00", 10.0),
    # a conflicting twin of e1 on another day, received a day later: e1's first copy wins
    event("e1", "dev-a", "03-02T08:00:30", 99.0),
    event("e8", "bad device!", "03-02T08:00:00", 1.0),
]
DAY_3_LINES = [event("e9", "dev-b", "03-02T08:00:50", 14.0)]  # a late event for day 2
EXPECTED_AFTER_TWO_DAYS = [
    minute("dev-a", "03-01T10:00:00", 2, (20.0, 22.0)),
    minute("dev-b", "03-02T08:00:00", 1, (10.0,)),
]


def land(prefix: Path, name: str, lines: list[str], modified: str) -> Path:
    """Write a JSON-lines object (gzip when the name says so) with a given modification time."""
    path = prefix / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    moment = utc(modified).timestamp()
    os.utime(path, (moment, moment))
    return path


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    """Two days of Firehose objects, and a writer's temporary file Spark must ignore."""
    folder = tmp_path / "firehose"
    land(folder, DAY_1_FILE, DAY_1_LINES, "03-01T10:04:00")
    land(folder, DAY_2_FILE, DAY_2_LINES, "03-02T08:04:00")
    land(folder, "2026/03/02/08/_telemetry-in-flight", ["not yet complete"], "03-02T08:05:00")
    return folder


def rebuild_from(spark: SparkSession, config: WeirConfig, prefix: Path, cutoff: str) -> BatchRun:
    request = RebuildRequest(cutoff=utc(cutoff), input=input_uri(str(prefix)))
    return rebuild_batch(spark, config, request)


def delta(spark: SparkSession, path: str) -> DataFrame:
    return spark.read.format("delta").load(path)


def table_version(spark: SparkSession, path: str) -> int:
    return int(DeltaTable.forPath(spark, path).history(1).first()["version"])


# --- Arguments (no Spark) ----------------------------------------------------------------------


def test_input_path_is_an_absolute_file_uri_without_trailing_slash(tmp_path: Path) -> None:
    assert input_uri(f"{tmp_path}/") == f"file://{tmp_path}"
    assert input_uri(f"file://{tmp_path}") == f"file://{tmp_path}"
    assert input_uri("s3a://bucket/firehose/telemetry/") == "s3a://bucket/firehose/telemetry"


@pytest.mark.parametrize("text", ["", "   ", "/no/such/folder"])
def test_missing_or_empty_input_is_a_config_error_naming_input(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        input_uri(text)
    assert raised.value.key == "--input"


# --- Adoption, then the view -------------------------------------------------------------------


def test_adopted_lines_are_raw_rows_with_file_coordinates_and_modification_time(
    spark: SparkSession, lake: LakeLayout, prefix: Path
) -> None:
    adoption = adopt_files(spark, lake, input_uri(str(prefix)))
    assert (adoption.files, adoption.records, adoption.quarantined) == (2, 7, 2)
    raw = delta(spark, lake.raw).select(
        "source",
        "source_stream",
        "source_partition",
        "source_offset",
        "payload",
        "ingest_time",
        "ingest_date",
    )
    stream = f"file://{prefix}"
    expected = [
        ("files", stream, name, str(line), payload, utc(mtime), utc(mtime).date())
        for name, lines, mtime in (
            (DAY_1_FILE, DAY_1_LINES, "03-01T10:04:00"),
            (DAY_2_FILE, DAY_2_LINES, "03-02T08:04:00"),
        )
        for line, payload in enumerate(lines, start=1)
    ]
    assert_df_equality(
        raw,
        spark.createDataFrame(expected, raw.schema),
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_rebuild_from_input_gives_the_expected_rows_and_counts(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, prefix: Path
) -> None:
    run = rebuild_from(spark, config, prefix, CUTOFF)
    assert_view(view(spark, lake), expected_view(spark, EXPECTED_AFTER_TWO_DAYS))
    assert (run.status, run.mode, run.raw_version) == (RUN_SUCCEEDED, MODE_FULL, 0)
    assert (run.records_in, run.valid, run.quarantined) == (7, 5, 2)
    assert (run.duplicates, run.conflicting_duplicates) == (2, 1)
    # raw = valid + quarantine (docs/contract.md): the adoption wrote the quarantine rows too
    reasons = delta(spark, lake.quarantine).groupBy("reason").count().collect()
    assert {(r["reason"], r["count"]) for r in reasons} == {
        ("malformed_json", 1),
        ("bad_device_id", 1),
    }


def test_rerun_with_the_same_input_adds_nothing_and_a_new_file_only_itself(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, prefix: Path
) -> None:
    rebuild_from(spark, config, prefix, CUTOFF)
    raw_version = table_version(spark, lake.raw)
    quarantine_version = table_version(spark, lake.quarantine)
    rerun = rebuild_from(spark, config, prefix, CUTOFF)
    assert (table_version(spark, lake.raw), table_version(spark, lake.quarantine)) == (
        raw_version,
        quarantine_version,
    )
    assert (rerun.mode, rerun.records_in, rerun.dates_rebuilt) == (MODE_INCREMENTAL, 7, [])
    assert_view(view(spark, lake), expected_view(spark, EXPECTED_AFTER_TWO_DAYS))

    land(prefix, DAY_3_FILE, DAY_3_LINES, "03-03T09:04:00")
    later = rebuild_from(spark, config, prefix, LATER_CUTOFF)
    assert delta(spark, lake.raw).count() == 8
    assert (later.mode, later.records_in, later.dates_rebuilt) == (
        MODE_INCREMENTAL,
        8,
        [date(2026, 3, 2)],
    )
    assert_view(
        view(spark, lake),
        expected_view(
            spark,
            [
                EXPECTED_AFTER_TWO_DAYS[0],
                minute("dev-b", "03-02T08:00:00", 2, (10.0, 14.0)),
            ],
        ),
    )


def test_adoption_killed_between_quarantine_and_raw_completes_once_next_time(
    spark: SparkSession, lake: LakeLayout, prefix: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(*_: Any) -> None:
        raise RuntimeError("killed before the RAW commit")

    with monkeypatch.context() as patched:
        patched.setattr(adopt, "_append_adopted_raw", killed)
        with pytest.raises(RuntimeError):
            adopt_files(spark, lake, input_uri(str(prefix)))
    assert delta(spark, lake.quarantine).count() == 2  # committed before the kill
    again = adopt_files(spark, lake, input_uri(str(prefix)))
    assert (again.files, again.records, again.quarantined) == (2, 7, 0)
    assert delta(spark, lake.raw).count() == 7
    assert delta(spark, lake.quarantine).count() == 2
    keys = delta(spark, lake.quarantine).select("source_partition", "source_offset")
    assert keys.distinct().count() == 2


# --- The command line and the job --------------------------------------------------------------


def test_cli_input_rebuilds_from_the_adopted_files(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, prefix: Path, tmp_path: Path
) -> None:
    conf = write_conf(config, tmp_path)
    arguments = ["--input", str(prefix), "--cutoff", CUTOFF]
    assert main(["batch", "rebuild", "--conf", conf, *arguments]) == EXIT_OK
    assert_view(view(spark, lake), expected_view(spark, EXPECTED_AFTER_TWO_DAYS))
    (run,) = batch_runs(spark, lake)
    assert run.records_in == 7


def test_cli_and_job_missing_input_exit_2_and_write_nothing(
    config: WeirConfig, lake: LakeLayout, tmp_path: Path
) -> None:
    conf = write_conf(config, tmp_path)
    missing = str(tmp_path / "no-such-prefix")
    arguments = ["--input", missing, "--cutoff", CUTOFF]
    assert main(["batch", "rebuild", "--conf", conf, *arguments]) == EXIT_BAD_CONFIG
    spec = importlib.util.spec_from_file_location("weir_job_batch_rebuild_input", JOB)
    assert spec is not None and spec.loader is not None
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main(["--conf", conf, *arguments]) == EXIT_BAD_CONFIG
    assert lake_entries(lake) == set()


def test_missing_remote_input_is_a_config_error_before_anything_is_written(
    spark: SparkSession, config: WeirConfig, lake: LakeLayout, tmp_path: Path
) -> None:
    # a URI with a scheme is checked through Hadoop's file system, not before Spark starts
    missing = f"file://{tmp_path}/no-such-prefix"
    request = RebuildRequest(cutoff=utc(CUTOFF), input=missing)
    with pytest.raises(ConfigError) as raised:
        rebuild_batch(spark, config, request)
    assert raised.value.key == "--input"
    assert lake_entries(lake) == set()
