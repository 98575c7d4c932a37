"""Whether bf16 is faster than fp32 on this CPU: measured, not guessed from CPU flags.

Machines of one kind differ: bf16 matmuls ran 1.8x fp32 on one, 0.82x on another that lists
AVX512_BF16 but exposes no AMX, 0.05x on an AVX2-only one. So on a CPU, `bf16: auto` (training) and
`llm.dtype: auto` (the local backend, log-likelihood scoring) time the model's own matmul shapes both
ways, interleaved, and remember the answer per machine, torch version, thread count and shapes in
`<cache_dir>/bf16_autocast.json`:

- training (`cpu_bf16_autocast_faster`): a forward and backward pass of one decoder layer's
  projections on a training-sized batch of tokens, fp32 against bf16 autocast (fp32 weights);
- decoding (`cpu_bf16_decode_faster`): the same projections as one decode step of `rows` rows,
  fp32 weights against bf16 weights, no gradient.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from .jsonl import atomic_write_text

log = logging.getLogger("autoif.precision")

CACHE_FILE = "bf16_autocast.json"
# Tokens in the training probe's batch: a micro-batch of a few answers of a few hundred tokens.
PROBE_TOKENS = 256
# bf16 must beat fp32 by this much to be chosen: it rounds, so a tie goes to fp32.
MIN_SPEEDUP = 1.1


def cpuinfo(*fields: str) -> str | None:
    """The value of the first line of /proc/cpuinfo that starts with one of `fields` (None: none, or no such file)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(fields):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return cpuinfo("model name") or platform.processor() or platform.machine()


def machine(device: str = "cpu") -> str:
    """The hardware and torch build that reduced-precision numbers depend on: the GPU's name (on a
    CUDA device; "auto" is one where torch sees a GPU) or the CPU's, and torch's version. bf16 kernels
    differ between them: the base's greedy bf16 answers to IFEval regenerated on another CPU matched
    the first ones on 176 of 541 prompts, where its fp32 answers came out byte-identical."""
    import torch

    gpu = torch.cuda.is_available() and (device.startswith("cuda") or device == "auto")
    name = torch.cuda.get_device_name(torch.device(device if device != "auto" else "cuda")) if gpu else cpu_name()
    return f"{name} | torch {torch.__version__}"


def cpu_bf16_autocast_faster(config: Any, cache_dir: str | os.PathLike) -> bool:
    """True when bf16 autocast of `config`'s matmul shapes trains at least MIN_SPEEDUP x fp32 on this CPU."""
    hidden, intermediate = _shapes(config)
    return _measured("", hidden, intermediate, cache_dir, partial(probe_seconds, hidden, intermediate))


def cpu_bf16_decode_faster(config: Any, cache_dir: str | os.PathLike, rows: int) -> bool:
    """True when bf16 weights decode `rows` rows at least MIN_SPEEDUP x as fast as fp32 on this CPU."""
    hidden, intermediate = _shapes(config)
    probe = partial(decode_probe_seconds, hidden, intermediate, rows)
    return _measured(f"decode {rows} rows | ", hidden, intermediate, cache_dir, probe)


def _shapes(config: Any) -> tuple[int, int]:
    hidden = int(config.hidden_size)
    return hidden, int(getattr(config, "intermediate_size", None) or 4 * hidden)


def _measured(
    kind: str, hidden: int, intermediate: int, cache_dir: str | os.PathLike, probe: Callable[[], tuple[float, float]]
) -> bool:
    """Whether bf16 is MIN_SPEEDUP x faster by `probe` (fp32 seconds, bf16 seconds), read from the
    machine's cache file when this CPU, torch, thread count and shapes were measured before."""
    import torch

    key = f"{kind}{machine()} | {torch.get_num_threads()} threads | {hidden}x{intermediate}"
    path = Path(cache_dir).expanduser() / CACHE_FILE
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key not in cached:
        fp32_s, bf16_s = probe()
        cached[key] = {"fp32_s": round(fp32_s, 5), "bf16_s": round(bf16_s, 5), "speedup": round(fp32_s / bf16_s, 3)}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cached, indent=1, sort_keys=True) + "\n")
    faster = cached[key]["speedup"] >= MIN_SPEEDUP
    log.info(
        "bf16 on this CPU (%s): %.2fx fp32 (measured, %s): %s",
        key,
        cached[key]["speedup"],
        path,
        "bf16" if faster else "fp32",
    )
    return faster


def _projections(hidden: int, intermediate: int, generator: Any) -> list[Any]:
    """One decoder layer's weight matrices: attention (one square) and the gated MLP's three."""
    import torch

    shapes = ((hidden, hidden), (intermediate, hidden), (intermediate, hidden), (hidden, intermediate))
    return [torch.randn(shape, generator=generator) * 0.02 for shape in shapes]


def _layer(x: Any, weights: list[Any]) -> Any:
    import torch

    h = x @ weights[0].T
    gate, up = h @ weights[1].T, h @ weights[2].T
    return (torch.nn.functional.silu(gate) * up) @ weights[3].T


def _interleaved(step: Callable[[bool], float], repeats: int) -> tuple[float, float]:
    """Best-of-`repeats` seconds of `step(bf16=False)` and `step(bf16=True)`, the two interleaved so that
    a busy machine slows both alike."""
    step(False), step(True)  # warm-up: first calls pick kernels
    fp32: list[float] = []
    bf16: list[float] = []
    for _ in range(repeats):
        fp32.append(step(False))
        bf16.append(step(True))
        if min(bf16) > 2 * max(fp32):  # clearly slower (no native bf16 here): no need to time it again
            break
    return min(fp32), min(bf16)


def probe_seconds(hidden: int, intermediate: int, repeats: int = 5) -> tuple[float, float]:
    """(fp32, bf16 autocast) seconds of one forward and backward pass of a decoder layer's matmuls."""
    import torch

    generator = torch.Generator().manual_seed(0)
    weights = [w.requires_grad_() for w in _projections(hidden, intermediate, generator)]
    x = torch.randn(PROBE_TOKENS, hidden, generator=generator, requires_grad=True)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = _layer(x, weights)
        out.float().sum().backward()
        return time.perf_counter() - start

    return _interleaved(step, repeats)


def decode_probe_seconds(hidden: int, intermediate: int, rows: int, repeats: int = 5) -> tuple[float, float]:
    """(fp32, bf16) seconds of a decoder layer's matmuls on `rows` tokens (one decode step of a batch),
    with weights and activations in each dtype, as the local backend holds them."""
    import torch

    generator = torch.Generator().manual_seed(0)
    weights = {False: _projections(hidden, intermediate, generator)}
    weights[True] = [w.bfloat16() for w in weights[False]]
    x = {False: torch.randn(rows, hidden, generator=generator)}
    x[True] = x[False].bfloat16()

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for _ in range(4):  # a decode step's matmuls are short: time several
                _layer(x[bf16], weights[bf16])
        return time.perf_counter() - start

    return _interleaved(step, repeats)
