"""What every benchmark is: its settings, an `Item` per prompt, the `Scores` it produces, the
`Benchmark` base class, and the `EvalContext` that generates responses through the LLM layer.

A benchmark (ifeval.py, ifbench.py, followbench.py, dev.py) only says where its data lives, how a
record becomes an `Item`, and how responses are scored; `run_benchmark` in `__init__` chains it with
data loading (data.py) and the results file (results.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from ..benchmark_prompts import packaged_file
from ..config import Config, LLMConfig, Section


class EvalConfig(Section):
    """How responses are generated and judged for a benchmark."""

    max_tokens: int = Field(1280, ge=1, description="longest response generated for a benchmark prompt")
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature (0: greedy, the default)")
    judge: LLMConfig | Literal["self"] | None = Field(
        None,
        description="followbench: the judge model; 'self': the evaluated model judges its own answers "
        "(only when asked for); None: followbench refuses to score",
    )
    judge_max_tokens: int = Field(512, ge=1, description="followbench: longest judgement")
    num_fewshot: int = Field(
        0,
        ge=0,
        description="mmlu, ceval: solved examples of the subject's dev split before each question "
        "(0: zero-shot; 5 is the standard and needs the dev split: the hub's copy or a file holding it)",
    )


@dataclass
class Item:
    """One benchmark prompt: its id, the text the model is asked, and the benchmark's own record."""

    id: str
    prompt: str
    record: dict


@dataclass
class Scores:
    """What a benchmark's scoring produces.

    metrics: flat fractions in [0, 1] (the headline numbers, in table order); counts: how many prompts
    were scored, skipped and why; details: benchmark-specific breakdowns; per_item: one dict per item
    (same order), written beside each response in `<name>_responses.jsonl`.
    """

    metrics: dict[str, float]
    counts: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)
    per_item: list[dict] = field(default_factory=list)


@dataclass
class Responses:
    """What a model answered, one text per item: generated responses (with their `Completion`s, which
    carry finish reasons and errors) or, for a log-likelihood benchmark, the choice it ranked first
    (with what ranked it, per item: written beside each response)."""

    texts: list[str]
    generation: list[Any] | None = None
    per_item: list[dict] | None = None


@dataclass
class PromptScores:
    """One prompt's scores read back from its row of `<name>_responses.jsonl`, for paired comparisons
    (evals/stats.py).

    task: what the prompt asks (its instruction ids, its constraint); two runs' rows pair only when
    they ask the same. columns: the per-prompt numbers whose sums the metrics are ratios of
    (`Benchmark.paired_metrics`). outcomes: (instruction id, {mode: value}) for each instruction the
    prompt carries, for the per-instruction and per-family breakdowns.
    """

    task: Any
    columns: dict[str, float]
    outcomes: list[tuple[str, dict[str, float]]]


