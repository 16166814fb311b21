"""`weir package`, `weir emr submit` and `weir emr status`: deployment to EMR (docs/deploy.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from weir.cli.app import app, conf_option, console, group, load, verbose
from weir.config import ConfigError
from weir.errors import WeirError

emr_app = group("emr", "Amazon EMR: submit jobs as EMR steps or EMR Serverless runs.")

JOB_ARGS = typer.Argument(
    None, help="arguments for the job, after `--` (e.g. -- --cutoff 2026-03-01T10:00:00Z)"
)


@app.command()
def package(
    conf: str = conf_option(),
    out: str = typer.Option("dist/emr", "--out", help="the package folder (replaced whole)"),
    python: Optional[str] = typer.Option(
        None,
        "--python",
        help="a Python of the cluster's line (emr.python_version) to build the environment "
        "with; default python<line> on PATH or under pyenv",
    ),
    cache: Optional[str] = typer.Option(
        None,
        "--cache",
        help="installed environments, reused across builds; default ~/.cache/weir/"
        "package-environments",
    ),
    jars_dir: str = typer.Option(
        ".jars/emr", "--jars-dir", help="the jars `make setup` resolved for EMR"
    ),
    project: str = typer.Option(".", "--project", help="the Weir source tree to package"),
) -> None:
    """Build the EMR package: wheel, packed Python environment, jobs, conf, jars, manifest."""
    from weir.deploy.package import build_package, default_cache_dir, find_interpreter

    config = load(conf)
    root = Path(project).resolve()
    if not (root / "pyproject.toml").is_file() or not (root / "jobs").is_dir():
        raise ConfigError("--project", f"{root} is not a Weir source tree (pyproject.toml, jobs/)")
    line = config.emr.python_version
    interpreter = python or find_interpreter(line)
    if interpreter is None:
        raise ConfigError(
            "--python", f"no python{line} found on PATH or under pyenv; give one with --python"
        )
    verbose()
    built = build_package(
        config,
        Path(out),
        python=interpreter,
        project_root=root,
        jars_dir=Path(jars_dir),
        cache_dir=Path(cache) if cache else default_cache_dir(),
    )
    console.print(f"weir package {built.package_id} in {built.root}")
    for entry in built.files:
        console.print(f"  {entry.role:<10} {entry.bytes:>12,}  {entry.path}", highlight=False)


@emr_app.command(
    "submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def submit(
    job: str = typer.Argument(..., help="batch | dq | maintain | merge | stream"),
    job_args: Optional[list[str]] = JOB_ARGS,
    conf: str = conf_option(),
    serverless: bool = typer.Option(
        False, "--serverless", help="start an EMR Serverless job run instead of an EMR step"
    ),
    wait: bool = typer.Option(False, "--wait", help="wait until the run finishes"),
    timeout: float = typer.Option(
        6 * 3600, "--timeout", min=1, help="seconds --wait waits at most"
    ),
    poll: float = typer.Option(30, "--poll", min=0.1, help="seconds between looks with --wait"),
    package_dir: str = typer.Option("dist/emr", "--package", help="the `weir package` folder"),
) -> None:
    """Upload the package to emr.code_uri and run JOB on emr.cluster_id (or emr.application_id)."""
    from weir.deploy.package import Package
    from weir.deploy.status import run_status, wait_for_run
    from weir.deploy.submit import submit as submit_job

    config = load(conf)
    verbose()
    submitted = submit_job(
        config, Package.load(Path(package_dir)), job, list(job_args or []), serverless
    )
    console.print(f"{submitted.run_id}", highlight=False)
    if not wait:
        return
    final = wait_for_run(
        lambda: run_status(config, submitted.run_id),
        timeout_seconds=timeout,
        poll_seconds=poll,
        report=lambda status: console.print(status.line(), highlight=False),
    )
    if not final.succeeded:
        raise WeirError(final.line())


@emr_app.command("status")
def status(
    run: str = typer.Argument(..., help="a step id (s-…) or an EMR Serverless job run id"),
    conf: str = conf_option(),
) -> None:
    """Show the state of a step (on emr.cluster_id) or a job run (on emr.application_id)."""
    from weir.deploy.status import run_status

    config = load(conf)
    console.print(run_status(config, run).line(), highlight=False)


@emr_app.command("render")
def render(
    account: str = typer.Option(..., "--account", help="the 12-digit AWS account id"),
    conf: str = conf_option(),
    out: str = typer.Option("build/deploy", "--out", help="where the filled-in files go"),
) -> None:
    """Fill deploy/'s stack parameters, policies and QuickSight definitions for one account.

    A file whose values are not configured yet (the application id before the stack exists)
    is skipped with the key it needs.
    """
    import json

    from weir.deploy.resources import deploy_files, deployment_values, render, stack_parameters

    config = load(conf)
    values = deployment_values(config, account)
    folder = Path(out)
    # `aws cloudformation deploy --parameter-overrides file://…` reads this list.
    files = {
        "cloudformation/parameters.json": json.dumps(
            [f"{k}={v}" for k, v in stack_parameters(config).items()], indent=2
        )
        + "\n"
    }
    for relative, text in deploy_files().items():
        if relative.startswith("cloudformation/"):
            continue
        try:
            files[relative] = render(text, values)
        except ConfigError as error:
            console.print(f"skipped {relative}: {error}", highlight=False)
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
        console.print(str(path), highlight=False)


@emr_app.command("schedule")
def schedule(
    conf: str = conf_option(),
    package_dir: str = typer.Option("dist/emr", "--package", help="the `weir package` folder"),
    out: Optional[str] = typer.Option(
        None, "--out", help="where the files go; default <package>/schedule"
    ),
    stream_source: str = typer.Option(
        "kafka", "--stream-source", help="kafka | kinesis | files: the scheduled stream's source"
    ),
    upload: bool = typer.Option(
        False,
        "--upload",
        help="also upload the package and the DAGs' job runs to emr.code_uri (the URI to set "
        "as the Airflow Variable weir_job_runs is printed)",
    ),
) -> None:
    """Write what the schedules run for the package: the Airflow DAGs' EMR Serverless job runs
    (job-runs.json) and the EMR steps (emr-steps*.json), the requests `weir emr submit` sends.

    job-runs.json needs emr.application_id and emr.execution_role_arn; without them it is
    skipped with the key it needs (and --upload stops before uploading anything).
    """
    from weir.deploy.package import Package
    from weir.deploy.schedule import JOB_RUNS_FILE, SCHEDULE_FOLDER, schedule_files, upload_schedule
    from weir.deploy.submit import code_root
    from weir.sources import check_source

    config = load(conf)
    check_source(config, stream_source)
    package = Package.load(Path(package_dir))
    root = code_root(config, package)
    try:
        files = schedule_files(config, package, root, stream_source)
    except ConfigError as error:
        if upload:
            raise
        files = schedule_files(config, package, root, stream_source, job_runs=False)
        console.print(f"skipped {JOB_RUNS_FILE}: {error}", highlight=False)
    folder = Path(out) if out else package.root / SCHEDULE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / JOB_RUNS_FILE).unlink(missing_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, "utf-8")
        console.print(str(folder / name), highlight=False)
    if upload:
        verbose()
        uri = upload_schedule(config, package, files[JOB_RUNS_FILE])
        console.print(f"weir_job_runs = {uri}", highlight=False)
