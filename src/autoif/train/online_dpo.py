"""`autoif train online-dpo`: the paper's iterative online DPO, the loop TRL does not have.

For N iterations: the current policy samples K responses per prompt (temperature 0.8; vLLM when it
is installed and a GPU is present, else transformers batched generation, both through autoif's LLM
layer), the sandbox scores every response with the functions carried in the records, pairs are
built as the export stage builds them (`pairs.pair_up`: chosen pass rate >= 0.5, rejected = 0 by
default, at most `max_pairs_per_prompt` spread over different samples; a sample cut off at
`max_new_tokens` is never a chosen, and a rejected only when `truncated_rejected` is set, the rule of
`pairs.py`; a degenerate sample, by the quality gate of `autoif run` (`quality_gate`), is neither),
one DPO pass runs (`num_train_epochs`, the paper's 2), and the next iteration samples
from the updated policy. TRL's OnlineDPOTrainer is not used: it trains on pairs whose two rewards may
be equal, which for 0/1 verifier rewards is noise.

The reference model of every pass is the starting (SFT) model, `model`, as in the paper's Eq. 2: each
iteration's policy is kept near the SFT model, not near the policy before it. `reference: previous`
measures each pass against the policy the iteration started from instead (a reference that moves
with the policy, as in iterative DPO variants); the log names each iteration's reference.

Each iteration's policy is saved under `output_dir/iter-N` and its numbers (mean pass rate, samples,
truncated and quality-dropped samples, pairs, prompts without a pair) appended to `output_dir/online_dpo_log.jsonl`,
so an interrupted run resumes at the first unfinished iteration.

Under `accelerate launch` (several processes) the prompts are shared out among samplers: on each
machine one process per `sampling_tensor_parallel_size` GPUs samples its share on those GPUs (a
vLLM engine of its own, which sees only them) and scores it; every process then gathers all rows
in prompt order, all train on the same rows (the same number of steps), and the main process alone
writes the log. Pairs and samples do not depend on how the prompts were shared out. Before the
next sampling every process lets go of its trainer, policy and reference model: vLLM checks at
start-up that its share of each GPU is free.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..errors import AutoifError
from ..jsonl import atomic_write_text
from ..llm.embedded import resolve_model
from ..pairs import TRUNCATED, PairBounds, pair_sides, pair_up, truncation
from ..quality import QualityConfig, training_drops
from ..rundir import SFT
from ..seeding import seeded_rng
from .common import processes, prompts_with_functions, read_records, release_memory
from .dpo import DPOSettings, run_dpo
from .rewards import pass_rates, prompt_text

if TYPE_CHECKING:
    from ..llm import Completion

log = logging.getLogger("autoif.train")

LOG_FILE = "online_dpo_log.jsonl"


class OnlineDPOSettings(PairBounds, DPOSettings):
    """Iterative online DPO: sample, verify, pair, DPO; repeat."""

    output_dir: str = Field("autoif-train/online-dpo", description="per-iteration policies and the log go here")
    data_file: str = Field(SFT.name, description="prompts (with functions) from this file of a run directory")
    iterations: int = Field(3, ge=1, description="sample-verify-train rounds")
    samples_per_prompt: int = Field(8, ge=2, description="responses the policy samples per prompt (K)")
    temperature: float = Field(0.8, ge=0, le=2, description="sampling temperature of the policy")
    max_new_tokens: int = Field(512, ge=8, description="longest sampled response")
    max_prompts: int | None = Field(None, ge=1, description="prompts used (a seeded sample; None: all)")
    num_train_epochs: float = Field(2, gt=0, description="DPO passes over each iteration's pairs (paper: 2)")
    reference: Literal["sft", "previous"] = Field(
        "sft",
        description="DPO's reference model: sft (the starting `model`, every iteration; the paper's Eq. 2) "
        "or previous (the policy the iteration starts from)",
    )
    sampler: Literal["auto", "local", "vllm"] = Field(
        "auto", description="who samples: vllm (GPU), local (transformers), auto (vllm when usable)"
    )
    sampling_batch_size: int = Field(16, ge=1, description="local sampler: sequences generated together")
    sampling_tensor_parallel_size: int | None = Field(
        None,
        ge=1,
        description="vllm sampler: GPUs of the main process's machine it spreads the policy over (None: the fewest "
        "that hold the weights with room for the KV cache, from the model's config.json)",
    )
    sampling_gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="vllm sampler: share of each of its GPUs' memory it may take"
    )
    sampling_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="the sampler's weights dtype (auto: bfloat16 on GPU, float32 on CPU; bfloat16 samples "
        "~1.8x faster on a CPU with bf16 instructions); training keeps its own dtype",
    )
    final_eval: bool = Field(True, description="sample once more after the last iteration to measure the result")
    quality_gate: bool = Field(
        True,
        description="a degenerate sample (the quality gate of `autoif run`: repetition, garbage, another "
        "language) is never a chosen nor a rejected",
    )


def build_pairs(
    responses: list[str],
    rates: list[float],
    bounds: PairBounds,
    rng: random.Random,
    drops: list[str | None] | None = None,
) -> list[tuple[str, str]]:
    """(chosen, rejected) pairs of one prompt's samples, by their pass rates and drop reasons
    (`drops[i]`: e.g. `truncated` for a sample cut off at the token limit; None: none)."""
    return pair_up(*pair_sides(responses, rates, bounds, drops), bounds, rng)


def sampler_kind(settings: OnlineDPOSettings) -> Literal["local", "vllm"]:
    if settings.sampler != "auto":
        return settings.sampler
    import importlib.util

    import torch

    return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "local"


def sampler_tensor_parallel(policy_path: str, settings: OnlineDPOSettings) -> int:
    """The vLLM sampler's tensor-parallel size: the one asked for, checked against the policy's weights,
    or the fewest of this machine's GPUs that hold them."""
    import torch

    from ..llm.sizing import GPU, fewest_gpus, model_size

    gpus = torch.cuda.device_count()
    if not gpus:
        # No GPU to measure: vLLM itself fails at start-up with its own message.
        return settings.sampling_tensor_parallel_size or 1
    gpu = GPU(torch.cuda.get_device_properties(0).total_memory, settings.sampling_gpu_memory_utilization, gpus)
    size = model_size(policy_path, settings.sampling_dtype)
    return fewest_gpus(size, gpu, settings.sampling_tensor_parallel_size, what="online-dpo sampler")


