"""Stage backtranslate: answer extraction, function choice, and the stage's keep/drop logic.

LLM calls replay recorded real outputs through `RecordedLLM`: the official AutoIF release's
back-translations (`back_trans.jsonl`, a strong model's answers for exactly those functions) and
answers of the embedded SmolLM2-135M-Instruct to our own prompts, recorded once with
transformers (greedy or seeded sampling) and pasted below. The Hugging Face NLI path with a real
model is tested in test_nli.py.
"""

import json

import pytest
from support import FIXTURES

from autoif.config import load_config
from autoif.prompts import render
from autoif.records import CaseResult, CrossvalRecord, FunctionResult
from autoif.stages.backtranslate import BacktranslateStage, chosen_functions, extract_instruction
from autoif.stages.base import Context, Drop
from autoif.stages.nli import LLMNLI, nli_backend
from replay import ReplayBackend

needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"AutoIF fixtures not found at {FIXTURES}")


def official_records():
    """back_trans.jsonl as crossval records, each with the functions its back-translations are of,
    and those back-translations by function source."""
    records, answers = [], {}
    for line in (FIXTURES / "back_trans.jsonl").read_text().splitlines():
        row = json.loads(line)
        functions = row["eval_func"][: len(row["back_instruction"])]
        records.append(
            CrossvalRecord(
                instruction_id=f"off-{len(records)}",
                instruction=row["instruction"],
                functions=[FunctionResult(source=src, accuracy=acc) for src, acc in functions],
                cases=[CaseResult(input=text, output=out, accuracy=1.0) for text, out in row["cases"]],
            )
        )
        for (src, _), answer in zip(functions, row["back_instruction"]):
            answers[src] = answer
    return records, answers


def backtranslation_recordings(answers: dict[str, str]) -> dict[str, list[str]]:
    return {render("backtranslate", function=src): [answer] for src, answer in answers.items()}


def make_context(tmp_path, llm, *sets):
    config = load_config(None, [f"paths.out={tmp_path}", *sets])
    return Context(config, llm=llm)


def run_stage(ctx, records):
    out = list(BacktranslateStage().run(records, ctx))
    kept = [r for r in out if not isinstance(r, Drop)]
    dropped = [r for r in out if isinstance(r, Drop)]
    return kept, dropped


# --------------------------------------------------------------------------- answer extraction
@needs_fixtures
def test_official_back_translations_are_taken_unchanged():
    _, answers = official_records()
    assert answers and all(extract_instruction(a) == a for a in answers.values())


# SmolLM2-135M-Instruct's greedy answers to the backtranslate prompt for the first function of
# each back_trans.jsonl instruction: a description rather than an instruction, still one line.
SMOLLM2_BACKTRANSLATIONS = [
    "The function evaluates whether a given response follows a given instruction.",
    "The function evaluates whether a user's response follows one instruction by checking if the input is a list "
    "of words and if each word is greater than the previous one.",
]


@pytest.mark.parametrize(
    "answer,expected",
    [
        ('Instruction: "Answer in lowercase letters only."', "Answer in lowercase letters only."),
        ("Here is the instruction:\n\n**Answer with at most 3 sentences.**", "Answer with at most 3 sentences."),
        ("```\nRespond with exactly two bullet points.\n```", "Respond with exactly two bullet points."),
        (
            "The instruction this function checks is: End your answer with the word 'Done'.",
            "End your answer with the word 'Done'.",
        ),
        ("- Answer with words in alphabetical order.\n- Use no commas.", "Answer with words in alphabetical order."),
        ("Answer: Use no commas.", "Use no commas."),
        ("Answer with the format: Title, then body", "Answer with the format: Title, then body"),
        (
            "```python\ndef evaluate(response):\n    return response.islower()\n```\nAnswer in lowercase.",
            "Answer in lowercase.",
        ),
        *[(answer, answer) for answer in SMOLLM2_BACKTRANSLATIONS],
    ],
)
def test_extract_instruction(answer, expected):
    assert extract_instruction(answer) == expected


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "Sure!",
        "Here is the instruction:",
        "def evaluate(response):\n    return len(response.split()) < 50",
        "word " * 200,
    ],
)
def test_no_instruction_in_answer(answer):
    assert extract_instruction(answer) is None


