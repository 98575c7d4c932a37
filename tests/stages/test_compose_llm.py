"""Stage compose's LLM steps (conflict check, rewrite) and the report's combinations section.

The LLM is real and reached over real HTTP: SmolLM2-135M-Instruct behind llama_cpp.server
(tests/llm_server.py), through a FaultProxy that records every request body. Free, SmolLM2 answers
as it does (verdicts, rewrites, back-translations, NLI judgements, parsed or recorded as
unparsable); to make a verdict certain, the server is asked with a llama.cpp grammar that lets the
model write only "conflict" (`llm.extra_body`), so that execution's overrides of that verdict show.
"""

import json
import re
import shutil

import pytest
from support import back_trans_records, config, execute_independently, library_records

from autoif.jsonl import read_jsonl, write_jsonl
from autoif.pipeline import Pipeline
from autoif.prompts import render, template
from autoif.records import (
    CaseResult,
    CrossvalRecord,
    FunctionResult,
    QueryRecord,
    ResponsesRecord,
    SFTRecord,
)
from autoif.report import render_report
from autoif.stages.backtranslate import chosen_functions
from autoif.stages.compose_llm import _rejection
from autoif.stages.parsing import parse_conflict_verdict
from autoif.stages.queries import closed
from llm_server import FaultProxy

# SmolLM2's answers to the compose_conflict prompt (llama_cpp.server, temperature 0, seed 42):
SMOLLM2_COMPATIBLE = (
    "1. A single answer can follow all of them, but only if it is compatible with the previous instructions."
)
SMOLLM2_CONFLICT = (
    "1. A single answer must follow all of the instructions without conflict or contradiction.\n"
    "2. A question cannot be asked to a single answer that is not compatible with any other answer."
)


@pytest.mark.parametrize(
    "answer, verdict",
    [
        ("compatible", "compatible"),
        ("Conflict.", "conflict"),
        ("**Verdict:** incompatible", "conflict"),
        ("No", "conflict"),
        ("These do not conflict; they are compatible.", "compatible"),
        (SMOLLM2_COMPATIBLE, "compatible"),
        (SMOLLM2_CONFLICT, "conflict"),  # "not compatible" is no vote; "conflict" (after "without") is
        ("compatible or conflict", None),
        ("The answer depends on the query.", None),
        ("", None),
    ],
)
def test_conflict_verdicts_are_parsed_or_none(answer, verdict):
    assert parse_conflict_verdict(answer) == verdict


@pytest.mark.parametrize(
    "labels, rejected",
    [
        ([["entailment"], ["entailment", "neutral"]], None),
        ([["entailment"], ["neutral", None]], "constraint_lost"),
        ([["entailment"], ["entailment", "contradiction"]], "contradiction"),
        ([["entailment"], [None]], "unchecked"),
    ],
)
def test_a_rewrite_keeps_every_constituent_or_is_rejected(labels, rejected):
    assert _rejection(labels) == rejected


def llm_sets(proxy, *extra):
    """SmolLM2 through the proxy for every LLM call, short answers, the LLM as NLI judge."""
    return [
        "llm.backend=openai",
        f"llm.base_url={proxy.base_url}",
        "llm.model=smollm2",
        "llm.max_concurrency=2",
        "backtranslate.nli.backend=llm",
        "backtranslate.max_functions=1",
        "backtranslate.max_tokens=64",
        "compose.max_tokens=64",
        "compose.enabled=true",
        *extra,
    ]


def asked(proxy):
    return [body["messages"][-1]["content"] for _, _, body in proxy.chat_log]


def listed(parts):
    return "\n".join(f"{n}. {closed(p.instruction)}" for n, p in enumerate(parts, 1))


