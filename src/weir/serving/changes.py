"""The diff between the rows a merge wants and the unified table, applied in ONE Delta MERGE.

Inside its scope a merge diffs the wanted rows against the table and applies only the
difference (inserts, updates, deletes; the target pruned to the touched dates), so the cost
follows the change, not the history. Nothing changed: no commit at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.delta import commit_tag, dates_predicate
from weir.schemas import MINUTE_KEY, MINUTE_SCHEMA
from weir.serving.rule import PARTITION_COLUMN

DELETE_COLUMN = "_weir_delete"


def serving_changes(wanted: DataFrame, current: DataFrame) -> DataFrame:
    """Rows to upsert (wanted, not present exactly) and keys to delete (present, not wanted).

    Output: MINUTE_SCHEMA plus a boolean ``_weir_delete``; a delete row carries only the key
    and ``event_date``. Both inputs must be restricted to the same scope, one row per key.

    One full outer join on the window key, values compared null-safely: a single shuffle of
    each side, where two set differences (rows, then keys) cost two.
    """
    key = [*MINUTE_KEY, PARTITION_COLUMN]
    values = [c for c in MINUTE_SCHEMA.fieldNames() if c not in key]
    present = "_weir_present"
    joined = (
        wanted.withColumn(present, F.lit(True))
        .alias("w")
        .join(current.withColumn(present, F.lit(True)).alias("c"), on=key, how="full_outer")
    )
    in_wanted = F.col(f"w.{present}").isNotNull()
    in_current = F.col(f"c.{present}").isNotNull()
    same = F.lit(True)
    for column in values:
        same = same & F.col(f"w.{column}").eqNullSafe(F.col(f"c.{column}"))
    delete = in_current & ~in_wanted
    return joined.where(delete | (in_wanted & ~(in_current & same))).select(
        *(
            F.col(c) if c in key else F.col(f"w.{c}")  # all null on a delete row
            for c in MINUTE_SCHEMA.fieldNames()
        ),
        delete.alias(DELETE_COLUMN),
    )


def apply_changes(
    spark: SparkSession, path: str, changes: DataFrame, dates: Iterable[date], run_id: str
) -> None:
    """ONE Delta MERGE into the unified table: delete, update, insert by window key.

    The target is pruned to ``dates`` (the partitions that hold a change), so only files with
    a changed row are rewritten and only those partitions are read (a concurrent OPTIMIZE of
    other dates does not conflict). The commit's ``userMetadata`` is ``run_id``.
    """
    condition = " AND ".join(
        [
            *(f"t.{c} = s.{c}" for c in MINUTE_KEY),
            dates_predicate(f"t.{PARTITION_COLUMN}", dates),
        ]
    )
    values = {c: f"s.{c}" for c in MINUTE_SCHEMA.fieldNames()}
    with commit_tag(spark, run_id):
        (
            DeltaTable.forPath(spark, path)
            .alias("t")
            .merge(changes.alias("s"), condition)
            .whenMatchedDelete(condition=f"s.{DELETE_COLUMN}")
            .whenMatchedUpdate(set=values)
            .whenNotMatchedInsert(condition=f"NOT s.{DELETE_COLUMN}", values=values)
            .execute()
        )
