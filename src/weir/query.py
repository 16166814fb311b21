"""Ad-hoc SQL on either engine: Spark SQL (the jobs' and notebooks' engine) or Trino (Athena's).

`weir query [--engine spark|trino] [--format table|csv|json] SQL` (docs/serving.md, "Trino").
Both engines see the tables by the names `weir catalog sync` registers (``weir.telemetry_minute``):
Spark through the session's metastore, Trino through the Glue catalog (``query.trino_catalog``,
default schema ``catalog.database``), so the same text runs on both when it keeps to the SQL
they share.

Trino is reached over its HTTP protocol with the ``trino`` client package (pure Python, DB-API,
typed values): no second JVM per query, as the ``trino-cli`` jar (itself Java 24+) would need.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlparse

from pyspark.sql import SparkSession

from weir.config import ConfigError, WeirConfig
from weir.errors import WeirError

Engine = Literal["spark", "trino"]
Format = Literal["table", "csv", "json"]
ENGINES: tuple[str, ...] = ("spark", "trino")
FORMATS: tuple[str, ...] = ("table", "csv", "json")
TRINO_REQUEST_TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows, values as the engine's Python client returns them."""

    columns: list[str]
    rows: list[tuple]


def _statement(sql: str) -> str:
    # Trino's protocol takes one statement without a terminator; Spark accepts either.
    statement = sql.strip().rstrip(";").strip()
    if not statement:
        raise ConfigError("SQL", "no SQL statement given")
    return statement


def run_spark(spark: SparkSession, sql: str) -> QueryResult:
    """Run ``sql`` in Spark SQL and collect it."""
    frame = spark.sql(_statement(sql))
    return QueryResult(list(frame.columns), [tuple(row) for row in frame.collect()])


def trino_connection(config: WeirConfig):
    """A DB-API connection to ``query.trino_url``, in the Glue catalog and Weir's database."""
    import trino

    url = config.query.trino_url
    if url is None:
        raise ConfigError(
            "query.trino_url",
            "is not set: point it at a Trino (locally `weir infra up --with trino`)",
        )
    parsed = urlparse(url)
    return trino.dbapi.connect(
        host=parsed.hostname,
        port=parsed.port or (443 if parsed.scheme == "https" else 80),
        http_scheme=parsed.scheme,
        user=config.query.trino_user,
        catalog=config.query.trino_catalog,
        schema=config.catalog.database,
        request_timeout=TRINO_REQUEST_TIMEOUT_SECONDS,
    )


def run_trino(config: WeirConfig, sql: str) -> QueryResult:
    """Run ``sql`` on the Trino at ``query.trino_url``; WeirError with Trino's reason on failure."""
    from requests.exceptions import ConnectionError as RequestsConnectionError
    from trino.exceptions import TrinoQueryError

    statement = _statement(sql)
    connection = trino_connection(config)
    try:
        cursor = connection.cursor()
        cursor.execute(statement)
        rows = [tuple(row) for row in cursor.fetchall()]
        columns = [column[0] for column in cursor.description or ()]
    except TrinoQueryError as error:
        raise WeirError(f"Trino: {error.error_name}: {error.message}") from None
    except RequestsConnectionError:
        raise WeirError(
            f"no Trino answers at {config.query.trino_url} (query.trino_url): "
            "start it with `weir infra up --with trino`"
        ) from None
    finally:
        connection.close()
    return QueryResult(columns, rows)


def plain_value(value: Any) -> Any:
    """A value as text-friendly JSON: timestamps in UTC ISO-8601, decimals as strings.

    Spark returns naive timestamps in the session time zone (UTC in Weir); Trino returns
    them with their zone. Both print as ``2026-12-05 10:00:00`` in UTC, without an offset.
    """
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    return value


def render(result: QueryResult, fmt: str) -> str:
    """The result as CSV (header row, empty for null) or JSON (one array of objects)."""
    if fmt == "json":
        rows = [dict(zip(result.columns, map(plain_value, row))) for row in result.rows]
        return json.dumps(rows, indent=2, default=str) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        for row in result.rows:
            writer.writerow("" if v is None else _cell(v) for v in row)
        return out.getvalue()
    raise ConfigError("--format", f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def _cell(value: Any) -> str:
    plain = plain_value(value)
    return json.dumps(plain) if isinstance(plain, (list, dict)) else str(plain)


def table_cells(result: QueryResult) -> Sequence[list[str]]:
    """Each row's values as the text a table shows (``NULL`` for null)."""
    return [["NULL" if v is None else _cell(v) for v in row] for row in result.rows]


__all__ = [
    "ENGINES",
    "FORMATS",
    "QueryResult",
    "plain_value",
    "render",
    "run_spark",
    "run_trino",
    "table_cells",
    "trino_connection",
]