@pytest.fixture(scope="module")
def free_run(llama_server, tmp_path_factory):
    """The official release's LLM-written instructions and three library constraints, combined in
    pairs, with the conflict check and the LLM rewrite, SmolLM2 answering freely."""
    out = tmp_path_factory.mktemp("compose-llm")
    records = back_trans_records() + library_records({"case:lowercase", "length:max_words", "end:phrase"})
    write_jsonl(out / "backtranslate.jsonl", records)
    with FaultProxy(llama_server.url) as proxy:
        sets = llm_sets(proxy, "compose.count=5", "compose.sizes={2: 1}", "compose.rewrite=llm")
        funnel = Pipeline(config(out, *sets)).run(only="compose")["stages"]["compose"]
        prompts = asked(proxy)
    written = read_jsonl(out / "compose.jsonl", CrossvalRecord)
    by_id = {r.instruction_id: r for r in records}
    combos = [r for r in written if r.constituents]
    parts = {r.instruction_id: [by_id[c.instruction_id] for c in r.constituents] for r in combos}
    return {"combos": combos, "parts": parts, "funnel": funnel, "prompts": prompts}


@pytest.mark.slow
def test_conflict_check_asks_for_llm_written_combinations_only(free_run):
    combos, parts = free_run["combos"], free_run["parts"]
    mixed = [r for r in combos if any(c.constraint is None for c in r.constituents)]
    assert mixed
    question = template("compose_conflict").split("{instructions}")[1]  # what only the conflict prompt says
    conflict_prompts = [p for p in free_run["prompts"] if p.endswith(question)]
    assert sorted(conflict_prompts) == sorted(
        render("compose_conflict", instructions=listed(parts[r.instruction_id])) for r in mixed
    )
    counts = free_run["funnel"]["counts"]
    for record in combos:
        check = record.llm_check
        if record not in mixed:
            assert check is None
            continue
        assert (check.verdict is None) == (check.error is not None)
        if check.error == "unparsable":
            assert check.detail and parse_conflict_verdict(check.detail) is None
    outcomes = [r.llm_check.verdict or r.llm_check.error for r in mixed]
    assert {k: v for k, v in counts.items() if k.startswith("llm_check:")} == {
        f"llm_check:{o}": outcomes.count(o) for o in set(outcomes)
    }


@pytest.mark.slow
def test_rewrite_is_used_only_when_back_translation_finds_every_constraint(free_run):
    combos, parts, prompts = free_run["combos"], free_run["parts"], free_run["prompts"]
    counts = free_run["funnel"]["counts"]
    for record in combos:
        mine = parts[record.instruction_id]
        rewrite = record.rewrite
        assert render("compose_rewrite", instructions=listed(mine)) in prompts
        if rewrite.rejected is None:
            assert record.instruction == rewrite.text
        else:
            # the template join: every constituent's text, in order
            positions = [record.instruction.find(closed(p.instruction)) for p in mine]
            assert -1 not in positions and positions == sorted(positions)
        if rewrite.rejected in ("llm_error", "unparsable"):
            assert rewrite.text == "" and rewrite.detail is not None
            continue
        # checked: stage 1's back-translation requests for each constituent's chosen function, and
        # an NLI judgement with the rewrite as premise
        for part in mine:
            source = part.functions[chosen_functions(part, 1)[0]].source
            assert render("backtranslate", function=source) in prompts
        premise = f"Instruction A: {rewrite.text}\n"
        assert any(p.startswith(render("nli", premise="", hypothesis="")[:40]) and premise in p for p in prompts)
    reasons = [r.rewrite.rejected or "kept" for r in combos]
    expected = {("rewrite:kept" if o == "kept" else f"rewrite:rejected:{o}"): reasons.count(o) for o in set(reasons)}
    assert {k: v for k, v in counts.items() if k.startswith("rewrite:")} == expected


