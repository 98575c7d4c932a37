"""Stage 2's logic: queries, responses, verify, score, export, and the export copies.

LLM calls replay recorded real outputs (the official AutoIF release's fixtures) through a replay
backend; functions run in the real sandbox, and the pass rates they give are checked against an
independent execution of the same functions in a plain subprocess.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoif.config import load_config
from autoif.errors import AutoifError
from autoif.executors import run_shard
from autoif.jsonl import read_jsonl, write_jsonl
from autoif.parsing import parse_score
from autoif.pipeline import Pipeline
from autoif.prompts import render
from autoif.records import (
    CaseResult,
    CrossvalRecord,
    DPORecord,
    FunctionResult,
    QueryRecord,
    ResponsesRecord,
    SFTRecord,
    VerifiedRecord,
    VerifiedResponse,
)
from autoif.stages.base import Context
from autoif.stages.export import pair_up
from autoif.stages.queries import QueriesStage, closed, join_templates
from autoif.stages.responses import ResponsesStage
from autoif.stages.score import ScoreStage, mean_score
from replay import ReplayBackend

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "autoif-official"
if not FIXTURES.is_dir():
    pytest.skip(f"AutoIF fixtures not found at {FIXTURES}", allow_module_level=True)


def fixture(name):
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def config(tmp_path, *sets):
    # Scoring is on as with any real judge (auto switches it off for the embedded model only).
    return load_config(None, [f"paths.out={tmp_path}", "sandbox.workers=2", "score.enabled=on", *sets])


# Executes every function on every response in a fresh process, with no sandbox code involved:
# the reference the sandbox's outcomes are compared with. A function "passes" only by returning True.
INDEPENDENT = r"""
import json, signal, sys

def timeout(*_):
    raise TimeoutError

signal.signal(signal.SIGALRM, timeout)
jobs = json.load(open(sys.argv[1]))
results = []
for functions, responses in jobs:
    grid = []
    for response in responses:
        values = []
        for source in functions:
            namespace = {}
            try:
                signal.alarm(5)
                exec(source, namespace)
                value = namespace["evaluate"](response)
                values.append(value if isinstance(value, bool) else None)
            except BaseException:
                values.append(None)
            finally:
                signal.alarm(0)
        grid.append(values)
    results.append(grid)
json.dump(results, open(sys.argv[2], "w"))
"""


def execute_independently(tmp_path, jobs):
    """For each (functions, responses) job, each response's per-function values (bool or None)."""
    src, dst = tmp_path / "jobs.json", tmp_path / "values.json"
    src.write_text(json.dumps(jobs))
    subprocess.run(
        [sys.executable, "-c", INDEPENDENT, str(src), str(dst)], check=True, timeout=300, capture_output=True
    )
    return json.loads(dst.read_text())


def rate(values):
    return sum(v is True for v in values) / len(values)


# ---------------------------------------------------------------------------- fixture records
def split_official_prompt(prompt):
    """The official release's prompt form: '...instruction.\n[instruction] I\n[Query] Q'."""
    head, query = prompt.split("\n[Query] ", 1)
    return head.split("[instruction] ", 1)[1], query


def verification_set():
    """Instructions with their functions, prompts and responses from three fixture files:
    query_rft (functions + 16 responses per prompt), dpo_query_w_funcs (a function returning the
    strings 'true'/'false'), back_trans (functions with their labelled test cases as responses)."""
    instructions: dict[str, CrossvalRecord] = {}
    queries, responses = [], []

    def add(instruction_id, text, funcs, cases, prompt_id, query, prompt, answers):
        instructions.setdefault(
            instruction_id,
            CrossvalRecord(
                instruction_id=instruction_id,
                instruction=text,
                functions=[FunctionResult(source=s, accuracy=a) for s, a in funcs],
                cases=[CaseResult(input=i, output=o, accuracy=1.0) for i, o in cases],
            ),
        )
        queries.append(
            QueryRecord(id=prompt_id, instruction_id=instruction_id, instruction=text, query=query, prompt=prompt)
        )
        responses.append(ResponsesRecord(prompt_id=prompt_id, responses=answers))

    ids: dict[str, str] = {}
    for n, r in enumerate(fixture("query_rft.jsonl")):
        text, query = split_official_prompt(r["prompt"])
        iid = ids.setdefault(text, f"rft-{len(ids)}")
        add(iid, text, r["eval_func"], r["cases"], f"rft-q{n}", query, r["prompt"], r["gpt-answer"])
    prime_instruction = "Write the response as a sequential list of prime numbers."
    for n, r in enumerate(fixture("dpo_query_w_funcs.jsonl")):
        query = r["prompt"][len(prime_instruction) :].strip()
        # Responses that reach the function's `return 'true'` as well as the recorded ones.
        add(
            "dpo-primes",
            prime_instruction,
            r["eval_func"][:1],
            [],
            f"dpo-q{n}",
            query,
            r["prompt"],
            r["gpt-answer"] + ["2, 3, 5, 7, 11", "4, 6, 8"],
        )
    for n, r in enumerate(fixture("back_trans.jsonl")):
        add(
            f"bt-{n}",
            r["instruction"],
            r["eval_func"],
            r["cases"],
            f"bt-q{n}",
            "(the test cases)",
            r["instruction"],
            [c[0] for c in r["cases"]],
        )
    return list(instructions.values()), queries, responses


