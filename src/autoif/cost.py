"""What a run's LLM calls cost: token usage per stage, priced from the config's price table, and
the budget (`llm.max_cost`) that stops a run cleanly before it would pass it.

Usage comes from the backends (`BackendStats`: samples generated, prompt and completion tokens),
summed per shard into the shard's `.done` marker by the pipeline, so a stage's figures cover every
shard of it, whichever run made them. Only generated samples cost anything: cache hits are free.

The price table is `prices:` in the config, by model name as the `llm` section (or a stage's own
`<stage>.llm`) names it: dollars per million prompt and completion tokens, and the share that
batch mode takes off (OpenAI's and Anthropic's batch APIs: half the price). A model missing from
the table costs nothing as far as autoif knows: its usage is still counted, its cost shown as "-".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import RunStopped

# The usage figures (BackendStats fields) that the funnel keeps per stage.
USAGE_FIELDS = ("misses", "hits", "prompt_tokens", "completion_tokens", "errors")


# Not a subclass of config.Section: config.py holds this table, and importing config.py from here
# would make a cycle. The same rules: unknown keys are errors.
class ModelPrice(BaseModel):
    """Prices of one model, in dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: float = Field(ge=0, description="dollars per million prompt tokens")
    output_per_mtok: float = Field(ge=0, description="dollars per million completion tokens")
    batch_discount: float = Field(
        0.5, ge=0, lt=1, description="share of the price that batch mode takes off (OpenAI, Anthropic: 0.5)"
    )

    def cost(self, prompt_tokens: float, completion_tokens: float, batch: bool = False) -> float:
        full = (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6
        return full * (1 - self.batch_discount) if batch else full


class BudgetReached(RunStopped):
    """The next shard would pass `llm.max_cost`: the run stops, resumable, with the reason in the funnel."""

    def __init__(self, stage: str, spent: float, max_cost: float) -> None:
        super().__init__(
            f"budget reached before stage {stage}'s next shard: ${spent:.4f} spent of llm.max_cost=${max_cost:g}"
            " (finished work is kept; raise llm.max_cost and rerun to go on)"
        )
        self.stage, self.spent, self.max_cost = stage, spent, max_cost

    def as_dict(self) -> dict[str, Any]:
        return {"reason": "budget", "stage": self.stage, "spent": round(self.spent, 6), "max_cost": self.max_cost}


def usage_of(stats: Mapping[str, Any] | None) -> dict[str, int]:
    """The usage fields of a backend's stats (missing ones 0)."""
    stats = stats or {}
    return {f: int(stats.get(f, 0) or 0) for f in USAGE_FIELDS}


def add_usage(total: dict[str, int], more: Mapping[str, Any] | None) -> None:
    for f, v in usage_of(more).items():
        total[f] = total.get(f, 0) + v


def price_of(prices: Mapping[str, ModelPrice], model: str) -> ModelPrice | None:
    return prices.get(model)


def usage_cost(usage: Mapping[str, Any], price: ModelPrice | None, batch: bool) -> float | None:
    """Dollars of `usage` at `price` (None: the model has no price in the table)."""
    if price is None:
        return None
    u = usage_of(usage)
    return price.cost(u["prompt_tokens"], u["completion_tokens"], batch)


def format_cost(cost: float | None) -> str:
    return "-" if cost is None else f"${cost:.4f}"


def check_prices(config: Any, stages: list[str]) -> None:
    """With a budget, every model the given LLM stages use must have a price: else the budget could
    never stop the run."""
    from .errors import ConfigError

    if config.llm.max_cost is None:
        return
    for stage in stages:
        model = config.llm_for(stage).model
        if price_of(config.prices, model) is None:
            raise ConfigError(
                f"config error: llm.max_cost is set but prices has no entry for '{model}' (stage {stage}): add "
                f"prices.{model}.input_per_mtok and .output_per_mtok (0 for a free model)"
            )


class Budget:
    """Money spent by the run directory's LLM calls against `max_cost` (None: no budget).

    Spending is charged as shards finish; before each further shard of an LLM stage the pipeline
    asks `check`, which stops when what is spent plus the stage's mean cost per shard so far would
    pass the budget. A shard is the unit (executor.shard_size records): a budget is never passed
    by more than the one shard that a stage's first shard can cost.
    """

    def __init__(self, max_cost: float | None) -> None:
        self.max_cost = max_cost
        self.spent = 0.0

    def charge(self, cost: float | None) -> None:
        self.spent += cost or 0.0

    def check(self, stage: str, next_shard_cost: float) -> None:
        if self.max_cost is not None and (self.spent >= self.max_cost or self.spent + next_shard_cost > self.max_cost):
            raise BudgetReached(stage, self.spent, self.max_cost)


def stage_line(config: Any, stage: str, usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """A stage's `llm` entry in funnel.json: its role's model, the usage, and what that cost."""
    llm = config.llm_for(stage)
    batch = bool(getattr(llm, "batch", False))
    line: dict[str, Any] = {"backend": llm.backend, "model": llm.model, "batch": batch, **usage_of(usage)}
    line["cost"] = usage_cost(line, price_of(config.prices, llm.model), batch)
    return line


def totals(lines: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of stages' `llm` entries; cost None when no stage's model had a price."""
    total: dict[str, Any] = {}
    for line in lines.values():
        add_usage(total, line)
    costs = [line["cost"] for line in lines.values() if line.get("cost") is not None]
    total["cost"] = sum(costs) if costs else None
    return total
