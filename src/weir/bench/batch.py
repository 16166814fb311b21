"""Benchmark of the batch layer: full and incremental ``rebuild_batch`` vs the parse floor.

Data: ``events`` RAW records over 31 days of ingest time, generated with Spark expressions
from ``spark.range`` (no Python loop), as a Delta table of two commits: 30 days of history,
then one new day. About 2% of records are producer retries (same content, received 30 s
later) and 1% are invalid (malformed JSON or out of range). Cached per size under
``bench/data/``.

Measured in one run, on that table (docs/batch.md, "Benchmark"):

* ``parse_floor``: every payload through the contract's typed ``from_json`` into Spark's
  no-op sink, the least any rebuild must do (measured last, in a JVM as warm as theirs);
* ``rebuild_full``: ``rebuild_batch --full`` over all 31 days, view written, run recorded;
* ``rebuild_history``: a full run over the first 30 days (the incremental run's baseline);
* ``rebuild_incremental``: then an incremental run over 31 days (one new day);
* ``rebuild_unchanged``: then the same incremental run again: nothing new, the fixed cost of
  a run (``_control``, the Delta log, two scans of the raw table);
* ``rebuild_incremental_short_history``: the same new day after a history of
  ``SHORT_HISTORY_DAYS`` (the last of the 30, a second lake): with the new day fixed, an
  incremental run whose cost followed the history would take ~30 x longer on the long one;
* ``contract_bound``: the contract's work on every record with nothing written (classify,
  valid events, first-received dedup, per-minute aggregate into the no-op sink): less than
  any full rebuild can do, so its ratio to the floor bounds what a rebuild can reach here.

Every measurement's ``events`` is the records of the table it rebuilds from (an incremental
run parses only the new day, folded into the event index: docs/batch.md), so events/s
compare runs over the same table.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from weir.bench.harness import Measurement, SuiteResult, Target, environment, timed
from weir.config import WeirConfig
from weir.contract import aggregate_minutes, classify_records, dedup_first_received, valid_events
from weir.control import MODE_FULL, MODE_INCREMENTAL
from weir.lake import LakeLayout
from weir.layers.batch import RebuildRequest, rebuild_batch
from weir.schemas import LAYER_BATCH, PAYLOAD_TYPED_SCHEMA, RAW_PARTITION_COLUMNS, RAW_SCHEMA

SUITE = "batch"
DATA_DIR = Path("bench/data")
DEFAULT_EVENTS = 10_000_000
HISTORY_DAYS = 30
DAYS = HISTORY_DAYS + 1  # the history, then one new day
DEVICES = 1000
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
HISTORY_CUTOFF = START + timedelta(days=HISTORY_DAYS)
# after the last retry of the last day (30 s late): every record is read
FINAL_CUTOFF = START + timedelta(days=DAYS, hours=1)
RETRY_DELAY_SECONDS = 30
INGEST_DELAY_SECONDS = 2
# One record in 50 is a retry of the previous one (2%); one in 200 is malformed and one in
# 200 out of range (1% invalid). Keys by residue, so the mix is exact whatever the size.
RETRY_EVERY, RETRY_RESIDUE = 50, 49
INVALID_EVERY, MALFORMED_RESIDUE, OUT_OF_RANGE_RESIDUE = 200, 13, 113
# The incremental check: a run costs its fixed part plus at most twice its share of a full
# rebuild (the new day's fraction of the records). docs/batch.md says why.
INCREMENTAL_SLACK = 2.0
# "Proportional to the new day, not the history": the same new day after 1 day and after 30
# days of history; the long history may cost at most this factor more (run-to-run noise here
# is +-20 %).
SHORT_HISTORY_DAYS = 1
HISTORY_INDEPENDENCE = 1.25
_GENERATED_MARKER = "_GENERATED"

log = logging.getLogger(__name__)


# --- The generated raw table --------------------------------------------------------------------


def _event_key() -> Column:
    """The event a record carries: a retry repeats the previous record's event."""
    is_retry = F.col("id") % RETRY_EVERY == RETRY_RESIDUE
    return F.when(is_retry, F.col("id") - 1).otherwise(F.col("id"))


def _unit(key: Column, salt: int) -> Column:
    """A deterministic number in [0, 1) from the event key: a retry's content is the same."""
    return (F.abs(F.xxhash64(key, F.lit(salt))) % 1_000_000) / 1_000_000.0