# ------------------------------------------------------------------------------------ queries
def instruction_records(n):
    return [
        CrossvalRecord(
            instruction_id=f"i{i}", instruction=f"Answer in exactly {i + 2} sentences", functions=[], cases=[]
        )
        for i in range(n)
    ]


def test_queries_are_seeded_per_instruction_and_use_every_template(tmp_path):
    instructions = instruction_records(30)
    cfg = config(tmp_path, "queries.k=4")
    stage = QueriesStage()
    whole = run_shard(stage, instructions, Context(cfg)).records
    # Other shard boundaries and order give the same queries per instruction.
    parts = [run_shard(stage, instructions[i : i + 7], Context(cfg)).records for i in range(0, len(instructions), 7)]
    assert [r.model_dump() for part in parts for r in part] == [r.model_dump() for r in whole]
    reversed_run = run_shard(stage, instructions[::-1], Context(cfg)).records
    assert sorted(r.id for r in reversed_run) == sorted(r.id for r in whole)

    assert len(whole) == 4 * len(instructions)
    for record in instructions:
        mine = [r for r in whole if r.instruction_id == record.instruction_id]
        assert len({r.query for r in mine}) == 4
        for r in mine:
            assert closed(r.instruction) in r.prompt and closed(r.query) in r.prompt
            assert r.id.startswith("q-") and r.instruction == record.instruction
    used = {
        next(
            i
            for i, t in enumerate(join_templates())
            if r.prompt == t.format(instruction=closed(r.instruction), query=closed(r.query))
        )
        for r in whole
    }
    assert used == set(range(len(join_templates())))
    first = [r.prompt.index(closed(r.instruction)) < r.prompt.index(closed(r.query)) for r in whole]
    assert any(first) and not all(first)  # instruction before the query in some prompts, after in others

    other_seed = run_shard(stage, instructions, Context(config(tmp_path, "queries.k=4", "seed=7"))).records
    assert [r.query for r in other_seed] != [r.query for r in whole]


def test_queries_k_larger_than_the_pool(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(json.dumps({"prompt": f"Question number {i} about cooking rice?"}) + "\n" for i in range(3))
    )
    result = run_shard(
        QueriesStage(), instruction_records(2), Context(config(tmp_path, f"queries.source={pool}", "queries.k=5"))
    )
    assert len(result.records) == 6 and result.counts == {"pool_smaller_than_k": 2}


# ---------------------------------------------------------------------------------- responses
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
    result = run_shard(ResponsesStage(), queries, Context(config(tmp_path, "responses.k=5"), _llm=backend))
    assert [r.prompt_id for r in result.records] == ["p0", "p1", "p2"]
    assert [r.responses for r in result.records] == [r["gpt-answer"][:5] for r in rows]
    assert result.dropped == {"no_response": 1}
    assert result.counts == {"llm_error": 5}
    assert backend.stats.misses == 20


# ------------------------------------------------------------------------------------- verify
@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    """The fixtures through `--only verify`, and the same functions executed independently."""
    out = tmp_path_factory.mktemp("verify")
    instructions, queries, responses = verification_set()
    write_jsonl(out / "crossval.jsonl", instructions)
    write_jsonl(out / "queries.jsonl", queries)
    write_jsonl(out / "responses.jsonl", responses)
    funnel = Pipeline(config(out)).run(only="verify")
    functions = {r.instruction_id: [f.source for f in r.functions] for r in instructions}
    instruction_of = {q.id: q.instruction_id for q in queries}
    reference = execute_independently(out, [[functions[instruction_of[r.prompt_id]], r.responses] for r in responses])
    return {
        "funnel": funnel,
        "records": read_jsonl(out / "verified.jsonl", VerifiedRecord),
        "responses": responses,
        "reference": reference,
    }


