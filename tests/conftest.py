"""Fixtures shared by several test modules."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from llm_server import LlamaServer
from small_run import SMALL_RUN, finish, start

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # ray_verify: the cluster


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """(config file, output dir) of the small real run, made once, uninterrupted, on the local executor."""
    root = tmp_path_factory.mktemp("small-run")
    config = root / "small.yaml"
    config.write_text(json.dumps(SMALL_RUN))  # JSON is YAML
    out = root / "local"
    finish(start(out, config))
    return config, out


@pytest.fixture(scope="session")
def ray_cluster():
    """A Ray cluster on this machine (a head with no CPUs, two worker nodes of 2 CPUs each, see
    bench/ray_verify.py), started once for every module that runs on one (a start takes seconds)."""
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
