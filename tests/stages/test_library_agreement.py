"""The built-in library's checkers are exact: the functions of one instance are one definition, so
they agree on every text, here real model responses (the official AutoIF release's and
SmolLM2-135M's) and variants of them that stress the definitions (odd line ends and spaces, case,
emphasis, postscripts, text without letters). Functions of one instance that disagree are a defect
by definition. Then the library's verdicts against Google's IFEval checkers, where an instance asks
what an IFEval instruction asks: equal wherever docs/library.md does not name a deliberate
difference of definition."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from autoif.config import load_config
from autoif.stages.library import CONSTRAINTS, build_library

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# Enough seeds that every parameter choice of a constraint (markers, relations, words) shows up.
SEEDS = (0, 1, 42)
PER_CONSTRAINT = 3


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def real_responses() -> list[str]:
    """Every model response the fixtures hold, each once."""
    official = FIXTURES / "autoif-official"
    texts = [
        a
        for name in ("query_rft.jsonl", "dpo_query_w_funcs.jsonl")
        for r in _jsonl(official / name)
        for a in r["gpt-answer"]
    ]
    texts += [
        r["response"] for name in ("query_rft_score.jsonl", "query_score_filter.jsonl") for r in _jsonl(official / name)
    ]
    texts += [scored[0] for r in _jsonl(official / "dpo_query_eval_score_results.jsonl") for scored in r["response"]]
    texts += [r["response"] for r in _jsonl(FIXTURES / "smollm2-ifeval-responses.jsonl")]
    return list(dict.fromkeys(texts))


# Each rewrites a real response the way odd input would arrive: other line ends and spaces, other
# case, emphasis, more than one postscript marker.
VARIANTS = {
    "cr line ends": lambda t: t.replace("\r\n", "\n").replace("\n", "\r"),
    "crlf line ends": lambda t: t.replace("\n", "\r\n"),
    "unicode line separators": lambda t: t.replace("\n", "\u2028"),
    "no-break spaces": lambda t: t.replace(" ", "\xa0"),
    "underscores for spaces": lambda t: t.replace(" ", "_"),
    "tabs for spaces": lambda t: t.replace(" ", "\t"),
    "upper case": str.upper,
    "lower case": str.lower,
    "bold spans": lambda t: f"**Tip** and **Note**: {t.replace('. ', '. **Also** ', 2)}",
    "two postscripts": lambda t: f"P.S. a note first\n\n{t}\n\nP.S. and one more\nP.P.S. last",
    "padded": lambda t: f" \n\n{t}\n \n",
    "markdown removed": lambda t: t.replace("*", "").replace("#", ""),
}

# Texts no model wrote but every function must judge: empty, no letters, lone markers.
EDGE_TEXTS = [
    "",
    " ",
    "\n\n",
    "1234 5678",
    "!!! ... ???",
    "- \n* \n#",
    "**",
    "* *",
    "2 * 3 * 4",
    "***bold italic***",
    "**Tip** and **Note**",
    "******",
    "P.S.",
    "p.s. lower case",
    "Intro.\r\rP.S. after a lone CR",
    "coffee_utils and battery2go",
    "ÉCOLE café naïve İstanbul ǅemal ß",
    "Section 1_a\nSection 2",
    "1. one\r2. two\r3. three",
]


def instances():
    """Several instances of every constraint, each set of functions once."""
    unique = {}
    for seed in SEEDS:
        for entry in build_library(seed, per_constraint=PER_CONSTRAINT):
            unique.setdefault(tuple(entry.functions), entry)
    return list(unique.values())


@pytest.fixture(scope="module")
def corpus():
    """(real responses, every text): each real response as it is and in three of the variants, in
    rotation, so that every variant meets a quarter of the responses."""
    real = real_responses()
    variants = list(VARIANTS.values())
    step = len(variants) // 3
    varied = [variants[(i + k * step) % len(variants)](t) for i, t in enumerate(real) for k in range(3)]
    return real, list(dict.fromkeys(real + varied + EDGE_TEXTS))


# langdetect takes milliseconds a text: the language instances (one function each, so nothing to
# disagree) judge every fourth real response only, for the comparison with IFEval.
SLOW = {"language:response"}
SLOW_STRIDE = 4


@pytest.fixture(scope="module")
def verdicts(corpus):
    """(instances, grid[function][text] of each) from the real sandbox; a SLOW instance's grid covers
    every SLOW_STRIDE-th real response only."""
    from autoif.sandbox import Sandbox

    real, texts = corpus
    entries = instances()
    sandbox_config = load_config().sandbox
    with Sandbox(workers=sandbox_config.workers, timeout_s=10.0, memory_mb=sandbox_config.memory_mb) as sandbox:
        grids = sandbox.check_many(
            [(e.functions, real[::SLOW_STRIDE] if e.constraint in SLOW else texts) for e in entries]
        )
    return entries, grids


def test_the_corpus_is_broad(corpus, verdicts):
    real, texts = corpus
    entries, _ = verdicts
    assert len(real) >= 250  # the official release's answers and SmolLM2's
    assert len(texts) >= len(real) * 3
    assert {e.constraint for e in entries} == set(CONSTRAINTS)
    assert sum(len(e.functions) > 1 for e in entries) >= 60


def test_every_instance_is_one_definition(corpus, verdicts):
    """All functions of every instance return a bool, and the same one, on every text."""
    real, texts = corpus
    entries, grids = verdicts
    errors, disagreements = [], []
    for e, grid in zip(entries, grids):
        for j, text in enumerate(real[::SLOW_STRIDE] if e.constraint in SLOW else texts):
            outcomes = [row[j] for row in grid]
            errors += [(e.id, e.params, o.error, text[:80]) for o in outcomes if o.error is not None]
            if len({o.value for o in outcomes}) > 1:
                disagreements.append((e.id, e.params, [o.value for o in outcomes], text[:80]))
    assert errors == []
    assert disagreements == []


# The issue's defects and the separators that split differently before: (constraint, parameters,
# text, the verdict of every function).
DEFINITIONS = [
    ("format:highlights", {"n": 2}, "**Tip** and **Note**", True),
    ("format:highlights", {"n": 3}, "**Tip** and **Note**", False),  # not the words between them
    ("format:highlights", {"n": 1}, "It is 2 * 3 * 4.", False),
    ("format:highlights", {"n": 1}, "A ***bold italic*** part.", True),
    ("format:highlights", {"n": 2}, "A ***bold italic*** part.", False),
    ("structure:postscript", {"marker": "P.S."}, "P.S. a note first\n\nThe answer.\n\nP.S. the postscript", True),
    ("structure:postscript", {"marker": "P.S."}, "The answer.\r\rP.S. after lone CRs", True),
    ("structure:postscript", {"marker": "P.S."}, "The answer.\n\nP.S.", False),
    ("keywords:include", {"keywords": ["coffee", "battery"]}, "coffee_utils and battery2go", True),
    ("keywords:exclude", {"keywords": ["coffee", "ocean"]}, "import coffee_utils", False),
    ("keywords:exclude", {"keywords": ["coffee", "ocean"]}, "coffeehouse oceanic", True),
    ("case:lowercase", {}, "1234 5678", False),
    ("case:lowercase", {}, "", False),
    ("case:lowercase", {}, "all lowercase, 42 times.", True),
    ("case:uppercase", {}, "!!! ...", False),
    ("case:uppercase", {}, "ALL CAPS, 42 TIMES.", True),
    ("structure:bullets", {"n": 2}, "* one\r* two", True),
    ("structure:bullets", {"n": 2}, "-\xa0one\n-\xa0two", True),
    ("length:paragraphs", {"n": 2}, "One.\r\rTwo.", True),
    ("length:paragraphs", {"n": 2}, "One.\u2028\u2028Two.", True),
    ("structure:numbered_list", {"n": 3}, "1. one\r2. two\r3. three", True),
    ("structure:sections", {"marker": "Section", "n": 2}, "Section 1\rText.\rSection\xa02\rText.", True),
    ("structure:sections", {"marker": "Section", "n": 2}, "Section 1_a\nSection 2", False),
    ("keywords:phrase_repeated", {"phrase": "step by step", "n": 2}, "Step by\nstep, then step  by step.", True),
    ("keywords:phrase_repeated", {"phrase": "step by step", "n": 1}, "Step by steps.", False),
    ("format:single_line", {}, "One line\rand another", False),
]


def test_definitions_of_the_issue_hold_for_every_function():
    from autoif.sandbox import Sandbox

    cases = [(CONSTRAINTS[cid].bound_functions(params), text, expected) for cid, params, text, expected in DEFINITIONS]
    with Sandbox(workers=1) as sandbox:
        grids = sandbox.check_many([(functions, [text]) for functions, text, _ in cases])
    got = [[row[0].value for row in grid] for grid in grids]
    assert got == [[expected] * len(functions) for functions, _, expected in cases]


def _relation(p: dict) -> list[tuple[str, int]]:
    """A library relation as IFEval's ('at least' n / 'less than' n) relations, all to hold."""
    n = p["n"]
    return {
        "at least": [("at least", n)],
        "fewer than": [("less than", n)],
        "at most": [("less than", n + 1)],
        "exactly": [("at least", n), ("less than", n + 1)],
    }[p["relation"]]