# Two instructions outside the library (the LLM is asked about them) whose own cases prove nothing
# together (neither accepted case holds the other constraint, nor do they joined), while an answer
# such as "the sea is blue" holds both.
LOWERCASE = CrossvalRecord(
    instruction_id="own-lowercase",
    instruction="Write your whole answer in lowercase letters",
    functions=[FunctionResult(source="def evaluate(response):\n    return response == response.lower()", accuracy=1)],
    cases=[
        CaseResult(input="the sky is clear today", output=True, accuracy=1),
        CaseResult(input="The Sky", output=False, accuracy=1),
    ],
)
BLUE = CrossvalRecord(
    instruction_id="own-blue",
    instruction="Mention the colour blue",
    functions=[FunctionResult(source="def evaluate(response):\n    return 'blue' in response.lower()", accuracy=1)],
    cases=[
        CaseResult(input="Blue whales are large.", output=True, accuracy=1),
        CaseResult(input="red", output=False, accuracy=1),
    ],
)
SATISFYING = "the sea is blue"


@pytest.fixture(scope="module")
def conflict_run(llama_server, tmp_path_factory):
    """Every pair of the official release's instructions and the two above, the LLM constrained to
    answer "conflict"; each combination answered by its own cases and SATISFYING, through verify and
    export, then the report."""
    out = tmp_path_factory.mktemp("compose-conflict")
    records = back_trans_records() + [LOWERCASE, BLUE]
    write_jsonl(out / "backtranslate.jsonl", records)
    pairs = len(records) * (len(records) - 1) // 2
    grammar = 'llm.extra_body={grammar: root ::= "conflict"}'
    with FaultProxy(llama_server.url) as proxy:
        sets = llm_sets(proxy, f"compose.count={pairs}", "compose.sizes={2: 1}", grammar)
        compose = Pipeline(config(out, *sets)).run(only="compose")["stages"]["compose"]
    combos = [r for r in read_jsonl(out / "compose.jsonl", CrossvalRecord) if r.constituents]
    queries = [
        QueryRecord(
            id=f"p{n}", instruction_id=r.instruction_id, instruction=r.instruction, query="Q", prompt=r.instruction
        )
        for n, r in enumerate(combos)
    ]
    responses = [[c.input for c in r.cases] + [SATISFYING] for r in combos]
    write_jsonl(out / "queries.jsonl", queries)
    write_jsonl(
        out / "responses.jsonl",
        [ResponsesRecord(prompt_id=q.id, responses=texts) for q, texts in zip(queries, responses)],
    )
    sets = ("score.enabled=off", "export.llamafactory=false", "export.hf_dataset=false", "quality.enabled=false")
    Pipeline(config(out, *sets)).run(only="verify")
    shutil.copy(out / "verified.jsonl", out / "scored.jsonl")
    export = Pipeline(config(out, *sets)).run(only="export")["stages"]["export"]
    # Each response's per-function values, executed without the sandbox: which responses hold
    # every constraint (all of each constituent's functions pass: one function each here, or the
    # official release's several, above verify's 0.5).
    values = execute_independently(
        out, [[[f.source for f in r.functions], texts] for r, texts in zip(combos, responses)]
    )
    all_hold = [
        [
            all(sum(v is True for v in row[c.start : c.stop]) / (c.stop - c.start) > 0.5 for c in r.constituents)
            for row in grid
        ]
        for r, grid in zip(combos, values)
    ]
    return {
        "out": out,
        "combos": combos,
        "pairs": pairs,
        "all_hold": all_hold,
        "compose": compose,
        "export": export,
        "html": render_report(out),
    }


