"""The `vllm` backend: the vLLM offline engine (`vllm.LLM`) in this process, for GPUs.

The translation between our requests and vLLM's is plain data in plain functions (`plan_calls`,
`sampling_kwargs`, `completions`), so that it is tested without vLLM installed.

Samples and seeds: sample i of a seeded request is seeded `seed + i` (`Sampling.seed_for`), and
vLLM gives child j of a request with `n` and `seed` the seed `seed + j`. So only the samples that are
not cached are asked for, as one vLLM request per run of consecutive missing indices
(`n` = the run's length, `seed` = `seed_for(first index)`): each sample gets the seed it would have
had in a fresh run. Unseeded requests ask for all missing samples with one `n`.

vLLM returns nothing before a whole `LLM.generate` call ends, so calls are made in chunks of at
most `chunk_samples` samples and each chunk is emitted (and cached) as soon as it is done.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import require
from .base import Backend, Completion, Emit, Job, Sampling
from .cache import Cache
from .embedded import chat_prompt_ids, model_identity, resolve_model


@dataclass(frozen=True)
class VLLMCall:
    """One vLLM request: a prompt, its SamplingParams keyword arguments, and which of our samples
    its `n` outputs are (output j is sample `samples[j]` of job `job_index`)."""

    job_index: int
    samples: tuple[int, ...]
    prompt_token_ids: tuple[int, ...]
    params: dict


def sampling_kwargs(sampling: Sampling, n: int, first_sample: int) -> dict:
    """`vllm.SamplingParams(**this)` for `n` samples starting at index `first_sample`."""
    return {
        "n": n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "stop": list(sampling.stop),
        "seed": sampling.seed_for(first_sample),
    }


def _runs(indices: Iterable[int]) -> list[list[int]]:
    """[0, 1, 2, 5, 6, 9] -> [[0, 1, 2], [5, 6], [9]]."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def plan_calls(
    jobs: list[Job], prompts: list[list[int]], max_model_len: int
) -> tuple[list[VLLMCall], list[tuple[int, int, str]]]:
    """The vLLM requests for `jobs` (whose chat prompts tokenize to `prompts`), and the samples
    that cannot be asked for at all as (job_index, sample_index, reason)."""
    calls: list[VLLMCall] = []
    errors: list[tuple[int, int, str]] = []
    for job_index, (job, prompt) in enumerate(zip(jobs, prompts)):
        if len(prompt) >= max_model_len:
            reason = f"prompt of {len(prompt)} tokens leaves no room in the {max_model_len}-token context"
            errors += [(job_index, i, reason) for i in job.samples]
            continue
        s = job.request.sampling
        groups = [sorted(job.samples)] if s.seed is None else _runs(job.samples)
        for group in groups:
            calls.append(VLLMCall(job_index, tuple(group), tuple(prompt), sampling_kwargs(s, len(group), group[0])))
    return calls, errors


def chunked(calls: list[VLLMCall], chunk_samples: int) -> list[list[VLLMCall]]:
    """Consecutive calls grouped so that each group asks for at most `chunk_samples` samples
    (a single call asking for more stays whole)."""
    chunks: list[list[VLLMCall]] = []
    size = 0
    for call in calls:
        if chunks and size + len(call.samples) <= chunk_samples:
            chunks[-1].append(call)
            size += len(call.samples)
        else:
            chunks.append([call])
            size = len(call.samples)
    return chunks


def _inside_ray_actor() -> bool:
    """True in the process of a Ray actor (Ray is looked up where it is loaded, never imported here)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def completions(call: VLLMCall, output: Any) -> list[tuple[int, Completion]]:
    """A vLLM `RequestOutput` (anything with `.outputs`, each with `.index`, `.text`, `.token_ids`,
    `.finish_reason`) -> (sample_index, Completion) for each sample of `call`."""
    outs = sorted(output.outputs, key=lambda o: o.index)
    if len(outs) != len(call.samples):
        raise RuntimeError(f"vLLM returned {len(outs)} outputs for a request with n={len(call.samples)}")
    result = []
    for sample, out in zip(call.samples, outs):
        if out.finish_reason in ("stop", "length"):
            completion = Completion(out.text, out.finish_reason, len(out.token_ids))
        else:
            completion = Completion("", error=f"vLLM ended the sample with finish_reason={out.finish_reason!r}")
        result.append((sample, completion))
    return result


class VLLMBackend(Backend):
    kind = "vllm"

    def __init__(
        self,
        model: str = "embedded",
        cache: Cache | None = None,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
        cache_dir: str | os.PathLike = "~/.cache/autoif",
        chunk_samples: int = 4096,
    ) -> None:
        super().__init__(model, cache)
        require("vllm", "vllm", "the vllm backend")  # fail at construction, with the extra to install
        self.engine_kwargs = {
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
            "dtype": dtype,
            "seed": seed,
        }
        if tensor_parallel_size > 1 and _inside_ray_actor():
            # An actor of the ray executor already holds its GPUs: vLLM's own processes use them,
            # instead of vLLM's Ray executor asking the cluster for more (which would wait for ever).
            self.engine_kwargs["distributed_executor_backend"] = "mp"
        self.dtype = dtype
        self.cache_dir = cache_dir
        self.chunk_samples = chunk_samples
        self._llm: Any = None
        self._build_lock = threading.Lock()

    @classmethod
    def from_config(cls, llm, cache: Cache | None = None, paths=None) -> VLLMBackend:
        from ..config import PathsConfig

        return cls(
            llm.model,
            cache,
            tensor_parallel_size=llm.tensor_parallel_size,
            gpu_memory_utilization=llm.gpu_memory_utilization,
            max_model_len=llm.max_model_len,
            dtype=llm.dtype,
            cache_dir=(paths or PathsConfig()).cache_dir,
        )

    @property
    def cache_identity(self) -> str:
        return model_identity(self.model, self.dtype, "cuda")

    def _engine(self) -> Any:
        with self._build_lock:
            if self._llm is None:
                vllm = require("vllm", "vllm", "the vllm backend")
                self._llm = vllm.LLM(model=resolve_model(self.model, self.cache_dir), **self.engine_kwargs)
            return self._llm

    def _run(self, jobs: list[Job], emit: Emit) -> None:
        vllm = require("vllm", "vllm", "the vllm backend")
        llm = self._engine()
        tokenizer = llm.get_tokenizer()
        prompts = [chat_prompt_ids(tokenizer, job.request.messages) for job in jobs]
        calls, errors = plan_calls(jobs, prompts, llm.llm_engine.model_config.max_model_len)
        for job_index, sample, reason in errors:
            emit(job_index, sample, Completion("", error=reason, rejected=True))  # a prompt too long
        for chunk in chunked(calls, self.chunk_samples):
            outputs = llm.generate(
                [{"prompt_token_ids": list(c.prompt_token_ids)} for c in chunk],
                sampling_params=[vllm.SamplingParams(**c.params) for c in chunk],
                use_tqdm=False,
            )
            for call, output in zip(chunk, outputs):
                for sample, completion in completions(call, output):
                    emit(call.job_index, sample, completion)

    def close(self) -> None:
        with self._build_lock:
            if self._llm is not None:
                self._llm = None
                gc.collect()  # vLLM frees its GPU memory when the engine is collected
