"""`weir demo`, the README's first command: the whole flow on a stack and lake of its own.

The slow test runs the real command in a subprocess (infra up on free ports, simulate into
Kafka, stream, batch, merge, catalog, summary) and checks what it reports against what is on
disk: the unified table read by a second Delta implementation (the `deltalake` package, as
Athena or a notebook would), and the infra it started stopped again.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from weir.config import ConfigError, WeirConfig, config_from_mapping
from weir.demo import DEMO_LAKE_MARKER, answer_sample_query, prepare_demo_lake
from weir.infra import stack_config, status
from weir.infra.process import free_ports
from weir.lake import LakeLayout, local_path
from weir.simulate.ledger import read_ledger

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WEIR = PROJECT_ROOT / ".venv" / "bin" / "weir"


def test_demo_refuses_a_non_empty_lake_it_did_not_create(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    (root / "raw").mkdir(parents=True)
    (root / "raw" / "precious.parquet").write_text("data")

    with pytest.raises(ConfigError, match=r"lake\.root"):
        prepare_demo_lake(LakeLayout(root=f"file://{root}"))

    assert (root / "raw" / "precious.parquet").read_text() == "data"


def test_demo_replaces_a_lake_an_earlier_demo_created(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    prepare_demo_lake(LakeLayout(root=f"file://{root}"))
    (root / "raw").mkdir()

    prepare_demo_lake(LakeLayout(root=f"file://{root}"))

    assert sorted(p.name for p in root.iterdir()) == [DEMO_LAKE_MARKER]


def test_demo_refuses_an_object_store_lake() -> None:
    with pytest.raises(ConfigError, match=r"lake\.root"):
        prepare_demo_lake(LakeLayout(root="s3://bucket/lake"))


def test_the_sample_query_is_answered_from_the_files_when_the_names_live_in_glue(
    spark: SparkSession, weir_config: WeirConfig
) -> None:
    # catalog.kind glue seen from a local session: Spark's metastore has no such database.
    config = weir_config.model_copy(
        update={"catalog": weir_config.catalog.model_copy(update={"database": "weir_in_glue"})}
    )
    unified = spark.createDataFrame(
        [("batch", 3, 20.0, datetime(2026, 1, 1, 0, 0), datetime(2026, 1, 1, 0, 1))],
        "layer string, event_count long, temperature_c_avg double, "
        "window_start timestamp, window_end timestamp",
    )

    (row,) = answer_sample_query(spark, config, unified)

    assert (row["layer"], row["windows"], row["events"]) == ("batch", 1, 3)


@pytest.fixture(scope="module")
def demo_run(weir_config: WeirConfig, tmp_path_factory: pytest.TempPathFactory):
    """`weir demo` once, on its own ports, state folder and lake; its JSON summary."""
    folder = tmp_path_factory.mktemp("demo")
    kafka_port, controller_port, aws_port = free_ports(3)
    base = config_from_mapping(
        {**weir_config.model_dump(), "lake": {"root": f"file://{folder / 'lake'}"}}, environ={}
    )
    config = stack_config(
        base,
        folder / "state",
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        aws_port=aws_port,
    )
    conf = folder / "demo.yaml"
    conf.write_text(yaml.safe_dump(config.model_dump()), "utf-8")
    summary = folder / "summary.json"
    completed = subprocess.run(
        [
            *(str(WEIR), "demo", "--conf", str(conf), "--devices", "8", "--minutes", "20"),
            *("--interval", "5", "--json", str(summary)),
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if not k.startswith("WEIR__")},
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return config, json.loads(summary.read_text()), completed.stdout


@pytest.mark.slow
def test_demo_reconciles_every_zone_with_the_simulator_ledger(demo_run) -> None:
    _, report, stdout = demo_run

    ledger = read_ledger(Path(report["ledger_dir"]))

    assert report["checks"] and all(report["checks"].values()), report["checks"]
    assert report["zones"]["raw"] == ledger.num_rows > 0
    assert sum(report["quarantine_by_reason"].values()) == report["zones"]["quarantine"] > 0
    assert [step["name"] for step in report["steps"]] == [
        "infra up",
        "simulate",
        "stream --available-now",
        "batch rebuild",
        "data-quality checks of the batch run",
        "merge",
        "data-quality checks of the published tables",
        "catalog sync",
        "summary",
    ]
    assert "weir demo done" in stdout


@pytest.mark.slow
def test_demo_runs_the_data_quality_checks_and_they_pass(demo_run) -> None:
    config, report, stdout = demo_run
    lake = LakeLayout.from_config(config)

    assert report["dq_counts"]["passed"] > 0 and report["dq_counts"]["critical failed"] == 0
    assert report["dq_failed"] == []
    assert report["dq_agreement"] is not None and 0 <= report["dq_agreement"] <= 1
    assert Path(local_path(report["dq_docs"])).is_file()
    results = DeltaTable(local_path(lake.dq_results)).to_pyarrow_table().to_pylist()
    assert {row["suite"] for row in results} >= {"raw", "batch_run", "agreement", "unified"}
    printed = " ".join(stdout.split())  # rich wraps long lines at the console's width
    assert "Data Docs:" in printed and "batch-vs-speed agreement" in printed


@pytest.mark.slow
def test_demo_serves_batch_up_to_the_horizon_and_speed_beyond(demo_run) -> None:
    config, report, _ = demo_run
    lake = LakeLayout.from_config(config)
    unified = DeltaTable(local_path(lake.serving)).to_pyarrow_table().to_pylist()
    horizon = datetime.fromisoformat(report["horizon"]).replace(tzinfo=None)

    by_layer = {row["layer"] for row in unified}
    assert by_layer == {"batch", "speed"}
    assert all(
        (row["window_end"].replace(tzinfo=None) <= horizon) == (row["layer"] == "batch")
        for row in unified
    )
    assert {
        layer: {
            "windows": sum(1 for row in unified if row["layer"] == layer),
            "events": sum(row["event_count"] for row in unified if row["layer"] == layer),
        }
        for layer in by_layer
    } == report["unified_by_layer"]


@pytest.mark.slow
def test_demo_registers_the_tables_and_answers_the_sample_query(demo_run) -> None:
    config, report, _ = demo_run

    assert f"{config.catalog.database}.telemetry_minute" in report["catalog_tables"]
    assert [row["layer"] for row in report["sample_rows"]] == ["batch", "speed"]
    assert sum(row["events"] for row in report["sample_rows"]) == sum(
        layer["events"] for layer in report["unified_by_layer"].values()
    )


@pytest.mark.slow
def test_demo_stops_the_infra_it_started(demo_run) -> None:
    config, report, _ = demo_run

    assert sorted(report["infra_started"]) == ["aws", "kafka"]
    assert sorted(report["infra_stopped"]) == ["aws", "kafka"]
    assert {component.state for component in status(config)} == {"stopped"}
