"""The `ray` executor on a real Ray cluster started here: a head and two worker nodes, CPU only.

Each worker node is a raylet of its own (as on separate machines), with 2 logical CPUs: an
engine actor (the embedded SmolLM2 through the local backend) takes one, sandbox actors the rest.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from autoif.errors import AutoifError, MissingDependency
from autoif.records import Instruction
from autoif.stages import load_stage
from small_run import OUTPUTS, cache_rows, finish, kill_during_responses, start

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from ray_verify import run_verify, verify_config, write_verify_inputs  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def verify_reference(tmp_path_factory) -> tuple[Path, int]:
    """(the output directory, prompts) of the local executor's verify stage on inputs of 100,000 checks:
    the outcomes every Ray run of the same inputs must give, computed once for the tests below."""
    out = tmp_path_factory.mktemp("verify") / "local"
    prompts, checks = write_verify_inputs(out, 100_000)
    assert checks >= 100_000
    run_verify(verify_config(out, "local", "sandbox.workers=2"))
    return out, prompts


def _ray_args(cluster) -> list[str]:
    return [
        "--executor",
        "ray",
        "--set",
        f"executor.ray_address={cluster.address}",
        "--set",
        "executor.cpus_per_sandbox=1",
    ]


def _settled_cache_rows(out: Path, quiet_s: float = 3.0, limit_s: float = 120.0) -> int:
    """Cache rows once nothing writes any more (the killed driver's actors are stopped by Ray)."""
    deadline = time.monotonic() + limit_s
    rows, since = cache_rows(out), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cache_rows(out)
        if now != rows:
            rows, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return rows


def test_small_run_on_the_cluster_equals_the_local_run_and_resumes(small_run, ray_cluster):
    """Killed in stage 2 on the cluster and rerun: the local executor's files, no finished sample redone."""
    config, local = small_run
    out = local.parent / "ray"
    # Shards of 2 records here (the local run's are of 4): the stage the kill cuts off has shards left
    # for both nodes' engines, and the files must not depend on how the records were sharded.
    args = [*_ray_args(ray_cluster), "--set", "executor.shard_size=2"]
    kill_during_responses(start(out, config, *args), out)
    rows_at_kill = _settled_cache_rows(out)
    log = finish(start(out, config, *args))

    for name in OUTPUTS:
        assert (out / name).read_bytes() == (local / name).read_bytes(), name
    funnel_local = json.loads((local / "funnel.json").read_text())
    funnel_ray = json.loads((out / "funnel.json").read_text())
    for stage, report in funnel_local["stages"].items():
        for key in ("in", "out", "dropped", "counts"):
            assert funnel_ray["stages"][stage][key] == report[key], (stage, key)
    generated = funnel_local["llm"]["misses"]
    assert cache_rows(out) == cache_rows(local) == generated
    assert 0 < rows_at_kill < generated and funnel_ray["llm"]["misses"] == generated - rows_at_kill
    # The rerun's LLM shards ran on engines on both worker nodes (one engine per node).
    nodes = set()
    for _stage, where in re.findall(r"(responses|score): \d+ shard\(s\) on \d+ node\(s\) \(([^)]*)\)", log):
        nodes.update(part.split(":")[0].strip() for part in where.split(","))
    assert len(nodes) == 2, log[-3000:]


def test_verify_of_100000_checks_spreads_over_the_workers(ray_cluster, verify_reference, tmp_path):
    local_out, prompts = verify_reference
    ray_out = tmp_path / "ray"
    write_verify_inputs(ray_out, 100_000)
    # Twice with the same actors: the second run finds all four up (2 per node), as verify does in a
    # real run, where crossval started them; the first may end before the last one has started.
    _, pipeline = run_verify(
        verify_config(ray_out, "ray", f"executor.ray_address={ray_cluster.address}", "executor.cpus_per_sandbox=1"),
        times=2,
    )
    placed = pipeline.executor.placements["verify"]
    shards = -(-prompts // pipeline.config.executor.shard_size)
    assert sum(placed.values()) == 2 * shards
    assert len(placed) == 2 and min(placed.values()) >= shards // 4, placed  # both nodes did a real share
    assert (ray_out / "verified.jsonl").read_bytes() == (local_out / "verified.jsonl").read_bytes()


def test_an_actor_killed_mid_stage_is_restarted_and_its_shards_redone(ray_cluster, verify_reference, tmp_path):
    """SIGKILL one sandbox actor's process while verify runs: Ray restarts it, its shards are retried.
    (19 shards on 4 actors: the kill, once 2 are done, comes in the first of about five rounds.)"""
    local_out, prompts = verify_reference
    ray_out = tmp_path / "ray"
    write_verify_inputs(ray_out, 100_000)
    killed: list[tuple[int, int]] = []

    def kill_one_actor_once_shards_are_done() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            done = len(list((ray_out / ".work" / "verify").glob("*.done")))
            pids = subprocess.run(["pgrep", "-f", "^ray::ShardWorker"], capture_output=True, text=True).stdout.split()
            if done >= 2 and pids:
                os.kill(int(pids[0]), signal.SIGKILL)
                killed.append((int(pids[0]), done))
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_actor_once_shards_are_done)
    killer.start()
    _, pipeline = run_verify(
        verify_config(ray_out, "ray", f"executor.ray_address={ray_cluster.address}", "executor.cpus_per_sandbox=1")
    )
    killer.join()
    shards = -(-prompts // pipeline.config.executor.shard_size)
    assert killed and killed[0][1] < shards, "the stage ended before an actor could be killed"
    assert sum(pipeline.executor.placements["verify"].values()) == shards
    assert (ray_out / "verified.jsonl").read_bytes() == (local_out / "verified.jsonl").read_bytes()


def test_the_cluster_is_found_through_ray_address(ray_cluster, tmp_path, monkeypatch):
    """`autoif run --executor ray` with RAY_ADDRESS set and no executor.ray_address, as the docs show."""
    write_verify_inputs(tmp_path, 1_000)
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    _, pipeline = run_verify(verify_config(tmp_path, "ray", "executor.cpus_per_sandbox=1"))
    assert pipeline.config.executor.ray_address is None
    assert sum(pipeline.executor.placements["verify"].values()) == 1
    assert (tmp_path / "verified.jsonl").read_text().count("\n") == 82  # every prompt


def _pipeline(tmp_path, address, *overrides):
    from autoif.pipeline import Pipeline

    return Pipeline(verify_config(tmp_path, "ray", f"executor.ray_address={address}", *overrides))


def test_a_sandbox_actor_larger_than_any_node_is_a_one_line_error(ray_cluster, tmp_path):
    write_verify_inputs(tmp_path, 100)
    pipeline = _pipeline(
        tmp_path, ray_cluster.address, "executor.cpus_per_sandbox=3", "executor.actor_start_timeout_s=3"
    )
    with pytest.raises(
        AutoifError, match=r"^ray: no sandbox actor \(3 CPU\(s\) each\) found a place on the cluster in 3s"
    ):
        pipeline.run(only="verify")  # 4 CPUs free in all, but 2 per node: the actor waits, then is given up


def test_no_cpu_left_for_a_sandbox_is_a_one_line_error(ray_cluster, tmp_path):
    executor = _pipeline(tmp_path, ray_cluster.address, "executor.cpus_per_engine=2").executor
    try:
        executor.prepare(load_stage("augment"))  # two engines, one per node, each holding both of its CPUs
        with pytest.raises(AutoifError, match=r"^ray: no room for a sandbox actor of 4 CPUs \(0 CPUs free"):
            executor.prepare(load_stage("verify"))
    finally:
        executor.close()


def test_an_actor_that_cannot_start_raises_its_own_error(ray_cluster, tmp_path):
    write_verify_inputs(tmp_path, 100)
    pipeline = _pipeline(tmp_path, ray_cluster.address, "executor.cpus_per_sandbox=1", "sandbox.memory_mb=64")
    with pytest.raises(AutoifError, match=r"^sandbox.memory_mb=64 is too small: .*use at least \d+$"):
        pipeline.run(only="verify")


def test_an_engine_needing_gpus_on_a_cpu_cluster_is_a_one_line_error(ray_cluster, tmp_path):
    from autoif.stages.base import Context

    pipeline = _pipeline(tmp_path, ray_cluster.address, "executor.gpus_per_engine=1")
    ctx = Context(pipeline.config)
    try:
        with pytest.raises(AutoifError, match=r"no node has 1 GPU\(s\) and 1 CPU\(s\) for an LLM engine"):
            list(pipeline.executor.run(load_stage("augment"), [[Instruction(id="s", text="t", source="seed")]], ctx))
    finally:
        pipeline.executor.close()


def test_a_stage_failing_on_an_actor_raises_its_own_error(ray_cluster, tmp_path):
    """What a stage raises on a worker reaches the driver as itself (an AutoifError stays one line)."""
    import cloudpickle

    from autoif.stages.base import Context, Stage

    class Failing(Stage):
        name, output, input, output_type, uses_sandbox = "failing", "failing.jsonl", None, Instruction, True

        def run(self, records, ctx):
            raise AutoifError(f"failing: {len(records)} record(s) refused on purpose")

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this module
    pipeline = _pipeline(tmp_path, ray_cluster.address, "executor.cpus_per_sandbox=1")
    try:
        with pytest.raises(AutoifError, match=r"^failing: 1 record\(s\) refused on purpose$"):
            list(
                pipeline.executor.run(
                    Failing(), [[Instruction(id="a", text="t", source="seed")]], Context(pipeline.config)
                )
            )
    finally:
        pipeline.executor.close()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_unreachable_cluster_is_a_one_line_error(tmp_path):
    pipeline = _pipeline(tmp_path, "127.0.0.1:9")
    with pytest.raises(AutoifError, match=r"^ray: cannot connect to 127.0.0.1:9: "):
        pipeline.executor.prepare(load_stage("verify"))


def test_ray_missing_is_a_one_line_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    pipeline = _pipeline(tmp_path, "auto")
    with pytest.raises(MissingDependency, match=r"pip install 'autoif\[ray\]'"):
        pipeline.executor.prepare(load_stage("verify"))
