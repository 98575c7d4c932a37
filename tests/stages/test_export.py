"""Stage export: SFT records and DPO pairs (query and instruction level), their formats and selection
rules; the pairs the functions tell apart are checked by an independent execution."""

import json
from collections import Counter

import pytest
from support import back_trans_records, config, execute_independently, fixture, rate

from autoif.jsonl import read_jsonl, write_jsonl
from autoif.pipeline import Pipeline
from autoif.records import (
    CrossvalRecord,
    DPORecord,
    QueryRecord,
    SFTRecord,
    VerifiedRecord,
    VerifiedResponse,
)


def response(text, pass_rate, score=None, finish_reason=None):
    return VerifiedResponse(
        text=text,
        pass_rate=pass_rate,
        outcomes=[],
        passed=pass_rate > 0.5,
        score=score,
        finish_reason=finish_reason,
        drop="truncated" if finish_reason == "length" else None,
    )


@pytest.fixture()
def export_run(tmp_path):
    """Scored records with designed pass rates and scores, the back_trans instructions, one export."""
    instructions = back_trans_records()
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
    # scored.jsonl as verify wrote it before responses had a finish reason: it exports as before.
    scored = [json.loads(line) for line in (out / "scored.jsonl").read_text().splitlines()]
    assert not any({"finish_reason", "drop"} & set(r) for line in scored for r in line["responses"])
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


def test_truncated_responses_are_never_sft_or_chosen_and_rejected_only_when_asked(export_run):
    """A prompt whose responses the backend partly cut off at max_tokens (verify marked them)."""
    out, instructions, run = export_run
    query = QueryRecord(
        id="p3",
        instruction_id="bt-0",
        instruction=instructions[0].instruction,
        query="Greet my cat.",
        prompt="Greet my cat. Use no words containing the letter 'E'.",
    )
    scored = VerifiedRecord(
        prompt_id="p3",
        responses=[
            response("Hi cat!", 1.0, 9, "stop"),
            response("Hi cat, and to that I add a long", 1.0, 9, "length"),  # passes, but cut off
            response("Hello cat", 0.0, None, "stop"),
            response("Hey there cat", 0.0),  # no finish reason: a response made elsewhere
            response("Hello there, dear cat, and", 0.0, None, "length"),
        ],
    )
    write_jsonl(out / "queries.jsonl", [query])
    write_jsonl(out / "scored.jsonl", [scored])
    cut = {r.text for r in scored.responses if r.finish_reason == "length"}

    funnel, sft, dpo, _, _ = run()
    pairs = [r for r in dpo if r.level == "query"]
    assert [r.messages[1].content for r in sft] == ["Hi cat!"]
    assert {r.chosen[0].content for r in pairs} == {"Hi cat!"}
    assert {r.rejected[0].content for r in pairs} == {"Hello cat", "Hey there cat"}
    assert funnel["stages"]["export"]["counts"]["sft_skipped:truncated"] == 1

    _, sft, dpo, _, _ = run("export.truncated_rejected=true")
    pairs = [r for r in dpo if r.level == "query"]
    assert not cut & {r.messages[1].content for r in sft} and not cut & {r.chosen[0].content for r in pairs}
    assert {r.rejected[0].content for r in pairs} == {"Hello cat", "Hey there cat", "Hello there, dear cat, and"}


# ------------------------------------------------------------------------- difficulty-aware selection
@pytest.fixture()
def release_run(tmp_path):
    """The official release's 20 prompts with their 8 sampled answers each and the pass rates its
    functions gave them (dpo_query_eval_score_results.jsonl; one function per instruction, so 0 or 1):
    3 prompts every answer passes, 14 none does, 3 mixed (1, 2 and 1 of 8 pass). The release did not
    ship those functions, so the instruction records carry none (no instruction-level pairs)."""
    queries, instructions, scored = [], {}, []
    for n, r in enumerate(fixture("dpo_query_eval_score_results.jsonl")):
        instruction, query = r["query"].split(". ", 1)
        iid = instructions.setdefault(instruction, f"release-{len(instructions)}")
        queries.append(
            QueryRecord(id=f"p{n}", instruction_id=iid, instruction=instruction, query=query, prompt=r["query"])
        )
        scored.append(VerifiedRecord(prompt_id=f"p{n}", responses=[response(t, rate) for t, rate in r["response"]]))
    write_jsonl(
        tmp_path / "crossval.jsonl",
        [
            CrossvalRecord(instruction_id=iid, instruction=text, functions=[], cases=[])
            for text, iid in instructions.items()
        ],
    )
    write_jsonl(tmp_path / "queries.jsonl", queries)
    write_jsonl(tmp_path / "scored.jsonl", scored)
    prompt_of = {q.prompt: q.id for q in queries}

    def run(*sets):
        funnel = Pipeline(
            config(tmp_path, "score.enabled=off", "export.llamafactory=false", "export.hf_dataset=false", *sets)
        ).run(only="export", force=True)
        sft = read_jsonl(tmp_path / "sft.jsonl", SFTRecord)
        dpo = read_jsonl(tmp_path / "dpo.jsonl", DPORecord)
        sft_by_prompt, pairs_by_prompt = Counter(), Counter()
        sft_by_prompt.update(prompt_of[r.messages[0].content] for r in sft)
        pairs_by_prompt.update(prompt_of[r.prompt[0].content] for r in dpo)
        return funnel["stages"]["export"]["counts"], sft, sft_by_prompt, pairs_by_prompt

    return {r.prompt_id: r for r in scored}, run


