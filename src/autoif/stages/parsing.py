"""Robust parsing of LLM outputs: verifier generations, self-instruct lists, judge scores, NLI labels.

Pure functions over text, no I/O. LLMs rarely emit clean JSON: answers come fenced or bare, as
Python literals, with raw newlines or stray escapes inside strings, trailing commas, several
objects, or the function in a code block of its own. Each parser takes what it can and says why
when it can take nothing.
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from ..records import NLILabel

# Ordered by how far parsing got: when every object of an answer fails, the failure that got
# furthest is the one reported, so a stray "{name}" in the prose does not hide a real bad case.
FAILURE_REASONS = ("no_json", "bad_json", "no_func", "func_no_evaluate", "no_cases", "bad_case")


@dataclass
class ParsedVerifier:
    """One verification function and its test cases (response text, expected verdict)."""

    func: str
    cases: list[tuple[str, bool]] = field(default_factory=list)


@dataclass(frozen=True)
class ParseFailure:
    """Why nothing usable came out of a generation: a code from FAILURE_REASONS and a short message."""

    reason: str
    message: str

    def __post_init__(self):
        if self.reason not in FAILURE_REASONS:
            raise ValueError(f"unknown parse failure reason {self.reason!r}; expected one of {FAILURE_REASONS}")


# Key spellings seen from models that were asked for {"func", "cases": [{"input", "output"}]}.
FUNC_KEYS = ("func", "function", "code", "evaluate")
CASES_KEYS = ("cases", "test_cases", "tests")
INPUT_KEYS = ("input", "response")
OUTPUT_KEYS = ("output", "expected", "expected_output")
TRUE_WORDS = frozenset({"true", "yes", "y", "1", "pass", "passed"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "fail", "failed"})

_DEFINES_EVALUATE = re.compile(r"\bdef\s+evaluate\s*\(")
_KEY_HINT = re.compile("[\"'](?:" + "|".join(FUNC_KEYS + CASES_KEYS) + ")[\"']\\s*:")
_FENCE = re.compile(r"```[ \t]*[\w+-]*[ \t]*\n(.*?)```", re.S)
_FENCED_WHOLE = re.compile(r"\A\s*```[ \t]*[\w+-]*[ \t]*\n(.*?)\n?\s*```\s*\Z", re.S)
_OPENER = re.compile(r"[{\[]")
_CLOSER = {"{": "}", "[": "]"}
# Lenient JSON tokens: whitespace, structure, a quoted string (either quote), or a bare word.
_TOKEN = re.compile(r"""\s+|[{}\[\]:,]|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^\s{}\[\]:,"']+""", re.S)
_BARE_WORDS = {"True": "true", "False": "false", "None": "null", "true": "true", "false": "false", "null": "null"}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\", "/": "/"}
# literal_eval compiles its input; past this size an answer is not a verifier anyway.
_MAX_LITERAL_CHARS = 200_000
_FAILED = object()


def parse_verifier_generation(raw: str) -> list[ParsedVerifier] | ParseFailure:
    """Every (function, cases) pair in one LLM answer, deduplicated; or why there is none.

    Functions that differ only in whitespace are one function, their cases merged; a case
    repeated within a function is kept once.
    """
    values = list(_json_values(raw))
    spans = [(start, end) for start, end, _ in values]
    code_blocks = [
        (m.start(), m.group(1))
        for m in _FENCE.finditer(raw)
        if _DEFINES_EVALUATE.search(m.group(1)) and not any(s < m.end() and m.start() < e for s, e in spans)
    ]
    verifiers: list[ParsedVerifier] = []
    failures: list[ParseFailure] = []
    for start, end, value in values:
        for index, obj in enumerate(_verifier_objects(value)):
            result = _verifier_from(obj, _nearest_code_block(code_blocks, start))
            if isinstance(result, ParsedVerifier) and not _compiles(result.func):
                result.func = _func_keeping_quote_escapes(raw[start:end], index) or result.func
            if isinstance(result, ParseFailure):
                failures.append(result)
            else:
                verifiers.append(result)
    if verifiers:
        return _merge_duplicates(verifiers)
    if failures:
        return max(failures, key=lambda failure: FAILURE_REASONS.index(failure.reason))
    if _KEY_HINT.search(raw):
        return ParseFailure("bad_json", "found a JSON object with func/cases keys, but it does not parse")
    return ParseFailure("no_json", "found no JSON object in the answer")


