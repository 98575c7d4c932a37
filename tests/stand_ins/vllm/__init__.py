"""A stand-in for the `vllm` package, for tests only: vLLM needs a GPU, and no machine here has one.

`LLM`, `SamplingParams`, `RequestOutput` and `CompletionOutput` take the arguments of vLLM 0.31.0 (the
version autoif's `vllm` extra pins) that autoif uses, under the same names, kinds and defaults:
tests/test_vllm_stand_in.py checks them against `vllm_signatures.json`, extracted from that version's
wheel. `LLM` generates with the real model through transformers on the CPU, child j of a seeded
request seeded `seed + j`, as vLLM does.

What it keeps of vLLM on a GPU is where an engine lands and vLLM's start-up check:

- an engine takes the first `tensor_parallel_size` visible devices (CUDA_VISIBLE_DEVICES, as Ray and
  `accelerate launch` set it; all `VLLM_STAND_IN_GPUS` of the machine when unset);
- each must have `gpu_memory_utilization` of its `VLLM_STAND_IN_GPU_GIB` free, or vLLM's own
  ValueError is raised. In use on a device: what the live engines of every process reserved there
  (a table of files under `VLLM_STAND_IN_TABLE`, one per engine, dropped when the engine is collected
  or its process is gone), plus, on this process's own device (the LOCAL_RANK-th visible one), every
  tensor this process still holds: a CUDA process's allocations count against its device.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import sys
import tempfile
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__version__ = "0.31.0"

GiB = 1 << 30
_EXECUTORS = ("mp", "ray", "uni", "external_launcher")
# The EngineArgs fields autoif passes through LLM(**kwargs); vLLM rejects unknown ones the same way.
ENGINE_ARGS = ("max_model_len", "distributed_executor_backend")


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = 16


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class RequestOutput:
    def __init__(
        self,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int] | None,
        prompt_logprobs: Any,
        outputs: list[CompletionOutput],
        finished: bool,
    ) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.prompt_logprobs = prompt_logprobs
        self.outputs = outputs
        self.finished = finished


@dataclass
class _ModelConfig:
    max_model_len: int


@dataclass
class _Engine:
    model_config: _ModelConfig
    devices: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ the devices
def _machine() -> str:
    """Ray's node id inside a Ray worker (each raylet of a test cluster numbers its GPUs from 0, like
    a machine of its own), else this host."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return socket.gethostname()


def _visible() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [str(i) for i in range(int(os.environ.get("VLLM_STAND_IN_GPUS", "8")))]
    return [d for d in env.split(",") if d.strip()]


def _table() -> Path:
    path = Path(os.environ.get("VLLM_STAND_IN_TABLE") or Path(tempfile.gettempdir()) / "vllm-stand-in-table")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reserved(device: str) -> int:
    """Bytes the live engines of every process reserved on `device` (machine:index)."""
    total = 0
    for entry in _table().glob("*.json"):
        try:
            record = json.loads(entry.read_text())
        except (OSError, ValueError):
            continue  # removed or being written meanwhile
        if record["device"] == device and _alive(record["pid"]):
            total += record["bytes"]
    return total


def _held_by_this_process() -> int:
    """Bytes of the tensors this process holds (each storage once), as its CUDA allocations would be."""
    import torch

    gc.collect()  # what a trainer leaves in reference cycles is garbage, not held
    storages: dict[int, int] = {}
    with warnings.catch_warnings():  # isinstance() on some library objects warns of deprecations
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            if isinstance(obj, torch.Tensor) and not obj.is_meta:
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------- the engine
class LLM:
    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        seed: int = 0,
        gpu_memory_utilization: float = 0.92,
        **kwargs: Any,
    ) -> None:
        import torch
        import transformers

        for key in kwargs:
            if key not in ENGINE_ARGS:
                raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument '{key}'")
        backend = kwargs.get("distributed_executor_backend")
        if backend is not None and backend not in _EXECUTORS:
            raise ValueError(f"Unrecognized distributed executor backend {backend}.")
        visible = _visible()
        if tensor_parallel_size > len(visible):
            raise ValueError(
                f"World size ({tensor_parallel_size}) is larger than the number of available GPUs "
                f"({len(visible)}) in this node."
            )
        machine = _machine()
        devices = [f"{machine}:{d}" for d in visible[:tensor_parallel_size]]
        own = f"{machine}:{visible[int(os.environ.get('LOCAL_RANK', '0')) % len(visible)]}" if visible else None
        total = int(float(os.environ.get("VLLM_STAND_IN_GPU_GIB", "80")) * GiB)
        requested = int(total * gpu_memory_utilization)
        held = _held_by_this_process()
        for device in devices:
            free = total - _reserved(device) - (held if device == own else 0)
            if free < requested:
                # vllm/v1/worker/utils.py (request_memory), word for word.
                raise ValueError(
                    f"Free memory on device {device} ({free / GiB:.2f}/{total / GiB:.2f} GiB) on startup is less "
                    f"than desired GPU memory utilization ({gpu_memory_utilization}, {requested / GiB:.2f} GiB). "
                    "Decrease GPU memory utilization or reduce GPU memory used by other processes."
                )
        entries = []
        for device in devices:
            entry = _table() / f"{device.replace(':', '_')}-{os.getpid()}-{id(self)}.json"
            entry.write_text(json.dumps({"device": device, "pid": os.getpid(), "bytes": requested}))
            entries.append(entry)
        for entry in entries:  # the memory is vLLM's until the engine is collected
            weakref.finalize(self, _unlink, entry)

        self._tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer or model)
        torch_dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
        self._model = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).eval()
        context = kwargs.get("max_model_len") or self._model.config.max_position_embeddings
        self.llm_engine = _Engine(_ModelConfig(context), devices)
        self._seed = seed

    def get_tokenizer(self):
        return self._tokenizer

    def generate(
        self,
        prompts: Any,
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
        lora_request: Any = None,
        priority: list[int] | None = None,
        tokenization_kwargs: dict[str, Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        prompts = prompts if isinstance(prompts, list) else [prompts]
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        results = []
        for n, (prompt, p) in enumerate(zip(prompts, params)):
            ids = prompt["prompt_token_ids"] if isinstance(prompt, dict) else self._tokenizer(prompt).input_ids
            outputs = [self._sample(ids, p, j) for j in range(p.n)]
            results.append(RequestOutput(str(n), None, list(ids), None, outputs, True))
        return results

    def _sample(self, ids: list[int], p: SamplingParams, index: int) -> CompletionOutput:
        import torch

        eos = self._tokenizer.eos_token_id
        stops = [p.stop] if isinstance(p.stop, str) else list(p.stop or [])
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed((self._seed if p.seed is None else p.seed) + index)
            out = self._model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=p.temperature > 0,
                temperature=p.temperature if p.temperature > 0 else None,
                top_p=p.top_p,
                top_k=0,
                max_new_tokens=p.max_tokens or 16,
                pad_token_id=eos,
            )
        new = out[0, len(ids) :].tolist()
        reason = "length"
        if eos in new:
            new, reason = new[: new.index(eos)], "stop"
        text = self._tokenizer.decode(new, skip_special_tokens=True)
        for stop in stops:
            if stop in text:
                text, reason = text[: text.index(stop)], "stop"
        return CompletionOutput(index, text, new, None, None, finish_reason=reason)
