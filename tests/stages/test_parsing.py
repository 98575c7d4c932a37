"""Robust parsing of LLM outputs (autoif.stages.parsing), on hand-made shapes and on the official release's
real generations (eval_func_rft.jsonl: 5 instructions x 8 raw answers of a strong model)."""

import json
import re

import pytest
from support import FIXTURES

from autoif.stages.parsing import (  # function_key: blank and whitespace-only lines do not count (our parser dedents)
    ParsedVerifier,
    ParseFailure,
    function_key,
    parse_bullet_lines,
    parse_nli_label,
    parse_score,
    parse_verifier_generation,
)

FUNC = "def evaluate(response):\n    return len(response.split()) <= 5"
CASES = [{"input": "short and sweet", "output": True}, {"input": "this one has far too many words", "output": False}]
EXPECTED_CASES = [("short and sweet", True), ("this one has far too many words", False)]


def parsed(text) -> list[ParsedVerifier]:
    result = parse_verifier_generation(text)
    assert not isinstance(result, ParseFailure), result
    return result


def only(text) -> ParsedVerifier:
    result = parsed(text)
    assert len(result) == 1, result
    return result[0]


def run(func: str, response: str):
    namespace: dict = {}
    exec(func, namespace)  # our own test inputs, not generated code
    return namespace["evaluate"](response)


def official_generations():
    return [json.loads(line) for line in (FIXTURES / "eval_func_rft.jsonl").read_text().splitlines()]


# --- verifier generations: shapes -------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "```json\n" + json.dumps({"func": FUNC, "cases": CASES}, indent=2) + "\n```",
        "Here is my answer:\n" + json.dumps({"func": FUNC, "cases": CASES}) + "\nI hope it helps.",
        "```\n" + json.dumps({"func": FUNC, "cases": CASES}) + "\n```",
    ],
)
def test_fenced_and_bare_json(text):
    verifier = only(text)
    assert verifier.func == FUNC
    assert verifier.cases == EXPECTED_CASES


def test_python_literal_dict_with_true_false():
    text = (
        f"{{'func': {FUNC!r}, 'cases': [{{'input': 'short and sweet', 'output': True}}, "
        "{'input': 'this one has far too many words', 'output': False}]}"
    )
    assert only(text).cases == EXPECTED_CASES


def test_json_with_python_true_and_trailing_comma():
    text = (
        f'{{"func": {json.dumps(FUNC)}, "cases": [{{"input": "short and sweet", "output": True}},'
        ' {"input": "this one has far too many words", "output": False},],}'
    )
    verifier = only(text)
    assert verifier.func == FUNC and verifier.cases == EXPECTED_CASES


def test_func_escaped_twice_and_raw_newlines():
    escaped_twice = json.dumps({"func": FUNC.replace("\n", "\\n"), "cases": CASES})
    assert "\\\\n" in escaped_twice
    assert only(escaped_twice).func == FUNC
    raw_newlines = f'{{"func": "{FUNC}", "cases": {json.dumps(CASES)}}}'  # a real newline inside a string
    assert only(raw_newlines).func == FUNC


def test_invalid_quote_escape_kept_in_code_and_dropped_in_text():
    # `\'` is no JSON escape. In the function it is Python's own escape; in a case it is an apostrophe.
    text = (
        "{\"func\": \"def evaluate(response):\\n    return response.replace('\\'', '') == response\","
        ' "cases": [{"input": "It\\\'s here", "output": false}, {"input": "plain", "output": true}]}'
    )
    verifier = only(text)
    assert "replace('\\'', '')" in verifier.func
    assert verifier.cases == [("It's here", False), ("plain", True)]
    assert run(verifier.func, "plain") is True and run(verifier.func, "It's") is False


