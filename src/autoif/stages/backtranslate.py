"""Stage `backtranslate`: each kept function back into an instruction; NLI drops contradictions.

Per instruction, up to `backtranslate.max_functions` of its cross-validated functions (the most
accurate first) go to the LLM, which writes the one instruction each function checks. An NLI
model then labels every (premise = the original instruction, hypothesis = the back-translation)
pair of the shard in one batched call. The instruction is dropped ("contradiction") when any
label is contradiction; otherwise it is kept with `back_translations` added:
`[{function_index, text, label}]`.

A back-translation can be missing (the LLM failed on it, or its answer holds no instruction) and
a label can be missing (the LLM judge named none). Such a function is recorded with
`label: null` and an `error` (`llm_error`, `unparsable`, `nli_unlabelled`) and counted, and the
decision rests on the labels there are: a missing label is never read as contradiction (an LLM
outage must not drop every instruction), nor does it hide one found for another function. An
instruction with no label at all is kept and counted as `instruction_unchecked`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from ..config import Config
from ..llm import Request
from ..prompts import render, template
from ..records import BackTranslation, CrossvalRecord
from ..rundir import BACKTRANSLATE
from .base import Context, Drop, Stage
from .parsing import strip_quotes

MAX_CHARS = 400  # longer than this, a line is an explanation, not an instruction
RAW_KEPT = 300  # characters of an unusable answer kept in the record (`detail`), to see what went wrong

_MARKUP = re.compile(r"\*\*|__|^#+\s*")
_BULLET = re.compile(r"^(?:[-*•>]|\d+[.)])\s+")
_LEAD = re.compile(r"^([^:]{0,80}):\s*")  # "Instruction: ...", "The instruction it checks is: ..."
_CODE = re.compile(
    r"^(?:def |return\b|import |from \S+ import |>>>|if |for |while |elif |else:|[{}\[\]]|\"\w+\"\s*:)"
    r"|\bevaluate\(|[{\[,]$"
)  # code, or a line of JSON


def extract_instruction(answer: str, max_chars: int = MAX_CHARS) -> str | None:
    """The instruction in an LLM's answer: its first line that is neither code, a fence, nor a
    preamble, without bullet, markdown, quotes or an "Instruction:" label, and at most `max_chars`
    long; None when there is none."""
    for line in answer.splitlines():
        line = _BULLET.sub("", _MARKUP.sub("", line.strip())).strip()
        lead = _LEAD.match(line)
        if lead and ("instruction" in lead.group(1).lower() or lead.group(1).strip().lower() in ("answer", "user")):
            line = line[lead.end() :]
        line = strip_quotes(line.strip())
        if (
            line.startswith("```")
            or _CODE.search(line)
            or line.endswith(":")
            or len(line.split()) < 2
            or len(line) > max_chars
        ):
            continue
        return line
    return None


def request(source: str, config: Config) -> Request:
    """The request that asks for one function's back-translation (stage compose asks the same ones
    to check a rewrite: the LLM cache answers those stage backtranslate asked)."""
    cfg = config.backtranslate
    return Request.user(
        render("backtranslate", function=source),
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens,
        seed=config.seed,
    )


def chosen_functions(record: CrossvalRecord, limit: int) -> list[int]:
    """Indices of the `limit` most accurate functions, ties in their listed order."""
    order = sorted(range(len(record.functions)), key=lambda i: -record.functions[i].accuracy)
    return order[:limit]


class BacktranslateStage(Stage[CrossvalRecord]):
    name = "backtranslate"
    output = BACKTRANSLATE.name
    input = "crossval"
    output_type = CrossvalRecord
    uses_llm = True
    reads = ("backtranslate", "llm", "seed")  # backtranslate.nli: the NLI judge (`ctx.nli`)

    def key_inputs(self, config):
        return {"prompts": {name: template(name) for name in ("backtranslate", "nli")}}

    def run(self, records: list[CrossvalRecord], ctx: Context) -> Iterable[CrossvalRecord | Drop]:
        cfg = ctx.config.backtranslate
        if not cfg.enabled:
            yield from records
            return
        chosen = [chosen_functions(r, cfg.max_functions) for r in records]
        requests = [request(r.functions[i].source, ctx.config) for r, indices in zip(records, chosen) for i in indices]
        answers = iter(ctx.llm.generate(requests, desc="backtranslate") if requests else [])

        translations: list[list[BackTranslation]] = []
        pairs, judged = [], []
        for record, indices in zip(records, chosen):
            mine = []
            for i in indices:
                answer = next(answers)[0]
                text = None if answer.error else extract_instruction(answer)
                if text is None:
                    error: Literal["llm_error", "unparsable"] = "llm_error" if answer.error else "unparsable"
                    ctx.count(f"back_translation_missing:{error}")
                    detail = answer.error or str(answer)[:RAW_KEPT]
                    mine.append(BackTranslation(function_index=i, text="", error=error, detail=detail))
                else:
                    mine.append(BackTranslation(function_index=i, text=text))
                    pairs.append((record.instruction, text))
                    judged.append(mine[-1])
            translations.append(mine)

        for bt, label in zip(judged, ctx.nli.classify(pairs) if pairs else []):
            ctx.count(f"nli:{label or 'unlabelled'}")
            if label is None:
                bt.error = "nli_unlabelled"
            bt.label = label

        for record, mine in zip(records, translations):
            labels = [bt.label for bt in mine if bt.label]
            if "contradiction" in labels:
                yield Drop(record, "contradiction")
                continue
            if not labels:
                ctx.count("instruction_unchecked")
            yield CrossvalRecord(**{**record.model_dump(), "back_translations": [bt.model_dump() for bt in mine]})
