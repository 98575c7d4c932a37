r"""The constraints of autoif's built-in library, registered in CONSTRAINTS by namespaced id.

Parameter ranges are chosen so that a small model answering an ordinary question meets some
constraints often (no exclamation marks, at most 150 words), some now and then (no commas, a given
opening) and some rarely (all capitals, valid JSON): stage 2 needs both passing and failing
responses to build preference pairs. Instructions are phrased by us, as a user would write them.

Every function takes the raw response, and all functions of one constraint share one definition of
each unit they look at, so that they agree on every text, odd separators included:

- whitespace is Unicode whitespace (`str.isspace`, regex `\s`), no-break spaces included;
- lines are what `str.splitlines` gives (a lone `\r`, `\r\n` and the Unicode line separators end a
  line too); a function that matches lines with a regex first joins them with `\n`;
- a word, where words are counted, is a whitespace-separated token with a letter or a digit in it
  (a markdown marker such as `-`, `*` or `|` is not a word);
- sentences end at `.`, `!` or `?` (and any closing quotes or brackets) followed by whitespace;
- paragraphs are separated by blank lines (lines of whitespace only);
- keywords, phrases, capitalised words, the last word and word lengths are over runs of letters
  (regex `[^\W\d_]`), keywords and phrases in lower case: digits, underscores and punctuation separate
  words, so `coffee_utils` contains 'coffee' and 'coffeehouse' does not.

Where these definitions differ from Google's IFEval checkers, docs/library.md says why.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from . import texts
from .base import Code, Constraint, Registry

CONSTRAINTS = Registry()
register = CONSTRAINTS.register

RELATIONS = {"at least": Code(">="), "at most": Code("<="), "fewer than": Code("<"), "exactly": Code("==")}


def _relation(rng: random.Random, choices: tuple[str, ...]) -> dict[str, Any]:
    relation = rng.choice(choices)
    return {"relation": relation, "op": RELATIONS[relation]}


def _counts(relation: str, n: int, least: int = 0) -> tuple[list[int], list[int]]:
    """Counts that meet `relation n` and counts that miss it, boundary first; none below `least`."""
    return {
        "at least": ([n, n + 2], [n - 1, least]),
        "at most": ([n, least], [n + 1, n + 3]),
        "fewer than": ([n - 1, least], [n, n + 2]),
        "exactly": ([n, n], [n - 1, n + 1]),
    }[relation]


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _number(n: int) -> str:
    """Small counts as words, the way people write them in a request."""
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def _times(n: int) -> str:
    return "once" if n == 1 else f"{_number(n)} times"


def _plural(n: int, word: str) -> str:
    return f"{_number(n)} {word}" if n == 1 else f"{_number(n)} {word}s"


def _quoted(words: list[str], joiner: str) -> str:
    quoted = [f"'{w}'" for w in words]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {joiner} {quoted[-1]}"


# ------------------------------------------------------------------------------------------ length
@register
class MaxWords(Constraint):
    id = "length:max_words"
    phrasings = (
        "Answer in at most {max_words} words.",
        "Keep your reply to {max_words} words or fewer.",
        "Your whole answer must not be longer than {max_words} words.",
        "Please stay under {max_words} words, or at most exactly {max_words}.",
        "I only have time for a short read, so no more than {max_words} words please.",
    )
    functions = (
        r"""
        def evaluate(response):
            return len([w for w in response.split() if any(ch.isalnum() for ch in w)]) <= MAX_WORDS
        """,
        r"""
        def evaluate(response):
            import re
            words = re.findall(r"\S*[^\W_]\S*", response)
            return len(words) <= MAX_WORDS
        """,
    )

    def sample(self, rng):
        return {"max_words": rng.choice([40, 50, 60, 80, 100, 120, 150])}

    def cases(self, params, rng):
        n = params["max_words"]
        return (
            [texts.text_of_words(rng, n), texts.text_of_words(rng, n - rng.randint(5, 20))],
            [texts.text_of_words(rng, n + 1), texts.text_of_words(rng, n + rng.randint(10, 40))],
        )


@register
class MinWords(Constraint):
    id = "length:min_words"
    phrasings = (
        "Answer in at least {min_words} words.",
        "Write no fewer than {min_words} words.",
        "Your response should be {min_words} words long or longer.",
        "Please give a thorough reply of {min_words} words at minimum.",
        "I want a detailed answer, {min_words} words or more.",
    )
    functions = (
        r"""
        def evaluate(response):
            return len([w for w in response.split() if any(ch.isalnum() for ch in w)]) >= MIN_WORDS
        """,
        r"""
        def evaluate(response):
            import re
            return len(re.findall(r"\S*[^\W_]\S*", response)) >= MIN_WORDS
        """,
    )

    def sample(self, rng):
        return {"min_words": rng.choice([50, 80, 100, 120, 150, 200])}

    def cases(self, params, rng):
        n = params["min_words"]
        return (
            [texts.text_of_words(rng, n), texts.text_of_words(rng, n + rng.randint(10, 40))],
            [texts.text_of_words(rng, n - 1), texts.text_of_words(rng, n // 2)],
        )


@register
class WordRange(Constraint):
    id = "length:word_range"
    phrasings = (
        "Your answer should be between {low} and {high} words long.",
        "Use no fewer than {low} and no more than {high} words.",
        "Write something between {low} and {high} words in length.",
    )
    functions = (
        r"""
        def evaluate(response):
            return LOW <= len([w for w in response.split() if any(ch.isalnum() for ch in w)]) <= HIGH
        """,
        r"""
        def evaluate(response):
            import re
            count = len(re.findall(r"\S*[^\W_]\S*", response))
            return count >= LOW and count <= HIGH
        """,
    )

    def sample(self, rng):
        low = rng.choice([30, 40, 50, 60, 80, 100])
        return {"low": low, "high": low + rng.choice([20, 30, 50, 70])}

    def cases(self, params, rng):
        low, high = params["low"], params["high"]
        return (
            [texts.text_of_words(rng, low), texts.text_of_words(rng, high)],
            [texts.text_of_words(rng, low - 1), texts.text_of_words(rng, high + 1)],
        )


@register
class SentenceCount(Constraint):
    id = "length:sentences"
    phrasings = (
        "Use {relation} {sentences}.",
        "Your answer should contain {relation} {sentences}.",
        "Write {relation} {sentences} in total.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            sentences = [s for s in re.split(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+", response.strip()) if s.strip()]
            return len(sentences) OP N
        """,
        r"""
        def evaluate(response):
            text = response.strip()
            count = 1 if text else 0
            i = 0
            while i < len(text):
                if text[i] in ".!?":
                    j = i + 1
                    while j < len(text) and text[j] in "\"'\u201d\u2019)]":
                        j += 1
                    if j < len(text) and text[j].isspace():
                        count += 1  # another sentence starts after the whitespace
                        while text[j].isspace():
                            j += 1
                        i = j
                        continue
                i += 1
            return count OP N
        """,
    )

    def sample(self, rng):
        return {**_relation(rng, ("at least", "at most", "exactly")), "n": rng.randint(2, 6)}

    def fields(self, params):
        return {"sentences": _plural(params["n"], "sentence")}

    def cases(self, params, rng):
        passing, failing = _counts(params["relation"], params["n"], least=1)
        return ([texts.text_of_sentences(rng, k) for k in passing], [texts.text_of_sentences(rng, k) for k in failing])


