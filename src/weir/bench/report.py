"""`weir bench report`: one report of the newest figures of every suite.

Reads ``<results>/<suite>-latest.json`` of every suite that has run, writes
``<results>/<UTC time>.json`` (the machine, the versions, every suite's figures, each target
met or missed) and renders the Markdown page (docs/performance.md by default) with a table per
scenario and PNG plots beside it: throughput per system, freshness per system, growth with
history. The page is the current state: rendered afresh, never appended to.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from weir.bench.harness import RESULTS_DIR, load_average

DOCS_PAGE = Path("docs/performance.md")
# The order scenarios appear in the report: the comparisons of issue #23 first.
SUITE_ORDER = (
    "hudi",
    "plain-batch",
    "streaming",
    "batch",
    "merge",
    "contract",
    "simulate",
    "unified",
    "dq",
    "chaos",
)
SUITE_TITLES = {
    "hudi": "Weir's stream vs Apache Hudi's streaming upsert (same topic, same trigger)",
    "plain-batch": "`weir batch rebuild --full` vs the plain batch job (same RAW)",
    "streaming": "Weir's stream vs the plain Kafka -> Delta job",
    "batch": "Batch rebuilds vs the parse floor",
    "merge": "Serving merge with 1, 7 and 30 days of history",
    "contract": "The contract's transforms vs the parse floor",
    "simulate": "The simulator vs Kafka's ProducerPerformance",
    "unified": "Unified freshness (live run)",
    "dq": "Data-quality run vs hand-written aggregations",
    "chaos": "Chaos: the platform under seeded kills and broker outages (30 minutes)",
}
PLOTS = ("throughput", "freshness", "history")
# What a reader must know to read a suite's table (its analysis: bench/README.md and the
# layers' pages).
SUITE_NOTES = {
    "hudi": (
        "Hudi 1.0.2 runs in its own process and Spark session (Hudi's extension, no Delta "
        "jars); upsert keyed by `event_id`, first received wins through the precombine field "
        "`receive_rank` = minus the Kafka timestamp under `EVENT_TIME_ORDERING`. It keeps one "
        "row per event and nothing else: no quarantine, no per-minute view. Weir writes RAW "
        "(every record, idempotent), QUARANTINE (with reasons) and SPEED (per-minute windows, "
        "appended versions). Hudi's drain seconds are its query's, not its JVM's start-up. "
        "Where a Hudi figure beats Weir's, the target below reads **missed**; bench/README.md "
        "says why."
    ),
    "plain-batch": (
        "The plain job keeps any one copy of a retried event and drops invalid records "
        "silently; `rebuild_full` also quarantines with reasons, keeps the first received "
        "copy across runs, writes the event index and records the run."
    ),
}


# --- Collecting ---------------------------------------------------------------------------------


def latest_results(results_dir: Path) -> dict[str, dict]:
    """Every suite's newest figures, by suite name, in SUITE_ORDER (unknown suites last)."""
    found = {}
    for path in sorted(results_dir.glob("*-latest.json")):
        document = json.loads(path.read_text())
        found[document["suite"]] = document
    rank = {name: i for i, name in enumerate(SUITE_ORDER)}
    return dict(sorted(found.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def _jar_version(folder: Path, prefix: str) -> Optional[str]:
    for jar in sorted(folder.glob(f"{prefix}*.jar")):
        match = re.search(r"-(\d[\w.\-]*)\.jar$", jar.name)
        if match:
            return match.group(1)
    return None


def _java_version() -> Optional[str]:
    try:
        out = subprocess.run(
            ["java", "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "([^"]+)"', out.stderr)
    return match.group(1) if match else None


def _memory_bytes() -> Optional[int]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "load_average": load_average(),
    }


def versions(jars_dir: Path = Path(".jars")) -> dict:
    import pyspark

    return {
        "python": platform.python_version(),
        "java": _java_version(),
        "spark": pyspark.__version__,
        "delta": _jar_version(jars_dir / "spark", "delta-spark_"),
        "kafka_clients": _jar_version(jars_dir / "spark", "kafka-clients-"),
        "kafka_broker": _jar_version(jars_dir / "kafka", "kafka_"),
        "hudi": _jar_version(jars_dir / "hudi", "hudi-spark3.5-bundle_2.12-"),
    }


def report_document(results: dict[str, dict], at: str) -> dict:
    checks = [
        {"suite": name, **check}
        for name, document in results.items()
        for check in document.get("checks", [])
    ]
    return {
        "at": at,
        "machine": machine(),
        "versions": versions(),
        "suites": results,
        "targets": checks,
        "targets_met": sum(1 for c in checks if c["met"]),
        "targets_missed": sum(1 for c in checks if not c["met"]),
    }


# --- Plots --------------------------------------------------------------------------------------


def _throughputs(results: dict[str, dict]) -> dict[str, list[tuple[str, float]]]:
    return {
        name: [(m["name"], m["events_per_second"]) for m in document["measurements"]]
        for name, document in results.items()
        if name in ("hudi", "plain-batch", "streaming", "batch", "contract", "simulate")
        and document.get("measurements")
    }


def _freshness(results: dict[str, dict]) -> list[tuple[str, dict]]:
    """(system, {p50_s, p99_s}) of every freshness figure measured."""
    systems = []
    hudi = results.get("hudi", {}).get("environment", {}).get("freshness") or {}
    systems += [(f"{name} (hudi run)", figures) for name, figures in hudi.items()]
    stream = results.get("streaming", {}).get("environment", {})
    for key, name in (
        ("plain_freshness", "plain-bronze"),
        ("weir_freshness", "weir SPEED"),
        ("speed_floor_freshness", "speed-floor"),
        ("unified_freshness", "weir unified"),
    ):
        if stream.get(key) and stream[key].get("p50_s") is not None:
            systems.append((f"{name} (streaming run)", stream[key]))
    return systems


def _history(results: dict[str, dict]) -> dict[str, list[tuple[int, float]]]:
    """Seconds per run by days of history: the batch incremental run and the merge."""
    series: dict[str, list[tuple[int, float]]] = {}
    batch = {m["name"]: m["seconds"] for m in results.get("batch", {}).get("measurements", [])}
    if "rebuild_incremental" in batch and "rebuild_incremental_short_history" in batch:
        series["batch rebuild, one new day"] = [
            (1, batch["rebuild_incremental_short_history"]),
            (30, batch["rebuild_incremental"]),
        ]
    merges = []
    for m in results.get("merge", {}).get("measurements", []):
        match = re.fullmatch(r"merge-(\d+)d", m["name"])
        if match:
            merges.append((int(match.group(1)), m["seconds"]))
    if merges:
        series["serving merge"] = sorted(merges)
    return series


def _not_measured(axes, what: str) -> None:
    axes.text(0.5, 0.5, f"{what}: not measured in the newest runs", ha="center", va="center")
    axes.set_axis_off()


def render_plots(results: dict[str, dict], folder: Path) -> dict[str, Path]:
    """throughput.png, freshness.png and history.png in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.png" for name in PLOTS}

    throughputs = _throughputs(results)
    rows = max(len(throughputs), 1)
    figure, axes = plt.subplots(rows, 1, figsize=(8, 2.2 * rows + 0.6), squeeze=False)
    if not throughputs:
        _not_measured(axes[0][0], "throughput")
    for row, (suite, bars) in enumerate(throughputs.items()):
        ax = axes[row][0]
        ax.barh([name for name, _ in bars], [rate for _, rate in bars], color="tab:blue")
        ax.set_title(suite, fontsize=10, loc="left")
        ax.set_xlabel("events/s")
        ax.invert_yaxis()
    figure.suptitle("Throughput per system (each suite: one run, same data)")
    figure.tight_layout()
    figure.savefig(paths["throughput"], dpi=90)
    plt.close(figure)

    systems = _freshness(results)
    figure, ax = plt.subplots(figsize=(8, 0.5 * max(len(systems), 2) + 1.5))
    if systems:
        names = [name for name, _ in systems]
        ys = range(len(systems))
        ax.barh([y - 0.2 for y in ys], [f["p50_s"] for _, f in systems], 0.4, label="p50")
        ax.barh([y + 0.2 for y in ys], [f["p99_s"] for _, f in systems], 0.4, label="p99")
        ax.set_yticks(list(ys), names)
        ax.invert_yaxis()
        ax.set_xlabel("seconds from Kafka timestamp to visible")
        ax.legend()
    else:
        _not_measured(ax, "freshness")
    ax.set_title("Freshness per system")
    figure.tight_layout()
    figure.savefig(paths["freshness"], dpi=90)
    plt.close(figure)

    series = _history(results)
    figure, ax = plt.subplots(figsize=(8, 3.5))
    if series:
        for name, points in series.items():
            ax.plot([d for d, _ in points], [s for _, s in points], marker="o", label=name)
        ax.set_xlabel("days of history")
        ax.set_ylabel("seconds")
        ax.set_ylim(bottom=0)
        ax.legend()
    else:
        _not_measured(ax, "growth with history")
    ax.set_title("Growth with history")
    figure.tight_layout()
    figure.savefig(paths["history"], dpi=90)
    plt.close(figure)
    return paths


# --- The page -----------------------------------------------------------------------------------


def _number(value: object) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _suite_section(name: str, document: dict) -> list[str]:
    environment = document.get("environment", {})
    load = environment.get("load_average_before") or environment.get("load_average")
    after = environment.get("load_average_after")
    lines = [f"## {SUITE_TITLES.get(name, name)}", ""]
    lines.append(
        f"Suite `{name}`, run {document['at']}"
        + (" (`--quick`, toy size)" if environment.get("quick") else "")
        + f"; load average (1/5/15 min) before {load}"
        + (f", after {after}" if after else "")
        + f"; {environment.get('cpus', '?')} CPUs, {environment.get('master', '')}."
    )
    lines.append("")
    if name in SUITE_NOTES:
        lines += [SUITE_NOTES[name], ""]
    if "live_scenarios" in environment:
        ran = environment["live_scenarios"]
        lines += [
            "Live scenarios run: "
            + (", ".join(ran) if ran else "none (drain and bytes only)")
            + ".",
            "",
        ]
    if document.get("measurements"):
        lines += ["| measurement | events | seconds | events/s |", "|---|---:|---:|---:|"]
        for m in document["measurements"]:
            lines.append(
                f"| {m['name']} | {m['events']:,} | {m['seconds']:.2f} | "
                f"{m['events_per_second']:,} |"
            )
        lines.append("")
    figures = {
        key: value
        for key, value in environment.items()
        if isinstance(value, dict) and key not in ("weir_bytes",)
    }
    for key, value in figures.items():
        lines += _figure_table(key, value)
    if document.get("checks"):
        lines += ["| target | value | |", "|---|---:|---|"]
        for check in document["checks"]:
            mark = "**met**" if check["met"] else "**missed**"
            baseline = f" (against {_number(check['baseline'])})" if "baseline" in check else ""
            lines.append(f"| {check['check']} | {_number(check['value'])}{baseline} | {mark} |")
        lines.append("")
    return lines


def _figure_table(key: str, value: dict) -> list[str]:
    """A dict of figures as a table: one row per system when its values are dicts."""
    title = key.replace("_", " ")
    if all(isinstance(v, dict) for v in value.values()) and value:
        columns = sorted({c for v in value.values() for c in v})
        lines = [f"{title}:", "", "| system | " + " | ".join(columns) + " |"]
        lines.append("|---|" + "---:|" * len(columns))
        for system, figures in value.items():
            cells = " | ".join(_number(figures.get(c, "")) for c in columns)
            lines.append(f"| {system} | {cells} |")
        return [*lines, ""]
    flat: dict[str, object] = {}
    for k, v in value.items():
        if isinstance(v, dict):
            flat.update({f"{k} {inner}": x for inner, x in v.items()})
        else:
            flat[k] = v
    cells = ", ".join(f"{k} {_number(v)}" for k, v in flat.items())
    return [f"{title}: {cells}", ""]


def render_page(report: dict, plots: dict[str, Path], page: Path) -> None:
    results = report["suites"]
    versions_line = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
    lines = [
        "# Performance",
        "",
        "The newest figures of every benchmark suite (`weir bench report` renders this page",
        "from `bench/results/*-latest.json`; do not edit it by hand). Every suite compares its",
        "candidates with a baseline measured in the same run on the same data: ratios survive",
        "a busy machine, absolute rates do not (this project's machine has 2 cores shared",
        "with other jobs: the load average is given beside every suite). bench/README.md says",
        "what each suite measures; the layers' pages hold the analysis.",
        "",
        "Tested (tests/bench/): this report and its plots, the plain batch job's and the Hudi",
        "job's transforms and session settings, and `weir bench --quick` without Hudi (no",
        "figure is asserted). The Hudi process itself runs only under `weir bench hudi` and",
        "`make bench-quick` (its bundle comes from `make bench-deps`, not from the test set-up).",
        "",
        f"Report {report['at']}: {report['machine']['platform']}, "
        f"{report['machine']['cpus']} CPUs; {versions_line}.",
        f"Targets: {report['targets_met']} met, {report['targets_missed']} missed.",
        "",
    ]
    for name in PLOTS:
        relative = os.path.relpath(plots[name], page.parent)
        lines.append(f"![{name}]({relative})")
    lines.append("")
    if not results:
        lines += ["No suite has run yet: `weir bench SUITE` or `weir bench --quick`.", ""]
    missing = [name for name in SUITE_ORDER if name not in results]
    if missing and results:
        lines += [
            "Not in this report (no figures in this results folder): "
            + ", ".join(f"`{name}`" for name in missing)
            + ".",
            "",
        ]
    for name, document in results.items():
        lines += _suite_section(name, document)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines).rstrip() + "\n")


def write_report(results_dir: Path = RESULTS_DIR, page: Path = DOCS_PAGE) -> tuple[Path, Path]:
    """The report JSON and the page with its plots (``<page stem>/*.png`` beside it)."""
    results = latest_results(results_dir)
    at = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    report = report_document(results, at)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{at}.json"
    path.write_text(json.dumps(report, indent=2))
    plots = render_plots(results, page.parent / page.stem)
    render_page(report, plots, page)
    return path, page
