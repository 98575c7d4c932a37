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

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import RunStopped

if TYPE_CHECKING:
    from .llm.base import Completion, Job, Request

# Tokens a chat template may add per message: the budget's first guess at a prompt allows for them.
TEMPLATE_TOKENS = 32

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


class TokenLengths(BaseModel):
    """Average tokens of one LLM stage's samples, for `run --estimate` (None: measured or assumed)."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: float | None = Field(None, ge=0, description="average prompt tokens per sample")
    completion_tokens: float | None = Field(None, ge=0, description="average completion tokens per sample")


class BudgetReached(RunStopped):
    """The next requests would pass `llm.max_cost`: the run stops, resumable, with the reason in the funnel."""

    def __init__(self, stage: str, spent: float, max_cost: float) -> None:
        super().__init__(
            f"budget reached in stage {stage}: ${spent:.4f} spent of llm.max_cost=${max_cost:g}, and its next"
            " requests would pass it (finished work is kept; raise llm.max_cost and rerun to go on)"
        )
        self.stage, self.spent, self.max_cost = stage, spent, max_cost
        # (the stopped shard's records, the usage of its samples answered before the stop), set by
        # the executor that ran it
        self.paid: tuple[list[Any], dict[str, int]] | None = None

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

    Two checks keep a run under it. Each backend this process opens pays its samples as they come
    through a `Meter`, which sends a stage's requests only in rounds the budget can pay for (so a
    stage's very first shard cannot pass it either). Executors whose shards run elsewhere (Ray
    actors) have no meter; there the pipeline asks `check` before each further shard, which stops
    when what is spent plus the stage's mean cost per shard so far would pass the budget.
    """

    def __init__(self, max_cost: float | None) -> None:
        self.max_cost = max_cost
        self.spent = 0.0  # charged: finished shards and stages
        # Paid by meters since the last charge: the samples of the shard running in this process,
        # which its charge, when it ends, covers.
        self.running = 0.0
        self.stage = ""  # the stage being run, for the stop's reason

    def charge(self, cost: float | None) -> None:
        self.spent += cost or 0.0
        self.running = 0.0

    def check(self, stage: str, next_shard_cost: float) -> None:
        if self.max_cost is not None and (self.spent >= self.max_cost or self.spent + next_shard_cost > self.max_cost):
            raise BudgetReached(stage, self.spent, self.max_cost)

    def meter(self, price: ModelPrice | None, batch: bool) -> Meter | None:
        """What a backend of a model at `price` pays its samples through (None: nothing to meter)."""
        return None if self.max_cost is None or price is None else Meter(self, price, batch)


class Meter:
    """One backend's side of the `Budget`: how many of the next jobs it can afford, and what each
    sample cost once answered.

    A sample's cost is guessed from its request: prompt tokens from the prompt's characters, at
    the tokens per character this model's answered samples showed (before any: a token per
    character and `TEMPLATE_TOKENS` per message, more than tokenizers and chat templates make of
    text); completion tokens as the share of `max_tokens` those samples used (before any: all of
    it). The first round is thus an upper bound, and later ones are sized by what was measured, so
    a run stops with at most about a sample's worth of its budget unused (or passed, when the last
    round's samples run longer than the average).
    """

    def __init__(self, budget: Budget, price: ModelPrice, batch: bool) -> None:
        self.budget, self.price, self.batch = budget, price, batch
        self.chars = self.prompt_tokens = 0  # of the answered samples' prompts
        self.max_tokens = self.completion_tokens = 0  # of the answered samples

    def affordable(self, jobs: Sequence[Job]) -> int:
        """How many of `jobs`, from the first, the budget can still pay for."""
        assert self.budget.max_cost is not None
        left = self.budget.max_cost - self.budget.spent - self.budget.running
        measured = self.prompt_tokens > 0
        per_char = self.prompt_tokens / self.chars if measured else 1.0
        used = self.completion_tokens / self.max_tokens if self.max_tokens else 1.0
        for count, job in enumerate(jobs):
            prompt = _chars(job.request) * per_char
            if not measured:
                prompt += TEMPLATE_TOKENS * len(job.request.messages)
            left -= len(job.samples) * self.price.cost(prompt, job.request.sampling.max_tokens * used, self.batch)
            if left < 0:
                return count
        return len(jobs)

    def pay(self, request: Request, completion: Completion) -> None:
        """Charge one answered sample (a failed one costs nothing)."""
        if completion.error:
            return
        prompt, tokens = completion.prompt_tokens or 0, completion.tokens or 0
        if prompt:  # a backend that does not report prompt tokens leaves the guess at its bound
            self.chars += _chars(request)
            self.prompt_tokens += prompt
        self.max_tokens += request.sampling.max_tokens
        self.completion_tokens += tokens
        self.budget.running += self.price.cost(prompt, tokens, self.batch)

    def stop(self) -> BudgetReached:
        assert self.budget.max_cost is not None
        return BudgetReached(self.budget.stage, self.budget.spent + self.budget.running, self.budget.max_cost)


def _chars(request: Request) -> int:
    return sum(len(m["content"]) for m in request.messages)


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