def test_verify_pass_rates_match_independent_execution(verified):
    records, reference = verified["records"], verified["reference"]
    assert [r.prompt_id for r in records] == [r.prompt_id for r in verified["responses"]]
    for record, source, grid in zip(records, verified["responses"], reference):
        assert [r.text for r in record.responses] == source.responses  # every response kept, in order
        for response, values in zip(record.responses, grid):
            assert response.outcomes == values
            assert response.pass_rate == pytest.approx(rate(values))
            assert response.passed == (rate(values) > 0.5)  # the paper's rule, the default preset
    rates = [r.pass_rate for rec in records for r in rec.responses]
    assert 0 < sum(r == 1.0 for r in rates) < len(rates) and any(0 < r < 1 for r in rates)


def test_verify_counts_string_returning_functions_as_failures(verified):
    primes = [r for r in verified["records"] if r.prompt_id.startswith("dpo-")]
    reached_true = [resp for rec in primes for resp in rec.responses if resp.text == "2, 3, 5, 7, 11"]
    assert reached_true and all(r.outcomes == [None] and r.pass_rate == 0 and not r.passed for r in reached_true)
    assert all(resp.pass_rate == 0 for rec in primes for resp in rec.responses)
    counts = verified["funnel"]["stages"]["verify"]["counts"]
    assert counts["function_outcome:not_bool"] >= len(reached_true) * 2  # 'true' and 'false' alike
    n = sum(len(r.responses) for r in verified["responses"])
    assert counts["responses_passed"] + counts["responses_failed"] == n


def test_verify_official_preset_keeps_any_passing_function(tmp_path):
    instructions, queries, responses = verification_set()
    write_jsonl(tmp_path / "crossval.jsonl", instructions)
    write_jsonl(tmp_path / "queries.jsonl", queries)
    write_jsonl(tmp_path / "responses.jsonl", responses[-5:])
    Pipeline(config(tmp_path, "verify.preset=official")).run(only="verify")
    for record in read_jsonl(tmp_path / "verified.jsonl", VerifiedRecord):
        assert all(r.passed == (r.pass_rate > 0) for r in record.responses)


# -------------------------------------------------------------------------------------- score
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
    ctx = Context(config(tmp_path, "score.min_score=8.5"), needs={"queries": queries}, _llm=backend)
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
    ctx = Context(config(tmp_path), needs={"queries": queries}, _llm=ReplayBackend(recordings))
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
    assert result.records == records and ctx._llm is None


# ------------------------------------------------------------------------------------- export
def response(text, pass_rate, score=None):
    return VerifiedResponse(text=text, pass_rate=pass_rate, outcomes=[], passed=pass_rate > 0.5, score=score)


@pytest.fixture()
def export_run(tmp_path):
    """Scored records with designed pass rates and scores, the back_trans instructions, one export."""
    instructions = [
        CrossvalRecord(
            instruction_id=f"bt-{n}",
            instruction=r["instruction"],
            functions=[FunctionResult(source=s, accuracy=a) for s, a in r["eval_func"]],
            cases=[CaseResult(input=i, output=o, accuracy=1.0) for i, o in r["cases"]],
        )
        for n, r in enumerate(fixture("back_trans.jsonl"))
    ]
    queries = [
        QueryRecord(
            id="p1",
            instruction_id="bt-0",
            instruction=instructions[0].instruction,
            query="Say hi to my cat.",
            prompt="Say hi to my cat.\nUse no words containing the letter 'E'.",
        ),
        QueryRecord(
            id="p2",
            instruction_id="bt-2",
            instruction=instructions[2].instruction,
            query="Name a word.",
            prompt="Name a word. Use only palindromes.",
        ),
    ]
    scored = [
        VerifiedRecord(
            prompt_id="p1",
            responses=[
                response("Hi cat!", 1.0, 9),
                response("Hi cat!", 1.0, 9),
                response("Hi, kitty cat.", 1.0, 8),
                response("Cat, hi.", 0.75, 7),
                response("Aloha cat!", 0.5, 10),
                response("Hello cat", 0.0),
                response("Hey there cat", 0.0),
                response("Greetings feline", 0.0),
                response("Meow there", 0.25),
                response("Hi cat, good day", 1.0, None),
            ],
        ),
        VerifiedRecord(prompt_id="p2", responses=[response("level", 0.0), response("noon", 0.0)]),
    ]
    write_jsonl(tmp_path / "crossval.jsonl", instructions)
    write_jsonl(tmp_path / "queries.jsonl", queries)
    write_jsonl(tmp_path / "scored.jsonl", scored)

    def run(*sets):
        funnel = Pipeline(
            config(
                tmp_path, "export.max_pairs_per_prompt=4", "export.llamafactory=false", "export.hf_dataset=false", *sets
            )
        ).run(only="export", force=True)
        return (
            funnel,
            read_jsonl(tmp_path / "sft.jsonl", SFTRecord),
            read_jsonl(tmp_path / "dpo.jsonl", DPORecord),
            [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()],
            [json.loads(line) for line in (tmp_path / "dpo.jsonl").read_text().splitlines()],
        )

    return tmp_path, instructions, run


