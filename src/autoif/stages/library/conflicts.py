"""Which two library constraints cannot hold in one answer: the incompatibilities we declare.

Stage `compose` combines instructions into one prompt and drops a combination, as
`declared_conflict`, when two of its library constituents conflict here. The rules are written from
what the constraints ask for (their phrasings and functions), never from what a model happened to
answer:

- two instances of one constraint (two opening phrases, two languages, two exact counts; the same
  property fixed twice is redundant at best);
- pairs of constraints that dictate one property differently (`PAIRS`): all lowercase vs all
  capitals, a whole-answer format (JSON only, one code block, one quotation) vs text outside it or
  another whole-answer format, a single line vs any layout that needs several lines, no markdown vs
  markdown marks, an exact opening vs another exact opening, no digits vs a numbered list;
- parameters that contradict (`_PARAMETER_RULES`): at most 50 words vs at least 100, a word range
  outside a word bound, too few characters for the least words, a capital-words count the case
  forbids, a keyword both required and excluded, an end phrase whose last mark or word is not the
  one required, a required text (an opening, an ending, a marker, a keyword) whose letters the case
  forbids or that holds an avoided letter, a comma, an exclamation mark, or that another language
  than English rules out.

Whatever is not declared here is for execution to show (stage compose runs the constituents' test
cases through every function of the combination; verify counts the responses that satisfy them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Params = dict[str, Any]

# Formats that are the whole answer: nothing may stand outside them.
_WHOLE = ("format:json", "format:quoted", "format:code_block")
# Layouts that need at least two lines.
_MULTILINE = (
    "length:paragraphs",
    "structure:bullets",
    "structure:numbered_list",
    "structure:headings",
    "structure:sections",
    "format:table",
)
# Constraints that fix the opening or the ending of the answer.
_OPENING = ("start:phrase", "start:restate_request")
_ENDING = ("end:phrase", "punctuation:end_mark", "keywords:last_word")


def _pairs() -> dict[frozenset[str], str]:
    rules: dict[frozenset[str], str] = {}

    def add(rule: str, a: str, others: tuple[str, ...]) -> None:
        for b in others:
            rules[frozenset((a, b))] = rule

    add("case", "case:lowercase", ("case:uppercase", "case:sentence_capitals"))
    add("whole_format", "format:json", ("format:quoted",))
    add("whole_format", "format:quoted", ("format:code_block",))
    # JSON only: no title line, postscript, list or table markup, opening or ending text outside it.
    add(
        "whole_format",
        "format:json",
        (
            "structure:title",
            "structure:postscript",
            "structure:two_responses",
            *_MULTILINE,
            *_OPENING,
            *_ENDING,
        ),
    )
    add("whole_format", "format:quoted", ("structure:two_responses", *_OPENING, *_ENDING))
    add("whole_format", "format:code_block", ("structure:postscript", *_OPENING, *_ENDING))
    add("single_line", "format:single_line", _MULTILINE)
    add(
        "markdown",
        "format:no_markdown",
        ("structure:headings", "format:highlights", "format:bold", "format:code_block"),
    )
    add("opening", "start:phrase", ("start:restate_request",))
    add("digits", "keywords:no_digits", ("structure:numbered_list", "structure:sections"))
    return rules


PAIRS: dict[frozenset[str], str] = _pairs()


def required_texts(constraint: str, params: Params, case_sensitive: bool = False) -> list[str]:
    """The texts an answer must contain word for word under this constraint; `case_sensitive`: only
    those its functions match case for case (the keywords are matched in lower case)."""
    exact = {
        "start:phrase": ["phrase"],
        "end:phrase": ["phrase"],
        "start:restate_request": ["request"],
        "structure:postscript": ["marker"],
        "structure:sections": ["marker"],
    }
    anycase = {
        "keywords:include": ["keywords"],
        "keywords:phrase_repeated": ["phrase"],
        "keywords:last_word": ["word"],
    }
    names = exact.get(constraint, []) + ([] if case_sensitive else anycase.get(constraint, []))
    if constraint == "keywords:frequency" and params.get("relation") == "at least" and not case_sensitive:
        names = ["word"]
    texts: list[str] = []
    for name in names:
        value = params.get(name)
        texts += value if isinstance(value, list) else [value] if isinstance(value, str) else []
    return texts


def _words(text: str) -> set[str]:
    return set(re.findall(r"[^\W\d_]+", text.lower()))


def _word_bounds(a: str, p: Params, b: str, q: Params) -> bool:
    """At most M words vs at least m (or a range), and a character limit too small for the least words."""
    least = {"length:min_words": p.get("min_words"), "length:word_range": p.get("low")}.get(a)
    if least is None:
        return False
    most = {"length:max_words": q.get("max_words"), "length:word_range": q.get("high")}.get(b)
    if most is not None and least > most:
        return True
    # m words need m letters and m - 1 separators at least.
    return b == "length:max_characters" and 2 * least - 1 > q["max_chars"]


def _capital_words(a: str, p: Params, b: str, q: Params) -> bool:
    if a != "case:capital_words":
        return False
    return (b == "case:lowercase" and p["relation"] == "at least") or (
        b == "case:uppercase" and p["relation"] == "fewer than"
    )


def _keywords(a: str, p: Params, b: str, q: Params) -> bool:
    """A word that one constraint requires and the other excludes."""
    if a != "keywords:exclude":
        return False
    excluded = set(p["keywords"])
    return any(_words(text) & excluded for text in required_texts(b, q))


def _ending(a: str, p: Params, b: str, q: Params) -> bool:
    """An end phrase fixes the last mark and the last word."""
    if a != "end:phrase":
        return False
    phrase = p["phrase"].rstrip()
    if b == "punctuation:end_mark":
        return phrase[-1:] != q["mark"]
    if b == "keywords:last_word":
        words = re.findall(r"[^\W\d_]+", phrase)
        return not words or words[-1].lower() != q["word"]
    return False


def _texts_forbidden(a: str, p: Params, b: str, q: Params) -> bool:
    """A text the other constraint requires word for word, with a character this one forbids."""
    if a == "case:lowercase":
        return any(t != t.lower() for t in required_texts(b, q, case_sensitive=True))
    if a == "case:uppercase":
        return any(t != t.upper() for t in required_texts(b, q, case_sensitive=True))
    forbidden = {
        "keywords:avoid_letter": lambda: p["letter"],
        "punctuation:no_commas": lambda: ",",
        "punctuation:no_exclamation": lambda: "!",
    }.get(a)
    if forbidden is not None:
        char = forbidden()
        return any(char in t.lower() for t in required_texts(b, q))
    return False


def _letters(a: str, p: Params, b: str, q: Params) -> bool:
    """A letter to avoid that must appear at least n times."""
    return (
        a == "keywords:avoid_letter"
        and b == "keywords:letter_frequency"
        and q["relation"] == "at least"
        and q["letter"] == p["letter"]
    )


def _language(a: str, p: Params, b: str, q: Params) -> bool:
    """Another language than English rules out English text required word for word, and ASCII only."""
    if a != "language:response" or p["language"] == "en":
        return False
    return b == "format:ascii_only" or bool(required_texts(b, q))


_PARAMETER_RULES: dict[str, Callable[[str, Params, str, Params], bool]] = {
    "word_counts": _word_bounds,
    "capital_words": _capital_words,
    "keywords": _keywords,
    "ending": _ending,
    "required_text": _texts_forbidden,
    "letters": _letters,
    "language": _language,
}


def declared_conflict(a: str, p: Params, b: str, q: Params) -> str | None:
    """The rule by which constraint `a` with parameters `p` and `b` with `q` cannot hold in one
    answer (None: none declared). Symmetric."""
    if a == b:
        return "same_constraint"
    pair = PAIRS.get(frozenset((a, b)))
    if pair is not None:
        return pair
    for name, rule in _PARAMETER_RULES.items():
        if rule(a, p, b, q) or rule(b, q, a, p):
            return name
    return None
