"""Stage `augment`: self-instruct expansion of the seed instructions.

For every seed, one LLM request with n = `augment.k` samples (the paper's K rounds; each sample
has its own seed, so the response cache resumes any of them): the prompt shows that seed and a
few others drawn with the run's seed, and asks for new format constraints, checkable by code, as
`- ` lines. The answers are parsed, cleaned and filtered; exact and near-duplicates are removed
among the new instructions and against every input instruction (a seed repeated back is not
new). Near-duplicates are found with rapidfuzz's token-set similarity, but only between
instructions with the same parameters: "exactly 3 paragraphs" and "exactly 5 paragraphs", or
"start with" and "end with", are different instructions however alike their words.

Output: every input record unchanged (seeds, and the built-in library with its functions and
cases), then the new ones with source "augmented" and an id derived from their text alone.
Funnel counts: `augmented_candidates`, `augmented_kept`, `augmented_unparsable` (an answer with
no list), `llm_error`, and `augmented_dropped:<reason>` for too_short, too_long, not_instruction
(a question, a header, a preamble), not_format (tone, style, translation...), repeats_seed (the
same as, or near, any input instruction), duplicate and near_duplicate.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..llm import Request
from ..prompts import render, template
from ..records import Instruction
from ..rundir import INSTRUCTIONS
from .base import Context, Stage
from .parsing import parse_bullet_lines

N_NEW = 5  # instructions asked for per sample
N_EXAMPLES = 4  # seeds shown besides the one the sample starts from
MIN_WORDS, MAX_WORDS, MAX_CHARS = 3, 40, 250
ROWS_PER_BLOCK = 256  # candidates compared at once (bounds the similarity matrix's memory)

_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "`": "'"})
_LABEL = re.compile(r"^(?:(?:new\s+)?instruction\s*\d*|\d+)\s*[:.)-]\s+", re.I)
_MARKDOWN = re.compile(r"\*\*|__")
_PREAMBLE = re.compile(r"^(?:here (?:are|is)|sure\b|certainly\b|okay\b|ok\b|note\b)", re.I)
_OFF_FORMAT = re.compile(
    r"\b(?:translat\w*|metaphor\w*|simile\w*|tone|style|creativ\w*|humou?r\w*|persuasiv\w*|emotion\w*)\b", re.I
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# A quote opens and closes away from letters, so the apostrophes of "don't" and "it's" are no quotes.
_QUOTED = re.compile(r"\"([^\"]+)\"|(?<!\w)'([^']+)'(?!\w)")
_LETTER = re.compile(r"\b(?:letter|character)s?\s+([a-z])\b")
# Words that turn one constraint into another (where, which way, how many): two instructions
# that differ in these are never duplicates, however similar the rest of their words.
_POLARITY = {
    **dict.fromkeys(("start", "starts", "begin", "begins", "beginning", "first", "open", "opening"), "start"),
    **dict.fromkeys(("end", "ends", "ending", "last", "finish", "close", "closing"), "end"),
    **dict.fromkeys(("no", "not", "never", "without", "none", "avoid", "exclude"), "negated"),
    **dict.fromkeys(("least", "more", "over", "minimum", "above"), "lower_bound"),
    **dict.fromkeys(("most", "fewer", "less", "under", "maximum", "below"), "upper_bound"),
    "exactly": "exact",
    **dict.fromkeys(("uppercase", "capital", "capitals", "capitalized", "upper"), "upper_case"),
    **dict.fromkeys(("lowercase", "lower"), "lower_case"),
}
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
    )
}


def normalize(text: str) -> str:
    """The comparison key of an instruction: case, quote style, surrounding quotes, spacing and end
    punctuation do not count."""
    text = " ".join(text.translate(_QUOTES).lower().split())
    while True:  # '"Use only palindromes."' -> 'use only palindromes'
        stripped = text.rstrip(".!;,").rstrip()
        if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "\"'":
            stripped = stripped[1:-1].strip()
        if stripped == text:
            return text
        text = stripped


def instruction_id(text: str) -> str:
    """A stable id from the instruction's text alone (same text, same id, in any run or order)."""
    return "aug-" + hashlib.sha256(normalize(text).encode()).hexdigest()[:12]


def clean(item: str) -> str:
    """A parsed list item without markdown emphasis or an "Instruction 3:" label."""
    item = _MARKDOWN.sub("", item).strip()
    return " ".join(_LABEL.sub("", item).split())


def rejection(text: str) -> str | None:
    """Why a cleaned line is not a usable instruction, or None when it is."""
    words = text.split()
    if len(words) < MIN_WORDS:
        return "too_short"
    if len(words) > MAX_WORDS or len(text) > MAX_CHARS:
        return "too_long"
    if text.endswith(("?", ":")) or text.startswith("#") or _PREAMBLE.match(text):
        return "not_instruction"  # a question, a header or the model talking about its list
    if _OFF_FORMAT.search(text):
        return "not_format"
    return None


