"""`autoif run --estimate`: the LLM requests, tokens and cost of each stage, before any call.

No LLM is asked and no stage but `seeds` (which reads files only) runs. Each LLM stage's samples
are its input records times what it asks per record (the K's of the config). Input records are
known exactly for `augment` (the seeds stage, run here); further down the chain they are the
counts an earlier run in OUT measured (its funnel.json), else propagated through the chain with
the yields below. Tokens per sample are the config's `lengths.<stage>` where given, else the
earlier run's averages for the stage where it generated any, else `DEFAULT_PROMPT_TOKENS` and
half the stage's `max_tokens`.

The yields are rough by nature (how many instructions survive cross-validation depends on the
model): a first estimate on a new config is an order of magnitude; one after a small run of the
same config, scaled up by the K's, is much closer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from .config import Config
from .cost import format_cost, price_of
from .stages.nli import nli_backend

# Assumed when no earlier run measured them.
DEFAULT_PROMPT_TOKENS = 400  # the stage prompts are 200-800 tokens with their examples
AUGMENTED_PER_SAMPLE = 1.0  # new instructions a self-instruct sample adds after deduplication
CROSSVAL_KEEP = 0.5  # share of LLM-written instructions that keep functions and cases
BACKTRANSLATE_KEEP = 0.9  # share of instructions that NLI does not find contradicted
PASS_SHARE = 0.5  # share of responses that pass verification and go to the judge


@dataclass
class StageEstimate:
    stage: str
    model: str
    batch: bool
    records_in: float
    samples: float
    prompt_tokens: float
    completion_tokens: float
    cost: float | None
    measured: bool  # scaled from an earlier run's funnel
    tokens_from: str  # configured (`lengths`), measured (an earlier run) or assumed


@dataclass
class _Step:
    stage: str
    records_in: float
    per_record: float  # samples asked per input record
    max_tokens: int


def estimate(config: Config) -> list[StageEstimate]:
    """One row per stage that asks the LLM, in run order.

    With an earlier run in OUT, each stage's records in and samples per record are that run's
    measured figures, scaled by how this config's figures compare with that run's config's
    (both computed the same way): an unchanged config estimates exactly what the run asked.
    """
    funnel = _earlier_funnel(config.out_path("funnel.json"))
    then = {step.stage: step for step in _plan(_earlier_config(config))} if funnel else {}
    rows = []
    for step in _plan(config):
        measured = funnel.get(step.stage) or {}
        usage = measured.get("llm") or {}
        records_in, per_record = step.records_in, step.per_record
        was = then.get(step.stage)
        known = was is not None and was.per_record > 0 and "in" in measured and "misses" in usage
        if known:
            assert was is not None
            records_in = measured["in"] * _ratio(step.records_in, was.records_in)
            asked = usage["misses"] + usage.get("hits", 0)
            per_record = (asked / measured["in"] if measured["in"] else 0) * _ratio(step.per_record, was.per_record)
        samples = records_in * per_record
        generated = usage.get("misses") or 0
        given = config.lengths.get(step.stage)
        prompt_each: float = DEFAULT_PROMPT_TOKENS
        completion_each, tokens_from = step.max_tokens / 2, "assumed"
        if generated and usage.get("completion_tokens"):
            prompt_each = usage.get("prompt_tokens", 0) / generated or prompt_each
            completion_each, tokens_from = usage["completion_tokens"] / generated, "measured"
        if given is not None:
            prompt_each = prompt_each if given.prompt_tokens is None else given.prompt_tokens
            completion_each = completion_each if given.completion_tokens is None else given.completion_tokens
            tokens_from = "configured"
        llm = config.llm_for(step.stage)
        batch = bool(getattr(llm, "batch", False))
        price = price_of(config.prices, llm.model)
        prompt, completion = samples * prompt_each, samples * completion_each
        cost = None if price is None else price.cost(prompt, completion, batch)
        rows.append(
            StageEstimate(
                step.stage, llm.model, batch, records_in, samples, prompt, completion, cost, known, tokens_from
            )
        )
    return rows


def _ratio(now: float, then: float) -> float:
    return now / then if then else 1.0


def _plan(config: Config) -> list[_Step]:
    """Each LLM stage's records in and samples per record, from the config alone."""
    seeds, from_seed = _seeds(config)
    steps = []
    flow = float(seeds)  # records flowing into the next stage
    llm_written = float(from_seed)  # of those, instructions that were not built in
    a = config.augment
    steps.append(_Step("augment", flow, (a.k * from_seed / seeds if seeds else 0) if a.enabled else 0, a.max_tokens))
    if a.enabled:
        flow += from_seed * a.k * AUGMENTED_PER_SAMPLE
        llm_written += from_seed * a.k * AUGMENTED_PER_SAMPLE
    v = config.verifiers
    steps.append(_Step("verifiers", flow, v.k * llm_written / flow if flow else 0, v.max_tokens))
    flow = (flow - llm_written) + llm_written * CROSSVAL_KEEP
    llm_written *= CROSSVAL_KEEP
    b = config.backtranslate
    # With the LLM as the NLI judge, each back-translation is judged once more.
    judged = 2 if nli_backend(config) == "llm" else 1
    steps.append(_Step("backtranslate", flow, b.max_functions * judged if b.enabled else 0, b.max_tokens))
    if b.enabled:
        flow, llm_written = flow * BACKTRANSLATE_KEEP, llm_written * BACKTRANSLATE_KEEP
    c = config.compose
    combinations = c.combinations(round(flow)) if c.enabled else 0
    asks = _compose_asks(config, flow, llm_written) * combinations
    steps.append(_Step("compose", flow, asks / flow if flow else 0, c.max_tokens))
    flow += combinations  # the combinations join the instructions that queries are drawn for
    r = config.responses
    flow *= config.queries.k
    steps.append(_Step("responses", flow, r.k + (1 if r.greedy else 0), r.max_tokens))
    s = config.score
    judged_responses = r.k * PASS_SHARE * s.samples if s.active(config.llm_for("score")) else 0
    steps.append(_Step("score", flow, judged_responses, s.max_tokens))
    return steps


