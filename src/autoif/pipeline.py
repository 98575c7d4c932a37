"""The pipeline: chains the stages and owns everything around them.

For each stage it reads the input file, splits it into shards, asks the executor to run the stage
on the shards that are not done yet, writes every finished shard atomically under
`OUT/.work/<stage>/`, assembles `OUT/<stage>.jsonl`, and counts records in, out and dropped (by
reason) into `OUT/funnel.json`.

Resume is by content: a shard's file is named by a hash of the stage's settings and the shard's
records, and a stage whose inputs and settings have not changed is skipped whole. Together with
the LLM response cache, a run killed at any moment redoes only what was in flight.

A shard in which some LLM request failed (after its retries) or a sandbox check crashed is written
but marked `partial`, not `done`, and the stage is not marked up to date: the next run does that
shard again, its finished requests from the cache. When more than `llm.max_failed_share` of a
stage's requests (`sandbox.max_crashed_share` of its checks) failed, the run stops after that
stage with `WorkFailed` (one line; `autoif.failures`).

It runs the stages it is given (by default the registry's, `autoif.stages.STAGES`) and nothing
else: `autoif run` (cli.py) holds the run directory's lock around it and afterwards writes the
export copies, checks contamination and writes the report, each from the files in OUT/.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from .config import Config, dump_default_yaml
from .cost import Budget, BudgetReached, add_usage, check_prices, format_cost, stage_line, totals
from .errors import AutoifError, RunStopped
from .executors import make_executor
from .failures import LLM_ERROR, SANDBOX_CRASH, Failed, WorkFailed, total
from .jsonl import atomic_write_text, read_jsonl
from .llm.batchfile import BatchEmitted, Emitter
from .records import Record
from .registry import unknown_name
from .rundir import CONFIG, FUNNEL, WORK
from .runlock import output_dir
from .stages import default_stages
from .stages.base import Context, Stage

log = logging.getLogger("autoif.pipeline")

# A shard's marker: `done`, or `partial` when some of its work failed and is to be redone.
_SHARD_STATES = ("done", "partial")
# Beside a shard the budget stopped: the usage of the samples it had answered (paid for, cached).
_PAID = "paid"


@dataclass
class StageReport:
    """One stage's line in funnel.json."""

    records_in: int = 0
    records_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    shards_reused: int = 0
    shards_run: int = 0
    failed: dict[str, Failed] = field(default_factory=dict)  # this run's requests, by where they went
    llm: dict[str, Any] | None = None  # an LLM stage's model, usage and cost over all its shards (cost.py)

    def as_dict(self) -> dict[str, Any]:
        d = {
            "in": self.records_in,
            "out": self.records_out,
            "dropped": dict(sorted(self.dropped.items())),
            "counts": dict(sorted(self.counts.items())),
            "shards_reused": self.shards_reused,
            "shards_run": self.shards_run,
            "failed": [f.as_dict() for f in self.failed.values()],
        }
        if self.llm is not None:
            d["llm"] = self.llm
        return d


def _paid(workdir: Path, key: str) -> dict[str, int] | None:
    path = workdir / f"{key}.{_PAID}"
    return json.loads(path.read_text()) if path.is_file() else None


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]