def test_most_accurate_functions_are_chosen_ties_in_order():
    record = CrossvalRecord(
        instruction_id="x",
        instruction="i",
        cases=[],
        functions=[FunctionResult(source=f"f{i}", accuracy=a) for i, a in enumerate([0.9, 1.0, 0.9, 1.0])],
    )
    assert chosen_functions(record, 3) == [1, 3, 0]
    assert chosen_functions(record, 10) == [1, 3, 0, 2]


# ------------------------------------------------------------------------------------ the stage
# SmolLM2-135M-Instruct's answers to the nli prompt. Greedy, on the first back_trans.jsonl pair (it
# repeats the prompt's first definition; it gives the same for most pairs):
SMOLLM2_JUDGEMENT = (
    "- entailment: every answer that follows A also follows B (they ask for the same thing, or B asks for less)."
)
# Sampled at temperature 1.0 on ("Use only palindromes", "Answer with words that are palindromes."):
SMOLLM2_SAMPLED_CONTRADICTION = "- agenda, contradiction, order, antisymmetry would better describe explain."
SMOLLM2_SAMPLED_NO_LABEL = "eternal."


@needs_fixtures
def test_stage_with_llm_judge_keeps_every_entailed_instruction(tmp_path):
    records, answers = official_records()
    recordings = backtranslation_recordings(answers)
    for record in records:
        for src in (f.source for f in record.functions):
            recordings[render("nli", premise=record.instruction, hypothesis=answers[src])] = [SMOLLM2_JUDGEMENT]
    llm = ReplayBackend(recordings)
    ctx = make_context(tmp_path, llm, "backtranslate.nli.backend=llm")
    kept, dropped = run_stage(ctx, records)

    assert dropped == [] and [r.instruction_id for r in kept] == [r.instruction_id for r in records]
    for record, out in zip(records, kept):
        assert out.functions == record.functions and out.cases == record.cases
        bts = out.back_translations or []
        assert [bt.function_index for bt in bts] == chosen_functions(record, 3)
        assert all(
            bt.label == "entailment" and bt.text == answers[record.functions[bt.function_index].source] for bt in bts
        )
    n_pairs = sum(min(3, len(r.functions)) for r in records)
    assert ctx.counts == {"nli:entailment": n_pairs}
    # One back-translation request per distinct function, then one judge request per distinct pair
    # (the fixture repeats some functions: the same request is generated once), sampled as configured.
    chosen = [r.functions[i].source for r in records for i in chosen_functions(r, 3)]
    judged = {(r.instruction, answers[r.functions[i].source]) for r in records for i in chosen_functions(r, 3)}
    assert len(llm.requests) == len(set(chosen)) + len(judged)
    n_translations = len(set(chosen))
    assert {r.sampling.temperature for r in llm.requests[:n_translations]} == {ctx.config.backtranslate.temperature}
    assert {r.sampling.temperature for r in llm.requests[n_translations:]} == {0.0}


