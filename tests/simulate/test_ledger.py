"""The ledger: fates by acknowledgement order, atomic parts, and agreement with weir.contract."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from simulate.conftest import START, landed_lines, spec
from weir.config import WeirConfig
from weir.contract import REASON_COLUMN, classify_records, dedup_first_received, valid_events
from weir.contract.dedup import DISTINCT_CONTENTS, RECEIVED_COPIES
from weir.schemas import RAW_SCHEMA
from weir.simulate import faults as F
from weir.simulate import ledger as L
from weir.simulate.faults import FaultMix
from weir.simulate.run import SimulateOptions, run_simulation
from weir.simulate.stream import stream_records


@pytest.fixture
def ledger(tmp_path: Path) -> L.Ledger:
    return L.Ledger(tmp_path / "run", {"run_id": "run"}, rows_per_part=4)


def a_group(kind: str):
    """An original with a copy of ``kind`` (duplicate or conflict), from a real stream."""
    records = stream_records(spec(seed=8, devices=100, faults={kind: 0.2}), 2000)
    copy = next(r for r in records if r.fault == kind)
    original = next(r for r in records if r.event_id == copy.event_id and r.seq < copy.seq)
    return original, copy


def fates(folder: Path) -> dict[int, tuple]:
    return {
        row["seq"]: (row["fate"], row["duplicate_of"], row["reason"])
        for row in L.read_ledger(folder).to_pylist()
    }


def test_first_acknowledged_copy_is_valid_and_the_retry_a_duplicate(ledger) -> None:
    original, copy = a_group(F.DUPLICATE)
    ledger.acknowledged(original, 0, 10)
    ledger.acknowledged(copy, 0, 11)
    ledger.close(L.COMPLETED)
    assert fates(ledger.folder) == {
        original.seq: (L.VALID, None, None),
        copy.seq: (L.DUPLICATE, original.seq, None),
    }


def test_a_copy_acknowledged_first_wins_and_the_original_loses(ledger) -> None:
    original, copy = a_group(F.CONFLICT)
    ledger.acknowledged(copy, "shard-0", "5")
    ledger.acknowledged(original, "shard-0", "9")
    ledger.close(L.COMPLETED)
    assert fates(ledger.folder) == {
        copy.seq: (L.VALID, None, None),
        original.seq: (L.CONFLICTING_DUPLICATE, copy.seq, None),
    }


def test_when_the_original_fails_its_copy_is_the_valid_event(ledger) -> None:
    original, copy = a_group(F.CONFLICT)
    ledger.failed(original, "timed out")
    ledger.acknowledged(copy, 1, 3)
    manifest = ledger.close(L.FAILED)
    assert fates(ledger.folder) == {copy.seq: (L.VALID, None, None)}
    assert manifest["failed"] == 1 and manifest["acknowledged"] == 1
    (failure,) = L.read_failures(ledger.folder)
    assert failure["seq"] == original.seq and failure["error"] == "timed out"


def test_rows_are_written_in_atomic_parts_and_read_back_in_seq_order(ledger) -> None:
    records = stream_records(spec(seed=1, mix="heavy"), 11)
    for offset, record in enumerate(reversed(records)):
        ledger.acknowledged(record, 0, offset)
    assert sorted(p.name for p in ledger.folder.iterdir()) == [
        "records-00000.parquet",
        "records-00001.parquet",
        "run.json",
    ]  # 8 rows flushed in parts of 4, 3 still pending; no partial file anywhere
    assert L.read_manifest(ledger.folder)["status"] == L.RUNNING
    manifest = ledger.close(L.COMPLETED)
    table = L.read_ledger(ledger.folder)
    assert table.schema == L.LEDGER_SCHEMA
    assert table.column("seq").to_pylist() == [r.seq for r in records]
    assert manifest["status"] == L.COMPLETED and manifest["acknowledged"] == 11
    assert sum(manifest["fates"].values()) == 11
    assert not [p for p in ledger.folder.iterdir() if p.name.startswith(".")]


def test_quarantined_records_carry_their_reason(ledger) -> None:
    records = stream_records(spec(seed=2, mix="heavy"), 400)
    for offset, record in enumerate(records):
        ledger.acknowledged(record, "f.jsonl", offset + 1)
    ledger.close(L.COMPLETED)
    for record, row in zip(records, L.read_ledger(ledger.folder).to_pylist()):
        assert row["seq"] == record.seq and row["fault"] == record.fault
        assert row["reason"] == record.reason
        assert (row["fate"] == L.QUARANTINE) == (record.reason is not None)


def test_a_batch_acknowledged_at_once_gives_the_rows_of_its_records_one_by_one(
    tmp_path: Path,
) -> None:
    from weir.simulate.stream import Batch

    records = stream_records(spec(seed=8, devices=100, mix="heavy"), 700)
    acked = [r.seq % 13 != 0 for r in records]
    by_batch = L.Ledger(tmp_path / "batch", {"run_id": "batch"}, rows_per_part=256)
    by_batch.acknowledged_batch(
        Batch.of(records), [r.seq % 3 for r in records], [10 + r.seq for r in records], acked
    )
    one_by_one = L.Ledger(tmp_path / "rows", {"run_id": "rows"}, rows_per_part=256)
    for record, keep in zip(records, acked):
        if keep:
            one_by_one.acknowledged(record, record.seq % 3, 10 + record.seq)
    first, second = by_batch.close(L.COMPLETED), one_by_one.close(L.COMPLETED)
    assert L.read_ledger(by_batch.folder) == L.read_ledger(one_by_one.folder)
    assert {k: first[k] for k in ("acknowledged", "fates", "reasons", "faults")} == {
        k: second[k] for k in ("acknowledged", "fates", "reasons", "faults")
    }
    assert first["fates"].get(L.DUPLICATE) and first["fates"].get(L.CONFLICTING_DUPLICATE)


# --- the real check: the ledger is ground truth for weir.contract --------------------------------
@pytest.fixture
def landed_run(sim_config: WeirConfig):
    """A heavy-fault run into the landing folder, several files (30 s of clock per file)."""
    options = SimulateOptions(
        devices=40,
        rate=0,
        count=3000,
        sink="files",
        seed=17,
        start=START,
        faults=FaultMix.preset("heavy"),
        roll_seconds=30,
    )
    result = run_simulation(sim_config, options, now=START + timedelta(minutes=5))
    return result, landed_lines(sim_config)


def test_the_ledger_matches_what_weir_contract_makes_of_the_landed_files(
    spark: SparkSession, landed_run
) -> None:
    result, lines = landed_run
    assert result.status == L.COMPLETED and result.acknowledged == 3000
    ingest_time = START + timedelta(minutes=10)  # files read soon after they landed
    raw = spark.createDataFrame(
        [
            (
                "files",
                "landing",
                path,
                offset,
                None,
                line.decode("utf-8", "replace"),
                None,
                ingest_time,
                ingest_time.date(),
                None,  # payload_bytes
            )
            for (path, offset), line in lines.items()
        ],
        RAW_SCHEMA,
    )
    classified = raw.transform(classify_records).cache()
    try:
        reasons = {
            (row["source_partition"], row["source_offset"]): row[REASON_COLUMN]
            for row in classified.select(
                "source_partition", "source_offset", REASON_COLUMN
            ).collect()
        }
        deduped = classified.transform(valid_events).transform(dedup_first_received).collect()
    finally:
        classified.unpersist()

    ledger = L.read_ledger(result.ledger_dir).to_pylist()
    assert {(row["partition"], row["offset"]) for row in ledger} == set(reasons)
    wrong = [
        (row["seq"], row["fault"], row["reason"], reasons[row["partition"], row["offset"]])
        for row in ledger
        if reasons[row["partition"], row["offset"]] != row["reason"]
    ]
    assert not wrong, wrong[:20]

    # Dedup: per event_id, the ledger's valid row is the winner; copies and conflicts agree.
    copies = defaultdict(list)
    for row in ledger:
        if row["fate"] != L.QUARANTINE:
            copies[row["event_id"]].append(row)
    assert {row["event_id"] for row in deduped} == set(copies)
    for event in deduped:
        rows = copies[event["event_id"]]
        (winner,) = [r for r in rows if r["fate"] == L.VALID]
        assert (event["source_partition"], event["source_offset"]) == (
            winner["partition"],
            winner["offset"],
        )
        assert event[RECEIVED_COPIES] == len(rows)
        conflicting = any(r["fate"] == L.CONFLICTING_DUPLICATE for r in rows)
        assert (event[DISTINCT_CONTENTS] > 1) == conflicting
        assert all(r["duplicate_of"] == winner["seq"] for r in rows if r is not winner)
    fates_seen = {row["fate"] for row in ledger}
    assert fates_seen == {L.VALID, L.QUARANTINE, L.DUPLICATE, L.CONFLICTING_DUPLICATE}
