"""The small real run that `test_run.py` and `test_ray.py` share: settings, and how to start and watch it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

# Small enough for a 2-core CPU: a seed and a few library constraints, short generations. Responses
# are greedy here: on CPU a row's logits move by ~1e-5 with the number of rows sharing a matmul, so a
# sampled answer cut off by the kill could, rarely, come out different when regenerated in another
# batch (finished answers are cached and never change). Greedy decoding is stable against that,
# and makes one answer per query all there is to see: a second greedy sample is the same text.
SMALL_RUN = {
    "seed": 7,
    "seeds": {"limit": 1, "library_limit": 4},
    "augment": {"k": 1, "max_tokens": 24},
    "verifiers": {"k": 1, "max_tokens": 32},
    "backtranslate": {"max_functions": 1, "max_tokens": 16},
    "queries": {"k": 2},
    "responses": {"k": 1, "max_tokens": 160, "temperature": 0.0},
    # Shards of 4: a shard's answers decode as one batch, at about the cost of one answer here
    # (test_ray runs the same config in shards of 2 and must write the same files).
    "executor": {"shard_size": 4},
    # fp32: `llm.dtype: auto` decodes in bf16 on a CPU where bf16 is faster (AVX512_BF16), and bf16
    # answers change with the rows sharing a batch (test_ray's shards of 2 against these shards of 4).
    "llm": {"dtype": "float32"},
}
OUTPUTS = [
    "seeds.jsonl",
    "instructions.jsonl",
    "verifiers.jsonl",
    "crossval.jsonl",
    "backtranslate.jsonl",
    "compose.jsonl",
    "queries.jsonl",
    "responses.jsonl",
    "verified.jsonl",
    "scored.jsonl",
    "sft.jsonl",
    "dpo.jsonl",
]


def write_config(path: Path) -> Path:
    """SMALL_RUN as a config file at `path` (JSON is YAML)."""
    path.write_text(json.dumps(SMALL_RUN))
    return path


def start(out: Path, config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "autoif.cli", "run", "-c", str(config), "-o", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-3000:]
    return output


def cache_rows(out: Path) -> int:
    path = out / "llm_cache.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:  # the table is being created
        return 0


def wait_for_lock(proc: subprocess.Popen, out: Path, timeout_s: float = 120) -> None:
    """Until `proc` holds `out`'s run lock (its PID is in OUT/.lock)."""
    deadline = time.monotonic() + timeout_s
    lock = out / ".lock"
    while time.monotonic() < deadline and proc.poll() is None:
        if lock.is_file() and lock.read_text().strip() == str(proc.pid):
            return
        time.sleep(0.1)
    raise AssertionError(f"the run never took {lock}")


def kill_during_responses(proc: subprocess.Popen, out: Path) -> None:
    """SIGKILL the run once stage 2 has cached a few response samples (the stage unfinished)."""
    deadline = time.monotonic() + 900
    rows_after_stage_1 = None
    while time.monotonic() < deadline and proc.poll() is None:
        if rows_after_stage_1 is None and (out / "queries.jsonl").exists():
            rows_after_stage_1 = cache_rows(out)
        if rows_after_stage_1 is not None and cache_rows(out) > rows_after_stage_1 + 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not (out / "responses.jsonl").exists()  # it really was cut off inside the stage
