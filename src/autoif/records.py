"""The records that flow between stages, one model per jsonl file (formats in docs/architecture.md).

Pydantic, because records enter from files that users and other tools write (`--only crossval` on
verifiers.jsonl made elsewhere). Every field any module reads or a stage sets is declared here, and
nothing else is accepted: a misspelt name is an error, not a new field. Assigning `record.scroe = 1`
raises, reading `record.scroe` raises, and a file with an unknown key fails to load with one line
naming the file, the line and the key (`jsonl.read_jsonl`).

Fields that only some records carry (set by one stage for later ones: the library's functions, the
back-translations) are optional, `None` when absent, and left out of the file when absent, so a
record is written back exactly as it was read: `optional(...)` below.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

InstructionSource = Literal["seed", "augmented", "builtin"]
NLILabel = Literal["entailment", "neutral", "contradiction"]


def _absent(value: Any) -> bool:
    return value is None


def optional(description: str) -> Any:
    """An optional field: None when the record does not carry it, and then not written at all
    (so files made before the field existed, or by other tools, round-trip byte for byte)."""
    return Field(None, description=description, exclude_if=_absent)


class Record(BaseModel):
    # validate_assignment: a stage that sets a field later (`bt.label = ...`) is checked like a load.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Instruction(Record):
    """instructions.jsonl (and seeds.jsonl): one atomic, code-checkable instruction."""

    id: str
    text: str
    source: InstructionSource
    # The built-in library's instructions come with their checks (stage seeds; verifiers reads them).
    constraint: str | None = optional("library: the constraint's registry id, e.g. 'length:max_words'")
    functions: list[str] | None = optional("library: the verification functions' sources")
    cases: list[dict[str, Any]] | None = optional('library: test cases, {"input": text, "output": bool}')
    seed_id: str | None = optional("augmented: the id of the instruction it rewrites")


class VerifierSamples(Record):
    """verifiers.jsonl: the raw LLM generations of {func, cases} for one instruction."""

    instruction_id: str
    instruction: str
    raw: list[str]
    source: InstructionSource | None = optional("where the instruction came from (carried on to crossval)")


class FunctionResult(Record):
    source: str
    accuracy: float


class CaseResult(Record):
    input: str
    output: bool
    accuracy: float


class BackTranslation(Record):
    function_index: int
    text: str
    label: NLILabel | None = None
    error: Literal["llm_error", "unparsable", "nli_unlabelled"] | None = optional("why there is no label")
    detail: str | None = optional("the LLM's error, or the start of its unusable answer")


class Constituent(Record):
    """One instruction of a combination: its id and where its functions lie in the combination's."""

    instruction_id: str
    start: int = Field(ge=0)  # its functions are the combination's functions[start:stop]
    stop: int = Field(gt=0)
    constraint: str | None = optional("library: the constraint's registry id")


# How a combination is known to be satisfiable: a constituent's own test case, or cases of its
# constituents joined, pass every function of every constituent; `unproven`: no such text found yet.
Evidence = Literal["case", "joined_cases", "unproven"]


class ConflictCheck(Record):
    """The supervision LLM's verdict on whether a combination's constraints can hold together (stage
    compose asks it for combinations with an LLM-written instruction). Recorded, never decisive on
    its own: execution (`evidence`, or a response that holds every constraint) overrides it."""

    verdict: Literal["compatible", "conflict"] | None = None
    error: Literal["llm_error", "unparsable"] | None = optional("why there is no verdict")
    detail: str | None = optional("the LLM's error, or the start of its unusable answer")


# Why an LLM rewrite of a combination's text was not used (the template join was): the LLM failed,
# its answer held no instruction, or back-translation with NLI found a constraint contradicted, one
# no longer stated (no back-translation of it entailed by the rewrite), or nothing labelled.
RewriteRejection = Literal["llm_error", "unparsable", "contradiction", "constraint_lost", "unchecked"]


class Rewrite(Record):
    """An LLM rewrite of a combination's text (`compose.rewrite: llm`), kept or rejected."""

    text: str  # the rewrite the LLM wrote ("" when there was none)
    rejected: RewriteRejection | None = optional("why the template join was used instead (None: the rewrite was)")
    detail: str | None = optional("the LLM's error, or the start of its unusable answer")


