"""Stage compose's two uses of the supervision LLM, each over all the combinations at once.

- `conflict_checks`: whether a combination's constraints can hold together (prompt
  `compose_conflict`), read with `parsing.parse_conflict_verdict`. An answer without a verdict is
  recorded (`error: unparsable`, its start in `detail`), an LLM failure as `llm_error`; neither
  stops the stage. The verdict is evidence (c) of issue 16: recorded, never decisive over
  execution (stage compose and export count where execution overrides it).
- `rewrites`: one natural instruction for a combination (prompt `compose_rewrite`), checked as
  stage 1 checks its instructions, by back-translation and NLI (below); a rewrite that fails is
  recorded with its reason and the template join is used.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..llm import Request
from ..prompts import render
from ..records import ConflictCheck, CrossvalRecord, NLILabel, Rewrite, RewriteRejection
from . import backtranslate
from .backtranslate import MAX_CHARS, RAW_KEPT, chosen_functions, extract_instruction
from .base import Context
from .parsing import parse_conflict_verdict
from .queries import closed

Parts = Sequence[CrossvalRecord]  # a combination's constituents, in order


def _request(prompt: str, parts: Parts, ctx: Context) -> Request:
    cfg = ctx.config.compose
    listed = "\n".join(f"{n}. {closed(p.instruction)}" for n, p in enumerate(parts, 1))
    return Request.user(
        render(prompt, instructions=listed),
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens,
        seed=ctx.config.seed,
    )


def conflict_checks(combinations: Sequence[Parts], ctx: Context) -> list[ConflictCheck]:
    """The LLM's verdict on each combination (`compatible` / `conflict`), or why there is none."""
    if not combinations:
        return []
    requests = [_request("compose_conflict", parts, ctx) for parts in combinations]
    checks = []
    for (answer,) in ctx.llm.generate(requests, desc="compose conflicts"):
        if answer.error:
            checks.append(ConflictCheck(error="llm_error", detail=answer.error))
            continue
        verdict = parse_conflict_verdict(answer)
        if verdict is None:
            checks.append(ConflictCheck(error="unparsable", detail=str(answer)[:RAW_KEPT]))
        else:
            checks.append(ConflictCheck(verdict=verdict))
    return checks


def rewrites(combinations: Sequence[Parts], ctx: Context) -> list[Rewrite]:
    """An LLM rewrite of each combination, with `rejected` set when it may not replace the template join.

    The check is stage 1's, turned to what a rewrite can get wrong. Stage 1 asks the LLM which
    instruction each function checks (back-translation) and has NLI compare that with the
    instruction. Here the same back-translations of each constituent's functions (the same
    requests, so the LLM cache answers those stage backtranslate asked) are the hypotheses and the
    rewrite is the premise: a constituent is kept when NLI finds at least one of its
    back-translations entailed by the rewrite ("every answer that follows the rewrite follows
    this") and none contradicted. Stage 1 drops only on contradiction; a rewrite must also show
    entailment, because its usual fault is to leave a constraint out, which NLI calls neutral.
    A constituent none of whose back-translations reads as an instruction is checked against its
    own text, the one its functions were cross-validated against.
    """
    if not combinations:
        return []
    requests = [_request("compose_rewrite", parts, ctx) for parts in combinations]
    out: list[Rewrite] = []
    for (answer,), parts in zip(ctx.llm.generate(requests, desc="compose rewrites"), combinations):
        # A rewrite states every constraint: as long as its constituents' texts together may be.
        text = None if answer.error else extract_instruction(answer, MAX_CHARS * len(parts))
        if text is None:
            error: RewriteRejection = "llm_error" if answer.error else "unparsable"
            out.append(Rewrite(text="", rejected=error, detail=answer.error or str(answer)[:RAW_KEPT]))
        else:
            out.append(Rewrite(text=text))

    limit = ctx.config.backtranslate.max_functions
    checked = [(rewrite, parts) for rewrite, parts in zip(out, combinations) if rewrite.rejected is None]
    sources = list(
        dict.fromkeys(p.functions[i].source for _, parts in checked for p in parts for i in chosen_functions(p, limit))
    )
    answers = ctx.llm.generate(
        [backtranslate.request(s, ctx.config) for s in sources], desc="compose back-translations"
    )
    translated = {s: None if a.error else extract_instruction(a) for s, (a,) in zip(sources, answers)}

    pairs: list[tuple[str, str]] = []
    owners: list[tuple[int, int]] = []  # (checked rewrite, constituent) of each pair
    for k, (rewrite, parts) in enumerate(checked):
        for c, part in enumerate(parts):
            texts = [translated[part.functions[i].source] for i in chosen_functions(part, limit)]
            for hypothesis in [t for t in texts if t] or [part.instruction]:
                pairs.append((rewrite.text, hypothesis))
                owners.append((k, c))
    labels: dict[tuple[int, int], list[NLILabel | None]] = {}
    for owner, label in zip(owners, ctx.nli.classify(pairs) if pairs else []):
        labels.setdefault(owner, []).append(label)
    for k, (rewrite, parts) in enumerate(checked):
        rewrite.rejected = _rejection([labels[(k, c)] for c in range(len(parts))])
    return out


def _rejection(labels: Sequence[Sequence[NLILabel | None]]) -> RewriteRejection | None:
    """Why a rewrite may not be used, from each constituent's NLI labels (None: it may)."""
    if any("contradiction" in mine for mine in labels):
        return "contradiction"
    if any(set(mine) == {None} for mine in labels):
        return "unchecked"
    if any("entailment" not in mine for mine in labels):
        return "constraint_lost"
    return None