# The IFEval instructions (id, kwargs), all to hold, that ask what a library instance asks.
IFEVAL = {
    "length:max_words": lambda p: [
        ("length_constraints:number_words", {"relation": "less than", "num_words": p["max_words"] + 1})
    ],
    "length:min_words": lambda p: [
        ("length_constraints:number_words", {"relation": "at least", "num_words": p["min_words"]})
    ],
    "length:word_range": lambda p: [
        ("length_constraints:number_words", {"relation": "at least", "num_words": p["low"]}),
        ("length_constraints:number_words", {"relation": "less than", "num_words": p["high"] + 1}),
    ],
    "length:sentences": lambda p: [
        ("length_constraints:number_sentences", {"relation": r, "num_sentences": n}) for r, n in _relation(p)
    ],
    "structure:bullets": lambda p: [("detectable_format:number_bullet_lists", {"num_bullets": p["n"]})],
    "structure:sections": lambda p: [
        ("detectable_format:multiple_sections", {"section_spliter": p["marker"], "num_sections": p["n"]})
    ],
    "structure:title": lambda p: [("detectable_format:title", {})],
    "structure:two_responses": lambda p: [("combination:two_responses", {})],
    # IFEval's data writes "P.P.S" without the last dot; its checker reads any other marker as a regex.
    "structure:postscript": lambda p: [
        ("detectable_content:postscript", {"postscript_marker": {"P.P.S.": "P.P.S"}.get(p["marker"], p["marker"])})
    ],
    "structure:placeholders": lambda p: [("detectable_content:number_placeholders", {"num_placeholders": p["n"]})],
    "format:json": lambda p: [("detectable_format:json_format", {})],
    "format:quoted": lambda p: [("startend:quotation", {})],
    "format:highlights": lambda p: [("detectable_format:number_highlighted_sections", {"num_highlights": p["n"]})],
    "case:lowercase": lambda p: [("change_case:english_lowercase", {})],
    "case:uppercase": lambda p: [("change_case:english_capital", {})],
    "case:capital_words": lambda p: [
        ("change_case:capital_word_frequency", {"capital_relation": r, "capital_frequency": n}) for r, n in _relation(p)
    ],
    "keywords:include": lambda p: [("keywords:existence", {"keywords": p["keywords"]})],
    "keywords:exclude": lambda p: [("keywords:forbidden_words", {"forbidden_words": p["keywords"]})],
    "keywords:frequency": lambda p: [
        ("keywords:frequency", {"keyword": p["word"], "relation": r, "frequency": n}) for r, n in _relation(p)
    ],
    "keywords:letter_frequency": lambda p: [
        ("keywords:letter_frequency", {"letter": p["letter"], "let_relation": r, "let_frequency": n})
        for r, n in _relation(p)
    ],
    "keywords:avoid_letter": lambda p: [
        ("keywords:letter_frequency", {"letter": p["letter"], "let_relation": "less than", "let_frequency": 1})
    ],
    "language:response": lambda p: [("language:response_language", {"language": p["language"]})],
    "start:restate_request": lambda p: [("combination:repeat_prompt", {"prompt_to_repeat": p["request"]})],
    "end:phrase": lambda p: [("startend:end_checker", {"end_phrase": p["phrase"]})],
    "punctuation:no_commas": lambda p: [("punctuation:no_comma", {})],
}