@pytest.mark.slow
def test_execution_overrides_the_llms_conflict_verdict(conflict_run):
    combos, all_hold = conflict_run["combos"], conflict_run["all_hold"]
    assert len(combos) == conflict_run["pairs"]  # no declared rule covers instructions outside the library
    assert {r.llm_check.verdict for r in combos} == {"conflict"}
    proven = [r for r in combos if r.evidence != "unproven"]
    unproven = [(r, holds) for r, holds in zip(combos, all_hold) if r.evidence == "unproven"]
    counts = conflict_run["compose"]["counts"]
    assert proven and sum(v for k, v in counts.items() if k.startswith("llm_conflict_overridden:")) == len(proven)
    by_response = [r for r, holds in unproven if any(holds)]
    own = next(r for r in combos if {c.instruction_id for c in r.constituents} == {"own-lowercase", "own-blue"})
    assert own in by_response  # the LLM's "conflict" stands against no case, falls to a response
    export = conflict_run["export"]["counts"]
    assert export["combinations:llm_conflict_overridden"] == len(by_response)
    assert export["combinations:llm_conflict"] == len(unproven) - len(by_response)
    sft = read_jsonl(conflict_run["out"] / "sft.jsonl", SFTRecord)
    assert [s.messages[1].content for s in sft if s.instruction_id == own.instruction_id] == [SATISFYING]


def cells(html, table_class):
    """The rows of a report table, as lists of cell texts."""
    body = re.search(rf'<table class="{table_class}">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td>(.*?)</td>", row)] for row in body.split("</tr>")[:-1]]


@pytest.mark.slow
def test_report_section_on_combinations(conflict_run):
    html, combos, all_hold = conflict_run["html"], conflict_run["combos"], conflict_run["all_hold"]
    assert re.search(r'<section id="combinations" class="report-section" data-state="present">', html)
    responses = sum(len(h) for h in all_hold)
    holding = sum(sum(h) for h in all_hold)
    satisfied = sum(any(h) for h in all_hold)
    pairs = str(conflict_run["pairs"])
    share = f"{holding} ({100 * holding / responses:.1f}%)"
    assert cells(html, "combinations") == [
        ["2", pairs, pairs, str(responses), share, str(satisfied), str(len(combos) - satisfied)]
    ]
    rows = {(e, f): int(n) for e, f, n in cells(html, "evidence")}
    unproven = [any(h) for r, h in zip(combos, all_hold) if r.evidence == "unproven"]
    assert rows[("LLM", "verdict: conflict")] == len(combos)
    assert rows[("LLM overridden", "conflict, but a test case proves compatibility")] == len(combos) - len(unproven)
    assert rows[("LLM overridden", "conflict, but a response proves compatibility")] == sum(unproven) > 0
    assert rows[("LLM", "conflict not overridden (no response holds every constraint)")] == unproven.count(False)
    assert rows[("execution", "compatible: no case, but a response holds every constraint")] == sum(unproven)
    sft = read_jsonl(conflict_run["out"] / "sft.jsonl", SFTRecord)
    dpo = [json.loads(line) for line in (conflict_run["out"] / "dpo.jsonl").read_text().splitlines()]
    # a combination's pairs name its constituents; the atomic instructions' test cases give pairs too
    functions = {tuple(f.source for f in r.functions): [c.instruction_id for c in r.constituents] for r in combos}
    composed = [p for p in dpo if tuple(p["functions"]) in functions]
    assert composed and all(p["instruction_ids"] == functions[tuple(p["functions"])] for p in composed)
    assert sum("instruction_ids" in p for p in dpo) == len(composed)
    assert (
        f"Combinations in the export: {len(sft)} of {len(sft)} SFT records (100.0%); "
        f"{len(composed)} of {len(dpo)} DPO pairs ({100 * len(composed) / len(dpo):.1f}%)."
    ) in html


def test_report_section_without_combinations(tmp_path):
    """compose.jsonl with the instructions only (the stage off): the section says so; no file: missing."""
    assert 'id="combinations" class="report-section" data-state="missing"' in render_report(tmp_path)
    write_jsonl(tmp_path / "compose.jsonl", library_records({"case:lowercase"}))
    (tmp_path / "config.yaml").write_text("compose:\n  enabled: false\n")
    html = render_report(tmp_path)
    assert 'id="combinations" class="report-section" data-state="empty"' in html
    assert "<code>compose.enabled</code> is false in this run" in html
