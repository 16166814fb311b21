"""Operations: `weir dq`, `catalog`, `maintain`, `bench`, `package` and `emr`."""

from __future__ import annotations

from weir.cli.app import app, conf_option, group, load, not_built

dq_app = group("dq", "Data-quality checks.")
catalog_app = group("catalog", "Glue / Spark catalog.")
emr_app = group("emr", "Amazon EMR deployment.")


@dq_app.command("run")
def dq_run(conf: str = conf_option()) -> None:
    """Run the data-quality checks."""
    load(conf)
    not_built("dq run", 6)


@catalog_app.command("sync")
def catalog_sync(conf: str = conf_option()) -> None:
    """Create or update the catalog tables."""
    load(conf)
    not_built("catalog sync", 6)


@catalog_app.command("ddl")
def catalog_ddl(conf: str = conf_option()) -> None:
    """Print the Athena DDL of Weir's tables."""
    load(conf)
    not_built("catalog ddl", 6)


@app.command()
def maintain(conf: str = conf_option()) -> None:
    """OPTIMIZE and VACUUM every Weir table."""
    load(conf)
    not_built("maintain", 6)


@app.command()
def bench(conf: str = conf_option()) -> None:
    """Run the benchmarks and compare with the baseline."""
    load(conf)
    not_built("bench", 4)


@app.command()
def package(conf: str = conf_option()) -> None:
    """Build the job bundle for EMR."""
    load(conf)
    not_built("package", 6)


@emr_app.command("submit")
def emr_submit(conf: str = conf_option()) -> None:
    """Submit a job to EMR / EMR Serverless."""
    load(conf)
    not_built("emr submit", 6)