class CrossvalRecord(Record):
    """crossval.jsonl (and backtranslate.jsonl, compose.jsonl): an instruction with the functions and
    cases kept; a combination of instructions (stage compose) names its constituents."""

    instruction_id: str
    instruction: str
    functions: list[FunctionResult]
    cases: list[CaseResult]
    source: InstructionSource | None = optional("where the instruction came from")
    back_translations: list[BackTranslation] | None = optional("backtranslate.jsonl: each chosen function's")
    constituents: list[Constituent] | None = optional("compose.jsonl: the instructions combined, in order")
    evidence: Evidence | None = optional("compose.jsonl: how the combination is known to be satisfiable")
    llm_check: ConflictCheck | None = optional("compose.jsonl: the LLM's conflict verdict (LLM-written constituents)")
    rewrite: Rewrite | None = optional("compose.jsonl: the LLM rewrite of the combination's text, when asked for")


class QueryRecord(Record):
    """queries.jsonl: an instruction joined with one real user query."""

    id: str
    instruction_id: str
    instruction: str
    query: str
    prompt: str


class Response(Record):
    """One sampled response and why its generation stopped."""

    text: str
    finish_reason: str | None = optional(
        "as the backend reports it: 'stop' (ended by itself) or 'length' (cut off at max_tokens)"
    )
    tokens: int | None = optional("tokens generated, as the backend counts them")


class ResponsesRecord(Record):
    """responses.jsonl: raw sampled responses to one prompt."""

    prompt_id: str
    responses: list[Response]

    @field_validator("responses", mode="before")
    @classmethod
    def _plain_strings(cls, value: Any) -> Any:
        # Responses made elsewhere may be plain strings: a text whose finish reason nobody knows.
        if isinstance(value, list):
            return [{"text": v} if isinstance(v, str) else v for v in value]
        return value


class VerifiedResponse(Record):
    text: str
    pass_rate: float  # share of the functions that returned True (a combination: of its constituents that hold)
    outcomes: list[bool | None]  # per function: its bool, or None when it failed to run
    passed: bool  # meets the verify keep rule (pass_rate above verify.threshold(); a combination: all hold)
    score: float | None = None  # relevance, set by the score stage (None: not judged or unparsable)
    finish_reason: str | None = optional("carried from responses.jsonl ('length': cut off at max_tokens)")
    # A response with a drop reason stays in the file (the funnel and report count it) but is never
    # trained towards: no SFT record, no DPO chosen (pairs.py states the rule).
    drop: str | None = optional("why the response may not be trained on, e.g. 'truncated' (None: it may)")
    holds: list[bool] | None = optional(
        "combination: per constituent, whether it holds (its functions' pass rate above the threshold)"
    )


class VerifiedRecord(Record):
    """verified.jsonl (and scored.jsonl): each response with its pass rate over the functions."""

    prompt_id: str
    responses: list[VerifiedResponse]

    @property
    def prompt_pass_rate(self) -> float:
        """The prompt's difficulty for the model: the share of its responses that passed verification
        and may be trained on (no drop reason). 1.0: every response passes (the prompt teaches little);
        0.0: none does (no SFT record). Derived, never written to the file."""
        usable = sum(r.passed and r.drop is None for r in self.responses)
        return usable / len(self.responses) if self.responses else 0.0

    @property
    def prompt_outcome(self) -> Literal["all_pass", "all_fail", "mixed"]:
        """Whether every response passes (`prompt_pass_rate` 1), none does (0), or some do."""
        rate = self.prompt_pass_rate
        return "all_pass" if rate == 1 else "all_fail" if rate == 0 else "mixed"


class Message(Record):
    role: Literal["system", "user", "assistant"]
    content: str


class SFTRecord(Record):
    """sft.jsonl: TRL conversational format, with the functions that verified the answer."""

    messages: list[Message]
    instruction_id: str
    functions: list[str]
    pass_rate: float
    instruction_ids: list[str] | None = optional("combination: its constituents' instruction ids")


class DPORecord(Record):
    """dpo.jsonl: TRL conversational preference format, with the functions that judged the pair."""

    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    level: Literal["query", "instruction"]
    functions: list[str]
    instruction_ids: list[str] | None = optional("combination: its constituents' instruction ids")