class Benchmark(ABC):
    """A benchmark: where its data lives, how a record becomes an Item, how responses are scored."""

    name: ClassVar[str]
    title: ClassVar[str]
    hub_id: ClassVar[str | None] = None
    hub_split: ClassVar[str] = "train"
    # Labels of the metrics, in table order.
    metric_labels: ClassVar[dict[str, str]]
    # Paired comparison (`autoif eval compare`): each metric as the mean, over its terms, of
    # sum(numerator) / sum(denominator) over prompts, both columns of `prompt_scores`; a single-term
    # ratio of 0/1 prompt values over an indicator is a prompt-level metric (McNemar applies).
    paired_metrics: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {}
    prompt_level_metrics: ClassVar[frozenset[str]] = frozenset()
    # The modes of `PromptScores.outcomes`, the first one sorting the per-instruction breakdown.
    outcome_modes: ClassVar[tuple[str, ...]] = ()
    # The fields of a responses row a recipe publishes, one item a line (enough to rescore it).
    published_fields: ClassVar[tuple[str, ...]] = ("prompt", "response")

    def published_row(self, row: dict) -> dict:
        """What a recipe publishes of a responses row (default: its `published_fields`)."""
        return {k: row[k] for k in self.published_fields}

    def builtin_records(self) -> tuple[list[dict], str] | None:
        """Records the benchmark makes itself, with a description of them (None: its data is a file,
        packaged or the hub's). The dev set is built from autoif's own library and query pool."""
        return None

    def packaged_file(self) -> Path | None:
        """The copy of the data shipped by an installed package (`benchmark_prompts.BENCHMARK_FILES`),
        or None when none is installed."""
        return packaged_file(self.title)

    @abstractmethod
    def items(self, records: list[dict], source: str) -> list[Item]:
        """Items of the loaded records (`source` names the data in error messages)."""

    @abstractmethod
    def score(self, items: list[Item], responses: list[str], context: EvalContext) -> Scores:
        """Score one response per item."""

    @abstractmethod
    def prompt_scores(self, row: dict) -> PromptScores | str:
        """A responses row's scores (the fields `score` wrote in its per_item), or the reason it has
        none (a prompt left unchecked or unjudged). A row lacking those fields raises
        KeyError/TypeError/ValueError."""

    def evaluated_items(self, records: list[dict], source: str, settings: EvalConfig) -> list[Item]:
        """The items a run with these settings asks (default: `items`; few-shot prompts differ)."""
        return self.items(records, source)

    def respond(self, items: list[Item], context: EvalContext) -> Responses:
        """The evaluated model's answers (default: one generated response per prompt)."""
        settings = context.settings
        generation = context.generate(
            [item.prompt for item in items], max_tokens=settings.max_tokens, desc=f"{self.name} responses"
        )
        return Responses([str(c) for c in generation], generation)

    def hub_records(self, datasets: Any, dataset_id: str) -> list[dict]:
        """The records of a hub dataset (default: its `hub_split`); network errors propagate."""
        return [dict(r) for r in datasets.load_dataset(dataset_id, split=self.hub_split)]

    def all_items(self, records: list[dict], source: str) -> list[Item]:
        """Every prompt the benchmark asks, for contamination checks (default: the scored items)."""
        return self.items(records, source)

    def check_settings(self, settings: EvalConfig) -> None:
        """Refuse, with an AutoifError, settings the benchmark cannot score with; called before any
        response is generated (default: every setting is fine)."""
        return None

    def offline_hint(self) -> str:
        """How to get the data offline, for the error raised when there is none."""
        return "pass --data FILE"


class EvalContext:
    """The run's config and settings, and the LLM backends it opened (made on first use, closed once)."""

    def __init__(self, config: Config, settings: EvalConfig) -> None:
        self.config = config
        self.settings = settings
        self._backends: dict[str, Any] = {}

    def backend(self, llm: LLMConfig | None = None):
        """The backend for `llm` (default: the evaluated model, config.llm), shared by identity."""
        from ..llm import make_backend

        llm = llm or self.config.llm
        key = llm.model_dump_json()
        if key not in self._backends:
            # The run's config with this llm section: same paths (response cache, model cache).
            self._backends[key] = make_backend(self.config.model_copy(update={"llm": llm}))
        return self._backends[key]

    def generate(
        self, prompts: Sequence[str], *, max_tokens: int, desc: str, llm: LLMConfig | None = None
    ) -> list[Any]:
        """One completion per prompt (a single user turn; the backend applies the chat template)."""
        from ..llm import Request, Sampling

        temperature = self.settings.temperature
        sampling = Sampling(
            temperature=temperature, max_tokens=max_tokens, seed=self.config.seed if temperature > 0 else None
        )
        requests = [Request(messages=({"role": "user", "content": p},), sampling=sampling) for p in prompts]
        return [samples[0] for samples in self.backend(llm).generate(requests, desc=desc)]

    def model_info(self, llm: LLMConfig | None = None) -> dict:
        llm = llm or self.config.llm
        info: dict[str, str | None] = {"backend": llm.backend, "model": llm.model}
        if llm.backend == "openai":
            info["base_url"] = llm.base_url
        return info

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()
