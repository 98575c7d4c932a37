"""Stage `verifiers`: K raw samples of {func, cases} per instruction, kept as raw text.

Parsing is crossval's job, so generations made elsewhere (a batch API, another tool) can be
dropped into verifiers.jsonl and `autoif run --only crossval` takes it from there. Instructions
from the built-in library are not sent to the LLM: their own functions and cases are written out
in the same JSON form, so crossval treats every instruction alike. An instruction with a sample
the backend gave up on is dropped as `llm_error` (the next run redoes its shard) or
`llm_rejected` (refused for the request's own fault).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache

from ..llm import Request, failure
from ..prompts import render, template
from ..records import Instruction, VerifierSamples
from ..rundir import VERIFIERS
from .base import Context, Drop, Stage

N_CASES = 6


def library_generation(functions: list[str], cases: list[dict]) -> list[str]:
    """A library entry's functions and cases in the same form an LLM is asked to answer in."""
    return ["```json\n" + json.dumps({"func": f, "cases": cases}, ensure_ascii=False) + "\n```" for f in functions]


class VerifiersStage(Stage[Instruction]):
    name = "verifiers"
    output = VERIFIERS.name
    input = "augment"
    output_type = VerifierSamples
    uses_llm = True
    reads = ("verifiers", "llm", "seed")

    def key_inputs(self, config):
        return {"prompt": template("verifiers")}

    def run(self, records: list[Instruction], ctx: Context) -> Iterable[VerifierSamples | Drop]:
        cfg = ctx.config.verifiers
        asked = [r for r in records if r.source != "builtin"]
        requests = [
            Request.user(
                self.prompt(r, ctx),
                n=cfg.k,
                temperature=cfg.temperature,
                max_tokens=cfg.max_tokens,
                seed=ctx.config.seed,
            )
            for r in asked
        ]
        answers = dict(zip((r.id for r in asked), ctx.llm.generate(requests, desc="verifiers"))) if asked else {}
        for r in records:
            if r.source == "builtin":
                # seeds sets both on its builtin instructions; one without them yields nothing to cross-validate
                raw = library_generation(r.functions or [], r.cases or [])
            else:
                completions = answers[r.id]
                reason = failure(completions)
                if reason:  # not all its samples (a failed one: the pipeline redoes the shard next run)
                    ctx.count(reason, sum(1 for c in completions if c.error))
                    yield Drop(r, reason)
                    continue
                raw = [str(c) for c in completions]
            yield VerifierSamples(instruction_id=r.id, instruction=r.text, raw=raw, source=r.source)

    @staticmethod
    def prompt(instruction: Instruction, ctx: Context) -> str:
        # The few-shot example rotates with the instruction, from our own verified library.
        examples = _few_shot_examples()
        ex = examples[ctx.rng("verifiers.example", instruction.id).randrange(len(examples))]
        example_json = json.dumps({"func": ex.functions[0], "cases": ex.cases[:4]}, ensure_ascii=False)
        return render(
            "verifiers",
            instruction=instruction.text,
            n_cases=N_CASES,
            example_instruction=ex.instruction,
            example_json=example_json,
        )


@lru_cache(maxsize=1)
def _few_shot_examples():
    from .library import build_library

    # The prompt asks for the standard library only, so examples that import more are left out.
    return [e for e in build_library(seed=0) if not any("langdetect" in f or "nltk" in f for f in e.functions)]
