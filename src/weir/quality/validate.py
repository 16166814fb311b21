"""Great Expectations 1.x runs the suites: one ephemeral context per check run.

For each :class:`Validation` (a frame and its expectations) the context gets a data asset
(``add_spark`` for a pinned table, ``add_pandas`` for a metrics frame), a whole-dataframe
batch definition, an ``ExpectationSuite``, a ``ValidationDefinition`` and a ``Checkpoint``,
run with the frame as its batch parameter under one ``RunIdentifier`` (the Weir run id and
time), so Data Docs group the run's validations. The Data Docs site is then built once into
a local folder (weir.quality.docs publishes it to the lake).

Why the Data Docs are built once rather than by an ``UpdateDataDocsAction`` on every
checkpoint: the action re-renders the site's index for every validation result, about
0.7 s each here, where one build renders the same pages in about a second for a whole run
(docs/quality.md, "Measured").
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import great_expectations as gx
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import ProgressBarsConfig

from weir.quality.outcomes import CheckOutcome
from weir.quality.suites import expectation_label

log = logging.getLogger(__name__)

SITE_NAME = "weir"
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 5}
_MAX_OBSERVED_CHARS = 1000


@dataclass(frozen=True)
class Validation:
    """One frame and the expectations GX validates on it.

    ``name`` is the GX suite's (``raw.schema``), unique in a run; ``suite`` the Weir suite it
    belongs to. ``frame``: a Spark DataFrame (a pinned table) or a pandas DataFrame (metrics).
    """

    name: str
    suite: str
    frame: Any
    expectations: tuple


def _number(value: Any) -> str:
    number = float(value)
    if math.isfinite(number) and number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return f"{number:.6g}"


def observed_text(result: Mapping[str, Any]) -> Optional[str]:
    """What GX observed, as the text of ``dq/results.observed_value``.

    A value (a metric, a column's type, the column list) as it is; for a per-row expectation
    (days, hours) how many rows fell outside, and the first few values that did.
    """
    if "observed_value" in result:
        value = result["observed_value"]
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            return ", ".join(str(item) for item in value)[:_MAX_OBSERVED_CHARS]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _number(value)
        try:
            return _number(value)  # numpy scalars
        except (TypeError, ValueError):
            return str(value)[:_MAX_OBSERVED_CHARS]
    if "element_count" in result:
        counted = int(result["element_count"]) - int(result.get("missing_count") or 0)
        text = f"{int(result.get('unexpected_count') or 0)} of {counted} outside"
        examples = result.get("partial_unexpected_list") or []
        if examples:
            text += " (" + ", ".join(_number(value) for value in examples) + ")"
        return text
    return None


def _outcomes(
    validation: Validation, suite_result: Any, versions: Mapping[str, Optional[int]]
) -> list[CheckOutcome]:
    outcomes = []
    for result in suite_result.results:
        config = result.expectation_config
        meta = config.meta
        observed = observed_text(result.result or {})
        if result.exception_info and result.exception_info.get("raised_exception"):
            observed = f"error: {result.exception_info.get('exception_message')}"
        outcomes.append(
            CheckOutcome(
                suite=validation.suite,
                table_name=meta["table"],
                table_version=versions.get(meta["table"]),
                expectation=expectation_label(config.type, config.kwargs.get("column")),
                severity=meta["severity"],
                success=bool(result.success),
                observed_value=observed,
                threshold=meta["threshold"],
            )
        )
    return outcomes


def _context(docs_dir: Path) -> Any:
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(
        SITE_NAME,
        {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return context


def validate(
    validations: Sequence[Validation],
    run_name: str,
    run_time: datetime,
    versions: Mapping[str, Optional[int]],
    docs_dir: Path,
) -> list[CheckOutcome]:
    """Run every validation through a GX Checkpoint under one run identifier; build the Data
    Docs site into ``docs_dir`` (``index.html``). ``versions`` maps a table name to the Delta
    version its snapshot was read at. Returns one outcome per expectation, in order."""
    context = _context(docs_dir)
    tables = context.data_sources.add_spark("weir-tables", persist=False)
    metrics = context.data_sources.add_pandas("weir-metrics")
    run_id = RunIdentifier(run_name=run_name, run_time=run_time)
    outcomes: list[CheckOutcome] = []
    for validation in validations:
        source = metrics if _is_pandas(validation.frame) else tables
        batch = source.add_dataframe_asset(validation.name).add_batch_definition_whole_dataframe(
            validation.name
        )
        suite = context.suites.add(
            # Copies: GX ties an expectation to the suite it joins, and a plan may be validated
            # more than once.
            gx.ExpectationSuite(
                name=validation.name,
                expectations=[copy.copy(e) for e in validation.expectations],
            )
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=validation.name, data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=validation.name,
                validation_definitions=[definition],
                result_format=RESULT_FORMAT,
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": validation.frame}, run_id=run_id)
        (suite_result,) = result.run_results.values()
        outcomes.extend(_outcomes(validation, suite_result, versions))
    context.build_data_docs(site_names=[SITE_NAME])
    return outcomes


def _is_pandas(frame: Any) -> bool:
    import pandas as pd

    return isinstance(frame, pd.DataFrame)