def _compose_asks(config: Config, instructions: float, llm_written: float) -> float:
    """Requests per combination: the conflict check, asked of a combination with an instruction
    outside the library; the rewrite, with the back-translations of its constituents' functions
    (those stage backtranslate asked come from the cache, still requests) and their NLI judgements."""
    c = config.compose
    weights = sum(c.sizes.values())
    size = sum(n * w for n, w in c.sizes.items()) / weights
    library = 1 - llm_written / instructions if instructions else 0
    asks = sum(w * (1 - library**n) for n, w in c.sizes.items()) / weights if c.llm_conflict_check else 0.0
    if c.rewrite == "llm":
        judged = 1 if nli_backend(config) == "llm" else 0
        asks += 1 + size * config.backtranslate.max_functions * (1 + judged)
    return asks


def _earlier_config(config: Config) -> Config:
    """The config of the run that wrote OUT/funnel.json (its OUT/config.yaml), else this one."""
    from .config import load_config
    from .errors import AutoifError

    try:
        return load_config(config.out_path("config.yaml"))
    except AutoifError:
        return config


def _seeds(config: Config) -> tuple[int, int]:
    """(records the seeds stage writes, of which the hand-written seeds); it reads files only."""
    from .stages.base import Context
    from .stages.seeds import SeedsStage

    ctx = Context(config)
    try:
        records = list(SeedsStage().run([], ctx))
    finally:
        ctx.close()
    return len(records), sum(1 for r in records if getattr(r, "source", None) == "seed")


def _earlier_funnel(path: Path) -> dict[str, Any]:
    try:
        stages = json.loads(path.read_text()).get("stages")
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    return stages if isinstance(stages, dict) else {}


def estimate_table(rows: list[StageEstimate]) -> Table:
    cells = [
        [
            e.stage,
            e.model + (" (batch)" if e.batch else ""),
            f"{e.records_in:,.0f}" + ("" if e.measured else " ~"),
            f"{e.samples:,.0f}",
            f"{e.prompt_tokens:,.0f}",
            f"{e.completion_tokens:,.0f}",
            e.tokens_from,
            format_cost(e.cost),
        ]
        for e in rows
    ]
    costs = [e.cost for e in rows if e.cost is not None]
    cells.append(
        [
            "all",
            "",
            "",
            f"{sum(e.samples for e in rows):,.0f}",
            f"{sum(e.prompt_tokens for e in rows):,.0f}",
            f"{sum(e.completion_tokens for e in rows):,.0f}",
            "",
            format_cost(sum(costs) if costs else None),
        ]
    )
    table = Table(title="autoif run --estimate (before any LLM call)")
    headers = ("stage", "model", "records in", "samples", "prompt tokens", "completion tokens", "tokens", "cost")
    for i, col in enumerate(headers):
        # A number cut short would read as another number: no column is narrower than its cells.
        numeric = col not in ("stage", "model", "tokens")
        width = max(len(row[i]) for row in cells)
        table.add_column(col, justify="right" if numeric else "left", min_width=width, no_wrap=True)
    for row in cells:
        table.add_row(*row)
    table.caption = (
        "~: records in assumed (no earlier run in OUT measured them); samples = requests x n; tokens: per "
        "sample from the config's `lengths`, an earlier run's averages (measured), or assumed"
    )
    return table