@register
class ParagraphCount(Constraint):
    id = "length:paragraphs"
    phrasings = (
        "Write exactly {paragraphs}, separated by blank lines.",
        "Structure your answer as {paragraphs} with an empty line between them.",
        "Your reply must have {paragraphs}; leave one blank line between paragraphs.",
        "Break your reply into {paragraphs}, with a blank line between each one.",
        "I'd like exactly {paragraphs} in your answer, each separated by an empty line.",
        "Please use {paragraphs}, no more and no fewer, divided by blank lines.",
        "Split the answer into {paragraphs}, leaving an empty line after each but the last.",
        "Please give me {paragraphs} of text with blank lines separating them.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            text = "\n".join(response.splitlines())
            paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
            return len(paragraphs) == N
        """,
        r"""
        def evaluate(response):
            count = 0
            in_paragraph = False
            for line in response.splitlines():
                if line.strip():
                    if not in_paragraph:
                        count += 1
                    in_paragraph = True
                else:
                    in_paragraph = False
            return count == N
        """,
    )

    def sample(self, rng):
        return {"n": rng.randint(2, 5)}

    def fields(self, params):
        return {"paragraphs": _plural(params["n"], "paragraph")}

    def cases(self, params, rng):
        n = params["n"]
        return (
            ["\n\n".join(texts.paragraphs(rng, n)), "\n\n\n".join(texts.paragraphs(rng, n)) + "\n"],
            [
                "\n\n".join(texts.paragraphs(rng, n - 1)),
                "\n\n".join(texts.paragraphs(rng, n + 1)),
                "\n".join(texts.paragraphs(rng, n)),
            ],
        )


@register
class MaxCharacters(Constraint):
    id = "length:max_characters"
    phrasings = (
        "Keep your entire response within {max_chars} characters.",
        "Answer in no more than {max_chars} characters, spaces included.",
        "Your reply must not exceed {max_chars} characters.",
        "Keep it short: {max_chars} characters at most, counting spaces.",
        "Please fit your whole reply into {max_chars} characters or less.",
    )
    functions = (
        r"""
        def evaluate(response):
            return len(response.strip()) <= MAX_CHARS
        """,
    )

    def sample(self, rng):
        return {"max_chars": rng.choice([200, 250, 300, 400, 500, 600])}

    def cases(self, params, rng):
        n = params["max_chars"]
        return (
            [texts.text_of_length(rng, n), texts.text_of_length(rng, n - rng.randint(20, 80)) + "\n"],
            [texts.text_of_length(rng, n + 1), texts.text_of_length(rng, n + rng.randint(30, 120))],
        )


@register
class MaxWordLength(Constraint):
    id = "length:max_word_length"
    phrasings = (
        "Do not use any word longer than {n} letters.",
        "Keep every word to {n} letters or fewer.",
        "Avoid long words: none may have more than {n} letters.",
        "Stick to short words of at most {n} letters each.",
        "Please use only words with {n} letters or fewer.",
        "Every word you write should be {n} letters long or shorter.",
        "No word in your reply should go beyond {n} letters.",
        "Write with simple words only; each one may have at most {n} letters.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            return all(len(word) <= N for word in re.findall(r"[^\W\d_]+", response))
        """,
    )

    def sample(self, rng):
        return {"n": rng.choice([10, 11, 12])}

    def cases(self, params, rng):
        n = params["n"]
        long_words = [w for w in texts.LONG_WORDS if len(w) > n]
        bases = texts.paragraphs(rng, 4, where=lambda p: all(len(w) <= n for w in re.findall(r"[A-Za-z]+", p)))
        return (
            bases[:2],
            [
                f"{bases[2]} That is {rng.choice(long_words)}.",
                f"{rng.choice(long_words).capitalize()}, {bases[3][0].lower()}{bases[3][1:]}",
            ],
        )


@register
class MaxSentenceWords(Constraint):
    id = "length:max_sentence_words"
    phrasings = (
        "Keep every sentence to at most {n} words.",
        "No sentence in your answer may exceed {n} words.",
        "Write short sentences of {n} words or fewer each.",
        "Please keep your sentences short, {n} words at most per sentence.",
        "Each sentence you write should have no more than {n} words.",
        "Limit every sentence to {n} words or fewer.",
        "I want short sentences: none of them longer than {n} words.",
        "Write in brief sentences, each one {n} words long at most.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            sentences = [s for s in re.split(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+", response.strip()) if s.strip()]
            return all(len([w for w in s.split() if any(ch.isalnum() for ch in w)]) <= N for s in sentences)
        """,
    )

    def sample(self, rng):
        return {"n": rng.choice([15, 18, 20, 25])}

    def cases(self, params, rng):
        n = params["n"]

        def fits(sentence):
            return len(sentence.split()) <= n

        longest = max(filter(fits, texts.SENTENCES), key=lambda s: len(s.split()))  # the boundary
        run_on = texts.sentences(rng, 1, where=fits)[0].rstrip(".")
        while len(run_on.split()) <= n:
            extra = texts.sentences(rng, 1)[0]
            run_on = f"{run_on}, and {extra[0].lower()}{extra[1:].rstrip('.')}"
        return (
            [
                " ".join(texts.sentences(rng, 3, where=fits)),
                f"{longest} " + " ".join(texts.sentences(rng, 2, where=fits)),
            ],
            [f"{run_on}.", " ".join(texts.sentences(rng, 2, where=fits)) + f" {run_on}."],
        )


# --------------------------------------------------------------------------------------- structure
@register
class BulletCount(Constraint):
    id = "structure:bullets"
    phrasings = (
        "Answer with exactly {bullets} as a markdown list, each starting with '* ' or '- '.",
        "Give your answer as {bullets}, using markdown bullets like '- item'.",
        "Format your reply as a list of exactly {bullets} (markdown, '* ' or '- ').",
        "Please list exactly {bullets}, each on its own line starting with '- ' or '* '.",
        "Reply as a markdown bullet list of {bullets} and nothing more.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            text = "\n".join(response.splitlines())
            return len(re.findall(r"^[^\S\n]*[*-][^\S\n]+\S", text, flags=re.MULTILINE)) == N
        """,
        r"""
        def evaluate(response):
            count = 0
            for line in response.splitlines():
                item = line.lstrip()
                if item[:1] in ("*", "-") and item[1:2].isspace() and item[2:].strip():
                    count += 1
            return count == N
        """,
    )

    def sample(self, rng):
        return {"n": rng.randint(2, 6)}

    def fields(self, params):
        return {"bullets": _plural(params["n"], "bullet point")}

    @staticmethod
    def _list(rng, k, mark):
        return "\n".join(f"{mark} {s}" for s in texts.sentences(rng, k))

    def cases(self, params, rng):
        n = params["n"]
        numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(texts.sentences(rng, n), 1))
        return (
            [f"Here are my suggestions:\n\n{self._list(rng, n, '*')}", self._list(rng, n, "-")],
            [self._list(rng, n + 1, "*"), f"{texts.prose(rng)}\n\n{self._list(rng, n - 1, '-')}", numbered],
        )


@register
class NumberedList(Constraint):
    id = "structure:numbered_list"
    phrasings = (
        "Format your answer as a numbered list with exactly {items} (1., 2., and so on).",
        "Reply with {items} in a numbered list.",
        "Give me exactly {items}, numbered 1., 2., 3. and so on.",
        "Please answer as a numbered list of exactly {items}.",
        "List {items}, numbering them 1., 2., 3. and onward.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            text = "\n".join(response.splitlines())
            return len(re.findall(r"^[^\S\n]*\d+[.)][^\S\n]+\S", text, flags=re.MULTILINE)) == N
        """,
    )

    def sample(self, rng):
        return {"n": rng.randint(3, 7)}

    def fields(self, params):
        return {"items": _plural(params["n"], "item")}

    @staticmethod
    def _list(rng, k, close="."):
        return "\n".join(f"{i}{close} {s}" for i, s in enumerate(texts.sentences(rng, k), 1))

    def cases(self, params, rng):
        n = params["n"]
        bullets = "\n".join(f"- {s}" for s in texts.sentences(rng, n))
        return (
            [self._list(rng, n), f"Sure.\n\n{self._list(rng, n, ')')}\n\nGood luck."],
            [self._list(rng, n - 1), self._list(rng, n + 1), bullets],
        )


@register
class NumberedSections(Constraint):
    id = "structure:sections"
    phrasings = (
        "Divide your answer into {n_word} sections and start each with '{marker} X', where X is its "
        "number ({marker} 1, {marker} 2, ...).",
        "Organize the response in {n_word} parts, each opening with a line '{marker} 1', '{marker} 2' and so on.",
        "Split your reply into exactly {n_word} numbered sections marked '{marker} 1' to '{marker} {n}'.",
        "Please write {n_word} sections, each headed by a line like '{marker} 1', '{marker} 2' and so forth.",
        "Lay out your answer in {n_word} numbered sections labelled '{marker} 1' through '{marker} {n}'.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            text = "\n".join(response.splitlines())
            pattern = r"^(?:[#*]|[^\S\n])*" + MARKER + r"[^\S\n]+(\d+)(?!\w)"
            found = re.findall(pattern, text, flags=re.MULTILINE)
            return [int(x) for x in found] == list(range(1, N + 1))
        """,
        r"""
        def evaluate(response):
            numbers = []
            for line in response.splitlines():
                head = line.lstrip()
                while head[:1] in ("#", "*"):
                    head = head[1:].lstrip()
                words = head.split()
                if len(words) >= 2 and words[0] == MARKER:
                    digits = ""
                    for ch in words[1]:
                        if not ch.isdecimal():
                            break
                        digits += ch
                    after = words[1][len(digits):len(digits) + 1]
                    if digits and not (after.isalnum() or after == "_"):
                        numbers.append(int(digits))
            return numbers == list(range(1, N + 1))
        """,
    )

    def sample(self, rng):
        return {"marker": rng.choice(["Section", "Part", "Chapter"]), "n": rng.randint(2, 4)}

    def fields(self, params):
        return {"n_word": _number(params["n"])}

    @staticmethod
    def _sections(rng, marker, numbers, heading=""):
        bodies = texts.paragraphs(rng, len(numbers))
        return "\n\n".join(f"{heading}{marker} {k}\n{body}" for k, body in zip(numbers, bodies))

    def cases(self, params, rng):
        marker, n = params["marker"], params["n"]
        return (
            [self._sections(rng, marker, range(1, n + 1)), self._sections(rng, marker, range(1, n + 1), "## ")],
            [
                self._sections(rng, marker, range(1, n)),
                self._sections(rng, marker, range(1, n + 2)),
                self._sections(rng, marker, [1] + list(range(3, n + 2))),
            ],
        )


