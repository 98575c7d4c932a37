"""--emit-batch / --ingest-batch: the requests written in the OpenAI batch format, answered by a
real server as `vllm run-batch` would, read back into the cache; the run then equals a synchronous one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from autoif.cli import cli
from autoif.config import config_from_tree
from autoif.llm import ResponseCache
from autoif.llm.batchfile import Emitter, ingest
from autoif.pipeline import Pipeline

sys.path.insert(0, str(Path(__file__).parent))
from batch_server import run_batch  # noqa: E402
from test_cost import AnswerStage, NumbersStage  # noqa: E402


def config(out: Path, base_url: str):
    return config_from_tree(
        {
            "paths": {"out": str(out)},
            "executor": {"shard_size": 2},
            "llm": {"backend": "openai", "base_url": base_url, "model": "smollm2", "max_concurrency": 2},
        }
    )


def pipeline(cfg) -> Pipeline:
    return Pipeline(cfg, stages=[NumbersStage(), AnswerStage()])


@pytest.mark.slow
def test_emit_run_batch_ingest_equals_the_synchronous_run(tmp_path, llama_server):
    sync = pipeline(config(tmp_path / "sync", llama_server.base_url)).run()
    assert sync["stages"]["responses"]["llm"]["misses"] == 6

    cfg = config(tmp_path / "out", llama_server.base_url)
    emitting = pipeline(cfg)
    emitting.emitter = Emitter(tmp_path / "batch")
    stopped = emitting.run()
    requests = tmp_path / "batch" / "responses.jsonl"
    assert stopped["stopped"] == {"reason": "emit_batch", "stage": "responses", "requests": 6, "files": [str(requests)]}
    assert not (tmp_path / "out" / "answers.jsonl").exists()
    assert not list((tmp_path / "out" / ".work" / "responses").glob("*.done"))  # no shard is done
    lines = [json.loads(raw) for raw in requests.read_text().splitlines()]
    assert {tuple(line) for line in lines} == {("custom_id", "method", "url", "body")}
    assert {line["url"] for line in lines} == {"/v1/chat/completions"} and len(
        {line["custom_id"] for line in lines}
    ) == 6

    results = tmp_path / "results.jsonl"
    run_batch(requests, results, llama_server.url)
    cache = ResponseCache(tmp_path / "out" / "llm_cache.sqlite")
    assert ingest([results], cache) == {"ingested": 6, "failed": 0}
    cache.close()
    # Nothing is asked of the server now: the endpoint is a closed port.
    done = pipeline(config(tmp_path / "out", "http://127.0.0.1:9/v1")).run()
    assert "stopped" not in done
    assert done["stages"]["responses"]["llm"]["hits"] == 6 and done["stages"]["responses"]["llm"]["misses"] == 0
    assert (tmp_path / "out" / "answers.jsonl").read_text() == (tmp_path / "sync" / "answers.jsonl").read_text()


def test_bad_result_file_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "a", "response": {"status_code": 200, "body": {}}}\nnot json\n')
    result = CliRunner().invoke(cli, ["run", "-o", str(tmp_path / "out"), "--ingest-batch", str(bad)])
    assert result.exit_code == 2 and "bad.jsonl line 2: not JSON" in result.output and result.output.count("\n") == 1
