"""Stage `score`: the LLM judges how well each response answers its query (0-10).

The judge (`prompts/judge.txt`) sees the query, the instruction and the response, and gives its
score on the last line; `parsing.parse_score` reads it. `score.samples` judgements are averaged
over those that parse; a response none of whose judgements parse keeps `score: null` and is
counted `score_unparsable` (export then leaves it out wherever a score is required).

Only responses that can become training targets are judged, to save LLM calls: those that passed
verification (SFT) and those that reach `export.chosen_min_pass_rate` (DPO chosen). The others
are carried unjudged, as DPO rejected material. A record with a judgement the backend gave up on
is dropped as `llm_error` (the next run redoes its shard) or `llm_rejected` (refused for the
request's own fault). With scoring off (`score.enabled: off`, or `auto`
with the embedded model), records pass through unchanged and export asks for no score.
"""

from __future__ import annotations

from collections.abc import Iterable
from statistics import fmean

from ..llm import Request, failure
from ..prompts import render, template
from ..records import QueryRecord, VerifiedRecord, VerifiedResponse
from ..rundir import SCORED
from .base import Context, Drop, Stage
from .parsing import parse_score
from .verify import QUERIES

JUDGE = "judge"


def needs_judging(response: VerifiedResponse, chosen_min_pass_rate: float) -> bool:
    return response.passed or response.pass_rate >= chosen_min_pass_rate


def mean_score(judgements: list[str]) -> tuple[float | None, int]:
    """The mean of the judgements' parsable scores (None when none parses), and how many did not."""
    scores = [s for s in (parse_score(j) for j in judgements) if s is not None]
    return (fmean(scores) if scores else None), len(judgements) - len(scores)


class ScoreStage(Stage[VerifiedRecord]):
    name = "score"
    output = SCORED.name
    input = "verify"
    output_type = VerifiedRecord
    needs = (QUERIES,)
    uses_llm = True
    reads = ("score", "llm", "seed", "export.chosen_min_pass_rate")  # judged: responses that may be chosen

    def key_inputs(self, config):
        return {"judge": template(JUDGE)}

    def run(self, records: list[VerifiedRecord], ctx: Context) -> Iterable[VerifiedRecord | Drop]:
        cfg = ctx.config.score
        if not cfg.active(ctx.config.llm_for("score")):
            yield from records
            return
        queries = ctx.index(QUERIES, "id", QueryRecord)
        chosen_min = ctx.config.export.chosen_min_pass_rate
        prompts: dict[tuple[int, int], str] = {}  # (record, response) -> judge prompt
        for ri, record in enumerate(records):
            query = queries.get(record.prompt_id)
            if query is None:
                continue  # dropped below
            for j, response in enumerate(record.responses):
                if needs_judging(response, chosen_min):
                    prompts[ri, j] = render(
                        JUDGE, query=query.query, instruction=query.instruction, response=response.text
                    )
        # Identical responses to one prompt are judged once.
        unique = list(dict.fromkeys(prompts.values()))
        requests = [
            Request.user(p, n=cfg.samples, temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=ctx.config.seed)
            for p in unique
        ]
        answers = dict(zip(unique, ctx.llm.generate(requests, desc="score"))) if requests else {}
        for ri, record in enumerate(records):
            if record.prompt_id not in queries:
                yield Drop(record, "unknown_prompt")
                continue
            judged = [c for j in range(len(record.responses)) if (ri, j) in prompts for c in answers[prompts[ri, j]]]
            reason = failure(judged)
            if reason:  # not judged is not a score (a failed one: the pipeline redoes the shard next run)
                ctx.count(reason, sum(1 for c in judged if c.error))
                yield Drop(record, reason)
                continue
            responses = []
            for j, response in enumerate(record.responses):
                if (ri, j) in prompts:
                    response = response.model_copy(update={"score": self._judge(answers[prompts[ri, j]], ctx)})
                responses.append(response)
            yield record.model_copy(update={"responses": responses})

    @staticmethod
    def _judge(completions, ctx: Context) -> float | None:
        score, unparsable = mean_score([str(c) for c in completions])
        ctx.count("responses_judged")
        if unparsable:
            ctx.count("judgement_unparsable", unparsable)
        if score is None:
            ctx.count("score_unparsable")
        elif score >= ctx.config.score.min_score:
            ctx.count("score_kept")
        else:
            ctx.count("score_low")
        return score