def signature(text: str) -> tuple:
    """What must be equal for two instructions to be near-duplicates: numbers, quoted text,
    single letters and the words that set a constraint's position, direction or bound."""
    key = normalize(text)
    quoted = sorted(a or b for a, b in _QUOTED.findall(key))
    unquoted = _QUOTED.sub(" ", key).replace("n't", " not")
    words = re.findall(r"[a-z]+", unquoted)
    numbers = sorted(_NUMBER.findall(unquoted) + [_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS])
    letters = sorted(_LETTER.findall(unquoted))
    polarity = sorted({_POLARITY[w] for w in words if w in _POLARITY})
    return tuple(numbers), tuple(quoted), tuple(letters), tuple(polarity)


@dataclass
class Candidate:
    text: str
    seed_id: str


def deduplicate(
    candidates: Sequence[Candidate], existing: Sequence[str], threshold: float
) -> tuple[list[Candidate], dict[str, int]]:
    """The candidates that repeat neither an existing instruction nor an earlier kept candidate.

    Exact repeats compare `normalize`d text; near repeats have a token-set similarity of at least
    `threshold` (0-100) and the same `signature`. Returns the kept candidates in order and the
    number dropped per reason: repeats_seed, duplicate, near_duplicate.
    """
    from rapidfuzz import fuzz, process, utils

    dropped = {"repeats_seed": 0, "duplicate": 0, "near_duplicate": 0}
    existing_keys = {normalize(t) for t in existing}
    seen: set[str] = set()
    unique: list[Candidate] = []
    for c in candidates:
        key = normalize(c.text)
        if key in existing_keys:
            dropped["repeats_seed"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            unique.append(c)
    if not unique:
        return [], dropped

    # Near-duplicates share a signature, so only instructions within one signature group are
    # compared: far fewer pairs than all against all.
    import numpy as np

    texts = [normalize(t) for t in existing] + [normalize(c.text) for c in unique]
    n_existing = len(existing)
    groups: dict[tuple, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(signature(text), []).append(i)
    alive = np.ones(len(texts), dtype=bool)  # a dropped candidate no longer removes later ones
    for members in groups.values():
        first = next((p for p, i in enumerate(members) if i >= n_existing), None)
        if first is None:
            continue
        columns = np.array(members)
        for start in range(first, len(members), ROWS_PER_BLOCK):
            rows = range(start, min(start + ROWS_PER_BLOCK, len(members)))
            scores = process.cdist(
                [texts[members[p]] for p in rows],
                [texts[i] for i in members],
                scorer=fuzz.token_set_ratio,
                processor=utils.default_process,
                score_cutoff=threshold,
                dtype=np.float32,
                workers=-1,
            )
            for row, p in enumerate(rows):
                earlier = columns[np.flatnonzero(scores[row, :p] >= threshold)]  # listed before it
                if (earlier < n_existing).any():
                    dropped["repeats_seed"] += 1
                    alive[members[p]] = False
                elif alive[earlier].any():
                    dropped["near_duplicate"] += 1
                    alive[members[p]] = False
    kept = [c for i, c in enumerate(unique) if alive[n_existing + i]]
    return kept, dropped


class AugmentStage(Stage[Instruction]):
    name = "augment"
    output = INSTRUCTIONS.name
    input = "seeds"
    output_type = Instruction
    sharded = False
    uses_llm = True
    reads = ("augment", "llm", "seed")

    def key_inputs(self, config):
        return {"prompt": template("augment")}

    def run(self, records: list[Instruction], ctx: Context) -> Iterable[Instruction]:
        yield from records
        cfg = ctx.config.augment
        seeds = [r for r in records if r.source == "seed"]
        if not cfg.enabled or not seeds:
            return
        requests = [
            Request.user(
                self.prompt(seed, seeds, ctx),
                n=cfg.k,
                temperature=cfg.temperature,
                max_tokens=cfg.max_tokens,
                seed=ctx.config.seed,
            )
            for seed in seeds
        ]
        candidates: list[Candidate] = []
        for seed, completions in zip(seeds, ctx.llm.generate(requests, desc="augment")):
            for completion in completions:
                if completion.error:
                    ctx.count("llm_error")
                    continue
                items = parse_bullet_lines(completion)
                if not items:
                    ctx.count("augmented_unparsable")
                for item in map(clean, items):
                    reason = rejection(item)
                    if reason:
                        ctx.count(f"augmented_dropped:{reason}")
                    else:
                        candidates.append(Candidate(item, seed.id))
        ctx.count("augmented_candidates", len(candidates))
        kept, dropped = deduplicate(candidates, [r.text for r in records], cfg.near_duplicate_threshold)
        for reason, n in dropped.items():
            if n:
                ctx.count(f"augmented_dropped:{reason}", n)
        ctx.count("augmented_kept", len(kept))
        for c in kept:
            yield Instruction(id=instruction_id(c.text), text=c.text, source="augmented", seed_id=c.seed_id)

    @staticmethod
    def prompt(seed: Instruction, seeds: Sequence[Instruction], ctx: Context) -> str:
        others = [s for s in seeds if s.id != seed.id]
        shown = ctx.rng("augment.examples", seed.id).sample(others, min(N_EXAMPLES, len(others)))
        examples = "\n".join(f"- {s.text}" for s in [seed, *shown])
        return render("augment", examples=examples, n_new=N_NEW, anchor=seed.text)