@register
class MarkdownHeadings(Constraint):
    id = "structure:headings"
    phrasings = (
        "Use at least {headings} in your answer (lines starting with #).",
        "Organize your reply under at least {headings}.",
        "Include {n_word} or more markdown headings, such as '## Overview'.",
        "Break up your answer with {headings} or more.",
        "Please add at least {headings}, each a line beginning with #.",
        "Give your reply some structure with {n_word} or more markdown headings (# or ##).",
        "I need at least {headings} so the answer is easy to scan.",
        "Put your content under {headings} at minimum, written with # marks.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            text = "\n".join(response.splitlines())
            return len(re.findall(r"^#{1,6}[^\S\n]+\S", text, flags=re.MULTILINE)) >= N
        """,
    )

    def sample(self, rng):
        return {"n": rng.randint(2, 4)}

    def fields(self, params):
        return {"headings": _plural(params["n"], "markdown heading"), "n_word": _number(params["n"])}

    @staticmethod
    def _doc(rng, k):
        titles = rng.sample(
            ["Overview", "Why it matters", "Getting started", "Common mistakes", "Next steps", "Summary"], k
        )
        bodies = texts.paragraphs(rng, k)
        return "\n\n".join(f"{'#' * rng.randint(1, 3)} {t}\n{b}" for t, b in zip(titles, bodies))

    def cases(self, params, rng):
        n = params["n"]
        return (
            [self._doc(rng, n), self._doc(rng, n + 1)],
            [self._doc(rng, n - 1), f"#Overview\n{texts.prose(rng)}\n\n#Details\n{texts.prose(rng)}"],
        )


@register
class Title(Constraint):
    id = "structure:title"
    phrasings = (
        "Give your answer a title wrapped in double angle brackets, like <<My Title>>.",
        "Start with a title inside double angular brackets, for example <<A Simple Plan>>.",
        "Include a title for your response, written as <<title>>.",
        "Put a title at the top inside double angle brackets, like <<Weekly Summary>>.",
        "Please give the answer a title written between << and >>.",
        "Your reply needs a title, enclosed as <<Title Goes Here>>.",
        "Add a heading-style title in double angle brackets, for example <<Quick Guide>>.",
        "Begin with a title framed by << and >>, such as <<Main Points>>.",
        "Include a short title wrapped like this: <<Your Title>>.",
        "Title your answer and write the title in double angle brackets (<<...>>).",
        "I want a title on your response, using the <<title>> format.",
        "Please put a name for your answer in double angle brackets, e.g. <<Notes>>.",
        "Make sure there is a title surrounded by << >> somewhere in the reply.",
        "Write a title for this, formatted with double angle brackets like <<Overview>>.",
        "Label your answer with a title in << >> brackets.",
        "Open with a title shown as <<something like this>>.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            text = "\n".join(response.splitlines())
            return any(title.strip() for title in re.findall(r"<<([^<>\n]*)>>", text))
        """,
    )

    def cases(self, params, rng):
        title = rng.choice(["A Better Night", "Getting Started", "Simple Steps", "The Short Version"])
        return (
            [f"<<{title}>>\n\n{texts.prose(rng)}", f"{texts.prose(rng)}\n\n<<{title}>>"],
            [texts.prose(rng), f"<{title}>\n\n{texts.prose(rng)}", f"<< >>\n\n{texts.prose(rng)}"],
        )


@register
class TwoResponses(Constraint):
    id = "structure:two_responses"
    phrasings = (
        "Give two different answers, separated by a line of six asterisks: ******.",
        "Write two distinct versions of your reply and put ****** between them.",
        "Provide two alternative responses; separate them with six asterisk symbols (******).",
        "Please write two separate answers and divide them with ******.",
        "Give me two different takes, with a line of six asterisks (******) between them.",
        "I'd like two versions of the answer; put ****** on the line between them.",
        "Offer two alternative replies separated by six asterisks: ******.",
        "Write your answer twice, in two different ways, split by ******.",
        "Provide two options and use ****** as the separator between them.",
        "Answer in two distinct ways, separating the two with a row of six asterisks.",
        "Draft two different replies; put exactly ****** between the first and the second.",
        "Show me two possible answers, one after the other, divided by ******.",
        "Come up with two versions and mark the break between them with ******.",
        "Please give two separate responses, with six asterisks (******) as the divider.",
        "Respond twice with different content each time, separating them with ******.",
        "Two answers please, not one; split them with ******.",
    )
    functions = (
        r"""
        def evaluate(response):
            parts = [part.strip() for part in response.split("******")]
            # A separator may also open or close the text, but never stands next to another one.
            if not all(parts[1:-1]):
                return False
            answers = [part for part in parts if part]
            return len(answers) == 2 and answers[0] != answers[1]
        """,
    )

    def cases(self, params, rng):
        a, b = texts.paragraphs(rng, 2)
        return (
            [f"{a}\n******\n{b}", f"{a}\n\n******\n\n{b}\n"],
            [a, f"{a}\n******\n{a}", f"{a}\n******\n{b}\n******\n{texts.prose(rng)}"],
        )


@register
class Postscript(Constraint):
    id = "structure:postscript"
    phrasings = (
        "At the end of your answer, add a postscript that starts with {marker}",
        "Finish with a short postscript beginning with '{marker}'.",
        "After your main answer, include a note starting with {marker}",
        "Please close with a postscript that begins with {marker}",
        "Add a {marker} note after the main part of your reply.",
        "Wrap up your reply with a short postscript; it should open with '{marker}'.",
        "End your reply with a short note that starts with {marker}",
        "Once you have answered, tack on a postscript opening with {marker}",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            text = "\n".join(response.splitlines())
            pattern = r"^[^\S\n]*" + re.escape(MARKER) + r"[^\S\n]*\S"
            # Any marker line after some text: a reply may open with a note and end with the postscript.
            return any(text[: m.start()].strip() for m in re.finditer(pattern, text, flags=re.MULTILINE))
        """,
        r"""
        def evaluate(response):
            seen_text = False
            for line in response.splitlines():
                stripped = line.strip()
                if stripped.startswith(MARKER) and stripped[len(MARKER):].strip() and seen_text:
                    return True
                if stripped:
                    seen_text = True
            return False
        """,
    )

    def sample(self, rng):
        return {"marker": rng.choice(["P.S.", "P.P.S."])}

    def cases(self, params, rng):
        m = params["marker"]
        note = rng.choice(["Let me know how it goes.", "Take it one day at a time.", "A small start is fine."])
        return (
            [f"{texts.prose(rng)}\n\n{m} {note}", f"{texts.prose(rng)}\n{m}{note}\n"],
            [texts.prose(rng), f"{m} {note}\n\n{texts.prose(rng)}", f"{texts.prose(rng)}\n\nPS {note}"],
        )


@register
class Placeholders(Constraint):
    id = "structure:placeholders"
    phrasings = (
        "Include at least {placeholders} in square brackets, such as [name].",
        "Leave {placeholders} for the reader to fill in, written like [address].",
        "Your answer must contain {n_word} or more placeholders in square brackets, for example [date].",
        "Please include {placeholders} or more in square brackets, like [city].",
        "Use at least {placeholders} in [brackets], for example [phone number].",
        "Leave blanks for at least {placeholders}, each written in square brackets such as [company].",
        "Put {placeholders} or more in the text as bracketed blanks like [amount].",
        "Add at least {placeholders} such as [recipient] that someone can fill in later.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            text = "\n".join(response.splitlines())
            return len([p for p in re.findall(r"\[([^\[\]\n]*)\]", text) if p.strip()]) >= N
        """,
    )

    def sample(self, rng):
        return {"n": rng.randint(1, 4)}

    def fields(self, params):
        return {"placeholders": _plural(params["n"], "placeholder"), "n_word": _number(params["n"])}

    @staticmethod
    def _letter(rng, k):
        names = rng.sample(["[name]", "[date]", "[address]", "[company]", "[phone number]", "[city]"], k)
        lines = ["Dear {},".format(names[0] if k else "friend"), "I am writing to confirm our meeting."]
        lines += [f"Please note this detail: {p}." for p in names[1:]]
        lines.append("Best regards")
        return "\n".join(lines)

    def cases(self, params, rng):
        n = params["n"]
        return (
            [self._letter(rng, n), self._letter(rng, n + 1)],
            [self._letter(rng, n - 1), f"Dear [ ],\n{texts.prose(rng)}"],
        )