# Constraints whose definition differs from IFEval's on purpose (docs/library.md says how and why),
# with the least share of real responses on which they still give IFEval's verdict. Every other
# constraint above gives IFEval's verdict on every real response.
DIFFERENT = {
    "length:max_words": 0.98,  # a word is a whitespace token with a letter or digit; IFEval: each \w+ run
    "length:min_words": 0.98,
    "length:word_range": 0.96,
    "length:sentences": 0.98,  # "1." and "E.g." end a sentence here; IFEval's splitter knows them
    "structure:sections": 0.98,  # exactly sections 1..N at line starts; IFEval: the marker anywhere, at least N
    "format:json": 0.95,  # an object or an array; IFEval also takes a lone JSON string or number
    "case:capital_words": 0.85,  # words of two letters or more; IFEval also counts "I" and "A"
    "case:lowercase": 0.99,  # the case alone; IFEval also needs langdetect to say English
    "case:uppercase": 0.99,
    "format:highlights": 0.99,  # markdown's rule: "* *text*" is a bullet with one highlight; IFEval: none
    "structure:bullets": 0.99,  # markdown's rule: a marker, then a space; IFEval takes "*text" too
    "structure:postscript": 0.99,  # a line that starts with the marker, after the answer, with a note
    "language:response": 0.99,  # a text without letters is in no language; IFEval: any language
}