def _json_values(text: str) -> Iterator[tuple[int, int, Any]]:
    """(start, end, value) of each top-level JSON-like value in free text."""
    pos = 0
    while match := _OPENER.search(text, pos):
        start = match.start()
        end = _balanced_end(text, start)
        if end is None:
            pos = start + 1  # an unclosed bracket (or an apostrophe read as a quote): look further in
            continue
        value = _load_lenient(text[start:end])
        if value is not _FAILED:
            yield start, end, value
        pos = end


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the bracket closing text[start], skipping quoted strings; None if it never closes."""
    expected: list[str] = []
    quote = None
    i = start
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in _CLOSER:
            expected.append(_CLOSER[char])
        elif char in "}]":
            if char != expected.pop():
                return None
            if not expected:
                return i + 1
        i += 1
    return None


def _load_lenient(span: str) -> Any:
    """The value of a JSON-ish span: strict JSON, a Python literal, or repaired JSON; _FAILED if none."""
    try:
        return json.loads(span, strict=False)  # strict=False accepts raw newlines inside strings
    except (ValueError, RecursionError):
        pass
    if len(span) <= _MAX_LITERAL_CHARS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escapes such as "\d" warn
                return ast.literal_eval(span)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
    repaired = _repair_json(span)
    if repaired is not None:
        try:
            return json.loads(repaired)
        except (ValueError, RecursionError):
            pass
    return _FAILED


def _repair_json(span: str, keep_quote_escapes: bool = False) -> str | None:
    """Rewrite JSON-ish text as JSON: re-encode every quoted string, map Python's True/False/None,
    drop trailing commas. None when the text does not even tokenize (an unterminated string).
    With keep_quote_escapes, `\\'` inside a double-quoted string stays a backslash and a quote."""
    out: list[str] = []
    pos = 0
    while pos < len(span):
        match = _TOKEN.match(span, pos)
        if match is None:
            return None
        token = match.group()
        pos = match.end()
        if token[0] in "\"'":
            out.append(json.dumps(_unescape(token[1:-1], keep_quote_escapes and token[0] == '"')))
        elif token in "}]":
            while out and (not out[-1].strip() or out[-1] == ","):
                if out.pop() == ",":
                    break
            out.append(token)
        else:
            out.append(_BARE_WORDS.get(token, token))
    return "".join(out)


def _unescape(body: str, keep_quote_escapes: bool = False) -> str:
    """Decode the escapes of a quoted string leniently: JSON's, plus \\' (unless keep_quote_escapes),
    and unknown ones kept as written."""

    def decode(match: re.Match) -> str:
        escape = match.group(1)
        if escape[0] == "u" and len(escape) == 5:
            return chr(int(escape[1:], 16))
        if escape == "'" and keep_quote_escapes:
            return match.group()
        return _SIMPLE_ESCAPES.get(escape, match.group())

    return _ESCAPE.sub(decode, body)


def _func_keeping_quote_escapes(span: str, index: int) -> str | None:
    """The index-th verifier's function in span, read again keeping `\\'` as written; None unless it compiles.

    `\\'` is no JSON escape. In prose it stands for an apostrophe, but in code it is mostly Python's
    own escape whose backslash the model forgot to double (`'\\''`, a quote character), and
    decoding it to a bare quote leaves a function that does not compile.
    """
    if "\\'" not in span:
        return None
    repaired = _repair_json(span, keep_quote_escapes=True)
    try:
        value = json.loads(repaired) if repaired is not None else None
    except (ValueError, RecursionError):
        return None
    objects = list(_verifier_objects(value))
    func = _first(objects[index], FUNC_KEYS) if index < len(objects) else None
    if not (isinstance(func, str) and _DEFINES_EVALUATE.search(func)):
        return None
    func = _clean_func(func)
    return func if _compiles(func) else None


def _verifier_objects(value: Any) -> Iterator[dict]:
    """The dicts that hold a verifier inside a parsed value; a bare list of cases counts as one."""
    if isinstance(value, dict):
        if any(key in value for key in FUNC_KEYS + CASES_KEYS):
            yield value
        else:
            for item in value.values():
                yield from _verifier_objects(item)
    elif isinstance(value, list):
        if value and all(isinstance(item, dict) and any(k in item for k in INPUT_KEYS) for item in value):
            yield {"cases": value}
        else:
            for item in value:
                yield from _verifier_objects(item)


def _nearest_code_block(code_blocks: list[tuple[int, str]], position: int) -> str | None:
    """The code block defining evaluate closest before position (the usual "code, then JSON"), else after."""
    before = [code for start, code in code_blocks if start < position]
    if before:
        return before[-1]
    return code_blocks[0][1] if code_blocks else None


def _verifier_from(obj: dict, code_block: str | None) -> ParsedVerifier | ParseFailure:
    func = _first(obj, FUNC_KEYS)
    if not (isinstance(func, str) and _DEFINES_EVALUATE.search(func)):
        if code_block is not None:
            func = code_block
        elif isinstance(func, str) and func.strip():
            return ParseFailure("func_no_evaluate", "the function does not define evaluate(response)")
        else:
            return ParseFailure("no_func", "no function under a 'func' key or in a code block")
    raw_cases = _first(obj, CASES_KEYS)
    if not raw_cases:
        return ParseFailure("no_cases", "no test cases under a 'cases' key")
    if not isinstance(raw_cases, list):
        return ParseFailure("bad_case", f"'cases' is a {type(raw_cases).__name__}, not a list")
    cases = [case for case in map(_coerce_case, raw_cases) if case is not None]
    if not cases:
        return ParseFailure("bad_case", f"none of {len(raw_cases)} cases has a string input and a true/false output")
    return ParsedVerifier(_clean_func(func), cases)


def _first(obj: dict, keys: tuple[str, ...]) -> Any:
    return next((obj[key] for key in keys if key in obj), None)


def _coerce_case(item: Any) -> tuple[str, bool] | None:
    """A case as (input, output); None when the input is not text or the output is not a truth value."""
    if isinstance(item, dict):
        text, label = _first(item, INPUT_KEYS), _first(item, OUTPUT_KEYS)
    elif isinstance(item, (list, tuple)) and len(item) == 2:
        text, label = item
    else:
        return None
    verdict = _as_bool(label)
    if not isinstance(text, str) or verdict is None:
        return None
    return text, verdict


def _as_bool(label: Any) -> bool | None:
    if isinstance(label, bool):
        return label
    if isinstance(label, (int, float)) and label in (0, 1):
        return bool(label)
    if isinstance(label, str):
        word = label.strip().strip(".").lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    return None


def _clean_func(func: str) -> str:
    """Unwrap a fence inside the string, undo a second layer of escaping, dedent."""
    fenced = _FENCED_WHOLE.match(func)
    if fenced:
        func = fenced.group(1)
    if not _compiles(func):
        unescaped = _unescape(func)
        if _compiles(unescaped):
            func = unescaped  # "\\n" where "\n" was meant: the whole source was escaped twice
    return textwrap.dedent(func).strip("\n").rstrip()


def _compiles(source: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(source, "<verifier>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
        return False
    return True


def function_key(func: str) -> str:
    """Identity of a function for deduplication: trailing whitespace and blank lines do not count."""
    return "\n".join(line.rstrip() for line in func.splitlines() if line.strip())


def _merge_duplicates(verifiers: list[ParsedVerifier]) -> list[ParsedVerifier]:
    merged: dict[str, ParsedVerifier] = {}
    for verifier in verifiers:
        kept = merged.setdefault(function_key(verifier.func), ParsedVerifier(verifier.func))
        kept.cases.extend(case for case in dict.fromkeys(verifier.cases) if case not in kept.cases)
    return list(merged.values())


# --- self-instruct lists ---------------------------------------------------------------------

_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.*\S)")
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "`": "`"}


def parse_bullet_lines(text: str) -> list[str]:
    """The items of a bulleted or numbered list (`- `, `* `, `• `, `1. `, `1) `), in order.

    Other lines (headers, preamble, closing remarks) are ignored. Items lose the bullet, any
    surrounding quotes, and runs of whitespace; empty items are dropped.
    """
    items = []
    for line in text.splitlines():
        match = _BULLET.match(line)
        if match:
            item = strip_quotes(" ".join(match.group(1).split()))
            if item:
                items.append(item)
    return items


def strip_quotes(item: str) -> str:
    """The text without the quotes or brackets around it, however deeply nested."""
    while len(item) >= 2 and _QUOTE_PAIRS.get(item[0]) == item[-1]:
        item = item[1:-1].strip()
    return item


# --- judge scores ----------------------------------------------------------------------------

_NUMBER = r"(\d+(?:\.\d+)?)"
_OUT_OF = r"(?:\s*(?:/|out\s+of)\s*" + _NUMBER + r")?"
_SCORE_LINE = re.compile(
    r"^(?:(?:final|overall|total|relevance)\s+)?(?:score|rating|grade)?\s*(?::|=|-|is)?\s*"
    + _NUMBER
    + _OUT_OF
    + r"\s*\.?$",
    re.I,
)
_SCORE_ANYWHERE = re.compile(r"\bscore\s*(?::|=|is)\s*" + _NUMBER + _OUT_OF, re.I)
_MARKUP = str.maketrans("", "", "*_#`[]>")


def parse_score(text: str, low: float = 0, high: float = 10) -> float | None:
    """A judge's score: read from the last non-empty line ("Score: 8", "**Score:** 9", "8/10",
    "Rating: 7.5", "8"), else the last "Score: N" anywhere. None when there is none, when it lies
    outside [low, high], or when it is given out of another maximum ("4/5" on a 0-10 scale)."""
    plain = text.translate(_MARKUP)
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    match = _SCORE_LINE.match(lines[-1]) if lines else None
    if match is None:
        match = next(reversed(list(_SCORE_ANYWHERE.finditer(plain))), None)
    if match is None:
        return None
    score = float(match.group(1))
    if match.group(2) is not None and float(match.group(2)) != high:
        return None
    return score if low <= score <= high else None


# --- NLI labels ------------------------------------------------------------------------------

NLI_LABELS: tuple[NLILabel, ...] = ("entailment", "neutral", "contradiction")
_LABEL_WORD = r"(entail\w*|neutral\w*|contradict\w*)"
_EXPLICIT_LABEL = re.compile(
    r"\b(?:label|answer|relationship|relation|verdict|classification|prediction)\s*(?:is)?\s*[:=]?\s*"
    r"(?:is\s+)?(?:an?\s+)?" + _LABEL_WORD,
    re.I,
)
_MENTION = re.compile(r"\b" + _LABEL_WORD, re.I)
_FIRST_LINE_LABEL = re.compile(_LABEL_WORD + r"\W*", re.I)
V = TypeVar("V")
_NEGATED = re.compile(r"\b(?:not|no|never|neither|nor)\b[\w\s]{0,12}$|n't\s+(?:\w+\s+){0,2}$", re.I)


def parse_nli_label(text: str) -> NLILabel | None:
    """The 3-way NLI label an LLM judge gave, or None when it is missing or ambiguous.

    In order: an explicit "Label: X" / "the answer is X" (the last one); a first line that is
    just the label; else the single label mentioned without negation ("does not contradict" is
    not a vote for contradiction), looking at the last line first, then the whole text.
    """
    return _read_vote(text, _EXPLICIT_LABEL, _FIRST_LINE_LABEL, _MENTION, label_of)


_LABEL_PREFIXES: tuple[tuple[str, NLILabel], ...] = (
    ("entail", "entailment"),
    ("neutral", "neutral"),
    ("contradict", "contradiction"),
)


def label_of(name: str) -> NLILabel | None:
    """The NLI label a word stands for ("ENTAILMENT", "contradicts", "Neutral"...): an LLM judge's
    answer here, an NLI model's class name in nli.py."""
    word = name.strip().lower()
    return next((label for prefix, label in _LABEL_PREFIXES if word.startswith(prefix)), None)


