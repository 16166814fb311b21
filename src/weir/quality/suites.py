"""The checks of DESIGN §9 as Great Expectations expectations, from the ``dq.checks`` config.

Pure: config in, GX expectation objects out (nothing is validated here). Every expectation
carries in its ``meta`` the Weir check it belongs to (the ``dq.checks`` key), its severity,
its threshold as text and the table it judges, which the runner turns into a ``dq/results``
row. Two kinds of frame are validated (docs/quality.md, "How Great Expectations is used"):

* a pinned **table** (a Spark DataFrame): its schema, read from the plan, no Spark job;
* a **metrics frame** (pandas): the table's metrics, computed by one Spark pass
  (weir.quality.metrics), one row, or one row per day / hour where a check has ``mostly``.
"""

from __future__ import annotations

from typing import Any, Optional

import great_expectations.expectations as gxe
from pyspark.sql.types import StructType

from weir.config import (
    AgreementCheck,
    CheckConfig,
    FreshnessCheck,
    RangesCheck,
    RatioCheck,
    VolumeCheck,
)
from weir.quality import metrics as m
from weir.quality.catalogue import (  # noqa: F401 (the suites' names, used as s.RAW)
    AGREEMENT,
    BATCH,
    BATCH_RUN,
    GATED_SUITES,
    QUARANTINE,
    RAW,
    SPEED,
    SUITES,
    UNIFIED,
    unknown_suites,
)

# Metric columns only the runner computes (besides weir.quality.metrics' own).
FRESHNESS_MINUTES = "freshness_minutes"
VOLUME_RATIO = "events_to_trailing_median"
RECONCILIATION_DIFFERENCE = "raw_minus_valid_and_quarantined"
QUARANTINE_RATIO = "quarantine_ratio"
CONFLICTING_RATIO = "conflicting_duplicate_ratio"

Expectations = list


def _meta(check: str, config: CheckConfig, threshold: str, table: str) -> dict[str, Any]:
    return {"check": check, "severity": config.severity, "threshold": threshold, "table": table}


def expectation_label(expectation_type: str, column: Optional[str] = None) -> str:
    """The ``dq/results.expectation`` text: the GX type, and its column if it has one."""
    return f"{expectation_type}({column})" if column else expectation_type


def _at_most(column: str, limit: float, meta: dict) -> Any:
    return gxe.ExpectColumnMaxToBeBetween(column=column, max_value=limit, meta=meta)


def _at_least(column: str, limit: float, meta: dict) -> Any:
    return gxe.ExpectColumnMinToBeBetween(column=column, min_value=limit, meta=meta)


def schema_expectations(
    schema: StructType, schema_name: str, config: CheckConfig, table: str
) -> Expectations:
    """The table's columns in ``schema``'s order, each of its type (validated on the table)."""
    meta = _meta("schema", config, f"columns and types of weir.schemas.{schema_name}", table)
    expectations = [
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=schema.fieldNames(), meta=meta)
    ]
    for field in schema.fields:
        expectations.append(
            gxe.ExpectColumnValuesToBeOfType(
                column=field.name, type_=type(field.dataType).__name__, meta=meta
            )
        )
    return expectations


def not_null_expectations(schema: StructType, config: CheckConfig, table: str) -> Expectations:
    meta = _meta("not_null_keys", config, "= 0 null values", table)
    return [_at_most(m.null_column(c), 0, meta) for c in m.key_columns(schema)]


def range_expectations(config: RangesCheck, table: str) -> Expectations:
    """DESIGN §3 bounds of each aggregate: the share of its non-null values within them."""
    expectations = []
    for column, (low, high) in m.bounded_columns().items():
        threshold = f">= {config.mostly:g} of values in [{low:g}, {high:g}]"
        meta = _meta("ranges", config, threshold, table)
        expectations.append(_at_least(m.in_range_column(column), config.mostly, meta))
    return expectations


def unique_keys_expectation(config: CheckConfig, table: str) -> Expectations:
    meta = _meta("unique_keys", config, "= 0 rows beyond one per (device_id, window_start)", table)
    return [_at_most(m.DUPLICATE_KEYS, 0, meta)]


def freshness_expectation(config: FreshnessCheck, table: str) -> Expectations:
    meta = _meta("freshness", config, f"<= {config.threshold} minutes", table)
    return [_at_most(FRESHNESS_MINUTES, config.threshold, meta)]


def volume_expectation(config: VolumeCheck, table: str) -> Expectations:
    """Per hour (a frame of hours): events / trailing median within the band, ``mostly``."""
    band = config.threshold
    threshold = (
        f"events within [median / {band:g}, median x {band:g}] of the {config.trailing_hours} "
        f"hours before, on >= {config.mostly:g} of the last {config.trailing_hours} hours"
    )
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column=VOLUME_RATIO,
            min_value=1 / band,
            max_value=band,
            mostly=config.mostly,
            meta=_meta("volume", config, threshold, table),
        )
    ]


def unknown_reasons_expectation(config: CheckConfig, table: str) -> Expectations:
    meta = _meta("unknown_reasons", config, "= 0 rows with a reason outside the contract", table)
    return [_at_most(m.UNKNOWN_REASONS, 0, meta)]


def reconciliation_expectation(config: CheckConfig, table: str) -> Expectations:
    meta = _meta("reconciliation", config, "raw = valid + quarantined (difference 0)", table)
    return [
        gxe.ExpectColumnMaxToBeBetween(
            column=RECONCILIATION_DIFFERENCE, min_value=0, max_value=0, meta=meta
        )
    ]


def ratio_expectation(check: str, column: str, config: RatioCheck, table: str) -> Expectations:
    return [
        _at_most(column, config.threshold, _meta(check, config, f"<= {config.threshold:g}", table))
    ]


def agreement_expectation(config: AgreementCheck, table: str) -> Expectations:
    """Per event date (a frame of days): the share of common windows that agree, ``mostly``."""
    threshold = (
        f">= {config.threshold:g} of common windows agree (averages within "
        f"{config.tolerance:g}), on >= {config.mostly:g} of days"
    )
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column=m.AGREEMENT,
            min_value=config.threshold,
            max_value=1,
            mostly=config.mostly,
            meta=_meta("agreement", config, threshold, table),
        )
    ]
