"""Quality rules that need no judge: is a response degenerate text a trainer should never see?

A response that passes its verification functions can still be junk: "no word longer than 10
letters" is met by a line repeated eighteen times, "do not use the letter q" by French gibberish.
These rules catch such text with string statistics alone, so they run on every run, whatever the
model (the LLM relevance judge stays the paper's second filter when the model can judge):

    garbage         control characters other than \\n \\t \\r, U+FFFD, surrogates, private use
    too_short       fewer than `min_words` whitespace-separated words
    echo            the response mostly repeats the prompt
    <gopher rule>   one of the repetition rules of Gopher (Rae et al. 2021, Table A1), reported
                    under its own code: dup_line_frac, dup_para_frac, dup_line_char_frac,
                    dup_para_char_frac, top_{2,3,4}gram_char_frac, dup_{5..10}gram_char_frac
    other_language  a language other than the query's (langdetect, seeded)

`quality_issues(responses, query, prompt, config)` gives each response's first failing rule (the
reason code) or None; `quality_issue` is the same for one response. A caller whose instruction
legitimately asks for what a rule rejects names the rule in `skip` (see `RULES`): e.g. "answer in
at most 5 words" skips `too_short`. Two cases need no flag: a prompt that names the response's
language ("Answer only in French", "Translate into Spanish") is not `other_language`, and the
repetition rules look only at lines with letters or digits (code fences, braces and `******`
separators are structure).

Everything here is a pure function of its strings and the config: no I/O, no global state.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Collection, Sequence
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

from .pairs import truncation


# Not a subclass of config.Section: config.py will hold this section, and importing it from here
# would make the two modules import each other. Same settings as Section.
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _frac(default: float, what: str) -> float:
    return Field(default, ge=0, le=1, description=f"drop when {what} exceeds this (1 turns the rule off)")


class RepetitionConfig(_Section):
    """Gopher repetition rules (Rae et al. 2021, Appendix A, Table A1), with the published thresholds."""

    dup_line_frac: float = _frac(0.30, "the share of lines that repeat an earlier line")
    dup_para_frac: float = _frac(0.30, "the share of paragraphs that repeat an earlier paragraph")
    dup_line_char_frac: float = _frac(0.20, "the share of characters in repeated lines")
    dup_para_char_frac: float = _frac(0.20, "the share of characters in repeated paragraphs")
    top_2gram_char_frac: float = _frac(0.20, "the share of characters in the most frequent word 2-gram")
    top_3gram_char_frac: float = _frac(0.18, "the share of characters in the most frequent word 3-gram")
    top_4gram_char_frac: float = _frac(0.16, "the share of characters in the most frequent word 4-gram")
    dup_5gram_char_frac: float = _frac(0.15, "the share of characters in repeated word 5-grams")
    dup_6gram_char_frac: float = _frac(0.14, "the share of characters in repeated word 6-grams")
    dup_7gram_char_frac: float = _frac(0.13, "the share of characters in repeated word 7-grams")
    dup_8gram_char_frac: float = _frac(0.12, "the share of characters in repeated word 8-grams")
    dup_9gram_char_frac: float = _frac(0.11, "the share of characters in repeated word 9-grams")
    dup_10gram_char_frac: float = _frac(0.10, "the share of characters in repeated word 10-grams")
    ngram_min_words: int = Field(
        20,
        ge=0,
        description="the n-gram rules judge only responses of at least this many words (in a shorter "
        "one, a single repeated phrase is a large share of the text)",
    )


class QualityConfig(_Section):
    """Quality gate without a judge: drops degenerate responses, each with a reason code."""

    enabled: bool = Field(
        True, description="drop degenerate responses (repetition, too short, echo, wrong language, garbage)"
    )
    garbage_max_frac: float = Field(
        0.0,
        ge=0,
        le=1,
        description="largest share of garbage characters (controls other than newline/tab/CR, U+FFFD, "
        "surrogates, private use); 0: a single one drops the response",
    )
    min_words: int = Field(8, ge=0, description="fewer whitespace-separated words than this is too_short")
    echo_ngram: int = Field(4, ge=1, description="echo: word n-grams of this length are matched against the prompt")
    echo_max_frac: float = Field(
        0.6,
        ge=0,
        le=1,
        description="echo: drop when more than this share of the response's words lie in n-grams of the prompt",
    )
    language_min_letters: int = Field(
        40,
        ge=1,
        description="other_language: decide only when the query and the response (code removed) each "
        "have at least this many letters (langdetect is unreliable on less)",
    )
    language_min_prob: float = Field(
        0.9,
        gt=0,
        le=1,
        description="other_language: the query's language counts only when langdetect is at least this sure of it",
    )
    language_min_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="other_language: drop when langdetect gives the query's language less than this share of the "
        "response (a response in another language, or mixing two: Dutch-English gibberish has 0.43)",
    )
    repetition: RepetitionConfig = Field(default_factory=RepetitionConfig)


# Rules a caller can skip (quality_issues' `skip`), and the reason codes each reports.
GOPHER_CODES = tuple(name for name in RepetitionConfig.model_fields if name.endswith("_frac"))
RULES: dict[str, tuple[str, ...]] = {
    "garbage": ("garbage",),
    "too_short": ("too_short",),
    "echo": ("echo",),
    "repetition": GOPHER_CODES,
    "language": ("other_language",),
}

# Rules an instruction may legitimately ask an answer to break ("answer in at most 5 words", "first
# repeat the request word for word"); the other rules mark degenerate text whatever was asked.
WAIVABLE = ("too_short", "echo")


def quality_issue(
    response: str, query: str, prompt: str, config: QualityConfig, skip: Collection[str] = ()
) -> str | None:
    """The reason code of the first rule `response` fails, or None. See `quality_issues`."""
    return quality_issues([response], query, prompt, config, skip)[0]


def quality_issues(
    responses: Sequence[str], query: str, prompt: str, config: QualityConfig, skip: Collection[str] = ()
) -> list[str | None]:
    """For responses to one prompt: each one's reason code, or None when it passes every rule.

    `query` is the user's question (its language is the expected one), `prompt` the whole text the
    model answered (query and instruction: what an echo repeats). `skip` names rules of `RULES`
    that the instruction legitimately breaks. Rules run cheapest first; the first failure is reported.
    """
    unknown = set(skip) - set(RULES)
    if unknown:
        raise ValueError(f"unknown quality rule(s) to skip: {sorted(unknown)} (known: {sorted(RULES)})")
    if not config.enabled:
        return [None] * len(responses)
    prompt_ngrams = _ngrams(_words(prompt), config.echo_ngram)
    query_language: str | None = None
    checked_query = False
    issues: list[str | None] = []
    for response in responses:
        issue = None
        if "garbage" not in skip and _garbage_frac(response) > config.garbage_max_frac:
            issue = "garbage"
        elif "too_short" not in skip and len(response.split()) < config.min_words:
            issue = "too_short"
        elif "echo" not in skip and _echo_frac(response, prompt_ngrams, config.echo_ngram) > config.echo_max_frac:
            issue = "echo"
        elif "repetition" not in skip and (rule := gopher_repetition(response, config.repetition)):
            issue = rule
        elif "language" not in skip:
            if not checked_query:  # the query's language is needed only when a response gets here
                query_language, checked_query = _language(query, config), True
            if query_language and _other_language(response, query_language, prompt, config):
                issue = "other_language"
        issues.append(issue)
    return issues


def drop_reasons(
    texts: Sequence[str],
    finish_reasons: Sequence[str | None],
    query: str,
    prompt: str,
    config: QualityConfig,
    waived: Collection[str] = (),
) -> list[str | None]:
    """Why each answer to one prompt may not be trained on, or None: `truncated` when the backend cut
    it off (pairs.truncation), else the first quality rule it fails. One statement for verify, online
    DPO and GRPO; what a reason forbids is pairs.py's rule."""
    reasons = [truncation(f) for f in finish_reasons]
    whole = [i for i, reason in enumerate(reasons) if reason is None]
    for i, issue in zip(whole, quality_issues([texts[i] for i in whole], query, prompt, config, waived)):
        reasons[i] = issue
    return reasons