class Pipeline:
    """Runs `stages` (default: every registered stage, in run order) over the run directory of `config`."""

    def __init__(self, config: Config, stages: Sequence[Stage] | None = None) -> None:
        self.config = config
        self.out = config.out_path()
        self.stages: dict[str, Stage] = {s.name: s for s in (default_stages() if stages is None else stages)}
        self.executor = make_executor(config)
        # What this run's LLM calls cost, summed over the shards it ran (wherever they ran).
        self.llm_stats: dict[str, int] = {}
        # The funnel as the last stage run left it (also when a stage stopped the run).
        self.funnel: dict = {"stages": {}}
        self.budget = Budget(config.llm.max_cost)
        # --emit-batch: the first LLM stage with cache misses writes them here and the run stops.
        self.emitter: Emitter | None = None

    def selected(self, only: str | None = None, until: str | None = None) -> list[str]:
        """The names of the stages a run with `--only` / `--until` runs, in order."""
        names = list(self.stages)
        for given in (only, until):
            if given is not None and given not in self.stages:
                raise unknown_name("stage", given, names)
        if only:
            return [only]
        return names[: names.index(until) + 1] if until else names

    def run(self, only: str | None = None, until: str | None = None, force: bool = False) -> dict:
        """Run the selected stages; returns the funnel (also written to `OUT/funnel.json`)."""
        names = self.selected(only, until)
        check_prices(self.config, [n for n in names if self.stages[n].uses_llm])
        output_dir(self.out)
        atomic_write_text(self.out / CONFIG, dump_default_yaml(self.config))
        funnel = self.funnel = self._load_funnel()
        funnel.pop("stopped", None)
        self.llm_stats = {}
        self.budget = Budget(self.config.llm.max_cost)
        for name, row in funnel["stages"].items():  # stages this run does not touch spent what they spent
            if name not in names:
                self.budget.charge((row.get("llm") or {}).get("cost"))
        ctx = Context(self.config)
        ctx.budget = self.budget
        if self.emitter is not None:
            ctx.divert = self.emitter.divert
        try:
            for name in names:
                try:
                    report = self.run_stage(self.stages[name], ctx, force=force)
                except RunStopped as stop:
                    log.warning("%s", stop)
                    funnel["stopped"] = stop.as_dict()
                    atomic_write_text(self.out / FUNNEL, json.dumps(funnel, indent=2) + "\n")
                    break
                funnel["stages"][name] = report.as_dict()
                lines = {n: row["llm"] for n, row in funnel["stages"].items() if row.get("llm")}
                if lines:
                    funnel["cost"] = totals(lines)
                if self.llm_stats:
                    funnel["llm"] = {
                        "backend": self.config.llm.backend,
                        "model": self.config.llm.model,
                        **self.llm_stats,
                    }
                atomic_write_text(self.out / FUNNEL, json.dumps(funnel, indent=2) + "\n")
                self._stop_on_failures(report)
        finally:
            ctx.close()
            self.executor.close()
        return funnel

    def run_stage(self, stage: Stage, ctx: Context, force: bool = False) -> StageReport:
        source = self._resolve_need(stage.input, stage.name) if stage.input else None
        needs = {need: self._resolve_need(need, stage.name) for need in stage.needs}
        settings = stage.settings(self.config)
        sources = ([source] if source else []) + list(needs.values())
        inputs_key = _digest(
            stage.name, getattr(stage, "version", 1), settings, *(self._file_digest(n) for n in sources)
        )
        workdir = self.out / WORK / stage.name
        marker = workdir / "DONE"
        files = stage.files()
        if not force and marker.is_file() and all((self.out / f).is_file() for f in files.values()):
            done = json.loads(marker.read_text())
            if done.get("key") == inputs_key:
                r = done["report"]
                log.info("%s: up to date (%d records), skipped", stage.name, r["out"])
                # Priced anew: the price table may have changed since the stage ran.
                llm = stage_line(self.config, stage.name, r["llm"]) if r.get("llm") else None
                self.budget.charge(llm["cost"] if llm else None)
                return StageReport(
                    r["in"],
                    r["out"],
                    Counter(r["dropped"]),
                    Counter(r["counts"]),
                    r["shards_reused"],
                    r["shards_run"],
                    llm=llm,
                )

        self.executor.prepare(stage)  # a cluster starts its workers while the inputs are read
        records = self._read_output(source, stage.name) if source else []
        ctx.needs = {need: self._read_output(source, stage.name) for need, source in needs.items()}
        size = self.config.executor.shard_size if stage.sharded else max(1, len(records))
        shards = [records[i : i + size] for i in range(0, len(records), size)] or [[]]
        keys = [_digest(inputs_key, [r.model_dump(mode="json") for r in shard]) for shard in shards]
        report = StageReport(records_in=len(records))
        todo = [i for i, key in enumerate(keys) if force or not (workdir / f"{key}.done").is_file()]
        report.shards_reused = len(keys) - len(todo)
        log.info("%s: %d records in %d shard(s), %d to run", stage.name, len(records), len(shards), len(todo))
        failures: list[Failed] = []
        ctx.role = self.budget.stage = stage.name
        emitted = 0
        if self.emitter is not None:
            self.emitter.stage, emitted = stage.name, self.emitter.diverted
        # Spent by the shards this run runs: the budget's guess at the next one's cost, for executors
        # whose shards run where no meter is (in this process, backends pay each sample: cost.Meter).
        spent_here = 0.0
        if stage.uses_llm:
            spent: dict[str, int] = {}  # by the shards done, and by those the budget stopped
            for key in set(keys) - {keys[i] for i in todo}:
                add_usage(spent, json.loads((workdir / f"{key}.done").read_text()).get("llm"))
            for i in todo:
                add_usage(spent, _paid(workdir, keys[i]))
            self.budget.charge(stage_line(self.config, stage.name, spent)["cost"])
            if todo:
                self.budget.check(stage.name, 0.0)
        try:
            for i, result in self.executor.run(stage, [shards[i] for i in todo], ctx):
                if self.emitter is not None and self.emitter.diverted > emitted:
                    emitted = self.emitter.diverted  # its requests were written out, not answered: not done
                    continue
                key = keys[todo[i]]
                for state in _SHARD_STATES:
                    (workdir / f"{key}.{state}").unlink(missing_ok=True)
                for fname, text in result.file_texts(files).items():
                    atomic_write_text(workdir / f"{key}.{fname}", text)
                # The marker comes last: a shard is done only once all its files are.
                llm = result.llm
                if llm is not None and (workdir / f"{key}.{_PAID}").is_file():
                    llm = {**llm}
                    add_usage(llm, _paid(workdir, key))  # what a stopped run of it paid (charged at the start)
                meta = {"dropped": result.dropped, "counts": result.counts, "llm": llm}
                state = "done" if result.finished else "partial"
                atomic_write_text(workdir / f"{key}.{state}", json.dumps(meta) + "\n")
                (workdir / f"{key}.{_PAID}").unlink(missing_ok=True)
                failures += result.failures
                report.shards_run += 1
                for k, v in (result.llm or {}).items():
                    self.llm_stats[k] = self.llm_stats.get(k, 0) + v
                if stage.uses_llm:
                    cost = stage_line(self.config, stage.name, result.llm)["cost"] or 0.0
                    self.budget.charge(cost)
                    spent_here += cost
                    if report.shards_run < len(todo):
                        self.budget.check(stage.name, spent_here / report.shards_run)
        except BudgetReached as stop:
            if stop.paid is not None:  # kept with the shard: charged by the next run, counted once it is done
                records, stats = stop.paid
                key = _digest(inputs_key, [r.model_dump(mode="json") for r in records])
                paid = {f: stats.get(f, 0) for f in ("misses", "prompt_tokens", "completion_tokens")}
                add_usage(paid, _paid(workdir, key))
                atomic_write_text(workdir / f"{key}.{_PAID}", json.dumps(paid) + "\n")
            raise

        report.failed = total(failures)
        if self.emitter is not None and self.emitter.lines.get(stage.name):
            raise BatchEmitted(stage.name, len(self.emitter.lines[stage.name]), self.emitter.write())
        usage: dict[str, int] = {}
        for key in keys:
            marker_path = next(p for p in (workdir / f"{key}.{s}" for s in _SHARD_STATES) if p.is_file())
            meta = json.loads(marker_path.read_text())
            report.dropped.update(meta["dropped"])
            report.counts.update(meta["counts"])
            add_usage(usage, meta.get("llm"))
        if stage.uses_llm:
            report.llm = stage_line(self.config, stage.name, usage)
        for fname in files.values():
            text = "".join((workdir / f"{key}.{fname}").read_text(encoding="utf-8") for key in keys)
            atomic_write_text(self.out / fname, text)
            if fname == stage.output:
                report.records_out = sum(1 for line in text.splitlines() if line.strip())
            else:
                report.counts[f"records_out:{fname}"] = sum(1 for line in text.splitlines() if line.strip())
        if all((workdir / f"{key}.done").is_file() for key in keys):
            atomic_write_text(marker, json.dumps({"key": inputs_key, "report": report.as_dict()}) + "\n")
        else:  # some shard is to be done again: the stage is not up to date
            marker.unlink(missing_ok=True)
        self._prune(workdir, set(keys))
        dropped = ", ".join(f"{k}: {v}" for k, v in report.dropped.most_common()) or "none"
        log.info(
            "%s: %d in, %d out (dropped: %s) -> %s",
            stage.name,
            report.records_in,
            report.records_out,
            dropped,
            ", ".join(files.values()),
        )
        return report

    def _stop_on_failures(self, report: StageReport) -> None:
        """Stop the run when more of the stage's requests (checks) failed than the config allows."""
        limits = {
            LLM_ERROR: ("llm.max_failed_share", self.config.llm.max_failed_share),
            SANDBOX_CRASH: ("sandbox.max_crashed_share", self.config.sandbox.max_crashed_share),
        }
        for failed in report.failed.values():
            name, limit = limits[failed.code]
            if failed.failed and failed.share() > limit:
                raise WorkFailed(failed.line())
            if failed.failed:
                log.warning("%s (tolerated: %s is %g)", failed.line(), name, limit)

    # ------------------------------------------------------------------------------------ helpers
    def _stage(self, name: str) -> Stage:
        if name not in self.stages:
            raise unknown_name("stage", name, self.stages)
        return self.stages[name]

    def _read_output(self, name: str, reader: str) -> list[Record]:
        producer = self._stage(name)
        path = self.out / producer.output
        if not path.is_file():
            raise AutoifError(f"stage '{reader}' needs {path}; run `autoif run --until {name}` first")
        return read_jsonl(path, producer.output_type)

    def _resolve_need(self, need: str, reader: str) -> str:
        """'backtranslate|crossval' -> the first of those stages whose output exists."""
        options = need.split("|")
        for name in options:
            if (self.out / self._stage(name).output).is_file():
                return name
        return options[-1]  # reading it raises the "run --until" error

    def _file_digest(self, name: str) -> str:
        path = self.out / self._stage(name).output
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"

    @staticmethod
    def _prune(workdir: Path, keep: set[str]) -> None:
        """Shards of earlier settings are dead weight once a stage completes with new ones."""
        for path in workdir.iterdir():
            if path.name != "DONE" and path.name.split(".", 1)[0] not in keep:
                path.unlink(missing_ok=True)

    def _load_funnel(self) -> dict:
        path = self.out / FUNNEL
        if path.is_file():
            try:
                funnel = json.loads(path.read_text())
                if isinstance(funnel.get("stages"), dict):
                    return funnel
            except json.JSONDecodeError:
                log.warning("funnel.json was unreadable; starting a new one")
        return {"stages": {}}

    def funnel_table(self, funnel: dict, names: list[str]) -> Table:
        """The funnel as a table: every stage's records in, out and dropped (those not among `names`
        marked as from an earlier run), with what this run's LLM calls cost as its caption."""
        table = Table(title=f"autoif funnel ({self.out})")
        for col in ("stage", "in", "out", "dropped (reason: count)", "model", "tokens in/out", "cost"):
            table.add_column(col, justify="right" if col in ("in", "out", "tokens in/out", "cost") else "left")
        for name in self.stages:
            row = funnel["stages"].get(name)
            if row is None:
                continue
            dropped = ", ".join(
                [f"{k}: {v}" for k, v in row["dropped"].items()]
                + [
                    f"{f['code']}: {f['failed']} of {f['tried']} {f['where']}"
                    for f in row.get("failed", ())
                    if f["failed"]
                ]
            )
            llm = row.get("llm") or {}
            model = f"{llm['model']}{' (batch)' if llm.get('batch') else ''}" if llm else "-"
            tokens = f"{llm.get('prompt_tokens', 0)}/{llm.get('completion_tokens', 0)}" if llm else "-"
            table.add_row(
                name if name in names else f"{name} (earlier)",
                str(row["in"]),
                str(row["out"]),
                dropped or "-",
                model,
                tokens,
                format_cost(llm.get("cost")) if llm else "-",
            )
        # This run's own counts: funnel.json's `llm` may be an earlier run's when this one used no LLM.
        llm = self.llm_stats
        if llm:
            total = llm["hits"] + llm["misses"]
            rate = f"{100 * llm['hits'] / total:.0f}%" if total else "-"
            failed = f", {llm['errors']} failed" if llm.get("errors") else ""
            generated = llm["misses"] - llm.get("errors", 0)
            table.caption = f"LLM samples: {generated} generated{failed}, {llm['hits']} from cache ({rate} hits)"
        else:
            table.caption = "LLM samples: none requested by this run"
        if "cost" in funnel:
            table.caption += f"; all stages' LLM cost: {format_cost(funnel['cost']['cost'])}"
        if "stopped" in funnel:
            stop = funnel["stopped"]
            table.caption += f"; STOPPED in {stop['stage']}: {stop['reason']}"
        return table