def _read_vote(
    text: str, explicit: re.Pattern, first_line: re.Pattern, mention: re.Pattern, word_of: Callable[[str], V]
) -> V | None:
    """What an LLM judge voted (an NLI label, a conflict verdict): the last explicit statement; else
    a first line that is only the vote; else the one vote mentioned without negation, in the last
    line, then in the whole text. None when there is none or the mentions disagree."""
    plain = text.translate(_MARKUP)
    stated = list(explicit.finditer(plain))
    if stated:
        return word_of(stated[-1].group(1))
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    if not lines:
        return None
    first = first_line.fullmatch(lines[0])
    if first:
        return word_of(first.group(1))
    for scope in (lines[-1], plain):
        votes = {word_of(m.group(1)) for m in mention.finditer(scope) if not _NEGATED.search(scope[: m.start()])}
        votes.discard(None)
        if len(votes) > 1:
            return None
        if votes:
            return votes.pop()
    return None


# --- conflict verdicts ------------------------------------------------------------------------

_VERDICT_WORD = r"(incompatible|compatible|conflict\w*|contradict\w*)"
_EXPLICIT_VERDICT = re.compile(
    r"\b(?:verdict|answer|label|conclusion)\s*(?:is)?\s*[:=]?\s*(?:is\s+)?(?:an?\s+)?" + _VERDICT_WORD + r"\b",
    re.I,
)
_VERDICT_MENTION = re.compile(r"\b" + _VERDICT_WORD + r"\b", re.I)
# The prompt asks whether one answer can follow every instruction: a bare yes or no answers it.
_FIRST_LINE_VERDICT = re.compile(_VERDICT_WORD[:-1] + r"|yes|no)\W*", re.I)


def parse_conflict_verdict(text: str) -> Literal["compatible", "conflict"] | None:
    """A conflict check's verdict (prompt `compose_conflict`): `compatible` or `conflict`, None when
    the answer names neither or both. Read as `parse_nli_label` reads labels: an explicit "Verdict:
    X" (the last one); a first line that is only the verdict (or yes / no); else the one verdict
    mentioned without negation, in the last line, then in the whole text."""
    return _read_vote(text, _EXPLICIT_VERDICT, _FIRST_LINE_VERDICT, _VERDICT_MENTION, _verdict_of)


def _verdict_of(word: str) -> Literal["compatible", "conflict"]:
    return "compatible" if word.lower() in ("compatible", "yes") else "conflict"