def training_drops(
    texts: Sequence[str], finish_reasons: Sequence[str | None], prompts: Sequence[str], config: QualityConfig
) -> list[str | None]:
    """`drop_reasons` for samples a trainer draws (online DPO, GRPO), texts[i] answering prompts[i].

    A training prompt carries no test cases that could tell whether its instruction asks for a short
    answer or a restatement, so the `WAIVABLE` rules are left to verify; the prompt stands for the
    query (its language is the query's, the instruction being one sentence of it)."""
    reasons: list[str | None] = [None] * len(texts)
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(i)
    for prompt, indexes in groups.items():
        found = drop_reasons(
            [texts[i] for i in indexes], [finish_reasons[i] for i in indexes], prompt, prompt, config, WAIVABLE
        )
        for i, reason in zip(indexes, found):
            reasons[i] = reason
    return reasons


def waived_rules(accepted: Sequence[str], instruction: str, config: QualityConfig) -> frozenset[str]:
    """The `WAIVABLE` rules that some text the instruction's own functions accept breaks.

    `accepted` are texts known to follow the instruction (its verified test cases): when one of
    them is too short or echoes the instruction, the instruction asks for exactly that, and its
    answers are not dropped for it. Works the same for LLM-written and built-in instructions.
    """
    waived = set()
    for rule in WAIVABLE:
        others = set(RULES) - {rule}  # this rule alone
        if any(quality_issues(accepted, "", instruction, config, skip=others)):
            waived.add(rule)
    return frozenset(waived)