@needs_fixtures
def test_one_contradiction_drops_the_instruction(tmp_path):
    records, answers = official_records()
    no_e, double_letters, palindromes = records[:3]
    judgement = {
        no_e.instruction_id: SMOLLM2_JUDGEMENT,
        double_letters.instruction_id: SMOLLM2_SAMPLED_NO_LABEL,
        palindromes.instruction_id: SMOLLM2_SAMPLED_CONTRADICTION,
    }
    recordings = backtranslation_recordings(answers)
    for record in (no_e, double_letters, palindromes):
        for f in record.functions:
            prompt = render("nli", premise=record.instruction, hypothesis=answers[f.source])
            recordings[prompt] = [judgement[record.instruction_id]]
    ctx = make_context(tmp_path, ReplayBackend(recordings), "backtranslate.nli.backend=llm")
    kept, dropped = run_stage(ctx, [no_e, double_letters, palindromes])

    assert [(d.record.instruction_id, d.reason) for d in dropped] == [(palindromes.instruction_id, "contradiction")]
    assert [r.instruction_id for r in kept] == [no_e.instruction_id, double_letters.instruction_id]
    assert [bt.label for bt in kept[1].back_translations or []] == [None] * 3
    assert ctx.counts == {"nli:entailment": 3, "nli:unlabelled": 3, "nli:contradiction": 3, "instruction_unchecked": 1}


@needs_fixtures
def test_missing_answers_are_recorded_and_never_decide(tmp_path):
    records, answers = official_records()
    first, second, third = records[:3]
    # An answer holding only code (a real verifier generation from the official release) has no instruction.
    code_answer = json.loads((FIXTURES / "eval_func_rft.jsonl").read_text().splitlines()[0])["gpt-answer"][0]
    recordings = backtranslation_recordings(answers)
    recordings[render("backtranslate", function=first.functions[0].source)] = [code_answer]
    for f in second.functions:  # the LLM fails on every function of the second instruction
        del recordings[render("backtranslate", function=f.source)]
    llm = ReplayBackend(recordings)  # no judge recordings at all: every judgement is an llm error
    ctx = make_context(tmp_path, llm, "backtranslate.nli.backend=llm")
    kept, dropped = run_stage(ctx, [first, second, third])

    assert dropped == [] and len(kept) == 3  # nothing labelled contradiction: all kept
    errors = [[bt.error for bt in r.back_translations or []] for r in kept]
    assert errors == [["unparsable", "nli_unlabelled", "nli_unlabelled"], ["llm_error"] * 3, ["nli_unlabelled"] * 3]
    unparsable = (kept[0].back_translations or [])[0]
    assert unparsable.label is None and unparsable.detail == code_answer[:300]
    assert (kept[1].back_translations or [])[0].detail == "not_recorded"
    assert ctx.counts == {
        "back_translation_missing:unparsable": 1,
        "back_translation_missing:llm_error": 3,
        "nli:unlabelled": 5,
        "instruction_unchecked": 3,
    }


def test_disabled_passes_records_through(tmp_path):
    record = CrossvalRecord(
        instruction_id="a",
        instruction="Use no commas",
        functions=[FunctionResult(source="def evaluate(r):\n    return ',' not in r", accuracy=1)],
        cases=[CaseResult(input="a, b", output=False, accuracy=1.0)],
    )
    llm = ReplayBackend({})
    kept, dropped = run_stage(make_context(tmp_path, llm, "backtranslate.enabled=false"), [record])
    assert kept == [record] and dropped == [] and llm.requests == []


def test_llm_judge_reads_labels_and_none(tmp_path):
    pairs = [
        ("Use only palindromes", "Answer with words that are palindromes."),
        ("Answer in all lowercase letters", "Write the whole answer in capital letters."),
    ]
    recordings = {render("nli", premise=pairs[0][0], hypothesis=pairs[0][1]): [SMOLLM2_JUDGEMENT]}
    judge = LLMNLI(ReplayBackend(recordings), max_tokens=64, seed=1)
    assert judge.classify(pairs) == ["entailment", None]
    assert judge.classify([]) == []


def test_auto_nli_backend_follows_the_supervision_model():
    config = load_config(None, [])  # the default: nli.backend auto, the embedded model
    assert nli_backend(config) == "llm"  # an offline run: the NLI model would come from the hub
    config.llm.model = "Qwen/Qwen2-72B-Instruct"
    assert nli_backend(config) == "hf"
    assert nli_backend(load_config(None, ["backtranslate.nli.backend=hf"])) == "hf"