def ifeval_verdict(registry, cid: str, params: dict, text: str) -> bool:
    from autoif.evals.ifeval import seeded_build

    followed = True
    for instruction_id, kwargs in IFEVAL[cid](params):
        checker = registry[instruction_id](instruction_id)
        seeded_build(checker, **kwargs)
        followed = followed and bool(checker.check_following(text))
    return followed


def test_verdicts_match_ifeval_where_definitions_match(corpus, verdicts, capsys):
    from autoif.evals.ifeval import BENCHMARK

    registry = BENCHMARK.registry()
    real, _ = corpus
    entries, grids = verdicts
    checks, differ, compared = Counter(), Counter(), Counter()
    for e, grid in zip(entries, grids):
        # Two instances of a constraint are enough here (IFEval's checkers tokenize: seconds each).
        if e.constraint not in IFEVAL or compared[e.constraint] == 2:
            continue
        compared[e.constraint] += 1
        for j, text in enumerate(real[::SLOW_STRIDE] if e.constraint in SLOW else real):
            checks[e.constraint] += 1
            differ[e.constraint] += grid[0][j].value != ifeval_verdict(registry, e.constraint, e.params, text)
    total = sum(checks.values())
    with capsys.disabled():
        print(f"\nlibrary vs IFEval: {total - sum(differ.values())}/{total} checks agree")
        for cid in sorted(checks):
            print(f"  {cid:28} {checks[cid] - differ[cid]:5}/{checks[cid]}")
    assert set(IFEVAL) <= set(CONSTRAINTS) and set(DIFFERENT) <= set(IFEVAL)
    assert {cid: n for cid, n in differ.items() if n and cid not in DIFFERENT} == {}
    agreement = {cid: 1 - differ[cid] / checks[cid] for cid in DIFFERENT}
    assert {cid: share for cid, share in agreement.items() if share < DIFFERENT[cid]} == {}
    assert sum(differ.values()) / total < 0.01  # the issue's "about 99%"