# ------------------------------------------------------------------------------------------ format
@register
class JsonFormat(Constraint):
    id = "format:json"
    phrasings = (
        "Format your entire output as valid JSON. You may put it in a ```json code block.",
        "Reply only with a JSON object; no text outside the JSON.",
        "Wrap your whole answer in JSON format.",
        "Please return your answer as valid JSON and nothing else.",
        "Give the whole reply as a JSON object that parses without errors.",
        "I need the output in JSON only; make sure it is valid.",
        "Respond with valid JSON; a ```json fenced block is fine.",
        "Output nothing but well-formed JSON.",
        "Structure your reply as JSON data, with no extra prose around it.",
        "Put your answer into a JSON object, and keep everything inside it.",
        "Your reply will be parsed by a program, so return valid JSON only.",
        "Answer in JSON: no commentary before or after it.",
        "Encode your full answer as JSON that a parser can read.",
        "Send back a single valid JSON value holding your answer.",
        "Format the response strictly as JSON.",
        "Return JSON only; you may wrap it in a ```json block.",
    )
    functions = (
        r"""
        def evaluate(response):
            import json
            text = response.strip()
            if text.startswith("```"):
                text = text[3:]
                if text.lower().startswith("json"):
                    text = text[4:]
                if text.rstrip().endswith("```"):
                    text = text.rstrip()[:-3]
            try:
                value = json.loads(text)
            except ValueError:
                return False
            return isinstance(value, (dict, list))
        """,
    )

    def cases(self, params, rng):
        tips = texts.sentences(rng, 3)
        obj = json.dumps({"topic": "advice", "tips": tips}, indent=2)
        return (
            [obj, f"```json\n{json.dumps({'answer': texts.prose(rng)})}\n```", json.dumps(tips)],
            [texts.prose(rng), f"Here is the JSON:\n{obj}", obj.replace('"\n  ]', '",\n  ]')],
        )


@register
class Quoted(Constraint):
    id = "format:quoted"
    phrasings = (
        "Wrap your entire response in double quotation marks.",
        "Put your whole answer inside double quotes.",
        "Enclose the full reply in a pair of double quotation marks.",
        "Please put double quotes around your entire answer.",
        "Start and end your reply with a double quotation mark.",
        'Surround the whole response with " marks.',
        "Your reply should begin and end with a double quote character.",
        "Place the complete answer within one pair of double quotes.",
        "Quote your entire reply, using double quotation marks at both ends.",
        'Make your response one quoted block: a " at the start and a " at the end.',
        "Enclose everything you write in double quotes.",
        "Put a double quotation mark before your first word and after your last.",
        'The full answer should be wrapped in "double quotes".',
        "Write your reply as a quotation, inside double quote marks.",
        'Open your reply with " and close it with ".',
        "Wrap all of your text in a single pair of double quotes.",
    )
    functions = (
        r"""
        def evaluate(response):
            text = response.strip()
            return len(text) >= 2 and (text[0], text[-1]) in (('"', '"'), ('\u201c', '\u201d'))
        """,
    )

    def cases(self, params, rng):
        return (
            [f'"{texts.prose(rng)}"', f"\u201c{texts.prose(rng)}\u201d\n"],
            [texts.prose(rng), f'"{texts.prose(rng)}', f"'{texts.prose(rng)}'"],
        )


@register
class CodeBlock(Constraint):
    id = "format:code_block"
    phrasings = (
        "Put your entire answer inside a single markdown code block (```).",
        "Reply with one code block fenced by triple backticks and nothing outside it.",
        "Place the whole response between ``` fences.",
        "Please put everything in one fenced code block using ```.",
        "Give the whole answer inside a single ``` block.",
        "Write your reply entirely within triple backticks.",
        "Return the response as one markdown code block and nothing else.",
        "Fence your entire answer with ``` at the start and at the end.",
        "Everything you write should sit inside one code block.",
        "Use a single code block (```) for your full reply, with no text outside.",
        "Put your answer between a pair of triple backtick lines.",
        "Reply with just one markdown code fence containing the answer.",
        "Wrap the complete response in ``` fences.",
        "Format the whole thing as a single code block.",
        "Your output should be one ``` fenced block and nothing more.",
        "Place all of your answer in a code block delimited by ```.",
    )
    functions = (
        r"""
        def evaluate(response):
            text = response.strip()
            return text.startswith("```") and text.endswith("```") and text.count("```") == 2 and len(text) > 6
        """,
    )

    def cases(self, params, rng):
        return (
            [f"```\n{texts.prose(rng)}\n```", f"```text\n{texts.prose(rng)}\n```\n"],
            [
                texts.prose(rng),
                f"Here you go:\n```\n{texts.prose(rng)}\n```",
                f"```\n{texts.prose(rng)}\n```\n```\n{texts.prose(rng)}\n```",
            ],
        )


