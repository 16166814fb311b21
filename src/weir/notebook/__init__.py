"""The analysts' front door (DESIGN.md §10, docs/notebooks.md): the lake in two lines.

    from weir.notebook import open_lake
    lake = open_lake(CONF)  # lake.spark: a SparkSession configured like the jobs

:func:`open_lake` loads the configuration, builds the session with
:func:`weir.spark.build_session` (Delta, the jars, the S3 endpoint, the catalog's metastore)
and, on the local Spark catalog, registers the lake's tables as `weir catalog sync` does, so
``weir.telemetry_minute`` answers by name. ``lake.table(name)`` gives the name to put in Spark
SQL; when that table is absent or empty it stops the notebook with one sentence saying what is
missing and which command fills it (:class:`NotebookError`, shown without a traceback).
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from weir.config import DEFAULT_CONF_PATH, ConfigError, WeirConfig, load_config
from weir.errors import WeirError
from weir.lake import LakeLayout, local_path

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from pyspark.sql import SparkSession

APP_NAME = "weir-notebook"
# Settings a running session cannot change: a kernel that already holds a session built with
# other values would silently read another metastore or lack Delta.
STATIC_SETTINGS = (
    "spark.sql.catalog.spark_catalog",
    "spark.sql.catalogImplementation",
    "spark.hadoop.javax.jdo.option.ConnectionURL",
)
DELTA_EXTENSION_SETTING = "spark.sql.extensions"
# What embedded Derby says when another JVM holds the local metastore (docs/serving.md).
_DERBY_LOCKED = ("Another instance of Derby", "Failed to start database")
# What Delta says when a catalog entry points at a location with no table left.
_STALE_LOCATION = "DELTA_PATH_DOES_NOT_EXIST"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
FILL_A_LAKE = (
    "`make demo` fills a local lake end to end; elsewhere run `weir stream`, "
    "`weir batch rebuild` and `weir merge`"
)


class NotebookError(WeirError):
    """Something the reader can act on (a table not written yet, a bad parameter), not a bug.

    IPython shows an exception's ``_render_traceback_`` instead of its traceback, so the cell
    that raises it prints only the sentence; execution stops there, as after any error.
    """

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


@dataclass(frozen=True)
class NotebookTable:
    """A table the notebooks read: by name in the catalog, or through a temporary view."""

    name: str
    location: str
    written_by: str  # the command that writes it
    absent: str  # what its absence means, as a reader would say it
    catalogued: bool  # registered by `weir catalog sync`; else a view over the location


def notebook_tables(layout: LakeLayout) -> dict[str, NotebookTable]:
    """Every table the notebooks read, by the name they use.

    The catalogued ones (``weir.catalog``'s list) are queried by ``<database>.<name>``; the
    views, Weir's own bookkeeping and the two layers, are not in the catalog and are read by
    location as temporary views of the same name.
    """
    writers = {
        "telemetry_minute": ("weir merge", "nothing has been published to it yet"),
        "raw_telemetry": ("weir stream", "no record has been archived yet"),
        "quarantine_telemetry": ("weir stream", "no stream has run yet"),
        "dq_results": ("weir dq run", "no data-quality run exists yet"),
    }
    # Imported here, as Spark is below: the headless runner (weir.notebook.execute) imports
    # this package without needing pyspark or delta in its own process.
    from weir.catalog import catalog_tables

    tables = {}
    for table in catalog_tables(layout):
        writer, absent = writers.get(table.name, ("the Weir jobs", "it has not been written yet"))
        tables[table.name] = NotebookTable(table.name, table.location, writer, absent, True)
    views = (
        ("speed_minute", layout.speed, "weir stream", "no stream has run yet"),
        ("batch_minute", layout.batch, "weir batch rebuild", "no batch rebuild has run yet"),
        ("batch_runs", layout.batch_runs, "weir batch rebuild", "no batch rebuild has run yet"),
        ("merge_runs", layout.merge_runs, "weir merge", "no merge has run yet"),
        ("stream_progress", layout.stream_progress, "weir stream", "no stream has run yet"),
    )
    for name, location, writer, absent in views:
        tables[name] = NotebookTable(name, location, writer, absent, False)
    return tables


# --- Parameters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DateRange:
    """Inclusive UTC dates, as a notebook's DATE_FROM / DATE_TO parameters resolve."""

    first: date
    last: date

    def sql(self, column: str) -> str:
        """A predicate on a DATE column with literal bounds (Delta prunes partitions by it)."""
        return f"{column} BETWEEN DATE'{self.first.isoformat()}' AND DATE'{self.last.isoformat()}'"

    def __str__(self) -> str:
        if self.first == self.last:
            return self.first.isoformat()
        return f"{self.first.isoformat()} to {self.last.isoformat()}"


def parse_date(text: Optional[str], parameter: str) -> Optional[date]:
    """A ``YYYY-MM-DD`` parameter (None stays None); a readable error naming the parameter."""
    if text is None:
        return None
    if isinstance(text, date):
        return text
    if not isinstance(text, str) or not _DATE.fullmatch(text.strip()):
        raise NotebookError(f"{parameter} = {text!r}: give a date as 'YYYY-MM-DD', or None")
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise NotebookError(f"{parameter} = {text!r} is not a calendar date") from None


def resolve_range(
    date_from: Optional[str], date_to: Optional[str], latest: Optional[date]
) -> DateRange:
    """DATE_FROM / DATE_TO as dates. DATE_TO None: ``latest`` (the last day with data);
    DATE_FROM None: the day before DATE_TO, so two days are shown by default."""
    last = parse_date(date_to, "DATE_TO") or latest
    first = parse_date(date_from, "DATE_FROM")
    if last is None:
        last = first
    if last is None:
        raise NotebookError("no data to take a default date range from: set DATE_FROM, DATE_TO")
    if first is None:
        first = last - timedelta(days=1)
    if first > last:
        raise NotebookError(f"DATE_FROM ({first}) is after DATE_TO ({last})")
    return DateRange(first, last)


def sql_string(value: str) -> str:
    """``value`` as a Spark SQL string literal (a DEVICE parameter in a WHERE clause)."""
    escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


# --- Opening the lake -------------------------------------------------------------------------


def locate_conf(conf: Union[str, Path], start: Optional[Path] = None) -> tuple[Path, Path]:
    """The configuration file and the folder its relative paths are resolved against.

    A relative ``conf`` is looked for from ``start`` (the working directory: in Jupyter the
    notebook's folder) upwards, the way the CLI finds ``conf/local.yaml`` from the project
    folder; the folder it is found in resolves the file's relative paths (``.lake``,
    ``.jars/spark``), so a notebook in ``notebooks/`` opens the same lake as `weir` run from
    the project. An absolute ``conf`` resolves them against ``start``.
    """
    here = (start or Path.cwd()).resolve()
    path = Path(conf).expanduser()
    if path.is_absolute():
        if not path.is_file():
            raise NotebookError(f"CONF = {str(conf)!r}: no configuration file there")
        return path, here
    for folder in (here, *here.parents):
        if (folder / path).is_file():
            return folder / path, folder
    raise NotebookError(f"CONF = {str(conf)!r}: not found in {here} or any folder above it")


@contextmanager
def _working_directory(folder: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def session_mismatches(running: dict[str, str], wanted: dict[str, str]) -> list[str]:
    """The settings a session needs that the running one lacks and cannot take at run time.

    Pure: ``running`` is the running session's configuration, ``wanted`` what
    :func:`weir.spark.spark_settings` gives for the config. The Delta extension may be one of
    several (EMR lists its own beside it).
    """
    problems = []
    extension = wanted.get(DELTA_EXTENSION_SETTING)
    if extension:
        present = [item.strip() for item in running.get(DELTA_EXTENSION_SETTING, "").split(",")]
        if extension not in present:
            problems.append(f"{DELTA_EXTENSION_SETTING} lacks {extension}")
    for key in STATIC_SETTINGS:
        if key in wanted and running.get(key) != wanted[key]:
            problems.append(f"{key} is {running.get(key)!r}, not {wanted[key]!r}")
    return problems


def is_derby_locked(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is embedded Derby refusing a second JVM."""
    seen: Optional[BaseException] = error
    while seen is not None:
        if any(marker in str(seen) for marker in _DERBY_LOCKED):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def local_lake_is_empty(layout: LakeLayout) -> bool:
    """Whether a ``file://`` lake holds none of the notebooks' tables (no Spark needed);
    False for an object-store lake, which only Spark can look into."""
    if not layout.root.startswith("file://"):
        return False
    return not any(
        (Path(local_path(table.location)) / "_delta_log").is_dir()
        for table in notebook_tables(layout).values()
    )


def empty_lake_sentence(layout: LakeLayout, conf: str) -> str:
    return (
        f"The lake at {layout.root} is empty: no Weir table has been written there yet. "
        f"{FILL_A_LAKE} (with --conf {conf}), or check lake.root in {conf}."
    )


@contextmanager
def _jvm_output_to(log_file: Path) -> Iterator[None]:
    """Point this process's stdout and stderr at ``log_file`` while a JVM is launched.

    The JVM inherits the descriptors: its log lines (and the stack traces of its shutdown
    when the kernel stops) go to the file instead of into the notebook's outputs, which
    ipykernel fills from the same descriptors.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in (*saved, target):
            os.close(descriptor)


def open_lake(conf: Union[str, Path] = DEFAULT_CONF_PATH, app_name: str = APP_NAME) -> Lake:
    """The lake of ``conf`` with a SparkSession configured exactly like the jobs'.

    Locally (``catalog.kind: spark``) the lake's tables are registered in the metastore
    first (idempotent, metadata only: what `weir catalog sync` does); with Glue nothing is
    written, the jobs keep the catalog. When this call starts Spark, the JVM's log goes to
    ``<infra.state_dir>/logs/notebook-spark.log``, not into the notebook. A bad conf, a local
    lake with no table yet, a kernel already holding a session with other settings, or a
    local metastore held by another session raises :class:`NotebookError` with what to do.
    """
    from pyspark.sql import SparkSession

    from weir.catalog import KIND_SPARK
    from weir.spark import build_session, spark_settings

    conf_file, folder = locate_conf(conf)
    try:
        with _working_directory(folder):
            config = load_config(str(conf_file))
            wanted = spark_settings(config)
    except ConfigError as error:
        raise NotebookError(f"CONF = {str(conf)!r}: {error}") from None
    layout = LakeLayout.from_config(config)
    if local_lake_is_empty(layout):
        # Said before a JVM starts: nothing in the notebook could run on an empty lake.
        raise NotebookError(empty_lake_sentence(layout, str(conf)))
    log_file = None
    if SparkSession.getActiveSession() is None:
        log_file = Path(config.infra.state_dir) / "logs" / "notebook-spark.log"
        with _jvm_output_to(log_file):
            spark = build_session(config, app_name=app_name)
    else:
        spark = build_session(config, app_name=app_name)
    running = dict(spark.sparkContext.getConf().getAll())
    problems = session_mismatches(running, wanted)
    if problems:
        raise NotebookError(
            "this kernel already holds a SparkSession built with other settings "
            f"({'; '.join(problems)}): restart the kernel and run the notebook again "
            "(on EMR Studio, start the session with the settings docs/notebooks.md lists)"
        )
    lake = Lake(spark, config, str(conf), log_file)
    if config.catalog.kind == KIND_SPARK:
        lake.register_tables()
    return lake


# --- The lake -----------------------------------------------------------------------------------


@dataclass
class Lake:
    """One configured lake and its session: table names for Spark SQL, pandas results."""

    spark: SparkSession
    config: WeirConfig
    conf: str  # as the notebook gave it, for the commands its messages suggest
    spark_log: Optional[Path] = None  # where the JVM this lake started writes its log

    @property
    def layout(self) -> LakeLayout:
        return LakeLayout.from_config(self.config)

    @property
    def database(self) -> str:
        return self.config.catalog.database

    @property
    def tables(self) -> dict[str, NotebookTable]:
        return notebook_tables(self.layout)

    def __str__(self) -> str:
        text = (
            f"Weir lake {self.layout.root} ({self.conf}); catalog {self.config.catalog.kind}, "
            f"database {self.database}"
        )
        return text + (f"; Spark's log: {self.spark_log}" if self.spark_log else "")

    def register_tables(self) -> list[str]:
        """The lake's tables in the local metastore (`weir catalog sync`); their names."""
        from weir.catalog import sync_catalog

        metastore = f"{self.config.infra.state_dir}/metastore_db"
        try:
            return sync_catalog(self.spark, self.config)
        except Exception as error:
            if is_derby_locked(error):
                raise NotebookError(
                    f"the local catalog ({metastore}) is open in another Spark session "
                    "(another notebook, spark-sql or weir catalog sync), and its embedded Derby "
                    "database admits one at a time: shut that kernel down and run this again"
                ) from None
            if _STALE_LOCATION in str(error):
                # weir.catalog re-points a moved table only while its old location exists.
                raise NotebookError(
                    f"the local catalog ({metastore}) registers a Weir table at a location "
                    f"that no longer exists, so the tables of {self.layout.root} cannot be "
                    f"registered: delete {metastore} (it holds table entries only, no data; "
                    "the next open registers them again) and run this again"
                ) from None
            raise

    def _table(self, name: str) -> NotebookTable:
        tables = self.tables
        if name not in tables:
            raise NotebookError(f"no table {name!r}; the notebooks read {', '.join(tables)}")
        return tables[name]

    def _is_delta(self, location: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, location)

    def _has_files(self, location: str) -> bool:
        from delta.tables import DeltaTable

        detail = DeltaTable.forPath(self.spark, location).detail().select("numFiles").first()
        return bool(detail and detail[0])

    def missing(self, name: str) -> Optional[str]:
        """Why ``name`` cannot be read yet, as one sentence; None when it holds data.

        Checked in the lake first (path-based), then in the catalog, so an empty lake says
        so without touching the metastore.
        """
        table = self._table(name)
        command = f"`{table.written_by} --conf {self.conf}`"
        if not self._is_delta(table.location):
            if not any(self._is_delta(t.location) for t in self.tables.values()):
                return empty_lake_sentence(self.layout, self.conf)
            return (
                f"No {name} yet: {table.absent} (no Delta table at {table.location}). "
                f"{command} writes it; run it, then this notebook again."
            )
        if not self._has_files(table.location):
            return (
                f"{name} holds no rows yet ({table.location}): {table.absent}. {command} fills it."
            )
        if table.catalogued and not self.spark.catalog.tableExists(f"{self.database}.{name}"):
            return (
                f"{self.database}.{name} is in the lake but not in the "
                f"{self.config.catalog.kind} catalog: run `weir catalog sync --conf {self.conf}`."
            )
        return None

    def table(self, name: str) -> str:
        """The name to query ``name`` by in Spark SQL (``weir.telemetry_minute``, or a
        temporary view over the location); :class:`NotebookError` when it has no data yet."""
        problem = self.missing(name)
        if problem:
            raise NotebookError(problem)
        table = self._table(name)
        if table.catalogued:
            return f"{self.database}.{name}"
        # A view of the location, redefined at each call: Delta reads its latest snapshot.
        # SPEED stores versions of each window: its view is the newest of each.
        if table.location == self.layout.speed:
            from weir.speed_table import read_speed

            frame = read_speed(self.spark, table.location)
        else:
            frame = self.spark.read.format("delta").load(table.location)
        frame.createOrReplaceTempView(name)
        return name

    def query(self, sql: str) -> pd.DataFrame:
        """A Spark SQL result as pandas, timestamps as naive UTC (the session's zone)."""
        return self.spark.sql(sql).toPandas()

    def date_range(
        self,
        date_from: Optional[str],
        date_to: Optional[str],
        name: str = "telemetry_minute",
        column: str = "event_date",
    ) -> DateRange:
        """DATE_FROM / DATE_TO resolved against ``name``: by default its last two days."""
        latest = None
        if date_to is None:
            row = self.spark.sql(f"SELECT max({column}) AS latest FROM {self.table(name)}").first()
            latest = row["latest"] if row else None
            if isinstance(latest, str):
                latest = date.fromisoformat(latest[:10])
            elif latest is not None and not isinstance(latest, date):
                latest = latest.date()
        return resolve_range(date_from, date_to, latest)


# --- Plots --------------------------------------------------------------------------------------


def nothing_to_plot(ax: Axes, sentence: str) -> None:
    """Say on the figure (and in the output) why it is empty, instead of blank axes; a
    figure of this one message shrinks to a strip."""
    print(sentence)
    ax.text(
        0.5, 0.5, textwrap.fill(sentence, 110), ha="center", va="center", transform=ax.transAxes
    )
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if len(ax.figure.axes) == 1:
        ax.figure.set_figheight(1.2)


__all__ = [
    "DateRange",
    "Lake",
    "NotebookError",
    "NotebookTable",
    "locate_conf",
    "notebook_tables",
    "nothing_to_plot",
    "open_lake",
    "parse_date",
    "resolve_range",
    "sql_string",
]