# ----------------------------------------------------------------------------------------- garbage
# Control characters (Cc) other than the three whitespace ones, surrogates (Cs: only from broken
# decoding), private use (Co) and U+FFFD, which decoders put where bytes were invalid.
_GARBAGE_CATEGORIES = {"Cc", "Cs", "Co"}
_ALLOWED_CONTROLS = {"\n", "\t", "\r"}


def _is_garbage(char: str) -> bool:
    if char == "\ufffd":
        return True
    return unicodedata.category(char) in _GARBAGE_CATEGORIES and char not in _ALLOWED_CONTROLS


def _garbage_frac(text: str) -> float:
    return sum(map(_is_garbage, text)) / len(text) if text else 0.0


# -------------------------------------------------------------------------------------------- echo
_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _echo_frac(response: str, prompt_ngrams: set[tuple[str, ...]], n: int) -> float:
    """Share of the response's words that lie in an n-gram also found in the prompt."""
    words = _words(response)
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        if tuple(words[i : i + n]) in prompt_ngrams:
            covered[i : i + n] = [True] * n
    return sum(covered) / len(words) if words else 0.0


# -------------------------------------------------------------------------------------- repetition
# Definitions follow datatrove's GopherRepetitionFilter (the maintained implementation of Table A1)
# so that the numbers compare, with three deliberate differences for short chat answers:
# - lines and paragraphs without a letter or digit are left out (datatrove counts blank and
#   punctuation-only lines: an answer with two code blocks repeats the closing fence "```");
# - a "top" n-gram must occur at least twice (datatrove takes the most frequent n-gram even when
#   every n-gram occurs once, which in a 10-word answer is a fifth of the text);
# - n-gram rules need `ngram_min_words` words.
# Words are runs of word characters or of punctuation (close to the spaCy tokens datatrove uses
# for English, without spaCy).
_TOKEN = re.compile(r"\w+|[^\w\s]+")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_HAS_CONTENT = re.compile(r"\w")


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(items equal to an earlier one, their characters)."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count, chars = count + 1, chars + len(item)
        else:
            seen.add(item)
    return count, chars


def _top_ngram_chars(words: list[str], n: int) -> int:
    """Characters of the most frequent n-gram (joined by spaces) times its count, when it repeats."""
    counts = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    return len(gram) * count if count > 1 else 0


def _dup_ngram_chars(words: list[str], n: int) -> int:
    """Characters of words in n-grams that repeat an earlier n-gram; a repeat skips its n words,
    so no character is counted twice (datatrove's reading of "fraction of characters in duplicate n-grams")."""
    seen: set[tuple[str, ...]] = set()
    chars = i = 0
    while i <= len(words) - n:
        gram = tuple(words[i : i + n])
        if gram in seen:
            chars += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def repetition_fractions(text: str, ngram_min_words: int = 0) -> dict[str, float]:
    """Each Gopher statistic of `text`, keyed by its rule (a `RepetitionConfig` field), in rule order.

    The n-gram statistics are left out when the text has fewer than `ngram_min_words` words.
    """
    text = text.strip()
    size = len(text) or 1
    fractions: dict[str, float] = {}
    for unit, pieces in (("para", _PARAGRAPH_BREAK.split(text)), ("line", text.splitlines())):
        pieces = [p.strip() for p in pieces if _HAS_CONTENT.search(p)]
        count, chars = _duplicates(pieces)
        fractions[f"dup_{unit}_frac"] = count / len(pieces) if pieces else 0.0
        fractions[f"dup_{unit}_char_frac"] = chars / size
    words = _TOKEN.findall(text)
    if len(words) >= ngram_min_words:
        for n in (2, 3, 4):
            fractions[f"top_{n}gram_char_frac"] = _top_ngram_chars(words, n) / size
        for n in range(5, 11):
            fractions[f"dup_{n}gram_char_frac"] = _dup_ngram_chars(words, n) / size
    return fractions