@dataclass(frozen=True)
class Sampler:
    """Which share of the prompts a process samples, and on which GPUs of its machine."""

    index: int  # among the samplers of the run
    count: int  # samplers in the run
    gpus: tuple[str, ...] = ()  # CUDA device ids (as CUDA_VISIBLE_DEVICES names them); () on a CPU

    def shard(self, n: int) -> tuple[int, int]:
        """[start, end) of this sampler's contiguous share of `n` prompts."""
        return self.index * n // self.count, (self.index + 1) * n // self.count


def sampler_of_this_process(state, tp: int) -> Sampler | None:
    """The processes of a machine sample side by side, one per `tp` GPUs, each on its own (the
    first process of each group of `tp`); None for the others, which wait. One process: all GPUs
    it needs from the first."""
    import torch

    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
    gpus = torch.cuda.device_count()
    if gpus and tp > gpus:
        raise AutoifError(f"online-dpo sampler: tensor parallel size {tp} is more than this machine's {gpus} GPU(s)")
    groups = max(1, min(per_machine, gpus or per_machine) // tp)  # samplers per machine
    local = state.local_process_index
    if local % tp or local // tp >= groups:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",")] if visible else [str(i) for i in range(gpus)]
    machine = state.process_index // per_machine
    machines = max(1, state.num_processes // per_machine)
    return Sampler(machine * groups + local // tp, machines * groups, tuple(ids[local : local + tp]))


@contextlib.contextmanager
def _visible_gpus(gpus: tuple[str, ...]):
    """vLLM's engine process (started from here, inheriting the environment) sees only `gpus`: its
    single-GPU executor takes cuda:0 of what it sees, which would be every sampler's GPU 0."""
    if not gpus:
        yield
        return
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    try:
        yield
    finally:
        if before is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


def sample(
    policy_path: str,
    prompts: list[dict],
    settings: OnlineDPOSettings,
    iteration: int,
    gpus: tuple[str, ...] = (),
    tensor_parallel_size: int = 1,
) -> list[list[Completion]]:
    """K responses per prompt from the policy saved at `policy_path`, through autoif's LLM layer
    (each a `Completion`: its text, and its `finish_reason`, 'length' when cut off), on `gpus`
    (the local sampler: the first of them; (): where the LLM layer puts it)."""
    from ..config import LLMConfig
    from ..llm import Request, Sampling, backend_class

    kind = sampler_kind(settings)
    llm = LLMConfig(
        backend=kind,
        model=policy_path,
        batch_size=settings.sampling_batch_size,
        dtype=settings.sampling_dtype,
        cache=False,
        # vLLM reserves KV cache for its whole context: a sample never needs more than DPO keeps.
        max_model_len=settings.max_length,
        gpu_memory_utilization=settings.sampling_gpu_memory_utilization,
        tensor_parallel_size=tensor_parallel_size,
        device=f"cuda:{_device_index(gpus[0])}" if gpus and kind == "local" else "auto",
    )
    backend = backend_class(llm.backend).from_config(llm)
    try:
        requests = [
            Request(
                messages=p["prompt"],
                n=settings.samples_per_prompt,
                sampling=Sampling(
                    temperature=settings.temperature,
                    max_tokens=settings.max_new_tokens,
                    seed=settings.seed + 1000 * iteration,
                ),
            )
            for p in prompts
        ]
        with _visible_gpus(gpus if kind == "vllm" else ()):
            answers = backend.generate(requests, desc=f"online-dpo: sampling (iteration {iteration})")
    finally:
        backend.close()
    return [[c for c in completions if not c.error] for completions in answers]


def _device_index(gpu: str) -> int:
    """This process's index of CUDA device `gpu` (an id as CUDA_VISIBLE_DEVICES names it)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [d.strip() for d in visible.split(",")].index(gpu) if visible else int(gpu)


def merge_numbers(parts: list[dict]) -> dict:
    """The log's numbers of an iteration from its samplers' shares (the pass rate weighted by samples)."""
    total = {key: sum(p[key] for p in parts) for key in parts[0] if key != "mean_pass_rate"}
    passed = sum(p["mean_pass_rate"] * p["samples"] for p in parts)
    return {"mean_pass_rate": passed / total["samples"] if total["samples"] else 0.0, **total}


def score_and_pair(
    sandbox,
    prompts: list[dict],
    responses: list[list[Completion]],
    settings: OnlineDPOSettings,
    iteration: int,
    first: int = 0,
) -> tuple[list[dict], dict]:
    """One iteration's DPO rows (TRL conversational preference format) from each prompt's samples,
    scored in `sandbox` by the prompt's functions, and the numbers the log keeps: mean pass rate,
    samples, truncated samples, pairs, prompts without a pair. `prompts` are the run's from index
    `first` on (a sampler's shard): each prompt's pairs are drawn by its place in the run."""
    texts = [[str(c) for c in cs] for cs in responses]
    functions = [p["functions"] for p, ts in zip(prompts, texts) for _ in ts]
    rates = pass_rates(sandbox, functions, [t for ts in texts for t in ts])
    rows: list[dict] = []
    no_pair = truncated = degenerate = start = 0
    for n, (prompt, completions, ts) in enumerate(zip(prompts, responses, texts)):
        finish = [c.finish_reason for c in completions]
        if settings.quality_gate:
            drops = training_drops(ts, finish, [prompt_text(prompt["prompt"])] * len(ts), QualityConfig())
        else:
            drops = [truncation(f) for f in finish]
        truncated += sum(d == TRUNCATED for d in drops)
        degenerate += sum(d not in (None, TRUNCATED) for d in drops)
        ps, start = rates[start : start + len(ts)], start + len(ts)
        pairs = build_pairs(
            ts, ps, settings, seeded_rng(settings.seed, "online-dpo.pairs", iteration, first + n), drops
        )
        no_pair += not pairs
        rows += [
            {
                "prompt": prompt["prompt"],
                "chosen": [{"role": "assistant", "content": c}],
                "rejected": [{"role": "assistant", "content": r}],
            }
            for c, r in pairs
        ]
    numbers = {
        "mean_pass_rate": sum(rates) / len(rates) if rates else 0.0,
        "samples": len(rates),
        "truncated": truncated,
        "quality_dropped": degenerate,
        "pairs": len(rows),
        "prompts_without_pair": no_pair,
        "prompts": len(prompts),
    }
    return rows, numbers


def train(settings: OnlineDPOSettings) -> Path:
    from accelerate.utils import gather_object

    from ..sandbox import Sandbox

    state = processes()
    main = state.is_main_process
    prompts = prompts_with_functions(read_records(settings, ("functions",)))
    if not prompts:
        raise AutoifError(f"{settings.data}: no prompt carries verification functions")
    if settings.max_prompts and len(prompts) > settings.max_prompts:
        prompts = seeded_rng(settings.seed, "online-dpo.prompts").sample(prompts, settings.max_prompts)
    out = Path(settings.output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    history = _read_log(out)
    start = resolve_model(settings.model, settings.cache_dir)
    policy_path = _start_policy(start, history)
    tp = sampler_tensor_parallel(start, settings) if sampler_kind(settings) == "vllm" else 1
    sampler = sampler_of_this_process(state, tp)
    with contextlib.ExitStack() as stack:
        sandbox = stack.enter_context(Sandbox()) if sampler else None  # each sampler scores its share
        for iteration in range(len(history), settings.iterations + (1 if settings.final_eval else 0)):
            share: list = []
            if sampler:
                first, end = sampler.shard(len(prompts))
                responses = sample(policy_path, prompts[first:end], settings, iteration, sampler.gpus, tp)
                share = [
                    (sampler.index, *score_and_pair(sandbox, prompts[first:end], responses, settings, iteration, first))
                ]
            parts = sorted(gather_object(share), key=lambda part: part[0])  # every process: every share
            rows = [row for _, share_rows, _ in parts for row in share_rows]
            entry = {"iteration": iteration, "policy": policy_path, **merge_numbers([n for _, _, n in parts])}
            if iteration == settings.iterations:  # the final measurement, no training
                if main:
                    _append_log(out, {**entry, "evaluation_only": True})
                    log.info("online-dpo: final policy mean pass rate %.3f", entry["mean_pass_rate"])
                break
            log.info(
                "online-dpo iteration %d: mean pass rate %.3f, %d pairs, %d/%d prompts without a pair, "
                "%d/%d samples truncated (never chosen)",
                iteration,
                entry["mean_pass_rate"],
                entry["pairs"],
                entry["prompts_without_pair"],
                entry["prompts"],
                entry["truncated"],
                entry["samples"],
            )
            if not rows:
                if main:
                    _append_log(out, {**entry, "stopped": "no pairs"})
                log.warning("online-dpo: no pair could be built at iteration %d; stopping", iteration)
                break
            reference = start if settings.reference == "sft" else policy_path
            next_path = out / f"iter-{iteration + 1}"
            loss, steps = _train_iteration(settings, rows, policy_path, reference, out, next_path)
            release_memory()  # before the next sampler starts, here or in vLLM's process
            if main:
                _append_log(
                    out,
                    {**entry, "reference": reference, "train_loss": loss, "steps": steps, "saved": str(next_path)},
                )
            state.wait_for_everyone()
            policy_path = str(next_path)
    return Path(policy_path)


def _train_iteration(
    settings: OnlineDPOSettings, rows: list[dict], policy: str, reference: str, out: Path, save_to: Path
) -> tuple[float | None, list[int]]:
    """One DPO pass of every process over `rows`, saved at `save_to`; (the run's mean loss, else the
    last logged step's; each process's optimizer steps). The trainer and its models are this
    function's alone: once it returns they can be freed."""
    from accelerate.utils import gather_object

    # The reference is loaded by run_dpo, not left to TRL: TRL would load the policy's own checkpoint.
    trainer, tokenizer = run_dpo(
        settings,
        rows,
        save_to.with_name(f"{save_to.name}-checkpoints"),
        model=policy,
        reference=reference,
        epochs=settings.num_train_epochs,
    )
    trainer.save_model(str(save_to))  # in every process: ZeRO-3 gathers the shards for the main one
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(save_to))
    losses = [h.get("train_loss", h.get("loss")) for h in trainer.state.log_history if "train_loss" in h or "loss" in h]
    steps = gather_object([trainer.state.global_step])
    trainer.accelerator.free_memory()  # its references to the model, optimizer and DeepSpeed engine
    return (losses[-1] if losses else None), steps


def _read_log(out: Path) -> list[dict]:
    path = out / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append_log(out: Path, entry: dict) -> None:
    history = _read_log(out) + [entry]
    atomic_write_text(out / LOG_FILE, "".join(json.dumps(e) + "\n" for e in history))


def _start_policy(start: str, history: list[dict]) -> str:
    """The policy to sample from: the last saved iteration when resuming, else the starting model."""
    for entry in reversed(history):
        if entry.get("saved") and Path(entry["saved"]).is_dir():
            log.info("online-dpo: resuming after iteration %d", entry["iteration"])
            return entry["saved"]
    return start
