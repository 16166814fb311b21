"""`weir bench report`: one JSON of the newest figures of every suite (machine, versions,
each target met or missed) and one page with a table per scenario and its plots."""

from __future__ import annotations

import json
from pathlib import Path

from weir.bench.harness import Measurement, SuiteResult
from weir.bench.report import PLOTS, write_report


def suite(
    name: str, measurements: list[tuple[str, float]], checks: list[bool], **env: object
) -> SuiteResult:
    """A suite's figures as `weir bench` writes them: (name, seconds) for 1,000 events."""
    result = SuiteResult(suite=name, environment={"cpus": 2, "master": "local[2]", **env})
    result.measurements = [Measurement(n, 1000, s) for n, s in measurements]
    result.checks = [
        {"check": f"{name} target {i}", "value": 1.0, "met": met} for i, met in enumerate(checks)
    ]
    return result


def test_the_report_gathers_the_newest_figures_of_every_suite_and_counts_the_targets(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    suite("plain-batch", [("plain_batch", 1.0), ("rebuild_full", 2.0)], [False]).write(results)
    suite(
        "hudi",
        [("weir-stream", 1.0), ("hudi-cow", 4.0), ("hudi-mor", 2.0)],
        [True, True],
        freshness={
            "weir-stream": {"p50_s": 3.0, "p99_s": 6.0},
            "hudi-cow": {"p50_s": 5.0, "p99_s": 9.0},
        },
        load_average_before=[6.1, 6.0, 5.0],
    ).write(results)
    suite("merge", [("merge-1d", 10.0), ("merge-7d", 11.0), ("merge-30d", 12.0)], [True]).write(
        results
    )

    path, page = write_report(results, tmp_path / "docs" / "performance.md")

    report = json.loads(path.read_text())
    assert sorted(report["suites"]) == ["hudi", "merge", "plain-batch"]
    assert (report["targets_met"], report["targets_missed"]) == (3, 1)
    assert report["machine"]["cpus"] and report["versions"]["spark"]
    text = page.read_text()
    assert "| hudi-mor | 1,000 | 2.00 | 500 |" in text
    assert "| plain-batch target 0 | 1.000 | **missed** |" in text
    assert "load average (1/5/15 min) before [6.1, 6.0, 5.0]" in text
    assert "| hudi-cow | 5.000 | 9.000 |" in text  # the freshness table
    for name in PLOTS:
        plot = tmp_path / "docs" / "performance" / f"{name}.png"
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](performance/{name}.png)" in text


def test_a_rerun_replaces_the_page_and_keeps_only_the_newest_figures(tmp_path: Path) -> None:
    results = tmp_path / "results"
    suite("plain-batch", [("plain_batch", 1.0), ("rebuild_full", 5.0)], [False]).write(results)
    suite("plain-batch", [("plain_batch", 1.0), ("rebuild_full", 1.0)], [True]).write(results)
    page = tmp_path / "performance.md"

    write_report(results, page)
    _, page = write_report(results, page)

    text = page.read_text()
    assert text.count("## ") == 1
    assert "| rebuild_full | 1,000 | 1.00 | 1,000 |" in text
    assert "5.00" not in text


def test_with_no_figures_the_page_says_so_and_the_plots_still_render(tmp_path: Path) -> None:
    _, page = write_report(tmp_path / "results", tmp_path / "performance.md")

    assert "No suite has run yet" in page.read_text()
    assert all((tmp_path / "performance" / f"{name}.png").stat().st_size for name in PLOTS)


def test_weir_bench_report_renders_the_given_folder_without_a_spark_session(
    tmp_path: Path, capsys
) -> None:
    from weir.cli import main
    from weir.errors import EXIT_OK

    results = tmp_path / "results"
    suite("plain-batch", [("plain_batch", 1.0), ("rebuild_full", 1.0)], [True]).write(results)
    page = tmp_path / "docs" / "performance.md"

    code = main(["bench", "report", "--results", str(results), "--docs", str(page)])

    assert code == EXIT_OK, capsys.readouterr()
    assert "Suite `plain-batch`" in page.read_text()
    assert len(list(results.glob("2*.json"))) == 1