def gopher_repetition(text: str, config: RepetitionConfig) -> str | None:
    """The first Gopher repetition rule `text` breaks (its config field name), or None."""
    fractions = repetition_fractions(text, config.ngram_min_words)
    return next((rule for rule, value in fractions.items() if value > getattr(config, rule)), None)


# ---------------------------------------------------------------------------------------- language
_CODE = re.compile(r"```.*?(?:```|$)|`[^`\n]*`", re.DOTALL)  # fenced (maybe unclosed) and inline code
# English names of langdetect's languages, for "the prompt asks for this language".
# fmt: off
_LANGUAGE_NAMES = {
    "af": "Afrikaans", "ar": "Arabic", "bg": "Bulgarian", "bn": "Bengali|Bangla", "ca": "Catalan",
    "cs": "Czech", "cy": "Welsh", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish|Castilian", "et": "Estonian", "fa": "Persian|Farsi", "fi": "Finnish", "fr": "French",
    "gu": "Gujarati", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "kn": "Kannada", "ko": "Korean",
    "lt": "Lithuanian", "lv": "Latvian", "mk": "Macedonian", "ml": "Malayalam", "mr": "Marathi",
    "ne": "Nepali", "nl": "Dutch|Flemish", "no": "Norwegian", "pa": "Punjabi", "pl": "Polish",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian|Slovene",
    "so": "Somali", "sq": "Albanian", "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "te": "Telugu",
    "th": "Thai", "tl": "Tagalog|Filipino", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu",
    "vi": "Vietnamese", "zh": "Chinese|Mandarin|Cantonese",
}
# fmt: on


@lru_cache(maxsize=1)
def _detector_factory():
    """langdetect's profiles in a factory of our own, seeded: detection is deterministic, and the
    process-wide `langdetect.DetectorFactory.seed` that other code may set is left alone."""
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.seed = 0
    return factory


def _probabilities(text: str, config: QualityConfig) -> dict[str, float] | None:
    """langdetect's probability of each language (base code: zh-cn and zh-tw are zh) in the text,
    code removed, or None when the text has too few letters to tell."""
    from langdetect.lang_detect_exception import LangDetectException

    text = _CODE.sub(" ", text)
    if sum(c.isalpha() for c in text) < config.language_min_letters:
        return None
    detector = _detector_factory().create()
    detector.append(text)
    try:
        found = detector.get_probabilities()
    except LangDetectException:
        return None
    probabilities: dict[str, float] = {}
    for language in found:
        code = language.lang.split("-")[0]
        probabilities[code] = probabilities.get(code, 0.0) + language.prob
    return probabilities


def _language(text: str, config: QualityConfig) -> str | None:
    """The text's language, or None when langdetect is not `language_min_prob` sure of one."""
    probabilities = _probabilities(text, config) or {}
    best = max(probabilities, key=probabilities.__getitem__, default=None)
    return best if best is not None and probabilities[best] >= config.language_min_prob else None


def _other_language(response: str, expected: str, prompt: str, config: QualityConfig) -> bool:
    """The response is not (mostly) in the expected language, and the prompt does not ask for the
    language it is in."""
    probabilities = _probabilities(response, config)
    if probabilities is None or probabilities.get(expected, 0.0) >= config.language_min_share:
        return False
    found = max((lang for lang in probabilities if lang != expected), key=probabilities.__getitem__, default=None)
    if found is None:
        return False
    asked = re.search(rf"\b(?:{_LANGUAGE_NAMES.get(found, found)})\b", prompt, re.IGNORECASE)
    return asked is None