def test_export_formats_and_selection_rules(export_run):
    out, instructions, run = export_run
    funnel, sft, dpo, sft_raw, dpo_raw = run()
    # SFT: passed (> 0.5) and score >= 8, each text once; "Aloha" (0.5) did not pass, 7 and None fail.
    assert [r.messages[1].content for r in sft] == ["Hi cat!", "Hi, kitty cat."]
    assert all(set(r) == {"messages", "instruction_id", "functions", "pass_rate"} for r in sft_raw)
    assert sft_raw[0]["messages"] == [
        {"role": "user", "content": "Say hi to my cat.\nUse no words containing the letter 'E'."},
        {"role": "assistant", "content": "Hi cat!"},
    ]
    assert sft_raw[0]["functions"] == [f.source for f in instructions[0].functions]
    assert sft_raw[0]["instruction_id"] == "bt-0" and sft_raw[0]["pass_rate"] == 1.0

    assert all(set(r) == {"prompt", "chosen", "rejected", "level", "functions"} for r in dpo_raw)
    query_pairs = [r for r in dpo if r.level == "query"]
    chosen = {r.chosen[0].content for r in query_pairs}
    rejected = {r.rejected[0].content for r in query_pairs}
    assert len(query_pairs) == 4 and len({(r.chosen[0].content, r.rejected[0].content) for r in query_pairs}) == 4
    assert chosen == {"Hi cat!", "Hi, kitty cat.", "Aloha cat!"}  # >= 0.5 with score >= 8
    assert rejected == {"Hello cat", "Hey there cat", "Greetings feline"}  # pass rate 0 only
    assert all(r.prompt[0].role == "user" and r.chosen[0].role == r.rejected[0].role == "assistant" for r in dpo)
    stage = funnel["stages"]["export"]
    assert stage["dropped"] == {"nothing_exported": 1}  # p2: nothing passes
    assert stage["counts"]["records_out:dpo.jsonl"] == len(dpo)

    again = run()
    assert (again[3], again[4]) == (sft_raw, dpo_raw)  # deterministic


def test_export_without_scoring_and_with_other_bounds(export_run):
    _, _, run = export_run
    _, sft, dpo, _, _ = run(
        "score.enabled=false", "export.chosen_min_pass_rate=0.75", "export.rejected_max_pass_rate=0.25"
    )
    assert [r.messages[1].content for r in sft] == ["Hi cat!", "Hi, kitty cat.", "Cat, hi.", "Hi cat, good day"]
    query_pairs = [r for r in dpo if r.level == "query"]
    # 4 chosen (>= 0.75, no score needed) x 4 rejected (<= 0.25): 4 pairs use each text once.
    assert {r.chosen[0].content for r in query_pairs} == {"Hi cat!", "Hi, kitty cat.", "Cat, hi.", "Hi cat, good day"}
    assert {r.rejected[0].content for r in query_pairs} == {
        "Hello cat",
        "Hey there cat",
        "Greetings feline",
        "Meow there",
    }


def test_instruction_level_pairs_are_told_apart_by_their_functions(export_run):
    out, instructions, run = export_run
    _, _, dpo, _, _ = run()
    pairs = [r for r in dpo if r.level == "instruction"]
    by_text = {r.instruction: r for r in instructions}
    assert pairs and all(len(r.prompt) == 1 and r.prompt[0].content in by_text for r in pairs)
    per_instruction = {}
    for r in pairs:
        per_instruction.setdefault(r.prompt[0].content, []).append(r)
    assert max(len(v) for v in per_instruction.values()) <= 4
    # "Use words that end with '-ing'" has no True case: no pair.
    assert "Use words that end with '-ing'" not in per_instruction
    reference = execute_independently(out, [[r.functions, [r.chosen[0].content, r.rejected[0].content]] for r in pairs])
    for r, (chosen_values, rejected_values) in zip(pairs, reference):
        assert r.functions == [f.source for f in by_text[r.prompt[0].content].functions]
        assert rate(chosen_values) >= 0.5 and rate(rejected_values) == 0
        cases = {c.input: c.output for c in by_text[r.prompt[0].content].cases}
        assert cases[r.chosen[0].content] is True and cases[r.rejected[0].content] is False


