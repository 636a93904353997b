"""Running a Great Expectations (1.x) suite over a pandas DataFrame, with Data Docs under FRESHREC_HOME.

One file-mode GX project lives in ``$FRESHREC_HOME/gx``; its Data Docs site is written to
``Layout(home).data_docs``. Each suite is (re)registered from code on every run, so the code is the
single source of truth and the stored project only keeps results and docs.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import great_expectations as gx
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.expectation import Expectation

from freshrec.core.layout import Layout
from freshrec.core.settings import Settings

if TYPE_CHECKING:
    from great_expectations.data_context.store.store import DataDocsSiteConfigTypedDict

log = logging.getLogger("freshrec.validation")
# GX logs every config save at INFO; our own log line per suite says what matters.
logging.getLogger("great_expectations").setLevel(logging.WARNING)
DOCS_SITE = "freshrec_docs"
DATASOURCE = "freshrec_frames"


@dataclass
class SuiteOutcome:
    suite: str
    success: bool
    evaluated: int
    failures: list[dict] = field(default_factory=list)  # {expectation, column, observed}
    docs_index: Path | None = None

    def describe_failures(self) -> str:
        return "; ".join(f"{f['expectation']}({f.get('column') or ''}) observed {f['observed']}" for f in self.failures)


def open_context(settings: Settings):
    """The file-mode GX project under FRESHREC_HOME, with our Data Docs site registered."""
    layout = Layout(settings.home)
    context = gx.get_context(mode="file", project_root_dir=str(settings.home))
    # GX's TypedDict for a site lists only some keys ("may be incomplete", says its source): SiteBuilder also
    # takes show_how_to_buttons.
    site = cast("DataDocsSiteConfigTypedDict", {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(layout.data_docs)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    bars = context.variables.progress_bars
    enabled = bars is None or (bars.get("globally", True) if isinstance(bars, dict) else bars.globally)
    if enabled:  # tqdm bars per metric flood task logs
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
    sites = context.list_data_docs_sites()
    if DOCS_SITE not in sites:
        context.add_data_docs_site(site_name=DOCS_SITE, site_config=site)
    elif sites[DOCS_SITE].get("store_backend", {}).get("base_directory") != str(layout.data_docs):
        context.update_data_docs_site(site_name=DOCS_SITE, site_config=site)
    return context


def _summarise(result) -> list[dict]:
    failures = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        res = r.result or {}
        observed = res.get("observed_value", res.get("unexpected_percent", res.get("unexpected_count")))
        failures.append({"expectation": cfg.type, "column": cfg.kwargs.get("column"), "observed": observed,
                         "sample": [str(v) for v in (res.get("partial_unexpected_list") or [])[:5]]})
    return failures


@contextmanager
def _project_lock(settings: Settings) -> Iterator[None]:
    """One validation at a time per GX project: the file-mode project re-saves its suites and sites, and
    concurrent runs (a backfill runs days in parallel) otherwise fail with "suite has changed since it
    was last saved". A validation takes seconds, so serialising costs little."""
    lock_path = settings.home / "gx" / ".freshrec.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_suite(settings: Settings, suite_name: str, frame: pd.DataFrame, expectations: list[Expectation]) -> SuiteOutcome:
    """Validate ``frame`` against ``expectations`` as the suite ``suite_name``; updates Data Docs."""
    with _project_lock(settings):
        return _run_suite(settings, suite_name, frame, expectations)


def _run_suite(settings: Settings, suite_name: str, frame: pd.DataFrame, expectations: list[Expectation]) -> SuiteOutcome:
    context = open_context(settings)
    source = context.data_sources.add_or_update_pandas(name=DATASOURCE)
    try:
        asset = source.get_asset(suite_name)
    except LookupError:
        asset = source.add_dataframe_asset(name=suite_name)
    try:
        batch = asset.get_batch_definition("whole")
    except (KeyError, LookupError):
        batch = asset.add_batch_definition_whole_dataframe("whole")
    suite = gx.ExpectationSuite(name=suite_name, expectations=expectations)
    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{suite_name}_definition", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{suite_name}_checkpoint",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_docs", site_names=[DOCS_SITE])],
            result_format={"result_format": "SUMMARY"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    validation = next(iter(result.run_results.values()))
    docs = Layout(settings.home).data_docs / "index.html"
    outcome = SuiteOutcome(suite=suite_name, success=bool(result.success), evaluated=len(validation.results),
                           failures=_summarise(validation), docs_index=docs if docs.exists() else None)
    log.info("GX suite %s: %s (%d expectations); Data Docs: %s", suite_name, "passed" if outcome.success else "FAILED",
             outcome.evaluated, outcome.docs_index)
    return outcome
