"""FollowBench (Jiang et al. 2024): instructions that gain one constraint per level (1-5), judged by an
LLM that sees the whole constraint-evolution path.

Data: the release's JSON files (a list of {"example_id", "category", "source", "level", "instruction",
"target"}; level 0 is the bare instruction), one file or a directory of them, or the hub copy. The
model answers every level >= 1 instruction. The judge gets the instruction at levels 0..L and the
answer, says for each of the L added constraints whether the answer satisfies it, and ends with a
Python list of L 'YES'/'NO' (FollowBench's protocol). Per answer: hard = all L satisfied, soft = the
share satisfied. HSR and SSR per level are their means; the averages are over levels 1-5.

The judge is named (`EvalConfig.judge`, `--judge-set backend=... --judge-set model=...`; the release
uses GPT-4): a model that judges its own answers tends to favour them, so the evaluated model
judges only when asked for (`judge="self"`, `--judge self`). The results file names the judge.

Differences from the release's scripts, on purpose:
- Instructions from the sources the release scores with rules against a target answer (and the
  'example' category) are not judged: they are counted as `rule_based` and left out.
- A judgement that cannot be parsed is counted as `unparsed` and left out of its level (the
  release asks for it to be fixed by hand).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict

from ..config import LLMConfig
from ..errors import AutoifError
from .base import Benchmark, EvalConfig, EvalContext, Item, PromptScores, Scores

LEVELS = (1, 2, 3, 4, 5)

# The release scores these sources with rules against reference answers, not with the judge.
RULE_BASED_SOURCES = frozenset(
    {
        "E2E",
        "WIKIEVENTS",
        "CONLL2003",
        "text_editing",
        "cnn_dailymail",
        "xsum",
        "samsum",
        "gigaword",
        "arxiv",
        "BBH_logical",
        "BBH_time",
        "self_made_space",
        "gsm_8k",
    }
)
RULE_BASED_FORMAT_EXAMPLES = frozenset({22, 30})

# How the judge prompt names the constraints of each category.
CONSTRAINT_KIND = {
    "content": "content constraint",
    "situation": "situation constraint (information that describes a specific situation or background)",
    "scenario": "situation constraint (information that describes a specific situation or background)",
    "style": "style constraint",
    "format": "format constraint",
    "mixed": "constraint",
}


def judge_prompt(path: list[str], answer: str, category: str) -> str:
    """The judge's prompt for the answer to path[-1], path[0] being the level-0 instruction."""
    level = len(path) - 1
    kind = CONSTRAINT_KIND.get(category, "constraint")
    plural = "constraint" if level == 1 else "constraints"
    parts = [
        f"We start from an initial instruction and add one {kind} at a time, which gives a final "
        f"instruction with {level} added {plural}.",
        "",
        "#Initial Instruction#",
        path[0],
        "",
    ]
    for i in range(1, level + 1):
        parts += [f"#Initial Instruction + {i} {'constraint' if i == 1 else 'constraints'}#", path[i], ""]
    parts += [f"#Answer of Initial Instruction + {level} {plural}#", answer, "", "#System#"]
    if level == 1:
        parts += [
            "1) Identify the 1 added constraint.",
            "2) Decide whether the answer satisfies the added constraint.",
            "3) In the final line, output only a Python list with 1 element ('YES' or 'NO') saying "
            "whether the answer satisfies the added constraint.",
        ]
    else:
        parts += [
            f"1) Identify all {level} added constraints.",
            f"2) For each of the {level} added constraints, decide whether the answer satisfies it.",
            f"3) In the final line, output only a Python list with {level} elements ('YES' or 'NO') "
            "saying whether the answer satisfies each constraint.",
        ]
    return "\n".join(parts)


def parse_judgement(text: str, level: int) -> tuple[int, float] | None:
    """(hard, soft) from the judge's final line, or None when it does not follow the protocol.

    Level 1: 'YES' or 'NO' anywhere in the final line (YES first, as the release reads it). Higher
    levels: a Python list of exactly `level` 'YES'/'NO' strings in the final line.
    """
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    if level == 1:
        if "YES" in last:
            return 1, 1.0
        if "NO" in last:
            return 0, 0.0
        return None
    found = re.search(r"\[.*\]", last)
    if not found:
        return None
    try:
        verdicts = ast.literal_eval(found.group())
    except (ValueError, SyntaxError):
        return None
    if (
        not isinstance(verdicts, (list, tuple))
        or len(verdicts) != level
        or any(v not in ("YES", "NO") for v in verdicts)
    ):
        return None
    satisfied = sum(v == "YES" for v in verdicts)
    return int(satisfied == level), satisfied / level