@pytest.mark.parametrize(
    "label, expected",
    [
        ("True", True),
        ("false", False),
        ("TRUE.", True),
        (" no ", False),
        (1, True),
        (0, False),
        ("yes", True),
    ],
)
def test_output_strings_and_numbers_are_truth_values(label, expected):
    text = json.dumps({"func": FUNC, "cases": [{"input": "a b c", "output": label}]})
    assert only(text).cases == [("a b c", expected)]


def test_cases_with_unusable_outputs_or_inputs_are_skipped():
    cases = [
        {"input": "a b", "output": "maybe"},
        {"input": 5, "output": True},
        {"input": "ok", "output": True},
        ["pair form", False],
    ]
    assert only(json.dumps({"func": FUNC, "cases": cases})).cases == [("ok", True), ("pair form", False)]


def test_duplicated_functions_merge_and_cases_dedupe():
    first = json.dumps({"func": FUNC, "cases": CASES + CASES[:1]})
    again = json.dumps(
        {"func": FUNC.replace("\n", "\n\n") + "\n  ", "cases": CASES[1:] + [{"input": "one", "output": True}]}
    )
    verifier = only(f"{first}\n\nAnd the same once more:\n{again}")
    assert verifier.func == FUNC
    assert verifier.cases == EXPECTED_CASES + [("one", True)]


def test_several_objects_in_one_answer():
    other = "def evaluate(response):\n    return response.islower()"
    text = (
        json.dumps({"func": FUNC, "cases": CASES})
        + "\nA second version:\n"
        + json.dumps([{"function": other, "test_cases": [{"response": "abc", "expected": True}]}])
    )
    assert [(v.func, v.cases) for v in parsed(text)] == [(FUNC, EXPECTED_CASES), (other, [("abc", True)])]


def test_function_in_its_own_code_block():
    text = (
        "First the function:\n```python\n"
        + FUNC
        + "\n```\nThen the tests:\n```json\n"
        + json.dumps({"cases": CASES})
        + "\n```"
    )
    verifier = only(text)
    assert verifier.func == FUNC and verifier.cases == EXPECTED_CASES


def test_stray_braces_in_prose_do_not_hide_the_answer():
    text = "Let's fill in {name} later [see note. " + json.dumps({"func": FUNC, "cases": CASES})
    assert only(text).cases == EXPECTED_CASES


@pytest.mark.parametrize(
    "text, reason",
    [
        ("I am sorry, I cannot write that function.", "no_json"),
        ("", "no_json"),
        ('{"func": "def evaluate(response): return True" "cases": [', "bad_json"),
        (json.dumps({"cases": CASES}), "no_func"),
        (json.dumps({"func": "return True", "cases": CASES}), "func_no_evaluate"),
        (json.dumps({"func": FUNC}), "no_cases"),
        (json.dumps({"func": FUNC, "cases": []}), "no_cases"),
        (json.dumps({"func": FUNC, "cases": {"input": "x", "output": True}}), "bad_case"),
        (json.dumps({"func": FUNC, "cases": [{"input": "x", "output": "perhaps"}]}), "bad_case"),
        ("{name} " + json.dumps({"func": FUNC, "cases": [{"text": "x"}]}), "bad_case"),
    ],
)
def test_garbage_gives_a_reason(text, reason):
    failure = parse_verifier_generation(text)
    assert isinstance(failure, ParseFailure)
    assert failure.reason == reason and failure.message


def test_unknown_failure_reason_is_refused():
    with pytest.raises(ValueError, match="unknown parse failure reason"):
        ParseFailure("weird", "x")


# --- verifier generations: the official release's real answers --------------------------------


def official_parse(generation: str):
    """The official 3_cross_validation.py: first ```json fence, then json.loads; None when it gives up."""
    try:
        return json.loads(re.findall(r"```json(.*?)```", generation, re.DOTALL)[0].strip())
    except (IndexError, json.JSONDecodeError):
        return None


def test_every_official_generation_parses():
    rows = official_generations()
    assert [len(r["gpt-answer"]) for r in rows] == [8] * 5
    for row in rows:
        for generation in row["gpt-answer"]:
            verifier = only(generation)
            assert len(verifier.cases) == 3
            compile(verifier.func, "<generation>", "exec")


