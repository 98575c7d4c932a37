"""What the report shows, read from a run's output directory: one streaming pass over each file.

Every file is optional (a run may stop at any stage, or still be running) and is read with the
record model its stage writes (`Stage.files()`), so the report follows the stage registry. A line
that is not a valid record is counted and skipped, never fatal: a report is most needed when a run
went wrong. Samples for display are drawn by reservoir sampling with a fixed seed, so any file size
is read in constant memory beyond the numbers plotted, and the same run gives the same sample.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from ..config import Config, load_config
from ..errors import AutoifError
from ..records import (
    CrossvalRecord,
    DPORecord,
    Instruction,
    QueryRecord,
    ResponsesRecord,
    SFTRecord,
    VerifiedRecord,
    VerifiedResponse,
)
from ..rundir import (
    BACKTRANSLATE,
    COMPOSE,
    CONFIG,
    CONTAMINATION,
    CROSSVAL,
    DPO,
    FUNNEL,
    INSTRUCTIONS,
    QUERIES,
    RECORD_FILES,
    RESPONSES,
    RESULTS_SUFFIX,
    SCORED,
    SFT,
    VERIFIED,
)
from ..seeding import seeded_rng

T = TypeVar("T")

SAMPLE_INSTRUCTIONS = 24
SAMPLE_SFT = 10
SAMPLE_DPO_PER_LEVEL = 6
SAMPLE_DROPS_PER_REASON = 3


class Reservoir(Generic[T]):
    """A uniform random sample of at most `size` items from a stream, kept in stream order."""

    def __init__(self, size: int, seed: str) -> None:
        self.size = size
        self.seen = 0
        self._rng = seeded_rng(seed)
        self._items: list[tuple[int, T]] = []

    def offer(self, item: T) -> None:
        if len(self._items) < self.size:
            self._items.append((self.seen, item))
        else:
            j = self._rng.randrange(self.seen + 1)
            if j < self.size:
                self._items[j] = (self.seen, item)
        self.seen += 1

    def items(self) -> list[T]:
        return [item for _, item in sorted(self._items, key=lambda pair: pair[0])]


@dataclass
class FileScan:
    """One jsonl file of the run: whether it exists, its valid records, its unreadable lines."""

    name: str
    present: bool = False
    records: int = 0
    invalid: int = 0
    first_error: str | None = None


class Files(dict):
    """File name -> FileScan; a file no registered stage writes reads as absent, not as an error."""

    def __missing__(self, name: str) -> FileScan:
        return FileScan(name)


def scan(path: Path, model: type[BaseModel], visit: Callable[[Any], None] | None) -> FileScan:
    result = FileScan(path.name)
    if not path.is_file():
        return result
    result.present = True
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = model.model_validate_json(line)
            except ValidationError as err:
                result.invalid += 1
                if result.first_error is None:
                    first = err.errors()[0]
                    where = ".".join(str(p) for p in first["loc"]) or "record"
                    result.first_error = f"line {lineno}: {where}: {first['msg']}"
                continue
            result.records += 1
            if visit is not None:
                visit(record)
    return result


@dataclass
class JsonFile:
    """A JSON document of the run (funnel, eval results, contamination check)."""

    name: str
    data: Any = None
    error: str | None = None  # set when the file exists but is not JSON

    @property
    def present(self) -> bool:
        return self.data is not None or self.error is not None


def read_json(path: Path) -> JsonFile:
    doc = JsonFile(path.name)
    if path.is_file():
        try:
            doc.data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except json.JSONDecodeError as exc:
            doc.error = f"not JSON: {exc.msg} at line {exc.lineno}"
    return doc


@dataclass
class Combinations:
    """The combinations of a run (stage compose) and how their prompts fared: the report's
    `combinations` section. Per combination only its size and outcome are kept, per prompt its
    combination: small beside the records."""

    size: dict[str, int] = field(default_factory=dict)  # combination id -> constituents
    evidence: dict[str, str] = field(default_factory=dict)  # combination id -> compose's evidence
    llm_check: dict[str, str] = field(default_factory=dict)  # combination id -> verdict or error, when asked
    rewrites: Counter = field(default_factory=Counter)  # "kept" or the rejection reason -> combinations
    prompt_of: dict[str, str] = field(default_factory=dict)  # prompt id -> its combination
    responses: Counter = field(default_factory=Counter)  # size -> verified responses
    all_hold: Counter = field(default_factory=Counter)  # size -> responses that hold every constraint
    verified: set[str] = field(default_factory=set)  # combinations with a verified response
    satisfied: set[str] = field(default_factory=set)  # combinations a response of which holds every constraint
    sft: int = 0  # exported records of combinations
    dpo: int = 0


@dataclass
class RunData:
    stage_files: dict[str, list[str]]  # stage -> the files it writes, in registry order
    files: dict[str, FileScan]
    funnel: JsonFile
    config_text: str | None
    config: Config | None
    config_error: str | None
    instruction_sources: Counter = field(default_factory=Counter)
    function_accuracy: list[float] = field(default_factory=list)
    case_accuracy: list[float] = field(default_factory=list)
    nli_labels: Counter = field(default_factory=Counter)
    responses: int = 0
    pass_rates: list[float] = field(default_factory=list)
    responses_passed: int = 0
    response_drops: Counter = field(default_factory=Counter)  # verified.jsonl's drop reasons (e.g. truncated)
    # per drop reason, a seeded sample of (prompt id, response) as the report shows them
    drop_examples: dict[str, list[tuple[str, VerifiedResponse]]] = field(default_factory=dict)
    prompt_pass_rates: list[float] = field(default_factory=list)  # per prompt: share of its responses passing
    prompt_outcomes: Counter = field(default_factory=Counter)  # all_pass / all_fail / mixed -> prompts
    most_responses: int = 0  # the largest K of a prompt: its pass rates are multiples of 1/K
    scores: list[float] = field(default_factory=list)
    unscored: int = 0
    instructions_file: str = CROSSVAL.name  # where the browsable sample comes from
    instructions: list[CrossvalRecord] = field(default_factory=list)
    sft: list[SFTRecord] = field(default_factory=list)
    dpo: dict[str, list[DPORecord]] = field(default_factory=dict)
    dpo_levels: Counter = field(default_factory=Counter)
    combinations: Combinations = field(default_factory=Combinations)
    evals: list[JsonFile] = field(default_factory=list)
    contamination: JsonFile = field(default_factory=lambda: JsonFile(CONTAMINATION))

    def count(self, name: str) -> int | None:
        """Records in a file, None when the run did not write it."""
        scan_ = self.files.get(name)
        return scan_.records if scan_ is not None and scan_.present else None

    @property
    def training_records(self) -> int:
        return (self.count(SFT.name) or 0) + (self.count(DPO.name) or 0)


def read_run(out: Path, config: Config | None = None) -> RunData:
    if not out.is_dir():
        raise AutoifError(f"no run directory at {out} (run `autoif run -o {out}` first)")
    config_path = out / CONFIG
    config_text = config_path.read_text(encoding="utf-8", errors="replace") if config_path.is_file() else None
    config_error = None
    if config is None and config_text is not None:
        try:
            config = load_config(config_path)
        except AutoifError as exc:  # an older or hand-edited config: shown as text, thresholds not drawn
            config_error = str(exc)
    run = RunData(
        stage_files={},
        files=Files(),
        funnel=read_json(out / FUNNEL),
        config_text=config_text,
        config=config,
        config_error=config_error,
    )

    instructions = Reservoir[CrossvalRecord](SAMPLE_INSTRUCTIONS, "report:instructions")
    sft = Reservoir[SFTRecord](SAMPLE_SFT, "report:sft")
    dpo = {
        level: Reservoir[DPORecord](SAMPLE_DPO_PER_LEVEL, f"report:dpo:{level}") for level in ("query", "instruction")
    }
    drops: dict[str, Reservoir[tuple[str, VerifiedResponse]]] = {}
    use_backtranslate = (out / BACKTRANSLATE.name).is_file()
    run.instructions_file = BACKTRANSLATE.name if use_backtranslate else CROSSVAL.name

    def on_instruction(r: Instruction) -> None:
        run.instruction_sources[r.source] += 1

    def on_crossval(r: CrossvalRecord) -> None:
        run.function_accuracy.extend(f.accuracy for f in r.functions)
        run.case_accuracy.extend(c.accuracy for c in r.cases)
        if not use_backtranslate:
            instructions.offer(r)

    def on_backtranslate(r: CrossvalRecord) -> None:
        for bt in r.back_translations or []:
            run.nli_labels[bt.label or "unlabelled"] += 1
        instructions.offer(r)

    combos = run.combinations

    def on_compose(r: CrossvalRecord) -> None:
        if not r.constituents:
            return
        combos.size[r.instruction_id] = len(r.constituents)
        combos.evidence[r.instruction_id] = r.evidence or "unproven"
        if r.llm_check is not None:
            combos.llm_check[r.instruction_id] = r.llm_check.verdict or r.llm_check.error or "none"
        if r.rewrite is not None:
            combos.rewrites[r.rewrite.rejected or "kept"] += 1

    def on_queries(r: QueryRecord) -> None:
        if r.instruction_id in combos.size:
            combos.prompt_of[r.id] = r.instruction_id

    def on_responses(r: ResponsesRecord) -> None:
        run.responses += len(r.responses)

    def on_verified(r: VerifiedRecord) -> None:
        run.pass_rates.extend(x.pass_rate for x in r.responses)
        run.responses_passed += sum(x.passed for x in r.responses)
        for x in r.responses:
            if x.drop is not None:
                run.response_drops[x.drop] += 1
                if x.drop not in drops:
                    drops[x.drop] = Reservoir(SAMPLE_DROPS_PER_REASON, f"report:drop:{x.drop}")
                drops[x.drop].offer((r.prompt_id, x))
        combination = combos.prompt_of.get(r.prompt_id)
        if combination is not None and r.responses:
            size = combos.size[combination]
            combos.verified.add(combination)
            combos.responses[size] += len(r.responses)
            combos.all_hold[size] += sum(x.passed for x in r.responses)  # a combination passes when all hold
            if any(x.passed for x in r.responses):
                combos.satisfied.add(combination)
        if r.responses:
            run.prompt_pass_rates.append(r.prompt_pass_rate)
            run.prompt_outcomes[r.prompt_outcome] += 1
            run.most_responses = max(run.most_responses, len(r.responses))

    def on_scored(r: VerifiedRecord) -> None:
        for x in r.responses:
            if x.score is None:
                run.unscored += 1
            else:
                run.scores.append(x.score)

    def on_sft(r: SFTRecord) -> None:
        combos.sft += r.instruction_ids is not None
        sft.offer(r)

    def on_dpo(r: DPORecord) -> None:
        run.dpo_levels[r.level] += 1
        combos.dpo += r.instruction_ids is not None
        dpo[r.level].offer(r)

    visitors: dict[str, Callable[[Any], None]] = {
        INSTRUCTIONS.name: on_instruction,
        CROSSVAL.name: on_crossval,
        BACKTRANSLATE.name: on_backtranslate,
        COMPOSE.name: on_compose,
        QUERIES.name: on_queries,
        RESPONSES.name: on_responses,
        VERIFIED.name: on_verified,
        SCORED.name: on_scored,
        SFT.name: on_sft,
        DPO.name: on_dpo,
    }
    for file in RECORD_FILES:
        run.stage_files.setdefault(file.stage, []).append(file.name)
        run.files[file.name] = scan(file.path(out), file.record, visitors.get(file.name))
    run.instructions = instructions.items()
    run.drop_examples = {reason: drops[reason].items() for reason, _ in run.response_drops.most_common()}
    run.sft = sft.items()
    run.dpo = {level: reservoir.items() for level, reservoir in dpo.items()}
    run.evals = [read_json(p) for p in sorted(out.glob(f"*{RESULTS_SUFFIX}"))]
    run.contamination = read_json(out / CONTAMINATION)
    return run
