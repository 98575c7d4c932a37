"""Stage score: the LLM judge's relevance scores (replayed from the official release), averaged over
samples, reproducing the official filter."""

from support import config, fixture

from autoif.executors import run_shard
from autoif.prompts import render
from autoif.records import QueryRecord, VerifiedRecord, VerifiedResponse
from autoif.stages.base import Context
from autoif.stages.parsing import parse_score
from autoif.stages.score import ScoreStage, mean_score
from replay import ReplayBackend


def judged_fixture():
    """query_rft_score.jsonl as verified records (one passing response per prompt) + replay."""
    rows = fixture("query_rft_score.jsonl")
    queries = [
        QueryRecord(
            id=f"s{i}",
            instruction_id=f"i{i}",
            instruction=r["instruction"],
            query=r["query"],
            prompt=f"{r['query']}\n{r['instruction']}",
        )
        for i, r in enumerate(rows)
    ]
    records = [
        VerifiedRecord(
            prompt_id=f"s{i}",
            responses=[
                VerifiedResponse(text=r["response"], pass_rate=1.0, outcomes=[True], passed=True),
                VerifiedResponse(
                    text="a failing response, never judged", pass_rate=0.0, outcomes=[False], passed=False
                ),
            ],
        )
        for i, r in enumerate(rows)
    ]
    recordings = {
        render("judge", query=r["query"], instruction=r["instruction"], response=r["response"]): r["gen"] for r in rows
    }
    return rows, queries, records, recordings


def test_score_judges_passing_responses_and_reproduces_the_official_filter(tmp_path):
    rows, queries, records, recordings = judged_fixture()
    backend = ReplayBackend(recordings)
    ctx = Context(config(tmp_path, "score.min_score=8.5"), needs={"queries": queries}, llm=backend)
    result = run_shard(ScoreStage(), records, ctx)
    assert len(backend.prompts) == len(rows)  # the failing responses cost no LLM call
    scores = [r.responses[0].score for r in result.records]
    assert scores == [parse_score(r["gen"][0]) for r in rows]
    assert all(r.responses[1].score is None for r in result.records)
    # The official release keeps mean > 8: the same responses as score >= 8.5 on integer scores.
    kept = {rows[i]["response"] for i, s in enumerate(scores) if s >= 8.5}
    assert kept == {r["response"] for r in fixture("query_score_filter.jsonl")}
    assert result.counts["score_kept"] == len(kept) and result.counts["responses_judged"] == len(rows)


def test_unparsable_judgement_is_recorded(tmp_path):
    rows, queries, records, recordings = judged_fixture()
    first = next(iter(recordings))
    recordings[first] = [recordings[first][0].rsplit("\n", 1)[0]]  # cut before its score line
    ctx = Context(config(tmp_path), needs={"queries": queries}, llm=ReplayBackend(recordings))
    result = run_shard(ScoreStage(), records, ctx)
    assert result.records[0].responses[0].score is None
    assert result.counts["score_unparsable"] == 1 and result.counts["judgement_unparsable"] == 1


def test_score_averages_samples_that_parse():
    gens = [r["gen"][0] for r in fixture("query_rft_score.jsonl")]
    eight = next(g for g in gens if parse_score(g) == 8)
    ten = next(g for g in gens if parse_score(g) == 10)
    assert mean_score([eight, ten]) == (9.0, 0)
    assert mean_score([eight, ten, ten.rsplit("\n", 1)[0]]) == (9.0, 1)
    assert mean_score([eight.rsplit("\n", 1)[0]]) == (None, 1)


def test_scoring_disabled_passes_records_through(tmp_path):
    _, queries, records, _ = judged_fixture()
    ctx = Context(config(tmp_path, "score.enabled=false"), needs={"queries": queries})
    result = run_shard(ScoreStage(), records, ctx)
    assert result.records == records and ctx.llm_stats is None
