"""The benchmark registry: name -> "module:BENCHMARK", each imported only when chosen (so `autoif
--help` and `autoif eval ifeval` never import the FollowBench judge or another benchmark's checkers).
Its own module so that the package's parts (stats, contamination) look benchmarks up without
importing the package's __init__, which imports them."""

from __future__ import annotations

from ..registry import Registry
from .base import Benchmark

BENCHMARKS = Registry(
    "benchmark",
    {
        "ifeval": "autoif.evals.ifeval:BENCHMARK",
        "ifbench": "autoif.evals.ifbench:BENCHMARK",
        "followbench": "autoif.evals.followbench:BENCHMARK",
        "dev": "autoif.evals.dev:BENCHMARK",
        "mmlu": "autoif.evals.choice:MMLU_BENCHMARK",
        "ceval": "autoif.evals.choice:CEVAL_BENCHMARK",
        "humaneval": "autoif.evals.humaneval:BENCHMARK",
        "gsm8k": "autoif.evals.gsm8k:BENCHMARK",
    },
)


def benchmark(name: str) -> Benchmark:
    """The benchmark registered as `name`; an unknown name is an AutoifError with a suggestion."""
    return BENCHMARKS.load(name)