@register
class MarkdownTable(Constraint):
    id = "format:table"
    phrasings = (
        "Include a markdown table with at least {rows} below the header.",
        "Present the information as a markdown table with a header and {n_word} or more rows.",
        "Add a table in markdown format that has at least {rows} of data.",
        "Please include a markdown table with a header row and {rows} or more beneath it.",
        "Show the details in a markdown table of at least {rows}, not counting the header.",
        "Organize part of your answer as a table with {n_word} or more data rows.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            lines = [line.strip() for line in response.splitlines()]
            separator = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?$")
            for i in range(1, len(lines)):
                if separator.match(lines[i]) and lines[i - 1].count("|") >= 1:
                    rows = 0
                    for line in lines[i + 1:]:
                        if "|" not in line:
                            break
                        rows += 1
                    if rows >= N:
                        return True
            return False
        """,
    )

    def sample(self, rng):
        return {"n": rng.randint(2, 4)}

    def fields(self, params):
        return {"rows": _plural(params["n"], "row"), "n_word": _number(params["n"])}

    @staticmethod
    def _table(rng, k):
        items = rng.sample(
            [
                ("Walking", "low", "daily"),
                ("Running", "high", "three times a week"),
                ("Cycling", "medium", "twice a week"),
                ("Swimming", "medium", "weekly"),
                ("Yoga", "low", "daily"),
                ("Rowing", "high", "weekly"),
            ],
            k,
        )
        rows = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in items)
        return f"| Activity | Effort | How often |\n|---|---|---|\n{rows}"

    def cases(self, params, rng):
        n = params["n"]
        return (
            [f"{texts.prose(rng)}\n\n{self._table(rng, n)}", self._table(rng, n + 1) + "\n\nHave fun."],
            [
                texts.prose(rng),
                f"{self._table(rng, n - 1)}\n\n{texts.prose(rng)}",
                self._table(rng, n).replace("|---|---|---|\n", ""),
            ],
        )


@register
class Highlights(Constraint):
    id = "format:highlights"
    phrasings = (
        "Highlight at least {parts} of your answer with markdown, like *this part*.",
        "Emphasize {n_word} or more phrases by wrapping them in single asterisks, e.g. *key point*.",
        "Mark at least {parts} as highlighted using *asterisks*.",
        "Please highlight {parts} or more using single asterisks, like *this*.",
        "Use *asterisks* to highlight at least {parts} of your reply.",
        "Emphasize at least {parts} of the text by putting them between asterisks.",
        "Mark {n_word} or more important phrases with *single asterisks*.",
        "Wrap at least {parts} of your answer in asterisks, e.g. *main idea*.",
    )
    # A highlight is *text* or **text** on one line, with no asterisk inside and no whitespace just
    # inside the asterisks (markdown's rule), read left to right: the words between two bold spans
    # (`**Tip** and **Note**`) or between two multiplication signs (`2 * 3 * 4`) are not one.
    functions = (
        r"""
        def evaluate(response):
            import re
            text = "\n".join(response.splitlines())
            span = r"\*\*[^\s*](?:[^\n*]*[^\s*])?\*\*|\*[^\s*](?:[^\n*]*[^\s*])?\*"
            return len(re.findall(span, text)) >= N
        """,
        r"""
        def evaluate(response):
            count = 0
            for line in response.splitlines():
                start = line.find("*")
                while start != -1:
                    for width in (2, 1):
                        mark = "*" * width
                        end = line.find("*", start + width)
                        inner = line[start + width:end]
                        if line.startswith(mark, start) and end != -1 and line.startswith(mark, end):
                            if inner and inner == inner.strip():
                                count += 1
                                start = end + width
                                break
                    else:
                        start += 1
                    start = line.find("*", start)
            return count >= N
        """,
    )

    def sample(self, rng):
        return {"n": rng.randint(1, 3)}

    def fields(self, params):
        return {"parts": _plural(params["n"], "part"), "n_word": _number(params["n"])}

    @staticmethod
    def _highlighted(rng, k):
        parts = texts.sentences(rng, k + 2)
        return " ".join(f"*{s[:-1]}*." if i < k else s for i, s in enumerate(parts))

    def cases(self, params, rng):
        n = params["n"]
        return (
            [self._highlighted(rng, n), self._highlighted(rng, n + 1)],
            [self._highlighted(rng, n - 1), texts.prose(rng) + " * *"],
        )


@register
class BoldText(Constraint):
    id = "format:bold"
    phrasings = (
        "Put at least {phrases} in bold using **double asterisks**.",
        "Use markdown bold (**like this**) {times_at_least}.",
        "Make {n_word} or more key phrases bold with **...**.",
        "Please make at least {phrases} bold with double asterisks.",
        "Bold {n_word} or more words or phrases using **this style**.",
        "Use **bold** text {times_at_least} in your reply.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            text = "\n".join(response.splitlines())
            return len(re.findall(r"\*\*[^\s*](?:[^\n*]*[^\s*])?\*\*", text)) >= N
        """,
    )

    def sample(self, rng):
        return {"n": rng.randint(1, 3)}

    def fields(self, params):
        return {
            "phrases": _plural(params["n"], "phrase"),
            "times_at_least": "at least " + _times(params["n"]),
            "n_word": _number(params["n"]),
        }

    @staticmethod
    def _bold(rng, k, stars="**"):
        parts = texts.sentences(rng, k + 2)
        return " ".join(f"{stars}{s[:-1]}{stars}." if i < k else s for i, s in enumerate(parts))

    def cases(self, params, rng):
        n = params["n"]
        return ([self._bold(rng, n), self._bold(rng, n + 1)], [self._bold(rng, n - 1), self._bold(rng, n, stars="*")])


@register
class NoMarkdown(Constraint):
    id = "format:no_markdown"
    phrasings = (
        "Do not use any markdown formatting: no asterisks, no # headings and no backticks.",
        "Write plain text only, without markdown symbols such as *, # or `.",
        "Avoid all markdown in your reply; plain sentences only.",
        "Please reply in plain text with no markdown at all.",
        "Don't format anything: no bold, no headings, no code marks.",
        "Keep the answer free of markdown such as asterisks, hashes and backticks.",
        "Use no markdown syntax anywhere; just ordinary text.",
        "I'm pasting this into a plain text field, so avoid *, # and ` characters.",
        "No markdown please: skip asterisks, pound signs and backticks.",
        "Write it as unformatted text, without any markdown symbols.",
        "Please avoid markdown formatting characters like * and #.",
        "The reply should contain plain prose only, with no markdown markup.",
        "Leave out all markdown: no lists with asterisks, no # titles, no code fences.",
        "Give me simple text with none of the markdown symbols *, # or `.",
        "Do not use asterisks, hash signs or backticks in your answer.",
        "Stay away from markdown; plain text is all I need.",
    )
    functions = (
        r"""
        def evaluate(response):
            return not any(ch in response for ch in "*#`")
        """,
    )

    def cases(self, params, rng):
        return (
            [texts.prose(rng), "\n\n".join(texts.paragraphs(rng, 2))],
            [
                f"# Tips\n{texts.prose(rng)}",
                texts.prose(rng).replace(" ", " **", 1) + "**",
                f"{texts.prose(rng)} Run `make` to start.",
            ],
        )


@register
class SingleLine(Constraint):
    id = "format:single_line"
    phrasings = (
        "Write your whole answer on a single line, with no line breaks.",
        "Reply in one line only; do not press enter.",
        "Keep the entire response on one line.",
        "Please keep your whole answer on one line with no newlines.",
        "Write everything as a single line of text.",
        "No line breaks please; the answer should be one line.",
        "Give your reply as one continuous line.",
        "Your answer must fit on a single line, without pressing return.",
        "Don't break your reply into multiple lines.",
        "Put the entire answer on just one line.",
        "Respond in a single line; no newline characters.",
        "Keep it to one line of text, with no breaks anywhere.",
        "Reply with a single unbroken line.",
        "The response should be exactly one line long.",
        "Avoid newlines entirely and write it all on one line.",
        "Answer on one line only, with no paragraph breaks.",
    )
    functions = (
        r"""
        def evaluate(response):
            text = response.strip()
            return len(text.splitlines()) == 1
        """,
    )

    def cases(self, params, rng):
        return (
            [texts.prose(rng), texts.prose(rng) + "\n"],
            ["\n\n".join(texts.paragraphs(rng, 2)), "\n".join(f"- {s}" for s in texts.sentences(rng, 3))],
        )


@register
class AsciiOnly(Constraint):
    id = "format:ascii_only"
    phrasings = (
        "Use only plain ASCII characters: no emoji, accented letters or special symbols.",
        "Do not include any emoji or non-English characters.",
        "Stick to basic keyboard characters only (ASCII), with no emoji.",
        "Please use ASCII characters only, with no emoji or accents.",
        "Stick to plain ASCII text: no emoji and no special symbols.",
        "Avoid any characters outside basic ASCII, including emoji.",
        "Write using only standard ASCII characters.",
        "No emoji, no accented letters, no fancy quotes; ASCII only.",
        "Keep the reply to characters you can type on a US keyboard.",
        "Only use ASCII in your answer; leave out emoji and symbols like curly quotes.",
        "Please don't include emoji or any non-ASCII characters.",
        "Your text should contain nothing beyond plain ASCII.",
        "Restrict yourself to ASCII characters; no accents or emoji.",
        "Use basic ASCII only, so no special dashes, quotes or emoji.",
        "Make sure every character in your reply is ASCII.",
        "Write in plain ASCII, without emoji or other special characters.",
    )
    functions = (
        r"""
        def evaluate(response):
            return all(ord(ch) < 128 for ch in response)
        """,
        r"""
        def evaluate(response):
            try:
                response.encode("ascii")
            except UnicodeEncodeError:
                return False
            return True
        """,
    )

    def cases(self, params, rng):
        return (
            [texts.prose(rng), "\n\n".join(texts.paragraphs(rng, 2))],
            [
                texts.prose(rng) + " \U0001f60a",
                f"{texts.prose(rng)} Meet me at the caf\u00e9.",
                f"\u201c{texts.prose(rng)}\u201d",
            ],
        )


# ---------------------------------------------------------------------------------- start and end
@register
class StartPhrase(Constraint):
    id = "start:phrase"
    phrasings = (
        "Begin your response with these exact words: {phrase}",
        "Start your answer with '{phrase}'",
        "The first words of your reply must be exactly: {phrase}",
        "Please open your reply with exactly these words: {phrase}",
        "Kick off your answer with the words '{phrase}'",
    )
    functions = (
        r"""
        def evaluate(response):
            return response.strip().startswith(PHRASE)
        """,
        r"""
        def evaluate(response):
            import re
            return re.match(r"\s*" + re.escape(PHRASE), response) is not None
        """,
    )

    def sample(self, rng):
        return {
            "phrase": rng.choice(
                ["Great question!", "Here is a short answer.", "Let me explain.", "To put it simply,", "Sure thing."]
            )
        }

    def cases(self, params, rng):
        p = params["phrase"]
        return (
            [f"{p} {texts.prose(rng)}", f"\n{p}\n\n{texts.prose(rng)}"],
            [texts.prose(rng), f"{texts.prose(rng)} {p}", f"{p.lower()} {texts.prose(rng)}"],
        )


