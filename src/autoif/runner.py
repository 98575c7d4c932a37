"""`autoif run` as a function, for the CLI and for recipes (`recipe.py`'s data step).

The sequence: take OUT's lock, check the query pool, run the pipeline (which resumes stage by
stage), write the export copies, check contamination, print the funnel, write the report.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .config import Config

log = logging.getLogger("autoif.run")


def run_pipeline(
    config: Config,
    *,
    only: str | None = None,
    until: str | None = None,
    force: bool = False,
    push_to_hub: str | None = None,
) -> dict:
    """Run the pipeline of `config` into `config.paths.out`; returns the funnel."""
    from rich.console import Console

    from .failures import WorkFailed
    from .pipeline import Pipeline
    from .runlock import RunLock

    pipeline = Pipeline(config)
    names = pipeline.selected(only, until)
    with RunLock(pipeline.out):
        if "queries" in names:  # a bad query pool fails now, not after stage 1's work
            from .stages.querypool import load_queries

            load_queries(config.queries)
        try:
            funnel = pipeline.run(only=only, until=until, force=force)
        except WorkFailed:  # the funnel so far, then the one line
            Console(stderr=True).print(pipeline.funnel_table(pipeline.funnel, names))
            raise
        if "verify" in names:
            from .stages.verify import warn_on_truncation

            warn_on_truncation(funnel)
        if "export" in names:
            from .evals import warn_on_contamination
            from .export_formats import write_copies

            write_copies(pipeline.out, config.export.llamafactory, config.export.hf_dataset, push_to_hub)
            warn_on_contamination(pipeline.out)
        Console(stderr=True).print(pipeline.funnel_table(funnel, names))
        write_report_or_warn(pipeline.out, config)
    return funnel


def write_report_or_warn(out: Path, config: Config | None = None) -> None:
    """OUT/report.html; a missing plotting library costs the report, not the run."""
    from .errors import MissingDependency
    from .report import write_report

    try:
        log.info("report: %s", write_report(out, config))
    except MissingDependency as exc:
        log.warning("report not written: %s", exc)