def _payload(key: Column, event_time: Column) -> Column:
    """The event's JSON text; a fixed share of records malformed or out of range."""
    residue = F.col("id") % INVALID_EVERY
    temperature = F.when(residue == OUT_OF_RANGE_RESIDUE, F.lit(999.0)).otherwise(
        F.round(_unit(key, 1) * 40 - 5, 2)
    )
    payload = F.to_json(
        F.struct(
            F.concat(F.lit("evt-"), key.cast("string")).alias("event_id"),
            F.concat(F.lit("vehicle-"), (key % DEVICES).cast("string")).alias("device_id"),
            F.date_format(event_time, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").alias("event_time"),
            temperature.alias("temperature_c"),
            F.round(_unit(key, 2) * 60 + 20, 1).alias("humidity_pct"),
            F.round(_unit(key, 3) * 100, 1).alias("battery_pct"),
            F.round(_unit(key, 4) * 120, 1).alias("speed_kmh"),
            F.round(_unit(key, 5) * 0.2 + 37.4, 5).alias("lat"),
            F.round(_unit(key, 6) * 0.2 + 126.9, 5).alias("lon"),
            F.element_at(
                F.array(F.lit("driving"), F.lit("parked"), F.lit("charging")),
                (key % 3 + 1).cast("int"),
            ).alias("status"),
        )
    )
    return F.when(residue == MALFORMED_RESIDUE, F.substring(payload, 1, 40)).otherwise(payload)


def generate_raw(spark: SparkSession, events: int) -> DataFrame:
    """RAW rows (RAW_SCHEMA): ``events`` records, event times spread evenly over DAYS days,
    received 2 s after their event (a retry 30 s after). Deterministic for ``events``."""
    spacing_micros = DAYS * 86_400 * 1_000_000 / events  # between consecutive events
    key = _event_key()
    event_micros = (F.lit(int(START.timestamp() * 1_000_000)) + key * spacing_micros).cast("long")
    event_time = F.timestamp_micros(event_micros)
    delay = F.when(key != F.col("id"), RETRY_DELAY_SECONDS).otherwise(INGEST_DELAY_SECONDS)
    ingest_time = F.timestamp_micros(event_micros + delay * 1_000_000)
    rows = spark.range(events).select(
        F.lit("bench").alias("source"),
        F.lit("bench").alias("source_stream"),
        (F.col("id") % 4).cast("string").alias("source_partition"),
        F.col("id").cast("string").alias("source_offset"),
        F.lit(None).cast("string").alias("record_key"),
        _payload(key, event_time).alias("payload"),
        ingest_time.alias("arrival_time"),
        ingest_time.alias("ingest_time"),
        F.to_date(ingest_time).alias("ingest_date"),
        F.lit(None).cast("binary").alias("payload_bytes"),
    )
    return rows.select(*(F.col(f.name).cast(f.dataType) for f in RAW_SCHEMA.fields))


def _append(rows: DataFrame, path: str) -> None:
    rows.write.format("delta").mode("append").partitionBy(*RAW_PARTITION_COLUMNS).save(path)


def _prepared(folder: Path, raw: Callable[[], DataFrame], marker: str) -> LakeLayout:
    """The lake at ``folder``: unless made before, its RAW table is ``raw()`` in two commits
    (history, then the new day); its batch view and ``_control`` are removed, so every run
    starts without a baseline."""
    lake = LakeLayout(root=f"file://{folder}")
    if not (folder / _GENERATED_MARKER).exists():
        shutil.rmtree(folder, ignore_errors=True)
        rows = raw()
        new_day = F.col("ingest_time") >= F.lit(HISTORY_CUTOFF)
        _append(rows.where(~new_day), lake.raw)
        _append(rows.where(new_day), lake.raw)
        (folder / _GENERATED_MARKER).write_text(marker)
    for derived in ("batch", "_control"):
        shutil.rmtree(folder / derived, ignore_errors=True)
    return lake


def prepared_lake(spark: SparkSession, events: int, data_dir: Path = DATA_DIR) -> LakeLayout:
    """A lake of the generated records, made once per size (see ``_prepared``)."""
    return _prepared(
        (data_dir / f"batch-{events}").resolve(),
        lambda: generate_raw(spark, events),
        f"{events} records, {DAYS} days\n",
    )


def prepared_short_history_lake(
    spark: SparkSession, lake: LakeLayout, events: int, data_dir: Path = DATA_DIR
) -> LakeLayout:
    """A second lake with the same new day after only the last SHORT_HISTORY_DAYS of the
    history: the same records, read from ``lake``, made once per size."""
    first = HISTORY_CUTOFF - timedelta(days=SHORT_HISTORY_DAYS)

    def last_days() -> DataFrame:
        return (
            spark.read.format("delta")
            .load(lake.raw)
            .where(F.col("ingest_date") >= F.lit(first.date()))
            .where(F.col("ingest_time") >= F.lit(first))
        )

    return _prepared(
        (data_dir / f"batch-{events}-history-{SHORT_HISTORY_DAYS}d").resolve(),
        last_days,
        f"from {events} records, the last {SHORT_HISTORY_DAYS} day(s) of history\n",
    )


def history_independence_check(long: Measurement, short: Measurement) -> dict:
    """The new day after 30 days of history costs at most HISTORY_INDEPENDENCE x the same
    day after SHORT_HISTORY_DAYS."""
    ratio = long.seconds / short.seconds
    return {
        "check": (
            f"rebuild_incremental (30-day history) <= {HISTORY_INDEPENDENCE:g} x "
            f"rebuild_incremental_short_history ({SHORT_HISTORY_DAYS}-day)"
        ),
        "value": round(ratio, 3),
        "met": ratio <= HISTORY_INDEPENDENCE,
    }


# --- The runs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawCounts:
    total: int
    new_day: int


def raw_counts(spark: SparkSession, lake: LakeLayout) -> RawCounts:
    """Records in the table, and those of the new day (ingest time after the history)."""
    counts = (
        spark.read.format("delta")
        .load(lake.raw)
        .agg(
            F.count(F.lit(1)).alias("total"),
            F.count(F.when(F.col("ingest_time") >= F.lit(HISTORY_CUTOFF), True)).alias("new"),
        )
        .first()
    )
    return RawCounts(total=int(counts["total"]), new_day=int(counts["new"]))


def parse_floor(spark: SparkSession, lake: LakeLayout) -> None:
    """The contract's typed parse of every payload into the no-op sink (no count() shortcut)."""
    payloads = spark.read.format("delta").load(lake.raw).select("payload")
    parsed = payloads.select(F.from_json("payload", PAYLOAD_TYPED_SCHEMA).alias("p"))
    parsed.write.format("noop").mode("overwrite").save()


def contract_bound(spark: SparkSession, lake: LakeLayout) -> None:
    """The contract's transforms over every record into the no-op sink, nothing written.

    A full rebuild does this much and more (the event index, the view, the run record), so
    this is a lower bound on a rebuild's time whatever the rebuild's design.
    """
    events = (
        spark.read.format("delta")
        .load(lake.raw)
        .transform(classify_records)
        .transform(valid_events)
        .transform(dedup_first_received)
    )
    minutes = aggregate_minutes(events, LAYER_BATCH, computed_at=F.current_timestamp())
    minutes.write.format("noop").mode("overwrite").save()


def _bench_config(base: WeirConfig, lake: LakeLayout) -> WeirConfig:
    return base.model_copy(update={"lake": base.lake.model_copy(update={"root": lake.root})})


def _best(name: str, events: int, seconds: list[float]) -> Measurement:
    return Measurement(name=name, events=events, seconds=min(seconds))


def incremental_check(
    incremental: Measurement, unchanged: Measurement, full: Measurement, new_fraction: float
) -> dict:
    """incremental <= fixed cost + INCREMENTAL_SLACK x (the new day's share of a full run)."""
    bound = unchanged.seconds + INCREMENTAL_SLACK * full.seconds * new_fraction
    return {
        "check": (
            f"rebuild_incremental <= rebuild_unchanged + {INCREMENTAL_SLACK:g} x rebuild_full"
            f" x {new_fraction:.4f} (new-day share) = {bound:.2f} s"
        ),
        "value": round(incremental.seconds, 2),
        "met": incremental.seconds <= bound,
    }


def run(
    spark: SparkSession,
    events: int = DEFAULT_EVENTS,
    repeat: int = 1,
    config: Optional[WeirConfig] = None,
    data_dir: Path = DATA_DIR,
) -> SuiteResult:
    """Generate (or reuse) the table, then measure; best of ``repeat`` for every figure."""
    from weir.config import load_config

    load_before = os.getloadavg()
    lake = prepared_lake(spark, events, data_dir)
    short_lake = prepared_short_history_lake(spark, lake, events, data_dir)
    base = config or load_config()
    config = _bench_config(base, lake)
    short_config = _bench_config(base, short_lake)
    counts = raw_counts(spark, lake)
    short_counts = raw_counts(spark, short_lake)

    def rebuild(cutoff: datetime, mode: str, on: WeirConfig = config) -> float:
        request = RebuildRequest(cutoff=cutoff, mode=mode)
        return timed("run", 0, lambda: rebuild_batch(spark, on, request)).seconds

    # Untimed: the first incremental run in a JVM also compiles the fold's plans (a fresh JVM's
    # run costs far more than a warm one's), so without this whichever of the two measured
    # incremental runs came second would look cheaper.
    rebuild(HISTORY_CUTOFF, MODE_FULL, short_config)
    rebuild(FINAL_CUTOFF, MODE_INCREMENTAL, short_config)
    seconds: dict[str, list[float]] = {}
    for _ in range(repeat):
        # full at the history's cutoff sets the baseline (a full run may go back in time)
        seconds.setdefault("rebuild_history", []).append(rebuild(HISTORY_CUTOFF, MODE_FULL))
        seconds.setdefault("rebuild_incremental", []).append(
            rebuild(FINAL_CUTOFF, MODE_INCREMENTAL)
        )
        seconds.setdefault("rebuild_unchanged", []).append(rebuild(FINAL_CUTOFF, MODE_INCREMENTAL))
        seconds.setdefault("rebuild_full", []).append(rebuild(FINAL_CUTOFF, MODE_FULL))
        rebuild(HISTORY_CUTOFF, MODE_FULL, short_config)  # the short history's baseline
        seconds.setdefault("rebuild_incremental_short_history", []).append(
            rebuild(FINAL_CUTOFF, MODE_INCREMENTAL, short_config)
        )
    # The floor after the rebuilds, in a warm JVM like theirs: measured first, it also paid
    # the JIT's warm-up (a cold floor took 2-3x a warm one here), flattering the ratio.
    floor = timed("parse_floor", counts.total, lambda: parse_floor(spark, lake), repeat)
    bound = timed("contract_bound", counts.total, lambda: contract_bound(spark, lake), repeat)
    history = counts.total - counts.new_day
    full = _best("rebuild_full", counts.total, seconds["rebuild_full"])
    incremental = _best("rebuild_incremental", counts.total, seconds["rebuild_incremental"])
    unchanged = _best("rebuild_unchanged", counts.total, seconds["rebuild_unchanged"])
    short = _best(
        "rebuild_incremental_short_history",
        short_counts.total,
        seconds["rebuild_incremental_short_history"],
    )
    result = SuiteResult(
        suite=SUITE,
        environment=environment(
            events=counts.total,
            new_day_events=counts.new_day,
            short_history_events=short_counts.total,
            days=DAYS,
            devices=DEVICES,
            repeat=repeat,
            master=spark.sparkContext.master,
            shuffle_partitions=spark.conf.get("spark.sql.shuffle.partitions"),
            load_average_before=[round(x, 2) for x in load_before],
            load_average_after=[round(x, 2) for x in os.getloadavg()],
            # What the contract's work alone reaches (see contract_bound): a rebuild's ratio
            # and rate cannot exceed these here.
            contract_bound_ratio=round(floor.seconds / bound.seconds, 3),
            contract_bound_events_per_second=round(bound.events_per_second),
        ),
    )
    result.measurements = [
        floor,
        full,
        _best("rebuild_history", history, seconds["rebuild_history"]),
        incremental,
        unchanged,
        short,
        bound,
    ]
    # rebuild <= 2 x the floor's time  <=>  rebuild's rate >= 0.5 x the floor's
    result.evaluate(
        [Target("rebuild_full", baseline="parse_floor", min_ratio=0.5, min_rate=110_000)]
    )
    result.checks.append(
        incremental_check(incremental, unchanged, full, counts.new_day / counts.total)
    )
    result.checks.append(history_independence_check(incremental, short))
    return result
