"""Stage verify: the pass rates the real sandbox gives, checked against an independent execution of
the same functions in a plain subprocess, on the official release's instructions and responses;
responses cut off at the token limit marked `truncated`, counted, and warned about."""

import json
import logging

import pytest
from support import config, execute_independently, fixture, rate

from autoif.jsonl import read_jsonl, write_jsonl
from autoif.pipeline import Pipeline
from autoif.records import CaseResult, CrossvalRecord, FunctionResult, QueryRecord, ResponsesRecord, VerifiedRecord
from autoif.stages.verify import warn_on_truncation


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
    reference = execute_independently(
        out, [[functions[instruction_of[r.prompt_id]], [x.text for x in r.responses]] for r in responses]
    )
    return {
        "out": out,
        "funnel": funnel,
        "records": read_jsonl(out / "verified.jsonl", VerifiedRecord),
        "responses": responses,
        "reference": reference,
    }


def test_verify_pass_rates_match_independent_execution(verified):
    records, reference = verified["records"], verified["reference"]
    assert [r.prompt_id for r in records] == [r.prompt_id for r in verified["responses"]]
    for record, source, grid in zip(records, verified["responses"], reference):
        assert [r.text for r in record.responses] == [x.text for x in source.responses]  # all kept, in order
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


def test_verify_keeps_plain_string_responses_as_before(verified):
    """responses.jsonl made elsewhere (plain strings, no finish reason): nothing is marked, and
    verified.jsonl has no finish_reason or drop key."""
    lines = [json.loads(line) for line in (verified["out"] / "verified.jsonl").read_text().splitlines()]
    assert all(
        set(r) == {"text", "pass_rate", "outcomes", "passed", "score"} for line in lines for r in line["responses"]
    )
    assert "truncated" not in verified["funnel"]["stages"]["verify"]["counts"]


def test_verify_marks_truncated_responses_and_warns(verified, tmp_path, caplog):
    """Responses to four prompts as a backend returns them, every third and the first passing one
    of each prompt cut off at max_tokens: each is verified like the others (same pass rate as the plain run),
    carries its finish reason, and the cut-off ones are marked `truncated` (passing or not),
    counted in the funnel, and warned about (one line, > 10%)."""
    instructions, queries, responses = verification_set()
    plain = {r.prompt_id: r for r in verified["records"]}
    rows = []
    with_passing = [r for r in responses if any(x.passed for x in plain[r.prompt_id].responses)]
    for r in with_passing[:4]:
        first_pass = next((j for j, x in enumerate(plain[r.prompt_id].responses) if x.passed), None)
        cut = [j % 3 == 0 or j == first_pass for j in range(len(r.responses))]
        rows.append(
            {
                "prompt_id": r.prompt_id,
                "responses": [
                    {"text": x.text, "finish_reason": "length" if c else "stop", "tokens": 64}
                    for x, c in zip(r.responses, cut)
                ],
            }
        )
    write_jsonl(tmp_path / "crossval.jsonl", instructions)
    write_jsonl(tmp_path / "queries.jsonl", queries)
    (tmp_path / "responses.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    funnel = Pipeline(config(tmp_path)).run(only="verify")

    records = read_jsonl(tmp_path / "verified.jsonl", VerifiedRecord)
    n_cut = 0
    for record, row in zip(records, rows):
        for response, before, source in zip(record.responses, plain[record.prompt_id].responses, row["responses"]):
            assert (response.pass_rate, response.outcomes, response.passed) == (
                before.pass_rate,
                before.outcomes,
                before.passed,
            )
            assert response.finish_reason == source["finish_reason"]
            assert response.drop == ("truncated" if source["finish_reason"] == "length" else None)
            n_cut += response.drop is not None
    assert any(r.passed and r.drop for rec in records for r in rec.responses)  # a passing one is marked too
    counts = funnel["stages"]["verify"]["counts"]
    assert counts["truncated"] == n_cut > 0
    lines = [json.loads(line) for line in (tmp_path / "verified.jsonl").read_text().splitlines()]
    assert all(("drop" in r) == (r["finish_reason"] == "length") for line in lines for r in line["responses"])

    with caplog.at_level(logging.WARNING, logger="autoif.verify"):
        share = warn_on_truncation(funnel)
    total = counts["responses_passed"] + counts["responses_failed"]
    assert share == pytest.approx(n_cut / total) and share > 0.1
    assert len(caplog.records) == 1 and f"{n_cut} of {total} responses" in caplog.records[0].getMessage()
    caplog.clear()
    assert warn_on_truncation(verified["funnel"]) == 0 and not caplog.records  # nothing cut: no warning