@register
class EndPhrase(Constraint):
    id = "end:phrase"
    phrasings = (
        "End your response with the exact phrase '{phrase}' and nothing after it.",
        "Finish your answer with '{phrase}' and do not add anything after that.",
        "The last words of your reply must be exactly: {phrase}",
        "Please close your reply with '{phrase}' as the very last words.",
        "Make '{phrase}' the final words of your answer, with nothing after them.",
        "Sign off with exactly '{phrase}' and write nothing after it.",
        "Let '{phrase}' be the closing words of your reply.",
        "I want your reply to finish on these exact words: {phrase}",
    )
    functions = (
        r"""
        def evaluate(response):
            return response.strip().endswith(PHRASE)
        """,
        r"""
        def evaluate(response):
            import re
            return re.search(re.escape(PHRASE) + r"\s*$", response) is not None
        """,
    )

    def sample(self, rng):
        return {
            "phrase": rng.choice(
                [
                    "Happy to help with anything else.",
                    "That covers the main points.",
                    "I hope this helps.",
                    "Thanks for reading!",
                    "Good luck with your next step.",
                ]
            )
        }

    def cases(self, params, rng):
        p = params["phrase"]
        return (
            [f"{texts.prose(rng)} {p}", f"{texts.prose(rng)}\n\n{p}\n"],
            [texts.prose(rng), f"{p} {texts.prose(rng)}", f"{texts.prose(rng)} {p} Bye."],
        )


@register
class RestateRequest(Constraint):
    id = "start:restate_request"
    phrasings = (
        "Before you answer, repeat this request word for word: '{request}' Then give your answer.",
        "First copy the following request exactly as written, then respond to it: '{request}'",
        "Start by restating the request '{request}' without changing a word, and only then answer.",
        "Please begin by repeating my request exactly, '{request}' and then answer it.",
        "Copy this request word for word before your answer: '{request}'",
    )
    functions = (
        r"""
        def evaluate(response):
            request = REQUEST
            text = response.strip()
            return text.startswith(request) and text[len(request):].strip() != ""
        """,
    )

    def sample(self, rng):
        return {
            "request": rng.choice(
                [
                    "Please give me a clear and simple answer.",
                    "Explain this as if I were new to the topic.",
                    "I would like a short and practical reply.",
                    "Tell me what I should do first.",
                ]
            )
        }

    def cases(self, params, rng):
        r = params["request"]
        return (
            [f"{r}\n\n{texts.prose(rng)}", f"{r} {texts.prose(rng)}"],
            [texts.prose(rng), r, f"{r.replace(' a ', ' one ').replace(' I ', ' we ').lower()} {texts.prose(rng)}"],
        )


# ------------------------------------------------------------------------------------- punctuation
@register
class NoCommas(Constraint):
    id = "punctuation:no_commas"
    phrasings = (
        "Do not use any commas in your response.",
        "Write your answer without a single comma.",
        "Avoid commas entirely.",
        "Please write without using any commas.",
        "Leave out commas completely in your reply.",
        "No commas anywhere in your answer.",
        "Don't put a single comma in your response.",
        "Your reply must be comma-free.",
        "Avoid using the comma character at all.",
        "Try to answer with zero commas.",
        "Write your answer but skip every comma.",
        "Make sure there are no commas in what you write.",
        "Please use other punctuation instead of commas; none at all.",
        "I want a reply with no commas whatsoever.",
        "Keep commas out of your answer entirely.",
        "The response cannot contain any commas.",
    )
    functions = (
        r"""
        def evaluate(response):
            return "," not in response
        """,
    )

    def cases(self, params, rng):
        with_commas = texts.paragraphs(rng, 2, where=lambda p: "," in p)
        return (
            [texts.prose(rng).replace(",", ""), "\n\n".join(p.replace(",", " and") for p in texts.paragraphs(rng, 2))],
            [with_commas[0], with_commas[1].replace(",", "", 1) + " Yes, really."],
        )


@register
class EndMark(Constraint):
    id = "punctuation:end_mark"
    phrasings = (
        "End your response with {mark_name}.",
        "Make sure the very last character of your answer is {mark_name}.",
        "Finish your reply with {mark_name} ({mark}).",
        "Please make {mark_name} the last character of your reply.",
        "Your answer should end with {mark_name} ({mark}) and nothing after it.",
        "Close your response with {mark_name}.",
        "The final character you write must be {mark_name}.",
        "Conclude your answer with {mark_name} ({mark}).",
    )
    functions = (
        r"""
        def evaluate(response):
            return response.rstrip().endswith(MARK)
        """,
        r"""
        def evaluate(response):
            text = response.strip()
            return text != "" and text[-1] == MARK
        """,
    )
    _NAMES = {"?": "a question mark", "!": "an exclamation mark", ".": "a period"}

    def sample(self, rng):
        return {"mark": rng.choice(list(self._NAMES))}

    def fields(self, params):
        return {"mark_name": self._NAMES[params["mark"]]}

    def cases(self, params, rng):
        mark = params["mark"]
        others = [m for m in self._NAMES if m != mark]
        body = texts.prose(rng)[:-1]
        return (
            [f"{body}{mark}", f"{texts.prose(rng)[:-1]}{mark}\n"],
            [f"{body}{others[0]}", f"{texts.prose(rng)[:-1]}{others[1]}", f"{body}{mark} Bye"],
        )


@register
class NoExclamation(Constraint):
    id = "punctuation:no_exclamation"
    phrasings = (
        "Do not use any exclamation marks.",
        "Keep a calm tone: no exclamation marks at all.",
        "Your answer must not contain the character '!'.",
        "Please don't use exclamation marks.",
        "Leave out every exclamation mark in your reply.",
        "No exclamation points anywhere, please.",
        "Write your answer without any '!' characters.",
        "Avoid exclamation marks completely.",
        "Keep the tone even and skip exclamation marks.",
        "There should be no exclamation marks in your answer.",
        "Do not end any sentence with an exclamation point.",
        "Your response must be free of exclamation marks.",
        "I'd like a reply with zero exclamation points.",
        "Don't write the '!' character at all.",
        "Refrain from using exclamation points in your response.",
        "Please answer without a single exclamation mark.",
    )
    functions = (
        r"""
        def evaluate(response):
            return "!" not in response
        """,
    )

    def cases(self, params, rng):
        return (
            [texts.prose(rng), "\n\n".join(texts.paragraphs(rng, 2))],
            [texts.prose(rng)[:-1] + "!", f"Great idea! {texts.prose(rng)}"],
        )


@register
class MinQuestions(Constraint):
    id = "punctuation:questions"
    phrasings = (
        "Ask the reader at least {questions}, each ending with a question mark.",
        "Include {n_word} or more questions in your reply.",
        "Your answer should contain at least {questions} (sentences ending in '?').",
        "Please ask at least {questions} in your answer.",
        "Include {questions} or more, each ending in a question mark.",
        "Pose at least {questions} to the reader somewhere in your reply.",
    )
    functions = (
        r"""
        def evaluate(response):
            return response.count("?") >= N
        """,
    )

    def sample(self, rng):
        return {"n": rng.randint(1, 3)}

    def fields(self, params):
        return {"questions": _plural(params["n"], "question"), "n_word": _number(params["n"])}

    def cases(self, params, rng):
        n = params["n"]
        return (
            [texts.prose_with(rng, texts.QUESTIONS, k) for k in (n, n + 1)],
            [texts.prose_with(rng, texts.QUESTIONS, n - 1), texts.prose(rng)],
        )


