"""Stage verify: the pass rates the real sandbox gives, checked against an independent execution of
the same functions in a plain subprocess, on the official release's instructions and responses;
responses cut off at the token limit marked `truncated`, counted, and warned about; degenerate
responses marked with the quality gate's reason code, the same as `quality.py` gives them."""

import json
import logging
from collections import Counter

import pytest
from support import config, execute_independently, fixture, rate

from autoif.jsonl import read_jsonl, write_jsonl
from autoif.pipeline import Pipeline
from autoif.quality import GOPHER_CODES, RULES, QualityConfig, quality_issues, waived_rules
from autoif.records import CaseResult, CrossvalRecord, FunctionResult, QueryRecord, ResponsesRecord, VerifiedRecord
from autoif.stages.verify import warn_on_truncation

QUALITY_CODES = {code for codes in RULES.values() for code in codes}


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
    """responses.jsonl made elsewhere (plain strings, no finish reason): nothing is marked truncated,
    verified.jsonl has no finish_reason key, and a drop key only where the quality gate names a rule."""
    lines = [json.loads(line) for line in (verified["out"] / "verified.jsonl").read_text().splitlines()]
    base = {"text", "pass_rate", "outcomes", "passed", "score"}
    assert all(set(r) in (base, base | {"drop"}) for line in lines for r in line["responses"])
    assert all(r.get("drop") in QUALITY_CODES for line in lines for r in line["responses"] if "drop" in r)
    assert "truncated" not in verified["funnel"]["stages"]["verify"]["counts"]


def test_verify_drops_degenerate_responses_as_the_quality_gate_does(verified):
    """Every response's drop is the quality gate's verdict on it (with the rules its instruction's
    accepted test cases break waived), each reason counted in the funnel. The official release's
    answers hold real degenerate text: one-line non-answers ('I will decline unnecessarily.') and
    4-syllable word salad repeated over and over."""
    instructions = {i.instruction_id: i for i in verification_set()[0]}
    queries = {q.id: q for q in verification_set()[1]}
    quality = QualityConfig()
    drops = Counter()
    for record in verified["records"]:
        query = queries[record.prompt_id]
        instruction = instructions[query.instruction_id]
        waived = waived_rules([c.input for c in instruction.cases if c.output], instruction.instruction, quality)
        texts = [r.text for r in record.responses]
        expected = quality_issues(texts, query.query, query.prompt, quality, waived)
        assert [r.drop for r in record.responses] == expected
        drops.update(d for d in expected if d)
    counts = verified["funnel"]["stages"]["verify"]["counts"]
    assert {code: counts[code] for code in drops} == dict(drops)
    assert drops["too_short"] >= 40 and sum(n for code, n in drops.items() if code in GOPHER_CODES) >= 3
    kept = [r for rec in verified["records"] for r in rec.responses if r.drop is None]
    assert len(kept) > 400  # the gate keeps most of the release's answers


def test_short_answers_are_kept_when_the_instruction_asks_for_them(tmp_path):
    """'Answer in at most five words': the instruction's accepted cases are short, so too_short is
    waived for its answers; the same answers to an instruction without such cases are dropped."""
    functions = [
        FunctionResult(source="def evaluate(response):\n    return len(response.split()) <= 5\n", accuracy=1.0)
    ]
    short_cases = [CaseResult(input="Paris is the capital.", output=True, accuracy=1.0)]
    long_case = "Paris is the capital of France, a city on the Seine known for its museums and cafes."
    answers = ["Paris, on the Seine.", "The capital is Paris."]
    instructions = [
        CrossvalRecord(
            instruction_id="short", instruction="Answer in at most five words.", functions=functions, cases=short_cases
        ),
        CrossvalRecord(
            instruction_id="plain",
            instruction="Answer plainly.",
            functions=functions,
            cases=[CaseResult(input=long_case, output=True, accuracy=1.0)],
        ),
    ]
    query = "What is the capital of France and what is it known for?"
    queries = [
        QueryRecord(
            id=f"{i.instruction_id}-q",
            instruction_id=i.instruction_id,
            instruction=i.instruction,
            query=query,
            prompt=f"{query} {i.instruction}",
        )
        for i in instructions
    ]
    write_jsonl(tmp_path / "crossval.jsonl", instructions)
    write_jsonl(tmp_path / "queries.jsonl", queries)
    write_jsonl(tmp_path / "responses.jsonl", [ResponsesRecord(prompt_id=q.id, responses=answers) for q in queries])
    funnel = Pipeline(config(tmp_path)).run(only="verify")
    drops = {
        r.prompt_id: [x.drop for x in r.responses] for r in read_jsonl(tmp_path / "verified.jsonl", VerifiedRecord)
    }
    assert drops == {"short-q": [None, None], "plain-q": ["too_short", "too_short"]}
    assert funnel["stages"]["verify"]["counts"]["too_short"] == 2

    Pipeline(config(tmp_path, "quality.enabled=false")).run(only="verify")  # the gate off: nothing dropped
    assert all(x.drop is None for r in read_jsonl(tmp_path / "verified.jsonl", VerifiedRecord) for x in r.responses)


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
            assert response.drop == ("truncated" if source["finish_reason"] == "length" else before.drop)
            n_cut += response.drop == "truncated"
    assert any(r.passed and r.drop == "truncated" for rec in records for r in rec.responses)  # passing ones too
    counts = funnel["stages"]["verify"]["counts"]
    assert counts["truncated"] == n_cut > 0
    lines = [json.loads(line) for line in (tmp_path / "verified.jsonl").read_text().splitlines()]
    assert all(
        r.get("drop") == "truncated" for line in lines for r in line["responses"] if r["finish_reason"] == "length"
    )

    with caplog.at_level(logging.WARNING, logger="autoif.verify"):
        share = warn_on_truncation(funnel)
    total = counts["responses_passed"] + counts["responses_failed"]
    assert share == pytest.approx(n_cut / total) and share > 0.1
    assert len(caplog.records) == 1 and f"{n_cut} of {total} responses" in caplog.records[0].getMessage()
    caplog.clear()
    assert warn_on_truncation(verified["funnel"]) == 0 and not caplog.records  # nothing cut: no warning
