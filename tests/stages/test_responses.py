"""Stage responses: K samples per prompt (replayed from the official release); LLM errors dropped;
why each generation stopped kept, from a real model and through the cache; the paper's template."""

import json

from support import config, fixture

from autoif.executors import run_shard
from autoif.jsonl import write_jsonl
from autoif.llm import ResponseCache
from autoif.records import QueryRecord, ResponsesRecord
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
    # The natural template sends each record's `prompt` as it is: here the release's recorded prompts.
    result = run_shard(
        ResponsesStage(), queries, Context(config(tmp_path, "responses.k=5", "responses.template=natural"), llm=backend)
    )
    assert [r.prompt_id for r in result.records] == ["p0", "p1", "p2"]
    assert [[x.text for x in r.responses] for r in result.records] == [r["gpt-answer"][:5] for r in rows]
    assert result.dropped == {"llm_error": 1}
    assert result.counts == {"llm_error": 5}
    assert backend.stats.misses == 20
    # A failed request is not work done: the pipeline will not mark this shard finished.
    assert not result.finished and [(f.tried, f.failed) for f in result.failures] == [(20, 5)]


def test_responses_keep_why_generation_stopped_from_the_real_model_and_the_cache(tmp_path):
    """The embedded SmolLM2, greedy, 16 tokens at most: its answer to "Hi" ends by itself ('stop'),
    a story is cut off ('length', 16 tokens); a rerun from the response cache keeps both."""
    queries = [
        QueryRecord(id="short", instruction_id="i", instruction="x", query="y", prompt="Hi"),
        QueryRecord(
            id="long", instruction_id="i", instruction="x", query="y", prompt="Write a long story about a dragon."
        ),
    ]
    cfg = config(
        tmp_path,
        "responses.k=1",
        "responses.max_tokens=16",
        "responses.temperature=0",
        "responses.template=natural",  # the prompts above are sent as they are
        "llm.device=cpu",
    )
    ctx = Context(cfg)
    try:
        first = run_shard(ResponsesStage(), queries, ctx).records
    finally:
        ctx.close()
    by_id = {r.prompt_id: r.responses[0] for r in first}
    assert by_id["short"].finish_reason == "stop" and by_id["short"].tokens < 16
    assert by_id["long"].finish_reason == "length" and by_id["long"].tokens == 16
    write_jsonl(tmp_path / "responses.jsonl", first)
    line = json.loads((tmp_path / "responses.jsonl").read_text().splitlines()[0])
    assert set(line["responses"][0]) == {"text", "finish_reason", "tokens"}

    ctx = Context(cfg)
    try:
        again = run_shard(ResponsesStage(), queries, ctx)
        assert ctx.llm.stats.hits == 2 and ctx.llm.stats.misses == 0
    finally:
        ctx.close()
    assert again.records == first


def test_paper_template_asks_the_release_prompt_and_trains_on_the_natural_one(tmp_path):
    """`responses.template=paper` sends the official release's prompt form (compared with its own
    recorded prompts) and the cache keys it apart from the natural template, which sends the query
    record's `prompt`, the one training uses."""
    rows = fixture("query_rft.jsonl")[:2]
    queries = []
    for i, r in enumerate(rows):
        query = r["prompt"].split("\n[Query] ", 1)[1]
        queries.append(
            QueryRecord(
                id=f"p{i}",
                instruction_id="i",
                instruction=r["instruction"],
                query=query,
                prompt=f"{query} {r['instruction']}.",
            )
        )
    recordings = {r["prompt"]: r["gpt-answer"] for r in rows}  # the release's prompts
    recordings.update({q.prompt: ["natural answer"] * 2 for q in queries})
    cache = ResponseCache(tmp_path / "cache.sqlite")
    paper = ReplayBackend(recordings)
    paper.cache = cache
    result = run_shard(
        ResponsesStage(), queries, Context(config(tmp_path, "responses.k=2", "responses.template=paper"), llm=paper)
    )
    assert paper.prompts == [r["prompt"] for r in rows]
    assert [[x.text for x in r.responses] for r in result.records] == [r["gpt-answer"][:2] for r in rows]

    natural = ReplayBackend(recordings)
    natural.cache = cache
    result = run_shard(
        ResponsesStage(), queries, Context(config(tmp_path, "responses.k=2", "responses.template=natural"), llm=natural)
    )
    assert natural.prompts == [q.prompt for q in queries] and natural.stats.hits == 0
    assert all(x.text == "natural answer" for r in result.records for x in r.responses)
    cache.close()
    settings = [ResponsesStage().settings(config(tmp_path, f"responses.template={t}")) for t in ("natural", "paper")]
    assert settings[0] != settings[1]  # a change of template redoes the stage


def test_greedy_adds_the_training_prompts_greedy_answer_after_the_samples(tmp_path):
    """`responses.greedy`: after the k samples (asked with the paper template), one more answer to the
    training prompt at temperature 0; the k-sample requests are the ones the run without it sends."""
    rows = fixture("query_rft.jsonl")[:2]
    queries = [
        QueryRecord(
            id=f"p{i}",
            instruction_id="i",
            instruction=r["instruction"],
            query=r["prompt"].split("\n[Query] ", 1)[1],
            prompt=f"natural prompt {i}",
        )
        for i, r in enumerate(rows)
    ]
    recordings = {r["prompt"]: r["gpt-answer"] for r in rows}
    recordings.update({q.prompt: [f"greedy answer {i}"] for i, q in enumerate(queries)})
    backend = ReplayBackend(recordings)
    result = run_shard(
        ResponsesStage(), queries, Context(config(tmp_path, "responses.k=2", "responses.greedy=true"), llm=backend)
    )
    assert [[x.text for x in r.responses] for r in result.records] == [
        r["gpt-answer"][:2] + [f"greedy answer {i}"] for i, r in enumerate(rows)
    ]
    assert backend.prompts == [r["prompt"] for r in rows] + [q.prompt for q in queries]
    assert [(r.n, r.sampling.temperature) for r in backend.requests] == [(2, 0.8)] * 2 + [(1, 0.0)] * 2
    plain = ReplayBackend(recordings)
    run_shard(ResponsesStage(), queries, Context(config(tmp_path, "responses.k=2"), llm=plain))
    assert plain.requests == backend.requests[:2]
    settings = [ResponsesStage().settings(config(tmp_path, f"responses.greedy={g}")) for g in ("false", "true")]
    assert settings[0] != settings[1]  # turning it on redoes the stage (its samples come from the cache)


def test_plain_string_responses_are_still_read():
    """responses.jsonl made elsewhere: a list of strings, each a response whose finish reason is unknown."""
    record = ResponsesRecord.model_validate({"prompt_id": "p", "responses": ["one", "two"]})
    assert [(x.text, x.finish_reason, x.tokens) for x in record.responses] == [("one", None, None), ("two", None, None)]
    assert record.model_dump(mode="json") == {"prompt_id": "p", "responses": [{"text": "one"}, {"text": "two"}]}
