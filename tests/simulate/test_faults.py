"""The fault mix: options, proportions, and every fault's expected reason against weir.contract."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from datetime import timedelta

import pytest
from pyspark.sql import SparkSession

from simulate.conftest import LATENESS_US, START, START_US, spec
from weir.config import ConfigError
from weir.contract import REASON_COLUMN, classify_records
from weir.contract.rules import METRIC_FIELDS, REQUIRED_FIELDS, TYPED_FIELDS, Reason
from weir.schemas import RAW_SCHEMA
from weir.simulate import faults as F
from weir.simulate.fleet import Fleet
from weir.simulate.stream import RecordStream, stream_records

# Records are classified as if ingested a few minutes after the run's clock: late enough
# for every valid event time, a day before any injected future event.
INGEST_TIME = START + timedelta(minutes=10)
CORPUS_PER_KIND = 60


# --- options -------------------------------------------------------------------------------------
def test_presets_and_overrides() -> None:
    assert not any(F.FaultMix.preset("none").rates.values())
    mix = F.FaultMix.parse("default", "duplicate=0.05, late=0,bad_type=0.01")
    assert mix.rate(F.DUPLICATE) == 0.05 and mix.rate(F.LATE) == 0.0
    assert mix.rate(F.BAD_TYPE) == 0.01
    assert mix.rate(F.CONFLICT) == F.PRESETS["default"][F.CONFLICT]
    assert set(F.FaultMix.preset("heavy").as_dict()) == set(F.FAULT_KINDS)


@pytest.mark.parametrize(
    ("preset", "overrides", "key"),
    [
        ("medium", "", "--fault-mix"),
        ("default", "typo=0.1", "--faults"),
        ("default", "late", "--faults"),
        ("default", "late=lots", "--faults"),
        ("default", "late=1.5", "--faults"),
        ("default", "late=-0.1", "--faults"),
        ("heavy", "out_of_order=0.7", "--faults"),  # more than 0.9 in all
        ("none", "duplicate=0.45,malformed_json=0.2", "--faults"),  # copies need originals
    ],
)
def test_bad_fault_options_are_config_errors_naming_the_option(
    preset: str, overrides: str, key: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        stream_records(spec(faults=F.FaultMix.parse(preset, overrides).rates), 10)
    assert raised.value.key == key


# --- proportions ---------------------------------------------------------------------------------
def test_each_fault_appears_at_its_rate_within_tolerance() -> None:
    mix = F.FaultMix.preset("heavy")
    records = stream_records(spec(seed=21, devices=400, mix="heavy"), 20_000)
    counts = Counter(r.fault for r in records)
    n = len(records)
    for kind in F.FAULT_KINDS:
        expected = mix.rate(kind) * n
        sigma = math.sqrt(expected * (1 - mix.rate(kind)))
        assert abs(counts[kind] - expected) <= 5 * sigma + 2, (kind, counts[kind], expected)
    clean_share = 1 - sum(mix.rates.values())
    assert abs(counts[F.NONE] - clean_share * n) <= 5 * math.sqrt(n * clean_share)


def test_no_faults_means_clean_records_only() -> None:
    records = stream_records(spec(seed=2, mix="none"), 3000)
    assert {r.fault for r in records} == {F.NONE}
    assert len({r.event_id for r in records}) == 3000


def test_a_copy_repeats_its_original_soon_after_with_the_same_key() -> None:
    records = stream_records(spec(seed=8, devices=100, mix="heavy"), 6000)
    originals = {r.event_id: r for r in records if r.group and r.fault not in F.COPY_KINDS}
    copies = [r for r in records if r.fault in F.COPY_KINDS]
    assert copies and all(r.group and r.reason is None for r in copies)
    for copy in copies:
        original = originals[copy.event_id]
        assert original.seq < copy.seq <= original.seq + 2 * 100  # by the end of its tick
        assert (copy.key, copy.event_time_us) == (original.key, original.event_time_us)
        if copy.fault == F.DUPLICATE:
            assert (copy.payload, copy.variant) == (original.payload, original.variant)
        else:
            mine, theirs = json.loads(copy.payload), json.loads(original.payload)
            assert mine["temperature_c"] != theirs.get("temperature_c")
            assert {k: v for k, v in mine.items() if k != "temperature_c"} == {
                k: v for k, v in theirs.items() if k != "temperature_c"
            }
            assert copy.variant != original.variant


def test_out_of_order_stays_within_the_lateness_and_late_goes_beyond_it() -> None:
    interval = 1_000_000
    stream = RecordStream(spec(seed=4, devices=200, mix="heavy"))
    seen = Counter()
    for _, (tick, records) in zip(range(50), stream.ticks()):
        newest = tick.time_us + interval  # no reading of the tick is newer
        for record in records:
            if record.fault == F.OUT_OF_ORDER:
                assert 0 < newest - record.event_time_us < LATENESS_US
            elif record.fault == F.LATE:
                assert LATENESS_US < newest - record.event_time_us <= F.LATE_MAX_US + interval
            seen[record.fault] += 1
    assert seen[F.OUT_OF_ORDER] and seen[F.LATE]


# --- every fault's reason is what weir.contract assigns ------------------------------------------
def injected_corpus() -> list[tuple[str, bytes, str | None, str]]:
    """(kind, payload, expected reason, note) for CORPUS_PER_KIND injections of each kind."""
    fleet = Fleet(devices=20, seed=3, start_us=START_US, interval_us=1_000_000)
    tick = fleet.step()
    corpus = []
    for kind in F.VALID_KINDS + F.INVALID_KINDS:
        injector = F.FaultInjector(random.Random(kind), LATENESS_US, 1_000_000)
        for n in range(CORPUS_PER_KIND):
            device = n % fleet.size
            event_id = f"corpus-{kind}-{n}"
            injected = injector.inject(
                kind,
                fleet.fields(device, (event_id, *tick.rows[device])),
                event_id,
                tick.event_time_us[device],
                tick.time_us,
            )
            corpus.append((kind, injected.payload, injected.reason, event_id))
    return corpus


def classify(spark: SparkSession, payloads: list[bytes]) -> list[str | None]:
    rows = [
        (
            "files",
            "corpus",
            "corpus",
            str(number),
            None,
            payload.decode("utf-8", "replace"),
            None,
            INGEST_TIME,
            INGEST_TIME.date(),
            None,  # payload_bytes
        )
        for number, payload in enumerate(payloads)
    ]
    classified = spark.createDataFrame(rows, RAW_SCHEMA).transform(classify_records)
    found = {
        int(row["source_offset"]): row[REASON_COLUMN]
        for row in classified.select("source_offset", REASON_COLUMN).collect()
    }
    return [found[number] for number in range(len(payloads))]


@pytest.fixture(scope="module")
def corpus_reasons(spark: SparkSession):
    corpus = injected_corpus()
    stream = stream_records(spec(seed=13, devices=60, mix="heavy"), 3000)
    payloads = [p for _, p, _, _ in corpus] + [r.payload for r in stream]
    reasons = classify(spark, payloads)
    return corpus, stream, reasons[: len(corpus)], reasons[len(corpus) :]


def test_every_injected_fault_gets_exactly_the_expected_reason(corpus_reasons) -> None:
    corpus, _, actual, _ = corpus_reasons
    wrong = [
        (kind, payload, expected, got)
        for (kind, payload, expected, _), got in zip(corpus, actual)
        if expected != got
    ]
    assert not wrong, "\n".join(map(repr, wrong[:20]))


def test_the_corpus_covers_every_reason_of_the_contract(corpus_reasons) -> None:
    corpus, _, _, _ = corpus_reasons
    expected = {reason for _, _, reason, _ in corpus}
    assert expected == {
        Reason.MALFORMED_JSON,
        *(Reason.missing_field(f) for f in REQUIRED_FIELDS),
        Reason.BAD_DEVICE_ID,
        *(Reason.bad_type(f) for f in TYPED_FIELDS),
        Reason.BAD_TIMESTAMP,
        Reason.FUTURE_EVENT,
        *(Reason.out_of_range(f) for f in METRIC_FIELDS),
        None,  # the valid kinds
    }


def test_every_streamed_record_gets_the_reason_its_ledger_entry_will_say(corpus_reasons) -> None:
    _, stream, _, actual = corpus_reasons
    wrong = [
        (r.seq, r.fault, r.payload, r.reason, got)
        for r, got in zip(stream, actual)
        if r.reason != got
    ]
    assert not wrong, "\n".join(map(repr, wrong[:20]))
    assert {r.fault for r in stream} == set(F.FAULT_KINDS) | {F.NONE}


def test_the_fault_draws_are_the_standard_librarys_for_the_same_seed() -> None:
    ours, theirs = F.FaultRandom("weir-simulate:5:faults"), random.Random("weir-simulate:5:faults")
    population = ("a", "b", "c", "d", "e", "f", "g")
    for round_ in range(3000):
        n = 1 + round_ % 7
        assert ours.randint(-3, n) == theirs.randint(-3, n)
        assert ours.randrange(n * 1_000_003) == theirs.randrange(n * 1_000_003)
        assert ours.randrange(2, 40, 3) == theirs.randrange(2, 40, 3)
        assert ours.choice(population[:n]) == theirs.choice(population[:n])
        assert ours.sample(population[:n], min(n, 1 + round_ % 5)) == theirs.sample(
            population[:n], min(n, 1 + round_ % 5)
        )
        assert ours.sample(range(40), 8) == theirs.sample(range(40), 8)  # the library's own
        assert ours.random() == theirs.random()
