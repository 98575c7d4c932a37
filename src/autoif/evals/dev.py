"""The dev set (`autoif eval dev`): held-out library instances joined with held-out queries, scored by
the instances' own functions in the sandbox. Neither IFEval nor IFBench: it measures what autoif's
training data teaches (the library's constraints) on phrasings, parameters and queries that no
training prompt made from the built-in library and pool contains.

What is held out is decided by `autoif/devsplit.py` (a hash of each phrasing, parameter set and
query; no state): `build_library(..., split="dev")` gives the instances and the built-in query
pool's dev part gives the queries, which the queries stage never draws. So a run on the built-in
pool is disjoint from the dev set by construction; for a run on another pool, `autoif eval
contamination OUT` (which checks this benchmark too) reports any overlap.

The set: up to DEV_INSTANCES dev instances of every constraint (library seed DEV_SEED; distinct
held-out (parameters, phrasing) pairs, fewer where the constraint's dev side has fewer), and
PROMPTS_PER_CONSTRAINT prompts per constraint, each instance (in turn) joined with its own dev query
by a join template of the queries stage, drawn with a generator seeded per constraint. A prompt's
id is `<constraint>/<n>`. 315 prompts (45 constraints x 7), enough for an interval of about +-5
points on a pass rate; the results' `data` names the set's content hash, so `autoif eval compare`
warns when two results come from different sets.

Scoring: a prompt passes when its response is not blank and every function of its instance returns
True (an error, a timeout or a non-bool counts as a failure, as in verify). Metrics: `prompt_pass`,
the share of prompts that pass, and `mean_pass_rate`, the mean share of functions passed per
prompt; details per constraint and per namespace.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Any

from ..devsplit import is_dev, query_key
from ..errors import AutoifError
from ..seeding import seeded_rng
from .base import Benchmark, EvalContext, Item, PromptScores, Scores

DEV_SEED = 2025
DEV_INSTANCES = 7
PROMPTS_PER_CONSTRAINT = 7


def dev_queries() -> list[str]:
    """The built-in pool's dev part, as the queries stage loads the pool (default filters)."""
    from ..config import QueriesConfig
    from ..stages.querypool import load_queries

    return [q for q in load_queries(QueriesConfig(source="builtin")) if is_dev(query_key(q))]


def dev_records() -> list[dict]:
    """The dev set's records, in library order."""
    from ..stages.library import build_library
    from ..stages.queries import join, join_templates

    queries = dev_queries()
    templates = join_templates()
    by_constraint: dict[str, list] = {}
    for entry in build_library(DEV_SEED, DEV_INSTANCES, split="dev"):
        by_constraint.setdefault(entry.constraint, []).append(entry)
    records = []
    for constraint, entries in by_constraint.items():
        rng = seeded_rng(DEV_SEED, "dev", constraint)
        for n, query in enumerate(rng.sample(queries, PROMPTS_PER_CONSTRAINT)):
            entry = entries[n % len(entries)]
            records.append(
                {
                    "id": f"{constraint}/{n}",
                    "constraint": constraint,
                    "instance": entry.id,
                    "instruction": entry.instruction,
                    "query": query,
                    "prompt": join(entry.instruction, query, templates[rng.randrange(len(templates))]),
                    "functions": list(entry.functions),
                    "params": dict(entry.params),
                }
            )
    return records


class DevSet(Benchmark):
    name = "dev"
    title = "autoif dev"
    metric_labels = {
        "prompt_pass": "prompts passing every function",
        "mean_pass_rate": "mean share of functions passed",
    }
    paired_metrics = {"prompt_pass": (("passed", "prompt"),), "mean_pass_rate": (("pass_rate", "prompt"),)}
    prompt_level_metrics = frozenset({"prompt_pass"})
    outcome_modes = ("pass",)

    def builtin_records(self) -> tuple[list[dict], str]:
        records = dev_records()
        content = json.dumps([[r["prompt"], r["functions"]] for r in records], ensure_ascii=False)
        digest = hashlib.sha256(content.encode("utf-8")).hexdigest()[:12]
        return records, f"built-in dev set (seed {DEV_SEED}, {len(records)} prompts, sha256 {digest})"

    def offline_hint(self) -> str:
        return "the dev set is built in; --data FILE takes records in its format"

    def items(self, records: list[dict], source: str) -> list[Item]:
        items = []
        for n, r in enumerate(records, 1):
            functions = r.get("functions")
            if (
                not all(isinstance(r.get(k), str) for k in ("id", "prompt", "constraint"))
                or not isinstance(functions, list)
                or not functions
                or not all(isinstance(f, str) for f in functions)
            ):
                raise AutoifError(f"{source} record {n}: expected 'id', 'prompt', 'constraint' and 'functions'")
            items.append(Item(id=r["id"], prompt=r["prompt"], record=r))
        return items

    def prompt_scores(self, row: dict) -> PromptScores:
        passed = float(bool(row["passed"]))
        columns = {"prompt": 1.0, "passed": passed, "pass_rate": float(row["pass_rate"])}
        return PromptScores(
            task=str(row["constraint"]), columns=columns, outcomes=[(row["constraint"], {"pass": passed})]
        )

    def score(self, items: list[Item], responses: list[str], context: EvalContext) -> Scores:
        from ..sandbox import Sandbox

        with Sandbox.from_config(context.config.sandbox) as sandbox:
            grids = sandbox.check_many([(item.record["functions"], [text]) for item, text in zip(items, responses)])
        tiers: dict[str, dict[str, list[int]]] = {
            "constraint": defaultdict(lambda: [0, 0]),
            "namespace": defaultdict(lambda: [0, 0]),
        }
        per_item: list[dict[str, Any]] = []
        passed = errors = blank = 0
        rates = []
        for item, text, grid in zip(items, responses, grids):
            outcomes = [row[0] for row in grid]
            # A blank response follows nothing (IFEval's rule): "no commas" is not met by silence.
            followed = [bool(text.strip()) and o.value is True for o in outcomes]
            ok = all(followed)
            rate = sum(followed) / len(followed)
            passed += ok
            rates.append(rate)
            blank += not text.strip()
            constraint = item.record["constraint"]
            for tier, key in (("constraint", constraint), ("namespace", constraint.split(":")[0])):
                tiers[tier][key][0] += ok
                tiers[tier][key][1] += 1
            row: dict[str, Any] = {"constraint": constraint, "followed": followed, "pass_rate": rate, "passed": ok}
            failed = [o.error for o in outcomes if o.error]
            if failed:
                errors += len(failed)
                row["function_errors"] = failed
            per_item.append(row)
        n = len(items)
        return Scores(
            metrics={"prompt_pass": passed / n, "mean_pass_rate": sum(rates) / n},
            counts={
                "prompts": n,
                "functions": sum(len(item.record["functions"]) for item in items),
                "function_errors": errors,
                "blank_responses": blank,
            },
            details={
                tier: {k: {"prompt_pass": ok / total, "n": total} for k, (ok, total) in sorted(table.items())}
                for tier, table in tiers.items()
            },
            per_item=per_item,
        )


BENCHMARK = DevSet()
