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
    emit_batch: Path | None = None,
    ingest_batch: list[Path] | None = None,
) -> dict:
    """Run the pipeline of `config` into `config.paths.out`; returns the funnel. `emit_batch`: write
    the next LLM stage's requests there and stop; `ingest_batch`: result files read into the LLM
    cache first (llm/batchfile.py)."""
    from rich.console import Console

    from .failures import WorkFailed
    from .pipeline import Pipeline
    from .runlock import RunLock

    pipeline = Pipeline(config)
    names = pipeline.selected(only, until)
    if emit_batch is not None:
        from .llm.batchfile import Emitter

        pipeline.emitter = Emitter(Path(emit_batch))
    with RunLock(pipeline.out):
        if ingest_batch:
            ingest_results(config, ingest_batch)
        if "queries" in names:  # a bad query pool fails now, not after stage 1's work
            from .stages.querypool import load_queries

            load_queries(config.queries)
        try:
            funnel = pipeline.run(only=only, until=until, force=force)
        except WorkFailed:  # the funnel so far, then the one line
            Console(stderr=True).print(pipeline.funnel_table(pipeline.funnel, names))
            raise
        if "stopped" in funnel:  # the budget: the stages after it, export and report wait for a rerun
            Console(stderr=True).print(pipeline.funnel_table(funnel, names))
            return funnel
        if "verify" in names:
            from .stages.verify import warn_on_truncation

            warn_on_truncation(funnel)
        if "export" in names:
            from .evals import warn_on_contamination
            from .export_formats import write_copies

            warn_on_contamination(pipeline.out)  # first: the dataset card reports its figures
            export = config.export
            write_copies(pipeline.out, export.llamafactory, export.hf_dataset, push_to_hub, export.card_license)
        Console(stderr=True).print(pipeline.funnel_table(funnel, names))
        write_report_or_warn(pipeline.out, config)
    return funnel


def ingest_results(config: Config, paths: list[Path]) -> None:
    """Batch result files (or directories of *.jsonl) into the run's LLM cache."""
    from .errors import AutoifError
    from .llm import ResponseCache
    from .llm.batchfile import ingest

    if not config.llm.cache:
        raise AutoifError("--ingest-batch puts results into the LLM cache: set llm.cache=true")
    files = [f for p in map(Path, paths) for f in (sorted(p.glob("*.jsonl")) if p.is_dir() else [p])]
    cache = ResponseCache(config.resolve_under_out(config.llm.cache_path))
    try:
        counts = ingest(files, cache)
    finally:
        cache.close()
    log.info(
        "ingested %d result(s) from %d file(s) into the LLM cache; %d failed (asked again)",
        counts["ingested"],
        len(files),
        counts["failed"],
    )


def write_report_or_warn(out: Path, config: Config | None = None) -> None:
    """OUT/report.html; a missing plotting library costs the report, not the run."""
    from .errors import MissingDependency
    from .report import write_report

    try:
        log.info("report: %s", write_report(out, config))
    except MissingDependency as exc:
        log.warning("report not written: %s", exc)
