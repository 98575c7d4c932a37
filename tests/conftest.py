"""Fixtures shared by several test modules."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# One torch thread in the tests and in every process they start (CLI runs, Ray actors, trainers),
# set before torch is imported. Torch's default, one thread per core, makes each op wait for both
# cores; on a shared 2-core machine one is nearly always busy, and decoding 96 tokens of SmolLM2
# took 73 s that way against 11 s on one thread (same tokens; `make test` beside other work).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from filelock import FileLock  # noqa: E402

from llm_server import LlamaServer
from small_run import finish, start, write_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # ray_verify: the cluster


# `make test` runs the suite on two pytest-xdist workers, a module at a time (--dist loadfile
# --no-loadscope-reorder: modules in the order below). The longest modules go first, each to a worker:
# started last, one would run alone on one core at the end. First the two that run the small real run
# again (test_run's killed and resumed run makes its own while test_ray's worker makes the shared one)
# and the trainers' (3 minutes), then the modules that use a fixture costing a minute or more (a real
# run, a Ray cluster, a model server), then the rest in collection order.
LONGEST_MODULES = ("test_run.py", "test_ray.py", "test_train.py")
COSTLY_FIXTURES = {"small_run", "ray_cluster", "llama_server"}


def pytest_collection_modifyitems(config, items):
    costly = {item.path for item in items if COSTLY_FIXTURES & set(item.fixturenames)}

    def rank(item) -> tuple[int, int]:
        if item.path.name in LONGEST_MODULES:
            return 0, LONGEST_MODULES.index(item.path.name)
        return (1 if item.path in costly else 2), 0

    items.sort(key=rank)  # stable: each module's tests stay in order


def shared_tmp_dir(tmp_path_factory, name: str) -> Path:
    """A directory every xdist worker of this session sees (each has a base temp of its own)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """(config file, output dir) of the small real run, made once, uninterrupted, on the local executor."""
    root = shared_tmp_dir(tmp_path_factory, "small-run")
    root.mkdir(exist_ok=True)
    config, out = root / "small.yaml", root / "local"
    # Made once for both xdist workers: the second waits for the first's run, then reads it.
    with FileLock(root / ".lock"):
        if not (root / "done").exists():
            finish(start(out, write_config(config)))
            (root / "done").touch()
    return config, out


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray cluster on this machine (a head with no CPUs, two worker nodes of 2 CPUs each, see
    bench/ray_verify.py), for one module: a start takes seconds, and an idle cluster's daemons take
    5% of a core, which the other xdist worker's modules would lose for the rest of the session."""
    pytest.importorskip("ray")
    from ray_verify import start_cluster

    cluster = start_cluster(nodes=2, cpus_per_node=2)
    yield cluster
    cluster.shutdown()


@pytest.fixture
def offline_nltk(tmp_path, monkeypatch):
    """A fresh autoif cache (punkt_tab written anew), no NLTK data but ours, and nltk.download fails
    the test if anything calls it outside autoif's import guard."""
    import nltk

    monkeypatch.setenv("AUTOIF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(nltk.data, "path", [])

    def no_download(*args, **kwargs):
        raise AssertionError(f"nltk.download{args} was called")

    monkeypatch.setattr(nltk, "download", no_download)


@pytest.fixture(scope="session")
def llama_server():
    """A real OpenAI-compatible server (llama_cpp.server with SmolLM2, tests/llm_server.py)."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama_cpp is not installed (pip install 'autoif[llamacpp]'; `make test` installs it)")
    with LlamaServer() as server:
        yield server
