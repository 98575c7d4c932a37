"""Whether bf16 autocast trains faster than fp32 on this CPU: measured, not guessed from CPU flags.

Machines of one kind differ: bf16 matmuls ran 1.8x fp32 on one, 0.82x on another that lists
AVX512_BF16 but exposes no AMX. So `bf16: auto` on a CPU times a forward and backward pass of the
model's own matmul shapes (one decoder layer's MLP and attention projections on a training-sized
batch of tokens) both ways, and remembers the answer per machine, torch version, thread count and
shapes in `<cache_dir>/bf16_autocast.json`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

from ..jsonl import atomic_write_text

log = logging.getLogger("autoif.train")

CACHE_FILE = "bf16_autocast.json"
# Tokens in the probe's batch: a micro-batch of a few answers of a few hundred tokens.
PROBE_TOKENS = 256
# bf16 must beat fp32 by this much to be chosen: it rounds, so a tie goes to fp32.
MIN_SPEEDUP = 1.1


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_autocast_faster(config: Any, cache_dir: str | os.PathLike) -> bool:
    """True when bf16 autocast of `config`'s matmul shapes is at least MIN_SPEEDUP x fp32 on this CPU."""
    import torch

    hidden = int(config.hidden_size)
    intermediate = int(getattr(config, "intermediate_size", 4 * hidden))
    key = f"{cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {hidden}x{intermediate}"
    path = Path(cache_dir).expanduser() / CACHE_FILE
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key not in cached:
        fp32_s, bf16_s = probe_seconds(hidden, intermediate)
        cached[key] = {"fp32_s": round(fp32_s, 4), "bf16_s": round(bf16_s, 4), "speedup": round(fp32_s / bf16_s, 3)}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cached, indent=1, sort_keys=True) + "\n")
    speedup = cached[key]["speedup"]
    faster = speedup >= MIN_SPEEDUP
    log.info(
        "bf16 autocast on this CPU: %.2fx fp32 (measured, %s): training in %s",
        speedup,
        path,
        "bf16" if faster else "fp32",
    )
    return faster


def probe_seconds(hidden: int, intermediate: int, repeats: int = 5) -> tuple[float, float]:
    """Best-of-`repeats` seconds of one forward and backward pass of a decoder layer's matmuls, (fp32, bf16
    autocast), the two interleaved so that a busy machine slows both alike."""
    import torch

    generator = torch.Generator().manual_seed(0)
    weights = [
        (torch.randn(shape, generator=generator) * 0.02).requires_grad_()
        for shape in ((hidden, hidden), (intermediate, hidden), (intermediate, hidden), (hidden, intermediate))
    ]
    x = torch.randn(PROBE_TOKENS, hidden, generator=generator, requires_grad=True)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            h = x @ weights[0].T
            gate, up = h @ weights[1].T, h @ weights[2].T
            out = (torch.nn.functional.silu(gate) * up) @ weights[3].T
        out.float().sum().backward()
        return time.perf_counter() - start

    step(False), step(True)  # warm-up: first calls pick kernels
    fp32, bf16 = [], []
    for _ in range(repeats):
        fp32.append(step(False))
        bf16.append(step(True))
        if min(bf16) > 2 * max(fp32):  # clearly slower (no native bf16 here): no need to time it again
            break
    return min(fp32), min(bf16)