# -------------------------------------------------------------------------------------------- case
@register
class Lowercase(Constraint):
    id = "case:lowercase"
    phrasings = (
        "Write your entire answer in lowercase letters; no capital letters at all.",
        "Use only lowercase letters in your reply.",
        "Do not use any capital letters anywhere in your response.",
        "Please write everything in lowercase.",
        "Keep all letters lowercase; don't capitalize anything.",
        "Reply using lowercase letters only.",
        "No capital letters please, not even at the start of sentences.",
        "Type your whole response in lower case.",
        "Every letter of your answer should be lowercase.",
        "Don't use uppercase letters anywhere.",
        "Please answer in all lowercase, names included.",
        "Make the entire reply lowercase.",
        "Your text should contain no uppercase characters.",
        "Write in small letters only, with no capitals.",
        "Avoid capital letters completely in what you write.",
        "Use lowercase for every word, including the first one.",
    )
    functions = (
        r"""
        def evaluate(response):
            return response.islower()
        """,
        r"""
        def evaluate(response):
            # Every cased letter is lowercase, and there is one: a text without letters is not lowercase.
            cased = [ch for ch in response if ch.isupper() or ch.islower() or ch.istitle()]
            return bool(cased) and all(ch.islower() for ch in cased)
        """,
    )

    def cases(self, params, rng):
        return (
            [texts.prose(rng).lower(), "\n\n".join(texts.paragraphs(rng, 2)).lower()],
            [texts.prose(rng), texts.prose(rng).lower() + " I think so."],
        )


@register
class Uppercase(Constraint):
    id = "case:uppercase"
    phrasings = (
        "Write your whole answer in capital letters.",
        "Respond in all caps, every letter uppercase.",
        "Use only uppercase letters in your response.",
        "Please write everything in uppercase.",
        "Use capital letters for every word of your answer.",
        "Reply entirely in ALL CAPS.",
        "No lowercase letters please; everything should be capitalized.",
        "Type your whole response in upper case.",
        "Every letter you write should be a capital.",
        "Make the entire reply uppercase.",
        "Don't use any lowercase letters at all.",
        "Please answer in all capital letters.",
        "Your text should have no lowercase characters.",
        "Write it all in caps.",
        "Capitalize every single letter in your response.",
        "Put the whole answer in block capitals.",
    )
    functions = (
        r"""
        def evaluate(response):
            return response.isupper()
        """,
        r"""
        def evaluate(response):
            # Every cased letter is a capital, and there is one: a text without letters is not in capitals.
            cased = [ch for ch in response if ch.isupper() or ch.islower() or ch.istitle()]
            return bool(cased) and all(ch.isupper() for ch in cased)
        """,
    )

    def cases(self, params, rng):
        return (
            [texts.prose(rng).upper(), "\n\n".join(texts.paragraphs(rng, 2)).upper()],
            [texts.prose(rng), texts.prose(rng).upper() + " Thanks."],
        )


@register
class CapitalWords(Constraint):
    id = "case:capital_words"
    phrasings = (
        "Use {relation} {words} written entirely in capital letters.",
        "Your answer should contain {relation} {words} in ALL CAPS.",
        "The number of words written in full capitals must be {relation} {n_word}.",
        "Please include {relation} {words} that are fully capitalized.",
        "Write {relation} {words} in all capital letters.",
        "Please put {relation} {words} in full uppercase.",
        "Your reply should have {relation} {words} spelled in capitals only.",
        "Use capitals-only spelling for {relation} {words}.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            words = re.findall(r"[^\W\d_]+", response)
            return len([w for w in words if len(w) >= 2 and w.isupper()]) OP N
        """,
        r"""
        def evaluate(response):
            import re
            words = re.split(r"[\W\d_]+", response)
            return sum(1 for w in words if len(w) > 1 and w.isupper()) OP N
        """,
    )

    def sample(self, rng):
        return {**_relation(rng, ("at least", "fewer than")), "n": rng.randint(2, 4)}

    def fields(self, params):
        return {"words": _plural(params["n"], "word"), "n_word": _number(params["n"])}

    def cases(self, params, rng):
        passing, failing = _counts(params["relation"], params["n"])
        return (
            [texts.prose_with(rng, texts.CAPS_SENTENCES, k) for k in passing],
            [texts.prose_with(rng, texts.CAPS_SENTENCES, k) for k in failing],
        )


@register
class SentenceCapitals(Constraint):
    id = "case:sentence_capitals"
    phrasings = (
        "Start every sentence with a capital letter.",
        "Make sure each sentence in your answer begins with an uppercase letter.",
        "Capitalize the first letter of every sentence.",
        "Please begin each sentence with an uppercase letter.",
        "Every sentence you write should start with a capital.",
        "Capitalize the first word of each sentence.",
        "Make sure no sentence starts with a lowercase letter.",
        "Use a capital letter at the start of every sentence.",
        "Each new sentence must open with a capital letter.",
        "Follow normal capitalization: every sentence starts uppercase.",
        "Don't start any sentence with a small letter.",
        "Start all of your sentences with capital letters.",
        "The first letter of every sentence should be uppercase.",
        "Please capitalize the opening letter of each sentence.",
        "Begin every sentence in your reply with a capital letter.",
        "Check that each sentence starts with a capital.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            for sentence in re.split(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+", response.strip()):
                letters = [ch for ch in sentence if ch.isalpha()]
                if letters and not letters[0].isupper():
                    return False
            return True
        """,
    )

    def cases(self, params, rng):
        sentences = texts.sentences_of(texts.prose(rng))
        k = rng.randrange(1, len(sentences))
        sentences[k] = sentences[k][0].lower() + sentences[k][1:]
        return (
            [texts.prose(rng), "\n".join(f"- {s}" for s in texts.sentences(rng, 3))],
            [" ".join(sentences), texts.prose(rng).lower()],
        )


# ---------------------------------------------------------------------------------------- keywords
def _lacking(letter: str):
    return lambda text: letter not in text.lower()


@register
class IncludeKeywords(Constraint):
    id = "keywords:include"
    phrasings = (
        "Make sure to mention the words {keywords}.",
        "Your answer must include the words {keywords}.",
        "Use the words {keywords} somewhere in your reply.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            text = response.lower()
            return all(re.search(r"(?<![^\W\d_])" + re.escape(w) + r"(?![^\W\d_])", text) for w in KEYWORDS)
        """,
        r"""
        def evaluate(response):
            import re
            words = set(re.split(r"[\W\d_]+", response.lower()))
            return all(w in words for w in KEYWORDS)
        """,
    )

    def sample(self, rng):
        return {"keywords": rng.sample(sorted(texts.KEYWORDS), 2)}

    def fields(self, params):
        return {"keywords": _quoted(params["keywords"], "and")}

    def cases(self, params, rng):
        a, b = params["keywords"]
        uses = ([a, b], [b, a, a], [a], [b])  # one sentence with the word for each mention
        texts_using = [
            texts.with_sentences(texts.prose(rng), [rng.choice(texts.KEYWORDS[w]) for w in words], rng)
            for words in uses
        ]
        return texts_using[:2], texts_using[2:] + [texts.prose(rng)]


@register
class ExcludeKeywords(Constraint):
    id = "keywords:exclude"
    phrasings = (
        "Do not use the words {keywords} anywhere in your answer.",
        "Avoid the words {keywords} completely.",
        "Your reply must not contain the words {keywords}.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            text = response.lower()
            return not any(re.search(r"(?<![^\W\d_])" + re.escape(w) + r"(?![^\W\d_])", text) for w in KEYWORDS)
        """,
        r"""
        def evaluate(response):
            import re
            words = set(re.split(r"[\W\d_]+", response.lower()))
            return not any(w in words for w in KEYWORDS)
        """,
    )

    def sample(self, rng):
        return {"keywords": rng.sample(sorted(texts.KEYWORDS), 2)}

    def fields(self, params):
        return {"keywords": _quoted(params["keywords"], "or")}

    def cases(self, params, rng):
        a, b = params["keywords"]
        other = next(w for w in sorted(texts.KEYWORDS) if w not in (a, b))
        return (
            [texts.prose(rng), texts.prose_with(rng, texts.KEYWORDS[other], 1)],
            [texts.prose_with(rng, texts.KEYWORDS[a], 1), texts.prose_with(rng, texts.KEYWORDS[b], 1).upper()],
        )