def test_pair_up_spreads_over_responses():
    import random

    pairs = pair_up(["a", "b", "c"], ["x", "y", "z"], 4, random.Random(0))
    assert len(set(pairs)) == 4
    assert {c for c, _ in pairs} == {"a", "b", "c"} and {r for _, r in pairs} == {"x", "y", "z"}
    assert pair_up(["a"], ["x", "y"], 4, random.Random(0)) in ([("a", "x"), ("a", "y")], [("a", "y"), ("a", "x")])
    assert pair_up(["a"], [], 4, random.Random(0)) == []
    assert pair_up(["a", "b"], ["x", "y"], 9, random.Random(1)) == pair_up(["a", "b"], ["x", "y"], 9, random.Random(1))


# ------------------------------------------------------------------------------ export copies
def export_records():
    sft = [
        SFTRecord(
            messages=[{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}],
            instruction_id="i1",
            functions=["def evaluate(r):\n    return True"],
            pass_rate=1.0,
        ),
        SFTRecord(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Q2"},
                {"role": "assistant", "content": "A2"},
            ],
            instruction_id="i2",
            functions=[],
            pass_rate=0.75,
        ),
    ]
    dpo = [
        DPORecord(
            prompt=[{"role": "user", "content": "Q1"}],
            chosen=[{"role": "assistant", "content": "good"}],
            rejected=[{"role": "assistant", "content": "bad"}],
            level="query",
            functions=["f"],
        )
    ]
    return sft, dpo


def test_llamafactory_files(tmp_path):
    from autoif.export_formats import write_llamafactory

    sft, dpo = export_records()
    (tmp_path / "llamafactory").mkdir()
    (tmp_path / "llamafactory" / "stale.json").write_text("{}")
    path = write_llamafactory(tmp_path, sft, dpo)
    assert path == tmp_path / "llamafactory"
    info = json.loads((path / "dataset_info.json").read_text())
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [*(v["file_name"] for v in info.values()), "dataset_info.json"]
    )
    load = lambda name: json.loads((path / info[name]["file_name"]).read_text())  # noqa: E731
    assert load("autoif_sft_alpaca") == [
        {"instruction": "Q1", "input": "", "output": "A1", "system": "", "history": []},
        {"instruction": "Q2", "input": "", "output": "A2", "system": "Be brief.", "history": []},
    ]
    assert load("autoif_sft_sharegpt")[1] == {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Q2"},
            {"from": "gpt", "value": "A2"},
        ]
    }
    assert load("autoif_dpo_alpaca") == [
        {"instruction": "Q1", "input": "", "chosen": "good", "rejected": "bad", "system": "", "history": []}
    ]
    assert load("autoif_dpo_sharegpt") == [
        {
            "conversations": [{"from": "human", "value": "Q1"}],
            "chosen": {"from": "gpt", "value": "good"},
            "rejected": {"from": "gpt", "value": "bad"},
        }
    ]
    assert info["autoif_dpo_sharegpt"]["ranking"] is True and info["autoif_sft_sharegpt"]["formatting"] == "sharegpt"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_hf_dataset_copy_round_trips(tmp_path):
    datasets = pytest.importorskip("datasets")
    from autoif.export_formats import save_hf_dataset

    sft, dpo = export_records()
    path = save_hf_dataset(tmp_path, sft, dpo)
    loaded = datasets.load_from_disk(str(path))
    assert loaded["sft"].to_list() == [r.model_dump(mode="json") for r in sft]
    assert loaded["dpo"].to_list() == [r.model_dump(mode="json") for r in dpo]
    empty = datasets.load_from_disk(str(save_hf_dataset(tmp_path, [], [])))
    assert len(empty["sft"]) == 0 and "messages" in empty["sft"].features


def test_push_to_hub_without_a_token_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    from autoif.export_formats import save_hf_dataset

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    sft, dpo = export_records()
    with pytest.raises(AutoifError, match="needs a Hugging Face token") as err:
        save_hf_dataset(tmp_path, sft, dpo, push_to_hub="me/autoif-data")
    assert "\n" not in str(err.value) and not (tmp_path / "hf_dataset").exists()