class FollowBench(Benchmark):
    name = "followbench"
    title = "FollowBench"
    hub_id = "YuxinJiang/FollowBench"
    metric_labels = {
        **{f"hsr_level{lv}": f"HSR level {lv}" for lv in LEVELS},
        "hsr_avg": "HSR average",
        **{f"ssr_level{lv}": f"SSR level {lv}" for lv in LEVELS},
        "ssr_avg": "SSR average",
    }
    # A level's rate is over the judged answers at that level; the averages are over the levels.
    paired_metrics = {
        **{f"hsr_level{lv}": ((f"hard{lv}", f"at{lv}"),) for lv in LEVELS},
        "hsr_avg": tuple((f"hard{lv}", f"at{lv}") for lv in LEVELS),
        **{f"ssr_level{lv}": ((f"soft{lv}", f"at{lv}"),) for lv in LEVELS},
        "ssr_avg": tuple((f"soft{lv}", f"at{lv}") for lv in LEVELS),
    }
    prompt_level_metrics = frozenset(f"hsr_level{lv}" for lv in LEVELS)
    outcome_modes = ("hard", "soft")

    def offline_hint(self) -> str:
        return "pass --data with the release's data/ directory or one of its *_constraints.json files"

    def check_settings(self, settings: EvalConfig) -> None:
        self.judge(settings)

    @staticmethod
    def judge(settings: EvalConfig) -> LLMConfig | None:
        """The judge's LLM settings (None: the evaluated model, asked for with 'self')."""
        if settings.judge is None:
            raise AutoifError(
                "followbench needs a judge: name one with --judge-set backend=... --judge-set model=... "
                "(EvalConfig.judge), or pass --judge self to let the evaluated model judge its own answers"
            )
        return None if settings.judge == "self" else settings.judge

    def _paths(self, records: list[dict], source: str) -> dict[tuple[str, str], dict[int, dict]]:
        """Records grouped by (category, example_id), keyed by level."""
        groups: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
        for n, r in enumerate(records, 1):
            try:
                level = int(r["level"])
                key = (str(r["category"]), str(r["example_id"]))
                instruction = r["instruction"]
            except (KeyError, TypeError, ValueError):
                raise AutoifError(
                    f"{source} record {n}: expected 'example_id', 'category', 'level' and "
                    "'instruction' (FollowBench's format)"
                ) from None
            if not isinstance(instruction, str) or not 0 <= level <= 5:
                raise AutoifError(f"{source} record {n}: level must be 0-5 and instruction a text")
            groups[key][level] = r
        return groups

    def items(self, records: list[dict], source: str) -> list[Item]:
        items = []
        for (category, example_id), levels in self._paths(records, source).items():
            for level in sorted(lv for lv in levels if lv >= 1):
                if any(lv not in levels for lv in range(level)):
                    raise AutoifError(
                        f"{source}: {category} example {example_id} has level {level} but not "
                        f"every level below it (the judge needs the whole path)"
                    )
                path = [levels[lv]["instruction"] for lv in range(level + 1)]
                record = {**levels[level], "path": path}
                items.append(Item(id=f"{category}:{example_id}:{level}", prompt=path[-1], record=record))
        return items

    def all_items(self, records: list[dict], source: str) -> list[Item]:
        return [
            Item(id=f"{r['category']}:{r['example_id']}:{r['level']}", prompt=r["instruction"], record=r)
            for levels in self._paths(records, source).values()
            for r in levels.values()
        ]

    @staticmethod
    def rule_based(record: dict) -> bool:
        category = str(record.get("category"))
        return (
            record.get("source") in RULE_BASED_SOURCES
            or category == "example"
            or (category == "format" and str(record.get("example_id")) in {str(i) for i in RULE_BASED_FORMAT_EXAMPLES})
        )

    def prompt_scores(self, row: dict) -> PromptScores | str:
        if row.get("rule_based"):
            return "rule_based"
        if row.get("unparsed"):
            return "unparsed"
        level, category = int(row["level"]), str(row["category"])
        hard, soft = float(row["hard"]), float(row["soft"])
        columns: dict[str, float] = {}
        for lv in LEVELS:
            at = float(lv == level)
            columns.update({f"at{lv}": at, f"hard{lv}": at * hard, f"soft{lv}": at * soft})
        # The "instruction" of an answer is its category at its level; its family, the category.
        return PromptScores(
            task=(category, level),
            columns=columns,
            outcomes=[(f"{category}:level{level}", {"hard": hard, "soft": soft})],
        )

    def score(self, items: list[Item], responses: list[str], context: EvalContext) -> Scores:
        judged = [(i, item) for i, item in enumerate(items) if not self.rule_based(item.record)]
        prompts = [judge_prompt(item.record["path"], responses[i], str(item.record["category"])) for i, item in judged]
        judge = self.judge(context.settings)
        verdicts = (
            context.generate(prompts, max_tokens=context.settings.judge_max_tokens, desc="followbench judge", llm=judge)
            if prompts
            else []
        )
        per_item: list[dict] = [{"level": item.record["level"], "category": item.record["category"]} for item in items]
        sums = {lv: [0, 0.0, 0] for lv in LEVELS}  # hard, soft, n
        counts = {"prompts": len(items), "judged": 0, "unparsed": 0, "rule_based": len(items) - len(judged)}
        for (i, item), verdict in zip(judged, verdicts):
            level = int(item.record["level"])
            row = per_item[i]
            row["judgement"] = str(verdict)
            parsed = parse_judgement(str(verdict), level)
            if parsed is None:
                row["unparsed"] = True
                counts["unparsed"] += 1
                continue
            hard, soft = parsed
            row["hard"], row["soft"] = hard, soft
            sums[level][0] += hard
            sums[level][1] += soft
            sums[level][2] += 1
            counts["judged"] += 1
        for i, item in enumerate(items):
            if self.rule_based(item.record):
                per_item[i]["rule_based"] = True
        hsr = {lv: sums[lv][0] / sums[lv][2] for lv in LEVELS if sums[lv][2]}
        ssr = {lv: sums[lv][1] / sums[lv][2] for lv in LEVELS if sums[lv][2]}
        metrics: dict[str, float] = {}
        for name, rates in (("hsr", hsr), ("ssr", ssr)):
            metrics.update({f"{name}_level{lv}": rates[lv] for lv in LEVELS if lv in rates})
            if rates:
                metrics[f"{name}_avg"] = sum(rates.values()) / len(rates)
        details = {
            "judge": "self" if judge is None else context.model_info(judge),
            "per_level_n": {lv: sums[lv][2] for lv in LEVELS},
            "levels_averaged": sorted(hsr),
        }
        return Scores(metrics=metrics, counts=counts, details=details, per_item=per_item)


BENCHMARK = FollowBench()