@register
class KeywordFrequency(Constraint):
    id = "keywords:frequency"
    phrasings = (
        "Use the word '{word}' {relation} {times}.",
        "The word '{word}' should appear {relation} {times}.",
        "In your answer, mention '{word}' {relation} {times}.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            pattern = r"(?<![^\W\d_])" + re.escape(WORD) + r"(?![^\W\d_])"
            return len(re.findall(pattern, response.lower())) OP N
        """,
        r"""
        def evaluate(response):
            import re
            return re.findall(r"[^\W\d_]+", response.lower()).count(WORD) OP N
        """,
    )

    def sample(self, rng):
        return {
            "word": rng.choice(sorted(texts.KEYWORDS)),
            **_relation(rng, ("at least", "fewer than")),
            "n": rng.randint(2, 4),
        }

    def fields(self, params):
        return {"times": _times(params["n"])}

    def cases(self, params, rng):
        passing, failing = _counts(params["relation"], params["n"])
        carriers = texts.KEYWORDS[params["word"]]
        return (
            [texts.prose_with(rng, carriers, k) for k in passing],
            [texts.prose_with(rng, carriers, k) for k in failing],
        )


@register
class PhraseRepeated(Constraint):
    id = "keywords:phrase_repeated"
    phrasings = (
        "Use the exact phrase '{phrase}' exactly {times} in your answer.",
        "Repeat the phrase '{phrase}' {times}, no more and no less.",
        "The phrase '{phrase}' must appear exactly {times}.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            words = [re.escape(w) for w in PHRASE.split()]
            pattern = r"(?<![^\W\d_])" + r"\s+".join(words) + r"(?![^\W\d_])"
            return len(re.findall(pattern, response.lower())) == N
        """,
        r"""
        def evaluate(response):
            import re
            text = " " + " ".join(response.lower().split()) + " "
            count, start = 0, text.find(PHRASE)
            while start != -1:
                end = start + len(PHRASE)
                if not re.match(r"[^\W\d_]", text[start - 1]) and not re.match(r"[^\W\d_]", text[end]):
                    count += 1
                    start = text.find(PHRASE, end)
                else:
                    start = text.find(PHRASE, start + 1)
            return count == N
        """,
    )

    def sample(self, rng):
        return {"phrase": rng.choice(sorted(texts.PHRASES)), "n": rng.randint(2, 4)}

    def fields(self, params):
        return {"times": _times(params["n"])}

    def cases(self, params, rng):
        n, phrase = params["n"], params["phrase"]
        carriers = texts.PHRASES[phrase]
        return (
            [texts.prose_with(rng, carriers, k) for k in (n, n)],
            [texts.prose_with(rng, carriers, k) for k in (n - 1, n + 1)],
        )


@register
class LetterFrequency(Constraint):
    id = "keywords:letter_frequency"
    phrasings = (
        "The letter '{letter}' should appear {relation} {times} in your response.",
        "Use the letter '{letter}' {relation} {times} (upper or lower case).",
        "Make sure the letter '{letter}' occurs {relation} {times}.",
    )
    functions = (
        r"""
        def evaluate(response):
            return response.lower().count(LETTER) OP N
        """,
        r"""
        def evaluate(response):
            return sum(1 for ch in response if ch.lower() == LETTER) OP N
        """,
    )

    def sample(self, rng):
        return {
            "letter": rng.choice(sorted(texts.LETTER_SENTENCES)),
            **_relation(rng, ("at least", "fewer than")),
            "n": rng.randint(2, 5),
        }

    def fields(self, params):
        return {"times": _times(params["n"])}

    def cases(self, params, rng):
        letter = params["letter"]
        passing, failing = _counts(params["relation"], params["n"])
        pool = texts.LETTER_SENTENCES[letter]
        return (
            [texts.prose_with(rng, pool, k, where=_lacking(letter)) for k in passing],
            [texts.prose_with(rng, pool, k, where=_lacking(letter)) for k in failing],
        )


@register
class AvoidLetter(Constraint):
    id = "keywords:avoid_letter"
    phrasings = (
        "Do not use the letter '{letter}' anywhere in your answer.",
        "Write your reply without the letter '{letter}', in upper or lower case.",
        "Avoid every word that contains the letter '{letter}'.",
        "Please write without ever using the letter '{letter}'.",
        "The letter '{letter}' must not show up in your reply, in any case.",
    )
    functions = (
        r"""
        def evaluate(response):
            return LETTER not in response.lower()
        """,
    )

    def sample(self, rng):
        return {"letter": rng.choice(sorted(texts.LETTER_SENTENCES))}

    def cases(self, params, rng):
        letter = params["letter"]
        return (
            texts.paragraphs(rng, 2, where=_lacking(letter)),
            [
                texts.prose_with(rng, texts.LETTER_SENTENCES[letter], 1, where=_lacking(letter)),
                texts.prose(rng, where=_lacking(letter)) + f" {letter.upper()}.",
            ],
        )


@register
class NoDigits(Constraint):
    id = "keywords:no_digits"
    phrasings = (
        "Do not write any digits; spell numbers out in words.",
        "Your answer must not contain any digits (0-9).",
        "Write all numbers as words, never as digits.",
        "Please don't use any digits; write numbers as words.",
        "No numerals please: spell out every number.",
        "Leave out the digits 0 to 9 entirely.",
        "Write numbers in words, like 'twelve', never as digits.",
        "Your reply should contain no digit characters.",
        "Avoid digits; if you need a number, spell it.",
        "Don't include any numerals in your answer.",
        "Spell out all numbers and use no digits.",
        "There must not be a single digit in your response.",
        "Please avoid writing numbers with digits.",
        "Use words for numbers, not the characters 0-9.",
        "Make sure your answer has no digits in it.",
        "Express any numbers in words rather than numerals.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            return re.search(r"[0-9]", response) is None
        """,
        r"""
        def evaluate(response):
            import string
            return not any(ch in string.digits for ch in response)
        """,
    )

    def cases(self, params, rng):
        return (
            [texts.prose(rng), f"{texts.prose(rng)} It takes about ten minutes a day."],
            [f"{texts.prose(rng)} It takes about 10 minutes a day.", f"Step 1: {texts.prose(rng)}"],
        )


@register
class LastWord(Constraint):
    id = "keywords:last_word"
    phrasings = (
        "The very last word of your answer must be '{word}'.",
        "End your response with the word '{word}'.",
        "Make '{word}' the final word of your reply.",
        "Please make sure your reply ends on the word '{word}'.",
        "Finish with '{word}' as the last word you write.",
        "Your final word should be '{word}', with nothing after it but punctuation.",
        "Please end on the word '{word}'.",
        "Close your answer with the word '{word}'.",
    )
    functions = (
        r"""
        def evaluate(response):
            import re
            words = re.findall(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*", response)
            return bool(words) and words[-1].lower() == WORD
        """,
    )
    _ENDINGS = {
        "today": "You can start today.",
        "together": "Good things happen when we work together.",
        "again": "Try it once more and then try again.",
        "soon": "You will notice a change soon.",
        "forward": "Keep moving forward.",
    }

    def sample(self, rng):
        return {"word": rng.choice(sorted(self._ENDINGS))}

    def cases(self, params, rng):
        word = params["word"]
        ending = self._ENDINGS[word]
        return (
            [f"{texts.prose(rng)} {ending}", f"{texts.prose(rng)}\n\n{ending.upper()}\n"],
            [texts.prose(rng), f"{ending} {texts.prose(rng)}"],
        )


# ---------------------------------------------------------------------------------------- language
@register
class ResponseLanguage(Constraint):
    id = "language:response"
    phrasings = (
        "Answer only in {language}; no other language is allowed.",
        "Your entire response must be written in {language}.",
        "Please reply in {language} only.",
        "Please write your whole answer in {language}.",
        "Respond in {language}, and use no other language.",
    )
    functions = (
        r"""
        def evaluate(response):
            from langdetect import DetectorFactory, detect
            from langdetect.lang_detect_exception import LangDetectException
            # Seeded here, not only by autoif's worker: the same verdict wherever the function runs.
            DetectorFactory.seed = 0
            try:
                return detect(response) == LANGUAGE
            except LangDetectException:
                return False
        """,
    )

    def sample(self, rng):
        return {"language": rng.choice(sorted(texts.LANGUAGE_NAMES))}

    def fields(self, params):
        return {"language": texts.LANGUAGE_NAMES[params["language"]]}

    @staticmethod
    def _paragraphs(language, rng):
        pool = texts.PARAGRAPHS if language == "en" else texts.FOREIGN_PARAGRAPHS[language]
        return rng.sample(pool, 2)

    def cases(self, params, rng):
        language = params["language"]
        others = [code for code in sorted(texts.LANGUAGE_NAMES) if code != language]
        failing = [self._paragraphs(code, rng)[0] for code in rng.sample(others, 2)]
        return self._paragraphs(language, rng), failing + ["1234 5678"]
