"""Benchmark: the verify stage on a local Ray cluster against the local executor, same machine.

Workload: the official release's verification functions and responses (`query_rft.jsonl`,
`dpo_query_w_funcs.jsonl`: eval_func x gpt-answer), one instruction and one prompt per row,
replicated (each replica's functions made distinct, as in a real run) until the verify stage has
at least --checks function calls to make. The inputs are written as a run's `crossval.jsonl`,
`queries.jsonl` and `responses.jsonl`, and the real `verify` stage runs over them through the
pipeline (sharding, shard files, assembly included), 1 + --repeats times per executor:

  (a) local: `executor.kind=local`, one sandbox of --nodes x --cpus-per-node workers;
  (b) ray:   `executor.kind=ray` on a Ray cluster started here (a head with no CPUs and --nodes
      worker nodes of --cpus-per-node CPUs: raylets of their own, as on separate machines), one
      sandbox actor of --cpus-per-node workers per node, so both ways have as many sandbox workers.

Two figures per way. *Started*: the first run, start-up included (sandbox workers; for Ray also
the actors and shipping the functions to them), not the cluster's, which a user starts once.
*Warm*: the best later run with the same executor, as in a pipeline run, where verify finds the
sandbox actors crossval started. Both ways must write the same `verified.jsonl`; the script
exits 1 if they do not. On one small machine Ray can only add cost (its raylets and actors share
the same cores as the driver); the point is to measure that overhead.

    .venv/bin/python bench/ray_verify.py [--checks 100000] [--nodes 2] [--cpus-per-node 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

DEFAULT_FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "autoif-official"


def write_verify_inputs(out: Path, checks: int, fixtures: Path = DEFAULT_FIXTURES) -> tuple[int, int]:
    """A verify stage's inputs under `out` with at least `checks` checks -> (prompts, checks)."""
    from autoif.jsonl import dumps_records
    from autoif.records import CaseResult, CrossvalRecord, FunctionResult, QueryRecord, ResponsesRecord

    rows = []
    for name in ("query_rft.jsonl", "dpo_query_w_funcs.jsonl"):
        with open(fixtures / name, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    per_round = sum(len(r["eval_func"]) * len(r["gpt-answer"]) for r in rows)
    instructions, queries, responses = [], [], []
    for k in range(math.ceil(checks / per_round)):
        for j, row in enumerate(rows):
            iid, pid = f"i{k}-{j}", f"p{k}-{j}"
            text = row.get("instruction") or f"instruction {j}"
            functions = [FunctionResult(source=f"{src}\n# replica {k}", accuracy=acc) for src, acc in row["eval_func"]]
            cases = [CaseResult(input=str(c[0]), output=bool(c[1]), accuracy=1.0) for c in row.get("cases", [])]
            instructions.append(CrossvalRecord(instruction_id=iid, instruction=text, functions=functions, cases=cases))
            queries.append(
                QueryRecord(id=pid, instruction_id=iid, instruction=text, query=row["prompt"], prompt=row["prompt"])
            )
            responses.append(ResponsesRecord(prompt_id=pid, responses=list(row["gpt-answer"])))
    out.mkdir(parents=True, exist_ok=True)
    for name, records in (("crossval.jsonl", instructions), ("queries.jsonl", queries), ("responses.jsonl", responses)):
        (out / name).write_text(dumps_records(records), encoding="utf-8")
    total = sum(len(i.functions) * len(r.responses) for i, r in zip(instructions, responses))
    return len(responses), total


def start_cluster(nodes: int, cpus_per_node: int):
    """A Ray cluster on this machine: a head with no CPUs, and `nodes` worker nodes (each its own raylet)."""
    from ray.cluster_utils import Cluster

    store = 256 * 1024**2  # small object stores: /dev/shm is small in containers
    # Ray runs its workers at nice 15 by default, behind everything else on the machine: beside any
    # other load (a shared test machine, a background job at nice 10) the actors would get a fraction
    # of the CPU the local executor gets. Here they run at the priority of the process that started them.
    head = {"num_cpus": 0, "object_store_memory": store, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={**head, "_system_config": {"worker_niceness": 0}})
    for _ in range(nodes):
        cluster.add_node(num_cpus=cpus_per_node, object_store_memory=store)
    cluster.wait_for_nodes()
    return cluster


def verify_config(out: Path, executor: str, *overrides: str):
    from autoif.config import load_config

    # The quality gate is off: these runs measure how sandbox checks spread over workers, and the gate
    # (langdetect and n-gram statistics per response, in the stage) would take most of the time.
    return load_config(None, [f"paths.out={out}", f"executor.kind={executor}", "quality.enabled=false", *overrides])


def run_verify(config, times: int = 1) -> tuple[list[float], object]:
    """Seconds the verify stage took through the pipeline, run `times` times with the same executor
    (the first pays the start-up: sandbox workers, and for Ray the actors), and the pipeline."""
    from autoif.pipeline import Pipeline
    from autoif.stages import load_stage
    from autoif.stages.base import Context

    pipeline = Pipeline(config)
    ctx = Context(config)
    seconds = []
    try:
        for _ in range(times):
            start = time.perf_counter()
            pipeline.run_stage(load_stage("verify"), ctx, force=True)
            seconds.append(time.perf_counter() - start)
        return seconds, pipeline
    finally:
        ctx.close()
        pipeline.executor.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-out/ray_verify"))
    args = parser.parse_args(argv)

    local_out, ray_out = args.out / "local", args.out / "ray"
    prompts, checks = write_verify_inputs(local_out, args.checks)
    write_verify_inputs(ray_out, args.checks)
    workers = args.nodes * args.cpus_per_node
    print(
        f"verify stage: {prompts:,} prompts, {checks:,} checks; {workers} sandbox workers either way "
        f"(ray: {args.nodes} nodes x {args.cpus_per_node} CPU), {os.cpu_count()} cores here"
    )

    t0 = time.perf_counter()
    cluster = start_cluster(args.nodes, args.cpus_per_node)
    print(f"ray cluster started in {time.perf_counter() - t0:.1f} s (not counted)")
    local = verify_config(local_out, "local", f"sandbox.workers={workers}")
    remote = verify_config(
        ray_out, "ray", f"executor.ray_address={cluster.address}", f"executor.cpus_per_sandbox={args.cpus_per_node}"
    )
    times: dict[str, list[float]] = {}
    try:
        times["local"], _ = run_verify(local, 1 + args.repeats)
        times["ray"], pipeline = run_verify(remote, 1 + args.repeats)
        placed = pipeline.executor.placements["verify"]
        print(
            f"ray: verify shards per node, over all {1 + args.repeats} runs: "
            f"{', '.join(str(n) for n in placed.values())}"
        )
    finally:
        cluster.shutdown()

    same = (local_out / "verified.jsonl").read_bytes() == (ray_out / "verified.jsonl").read_bytes()
    for label, pick in (
        ("started (start-up included)", lambda v: v[0]),
        ("warm (actors and workers up)", lambda v: min(v[1:])),
    ):
        t = {k: pick(v) for k, v in times.items()}
        print(f"{label}:")
        print(f"  (a) local executor: {checks / t['local']:>9,.0f} checks/s  ({t['local']:.2f} s)")
        print(f"  (b) ray executor:   {checks / t['ray']:>9,.0f} checks/s  ({t['ray']:.2f} s)")
        print(
            f"  ratio ray/local throughput: {t['local'] / t['ray']:.2f} "
            f"(ray overhead {100 * (t['ray'] / t['local'] - 1):+.0f}% of the local time)"
        )
    print(f"same verified.jsonl: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