def test_prompt_pass_rates_and_default_selection_on_release_records(release_run):
    """Each prompt's pass rate is the share of its answers that pass; the defaults filter nothing:
    SFT is every distinct passing answer, and every passing answer is exported or counted once."""
    scored, run = release_run
    rates = {pid: r.prompt_pass_rate for pid, r in scored.items()}
    assert sorted(rates.values()) == [0.0] * 14 + [0.125, 0.125, 0.25] + [1.0] * 3
    outcome = {pid: r.prompt_outcome for pid, r in scored.items()}
    counts, sft, sft_by_prompt, pairs_by_prompt = run()
    assert {k: counts[k] for k in counts if k.startswith("prompts:")} == {
        f"prompts:{o}": n for o, n in Counter(outcome.values()).items()
    }
    distinct_passing = {pid: len({x.text for x in r.responses if x.passed}) for pid, r in scored.items()}
    assert sft_by_prompt == +Counter(distinct_passing) and len(sft) == 11
    passing = sum(x.passed for r in scored.values() for x in r.responses)
    skipped = {k: v for k, v in counts.items() if k.startswith("sft_skipped:")}
    assert skipped == {"sft_skipped:duplicate": passing - len(sft)}
    # A pair needs a passing and a failing answer: every query-level pair comes from a mixed prompt.
    assert set(pairs_by_prompt) == {pid for pid, o in outcome.items() if o == "mixed"}
    assert counts["dpo_query_pairs"] == sum(pairs_by_prompt.values()) == 4 + 4 + 4


def test_sft_max_prompt_pass_rate_leaves_out_prompts_every_answer_passes(release_run):
    scored, run = release_run
    _, _, before, pairs_before = run()
    counts, _, after, pairs_after = run("export.sft_max_prompt_pass_rate=0.5")
    easy = {pid for pid, r in scored.items() if r.prompt_pass_rate > 0.5}
    assert len(easy) == 3 and sum(before[pid] for pid in easy) == 8
    assert after == Counter({pid: n for pid, n in before.items() if pid not in easy})
    assert counts["sft_skipped:prompt_too_easy"] == sum(before.values()) - sum(after.values()) == 8
    assert pairs_after == pairs_before  # SFT only


def test_max_sft_per_prompt_keeps_a_seeded_sample(release_run):
    _, run = release_run
    _, sft_before, before, _ = run()
    counts, sft, after, _ = run("export.max_sft_per_prompt=2")
    assert after == Counter({pid: min(n, 2) for pid, n in before.items()})
    assert counts["sft_skipped:per_prompt_cap"] == sum(before.values()) - sum(after.values()) == 4  # 6 -> 2
    texts = [r.messages[1].content for r in sft]
    assert set(texts) < {r.messages[1].content for r in sft_before}
    assert texts == [r.messages[1].content for r in run("export.max_sft_per_prompt=2")[1]]  # same on every run
    picks = {tuple(r.messages[1].content for r in run(f"seed={s}", "export.max_sft_per_prompt=2")[1]) for s in range(4)}
    assert len(picks) > 1  # the sample is drawn, not the first two


def test_dpo_min_prompt_mix_keeps_pairs_of_the_most_mixed_prompts(release_run):
    scored, run = release_run
    _, _, _, before = run()
    counts, _, _, after = run("export.dpo_min_prompt_mix=0.2")
    # 1 of 8 answers passing (mix 0.125) is too lopsided; 2 of 8 (0.25) stays.
    assert set(after) == {pid for pid, r in scored.items() if r.prompt_pass_rate == 0.25}
    assert after == Counter({pid: before[pid] for pid in after})
    assert counts["dpo_query_skipped:prompt_not_mixed"] == sum(before.values()) - sum(after.values()) == 8
    assert counts["dpo_query_pairs"] == sum(after.values())


def test_dpo_min_prompt_mix_leaves_out_a_prompt_no_answer_passes(export_run):
    """A chosen needs a pass rate of 0.5, SFT more than 0.5: a prompt whose best answer is at 0.5 gives
    pairs but has no passing answer; any mix above 0 leaves it out."""
    out, instructions, run = export_run
    query = QueryRecord(
        id="p3", instruction_id="bt-0", instruction=instructions[0].instruction, query="Hi?", prompt="Hi? No 'E'."
    )
    write_jsonl(out / "queries.jsonl", [query])
    write_jsonl(
        out / "scored.jsonl",
        [VerifiedRecord(prompt_id="p3", responses=[response("Aloha cat!", 0.5, 10), response("Hello cat", 0.0)])],
    )
    funnel, sft, dpo, _, _ = run()
    assert not sft and [(r.chosen[0].content, r.rejected[0].content) for r in dpo if r.level == "query"] == [
        ("Aloha cat!", "Hello cat")
    ]
    assert funnel["stages"]["export"]["counts"]["prompts:all_fail"] == 1
    funnel, _, dpo, _, _ = run("export.dpo_min_prompt_mix=0.01")
    counts = funnel["stages"]["export"]["counts"]
    assert not [r for r in dpo if r.level == "query"]
    assert counts["dpo_query_skipped:prompt_not_mixed"] == 1 and counts["dpo_query_pairs"] == 0
