"""autoif's vLLM paths against the stand-in `vllm` package (tests/stand_ins/vllm): vLLM needs a GPU.

The stand-in takes what vLLM 0.31.0 takes (checked here against the signatures extracted from that
wheel, so it cannot drift from the pin) and keeps vLLM's start-up check that a GPU is free: a second
engine on a device in use, or an engine started while this process still holds a model, fails with
vLLM's own error. The backend, two online-DPO iterations with the vllm sampler and the sampler's
sizing run against it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autoif.llm import Job, Request

STAND_INS = Path(__file__).parent / "stand_ins"
SIGNATURES = json.loads((STAND_INS / "vllm_signatures.json").read_text())
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def vllm(monkeypatch, tmp_path):
    """The stand-in, importable as `vllm` for this test only, with a device table of its own."""
    monkeypatch.syspath_prepend(str(STAND_INS))
    monkeypatch.setenv("VLLM_STAND_IN_TABLE", str(tmp_path / "devices"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    import vllm

    yield vllm
    for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")]:
        del sys.modules[name]


def _upstream(key: str) -> dict[str, dict]:
    return {p["name"]: p for p in SIGNATURES[key]}


def _same_default(upstream: str | None, ours) -> bool:
    if upstream is None:
        return ours is inspect.Parameter.empty or ours is dataclasses.MISSING
    return ast.literal_eval(upstream) == ours


KINDS = {
    "positional": inspect.Parameter.POSITIONAL_OR_KEYWORD,
    "keyword": inspect.Parameter.KEYWORD_ONLY,
    "var_keyword": inspect.Parameter.VAR_KEYWORD,
}


@pytest.mark.parametrize(
    "key", ["LLM.__init__", "LLM.generate", "LLM.get_tokenizer", "RequestOutput.__init__"], ids=lambda k: k
)
def test_stand_in_methods_take_what_the_pinned_vllm_takes(vllm, key):
    cls, method = key.split(".")
    upstream = _upstream(key)
    ours = list(inspect.signature(getattr(getattr(vllm, cls), method)).parameters.values())[1:]  # not self
    for param in ours:
        assert param.name in upstream, f"{key}: vLLM {SIGNATURES['version']} has no parameter {param.name}"
        theirs = upstream[param.name]
        assert param.kind == KINDS[theirs["kind"]], (key, param.name)
        assert _same_default(theirs["default"], param.default), (key, param.name, theirs["default"])
    required = [n for n, p in upstream.items() if p["default"] is None and p["kind"] in ("positional", "keyword")]
    assert [p.name for p in ours if p.name in required] == required, key  # the same required ones, in order


@pytest.mark.parametrize("key", ["SamplingParams.fields", "CompletionOutput.fields"], ids=lambda k: k)
def test_stand_in_records_have_the_pinned_vllm_fields(vllm, key):
    upstream = _upstream(key)
    ours = dataclasses.fields(getattr(vllm, key.split(".")[0]))
    for f in ours:
        assert f.name in upstream, f"{key}: vLLM {SIGNATURES['version']} has no field {f.name}"
        assert _same_default(upstream[f.name]["default"], f.default), (key, f.name)
    required = [n for n, p in upstream.items() if p["default"] is None]
    assert [f.name for f in ours if f.default is dataclasses.MISSING] == required  # positional order


def test_stand_in_is_the_pinned_version(vllm):
    """The signatures were extracted from the version the `vllm` extra allows last, which the stand-in is."""
    extra = re.search(r'^vllm = \["([^"]+)"\]', (REPO / "pyproject.toml").read_text(), re.M)
    assert extra and vllm.__version__ == SIGNATURES["version"] and f"<={SIGNATURES['version']}" in extra[1]
    engine_args = _upstream("EngineArgs.fields")
    assert all(name in engine_args for name in vllm.ENGINE_ARGS)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from tiny_models import tiny_causal_lm

    return tiny_causal_lm(tmp_path_factory.mktemp("vllm-tiny") / "model")


def test_the_backend_samples_through_vllm_with_per_sample_seeds(vllm, tiny):
    """Sample i of a seeded request is seeded seed + i however the samples are asked for: asking for
    samples 1 and 2 alone gives what they were in a fresh run of all four."""
    from autoif.llm.vllm_backend import VLLMBackend

    backend = VLLMBackend(str(tiny), max_model_len=256)
    request = Request.user("Say hi.", n=4, temperature=1.0, max_tokens=6, seed=7)
    try:
        whole = [c for _, _, c in _collect(backend, [Job(request, [0, 1, 2, 3])])]
        part = [c for _, _, c in _collect(backend, [Job(request, [1, 2])])]
    finally:
        backend.close()
    assert len(whole) == 4 and all(c.finish_reason in ("stop", "length") for c in whole)
    assert [str(c) for c in part] == [str(c) for c in whole[1:3]]
    assert len({str(c) for c in whole}) > 1  # different seeds, different samples


def _collect(backend, jobs):
    got = []
    backend._run(jobs, lambda j, s, c: got.append((j, s, c)))
    return sorted(got, key=lambda t: (t[0], t[1]))


def test_a_second_engine_on_a_device_in_use_fails_as_vllm_does(vllm, tiny, monkeypatch):
    from autoif.llm.vllm_backend import VLLMBackend

    request = [Job(Request.user("Hi", max_tokens=4), [0])]
    first, second = VLLMBackend(str(tiny)), VLLMBackend(str(tiny))
    _collect(first, request)  # its engine holds 0.9 of GPU 0
    with pytest.raises(ValueError, match=r"^Free memory on device .*:0 \(.* GiB\) on startup is less than desired"):
        _collect(second, request)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # as Ray gives an actor its own GPU
    assert _collect(VLLMBackend(str(tiny)), request)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    first.close()  # vLLM frees the device once the engine is collected
    assert _collect(second, request)
    second.close()


@pytest.mark.slow
def test_online_dpo_samples_with_vllm_on_a_device_its_trainer_let_go_of(tiny, tmp_path):
    """Two iterations with the vllm sampler on a 64 MiB 'GPU': the sampler of iteration 2 finds 0.9 of
    it free only if iteration 1's trainer, policy and reference model (13 MB each) were let go of."""
    from test_train import FUNCTIONS
    from tiny_models import with_long_eos, write_training_data

    model = with_long_eos(tiny, tmp_path / "tiny-that-ends")
    run_dir = write_training_data(tmp_path / "run", FUNCTIONS)
    out = tmp_path / "online"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(STAND_INS), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "VLLM_STAND_IN_TABLE": str(tmp_path / "devices"),
        "VLLM_STAND_IN_GPU_GIB": str(64 / 1024),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    argv = [sys.executable, "-m", "autoif.cli", "train", "online-dpo", "--model", str(model), "--data", str(run_dir)]
    argv += ["--output", str(out)]
    sets = ["sampler=vllm", "iterations=2", "final_eval=false", "samples_per_prompt=6", "max_new_tokens=12"]
    sets += ["temperature=1.0", "max_steps=1", "max_length=64", "global_batch_size=2", "per_device_batch_size=2"]
    proc = subprocess.run([*argv, *(a for s in sets for a in ("--set", s))], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in (out / "online_dpo_log.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in log] == [0, 1] and all(e["samples"] == 24 for e in log), json.dumps(log)


@pytest.mark.slow
def test_ray_engines_start_vllm_each_on_a_gpu_of_its_own(tiny, tmp_path, monkeypatch):
    """A node with 2 GPUs (as Ray counts them) and llm.tensor_parallel_size=1: two engine actors, each
    given one GPU by Ray (CUDA_VISIBLE_DEVICES), each starting vLLM on it; all shards answered."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from autoif.config import load_config
    from autoif.executors.ray import RayExecutor
    from autoif.records import Instruction
    from autoif.stages import load_stage
    from autoif.stages.base import Context

    table = tmp_path / "devices"
    # Ray's workers inherit the raylet's environment: the stand-in is `vllm` in the actors too.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(STAND_INS), str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    )
    monkeypatch.setenv("VLLM_STAND_IN_TABLE", str(table))
    store = 256 * 1024**2  # small object stores: /dev/shm is small in containers
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": store, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=2, num_gpus=2, object_store_memory=store)
    cluster.wait_for_nodes()
    config = load_config(
        None,
        [
            f"paths.out={tmp_path / 'out'}",
            "executor.kind=ray",
            f"executor.ray_address={cluster.address}",
            "llm.backend=vllm",
            f"llm.model={tiny}",
            "llm.max_model_len=256",
            "llm.cache=false",
        ],
    )
    executor = RayExecutor(config)
    shards = [[Instruction(id=f"s{i}", text="Answer in lowercase.", source="seed")] for i in range(4)]
    try:
        done = list(executor.run(load_stage("augment"), shards, Context(config)))
        devices = sorted(json.loads(p.read_text())["device"].rsplit(":", 1)[1] for p in table.glob("*.json"))
    finally:
        executor.close()
        cluster.shutdown()
    assert sorted(i for i, _ in done) == [0, 1, 2, 3]
    assert devices == ["0", "1"]  # two engines, one per GPU
