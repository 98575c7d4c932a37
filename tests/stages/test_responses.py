"""Stage responses: K samples per prompt (replayed from the official release); LLM errors dropped."""

from support import config, fixture

from autoif.executors import run_shard
from autoif.records import QueryRecord
from autoif.stages.base import Context
from autoif.stages.responses import ResponsesStage
from replay import ReplayBackend


def test_responses_k_samples_and_llm_errors_dropped(tmp_path):
    rows = fixture("query_rft.jsonl")[:3]
    queries = [
        QueryRecord(id=f"p{i}", instruction_id="i", instruction="x", query="y", prompt=r["prompt"])
        for i, r in enumerate(rows)
    ]
    queries.append(
        QueryRecord(
            id="p-unrecorded",
            instruction_id="i",
            instruction="x",
            query="y",
            prompt="A prompt the replay has no answer for",
        )
    )
    backend = ReplayBackend({r["prompt"]: r["gpt-answer"] for r in rows})
    result = run_shard(ResponsesStage(), queries, Context(config(tmp_path, "responses.k=5"), llm=backend))
    assert [r.prompt_id for r in result.records] == ["p0", "p1", "p2"]
    assert [r.responses for r in result.records] == [r["gpt-answer"][:5] for r in rows]
    assert result.dropped == {"no_response": 1}
    assert result.counts == {"llm_error": 5}
    assert backend.stats.misses == 20
