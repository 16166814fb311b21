"""Delta plumbing every layer shares (weir.delta), on tiny tables in a tmp lake."""

from __future__ import annotations

from datetime import date

import pytest
from delta.exceptions import ConcurrentAppendException
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import BinaryType, DateType, LongType, StructField, StructType

from weir.delta import (
    ConflictsOutlastedError,
    append_once,
    commit_tag,
    dates_predicate,
    ensure_table,
    read_table,
    replace_partitions,
    retry_conflicts,
    table_version,
    tagged_commit,
)
from weir.lake import LakeLayout

SCHEMA = "id STRING, day DATE"
D1, D2 = date(2026, 3, 1), date(2026, 3, 2)


def rows(spark: SparkSession, *values: tuple[str, date]) -> DataFrame:
    return spark.createDataFrame(list(values), SCHEMA)


def ids(spark: SparkSession, path: str) -> list[str]:
    return sorted(row["id"] for row in spark.read.format("delta").load(path).collect())


@pytest.fixture
def path(lake: LakeLayout) -> str:
    return f"{lake.root}/t"


def conflict() -> ConcurrentAppendException:
    return ConcurrentAppendException("Files were added by a concurrent update.", "(test)")


def test_a_missing_table_has_no_version_and_reads_as_none(spark: SparkSession, path: str) -> None:
    assert table_version(spark, path) is None
    assert read_table(spark, path) is None


def test_ensure_table_creates_an_empty_table_once(spark: SparkSession, path: str) -> None:
    schema = rows(spark).schema
    ensure_table(spark, path, schema, ("day",), {"delta.appendOnly": "true"})
    ensure_table(spark, path, schema, ("day",))
    assert table_version(spark, path) == 0
    detail = DeltaTable.forPath(spark, path).detail().first()
    assert detail["partitionColumns"] == ["day"]
    assert detail["properties"]["delta.appendOnly"] == "true"


def test_ensure_table_adds_new_nullable_columns_to_an_older_table(
    spark: SparkSession, path: str
) -> None:
    older = StructType([StructField("n", LongType(), False), StructField("day", DateType(), False)])
    newer = StructType([*older.fields, StructField("extra", BinaryType(), True)])
    spark.createDataFrame([(1, date(2026, 3, 1))], older).write.format("delta").partitionBy(
        "day"
    ).save(path)

    ensure_table(spark, path, newer, ("day",))
    ensure_table(spark, path, newer, ("day",))  # nothing left to add: no commit

    table = spark.read.format("delta").load(path)
    assert table.schema.fieldNames() == ["n", "day", "extra"]
    assert [tuple(row) for row in table.collect()] == [(1, date(2026, 3, 1), None)]
    assert table_version(spark, path) == 1
    spark.createDataFrame([(2, date(2026, 3, 2), b"\xff")], newer).write.format("delta").mode(
        "append"
    ).save(path)  # a writer of the new schema is accepted


def test_append_once_skips_a_version_its_app_id_already_wrote(
    spark: SparkSession, path: str
) -> None:
    append_once(rows(spark, ("a", D1)), path, ("day",), "writer-1", 0, "first")
    append_once(rows(spark, ("a", D1)), path, ("day",), "writer-1", 0)  # a replay: skipped
    append_once(rows(spark, ("b", D1)), path, ("day",), "writer-2", 0)  # another writer
    append_once(rows(spark, ("c", D2)), path, ("day",), "writer-1", 1)
    assert ids(spark, path) == ["a", "b", "c"]
    assert tagged_commit(spark, path, "first").version == 0


def test_replace_partitions_replaces_only_the_dates_named_in_one_tagged_commit(
    spark: SparkSession, path: str
) -> None:
    replace_partitions(rows(spark, ("a", D1), ("b", D2)), path, ("day",), None, "run-1")
    replace_partitions(
        rows(spark, ("c", D2)), path, ("day",), dates_predicate("day", [D2]), "run-2"
    )
    assert ids(spark, path) == ["a", "c"]
    commit = tagged_commit(spark, path, "run-2")
    assert (commit.version, commit.read_version, commit.metric("numOutputRows")) == (1, 0, 1)
    assert tagged_commit(spark, path, "run-3") is None


def test_a_dml_commit_carries_the_tag_and_the_session_setting_is_restored(
    spark: SparkSession, path: str
) -> None:
    replace_partitions(rows(spark, ("a", D1)), path, ("day",), None, "run-1")
    with commit_tag(spark, "delete-run"):
        DeltaTable.forPath(spark, path).delete("id = 'a'")
    assert tagged_commit(spark, path, "delete-run").version == 1
    assert spark.conf.get("spark.databricks.delta.commitInfo.userMetadata", None) is None


def test_dates_predicate_is_a_sorted_distinct_literal_list() -> None:
    assert dates_predicate("t.day", [D2, D1, D2]) == "t.day IN (DATE'2026-03-01', DATE'2026-03-02')"


def test_a_write_that_lost_a_conflict_is_retried_with_growing_pauses() -> None:
    calls, pauses = [], []

    def twice_conflicting() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise conflict()
        return "done"

    result = retry_conflicts(
        twice_conflicting, attempts=3, what="test", hint="", sleep=pauses.append
    )
    assert result == ("done", 3)
    assert len(pauses) == 2 and pauses[1] > pauses[0] > 0


def test_conflicts_outlasting_the_attempts_name_the_write_and_what_to_do() -> None:
    def always() -> None:
        raise conflict()

    with pytest.raises(ConflictsOutlastedError, match=r"OPTIMIZE of t: lost 2 times .*later"):
        retry_conflicts(
            always, attempts=2, what="OPTIMIZE of t", hint="later", sleep=lambda _: None
        )


def test_an_error_that_is_not_a_conflict_is_not_retried() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("not a conflict")

    with pytest.raises(ValueError):
        retry_conflicts(broken, attempts=5, what="test", hint="", sleep=lambda _: None)
    assert calls == [1]
