"""Benchmark: the sandbox against the official AutoIF loop and against bare in-process calls.

Workload: every verification function and every response in the official release's samples
(`query_rft.jsonl`: eval_func x gpt-answer; `dpo_query_w_funcs.jsonl`: the same), each grid
replicated until there are at least --checks checks. Replicas are distinct functions by default
(a `# replica k` comment), as in a real run where each function is new; --same-sources repeats
the sources verbatim instead (then every function compiles once per worker).

Measured in one run, on the same grids:
  (a) official: re-`exec` the function source for every check in this process, under a SIGALRM
      timeout (what the AutoIF release does);
  (b) bare: each function compiled once and called in this process on one core, no isolation;
  (c) sandbox: `Sandbox().check_many(grids)`, workers = CPU cores (start-up reported apart).
(c) has (a)'s semantics, every check from a fresh definition of the function (docs/sandbox.md,
"Every check starts fresh"), at (b)'s cost or less: (b) reuses each function's first namespace.
The three must agree on every value; the script exits 1 if they do not.

    .venv/bin/python bench/sandbox.py [--checks 100000] [--fixtures DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

from autoif.sandbox import Outcome, Sandbox

DEFAULT_FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "autoif-official"


class _Alarm(BaseException):
    pass


def _on_alarm(signum, frame):
    raise _Alarm()


def load_grids(fixtures: Path) -> list[tuple[list[str], list[str]]]:
    grids = []
    for name in ("query_rft.jsonl", "dpo_query_w_funcs.jsonl"):
        with open(fixtures / name, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                grids.append(([func for func, _accuracy in row["eval_func"]], list(row["gpt-answer"])))
    return grids


def replicate(grids, checks: int, distinct: bool):
    per_round = sum(len(fs) * len(rs) for fs, rs in grids)
    rounds = math.ceil(checks / per_round)
    out = []
    for k in range(rounds):
        for fs, rs in grids:
            out.append(([f"{f}\n# replica {k}" if distinct else f for f in fs], rs))
    return out


def outcome_of(func, *args) -> Outcome:
    try:
        value = func(*args)
    except _Alarm:
        return Outcome(None, "timeout")
    except MemoryError:
        return Outcome(None, "memory")
    except BaseException:
        return Outcome(None, "exception")
    return Outcome(value) if value is True or value is False else Outcome(None, "not_bool")


def _define_and_call(source: str, response: str):
    namespace = {}
    exec(compile(source, "<evaluate>", "exec", dont_inherit=True), namespace)
    return namespace["evaluate"](response)


def official(grids, timeout_s: float):
    """Re-exec the source for every check, SIGALRM timeout, all in this process."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    out = []
    try:
        for functions, responses in grids:
            grid = []
            for source in functions:
                row = []
                for response in responses:
                    signal.setitimer(signal.ITIMER_REAL, timeout_s)
                    try:
                        row.append(outcome_of(_define_and_call, source, response))
                    finally:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                grid.append(row)
            out.append(grid)
    finally:
        signal.signal(signal.SIGALRM, previous)
    return out


def bare(grids):
    """Each distinct source compiled once; plain calls; no timeout, no isolation."""
    compiled = {}
    out = []
    for functions, responses in grids:
        grid = []
        for source in functions:
            evaluate = compiled.get(source)
            if evaluate is None:
                namespace = {}
                exec(compile(source, "<evaluate>", "exec", dont_inherit=True), namespace)
                evaluate = compiled[source] = namespace["evaluate"]
            grid.append([outcome_of(evaluate, response) for response in responses])
        out.append(grid)
    return out


def disagreements(a, b) -> int:
    return sum(x.value != y.value for ga, gb in zip(a, b) for ra, rb in zip(ga, gb) for x, y in zip(ra, rb))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=100_000)
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--same-sources", action="store_true", help="replicas repeat the sources verbatim")
    args = parser.parse_args()

    grids = replicate(load_grids(args.fixtures), args.checks, distinct=not args.same_sources)
    total = sum(len(fs) * len(rs) for fs, rs in grids)
    functions = len({f for fs, _ in grids for f in fs})
    print(
        f"workload: {len(grids)} grids, {functions} distinct functions, {total} checks; "
        f"{os.cpu_count()} CPU cores (shared machine: compare ratios within one run)"
    )

    t = time.perf_counter()
    with Sandbox(workers=args.workers, timeout_s=args.timeout) as sandbox:
        startup = time.perf_counter() - t
        t = time.perf_counter()
        sandboxed = sandbox.check_many(grids)
        t_sandbox = time.perf_counter() - t
        workers = sandbox.workers
    t = time.perf_counter()
    reference = bare(grids)
    t_bare = time.perf_counter() - t
    t = time.perf_counter()
    officially = official(grids, args.timeout)
    t_official = time.perf_counter() - t

    rate = {
        name: total / seconds for name, seconds in (("official", t_official), ("bare", t_bare), ("sandbox", t_sandbox))
    }
    print(f"(a) official, exec per check, SIGALRM: {rate['official']:>10,.0f} checks/s  ({t_official:.2f} s)")
    print(f"(b) bare, compiled once, 1 core:       {rate['bare']:>10,.0f} checks/s  ({t_bare:.2f} s)")
    print(
        f"(c) sandbox, {workers} workers:              {rate['sandbox']:>10,.0f} checks/s  ({t_sandbox:.2f} s; "
        f"start-up {startup:.2f} s apart)"
    )
    print(f"sandbox / official = {rate['sandbox'] / rate['official']:.1f}x (target >= 10x)")
    print(f"sandbox / bare     = {rate['sandbox'] / rate['bare']:.2f}x (target >= 1.0x)")
    mismatch = disagreements(sandboxed, reference) + disagreements(officially, reference)
    errors = sum(o.error is not None for g in sandboxed for row in g for o in row)
    print(f"value disagreements between the three: {mismatch}; sandbox outcomes with an error: {errors}")
    return 1 if mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