def test_we_agree_with_the_official_reading_where_it_has_one():
    """Same function and cases wherever json.loads reads the answer; outputs "True"/"False" become bools."""
    string_outputs = 0
    for row in official_generations():
        for generation in row["gpt-answer"]:
            official = official_parse(generation)
            if official is None:
                continue
            verifier = only(generation)
            assert function_key(verifier.func) == function_key(official["func"])
            expected = []
            for case in official["cases"]:
                output = case["output"]
                if isinstance(output, str):
                    string_outputs += 1
                    output = output.lower() == "true"
                expected.append((case["input"], output))
            assert verifier.cases == expected
    assert string_outputs == 15


def test_we_recover_what_the_official_reading_drops():
    """Three generations: one with an invalid \\' escape, two with Python True/False literals."""
    rows = official_generations()
    dropped = {
        (i, j) for i, row in enumerate(rows) for j, g in enumerate(row["gpt-answer"]) if official_parse(g) is None
    }
    assert dropped == {(1, 3), (1, 4), (3, 1)}

    escaped = only(rows[1]["gpt-answer"][3])
    assert "replace('\\'', '')" in escaped.func
    assert escaped.cases == [("['word1', 'word2', 'word3']", False), ("['word1']", True), ("['word3', 'word1']", False)]
    assert run(escaped.func, "['word1']") is True

    for i, j in [(1, 4), (3, 1)]:
        generation = rows[i]["gpt-answer"][j]
        assert re.search(r'"output": (True|False)', generation)
        assert [output for _, output in only(generation).cases] == [True, False, True]


# --- self-instruct lists ----------------------------------------------------------------------


def test_parse_bullet_lines():
    text = (
        "Here are new instructions:\n"
        "- Answer in   lowercase letters.\n"
        '* "Do not use commas."\n'
        "• Use exactly three bullet points\n"
        "1. Start with a title\n"
        "12) End with a question\n"
        "  - indented item\n"
        "-\n"
        "- ''\n"
        "-no space after the dash\n"
        "1.5 liters is not a list item\n"
        "That is all."
    )
    assert parse_bullet_lines(text) == [
        "Answer in lowercase letters.",
        "Do not use commas.",
        "Use exactly three bullet points",
        "Start with a title",
        "End with a question",
        "indented item",
    ]
    assert parse_bullet_lines("No list here at all.") == []


# --- judge scores -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, score",
    [
        ("The response is relevant.\nScore: 8", 8.0),
        ("Good answer.\n\n**Score:** 9", 9.0),
        ("Reasoning...\n8/10", 8.0),
        ("Rating: 7.5", 7.5),
        ("6", 6.0),
        ("Final score = 10.", 10.0),
        ("Score: 4\nAfter more thought:\nScore: 9", 9.0),
        ("The score is 7 because it answers the question.\nThanks for asking.", 7.0),
        ("Score: 4/5", None),
        ("Score: 11", None),
        ("No number at all.", None),
        ("", None),
    ],
)
def test_parse_score(text, score):
    assert parse_score(text) == score


def test_parse_score_custom_range():
    assert parse_score("Score: 4/5", low=1, high=5) == 4.0
    assert parse_score("Score: 0", low=1, high=5) is None


# --- NLI labels -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, label",
    [
        ("Label: contradiction", "contradiction"),
        ("**Label:** Entailment", "entailment"),
        ("Thinking it through, the answer is neutral.", "neutral"),
        ("Contradiction.\nThe second one asks for uppercase.", "contradiction"),
        ("The hypothesis does not contradict the premise; it entails it.", "entailment"),
        ("This is not a contradiction. It is neutral.", "neutral"),
        ("It could be entailment or contradiction.", None),
        ("I cannot tell.", None),
        ("", None),
    ],
)
def test_parse_nli_label(text, label):
    assert parse_nli_label(text) == label
