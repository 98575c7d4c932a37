"""The records that flow between stages, one model per jsonl file (formats in DESIGN.md).

Pydantic, because records enter from files that users and other tools write (`--only crossval` on
verifiers.jsonl made elsewhere). Extra fields are kept, so a stage may carry more than the
contract's minimum and a round trip loses nothing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class Instruction(Record):
    """instructions.jsonl (and seeds.jsonl): one atomic, code-checkable instruction."""

    id: str
    text: str
    source: Literal["seed", "augmented", "builtin"]


class VerifierSamples(Record):
    """verifiers.jsonl: the raw LLM generations of {func, cases} for one instruction."""

    instruction_id: str
    instruction: str
    raw: list[str]


class FunctionResult(Record):
    source: str
    accuracy: float


class CaseResult(Record):
    input: str
    output: bool
    accuracy: float


class CrossvalRecord(Record):
    """crossval.jsonl (and backtranslate.jsonl): an instruction with the functions and cases kept."""

    instruction_id: str
    instruction: str
    functions: list[FunctionResult]
    cases: list[CaseResult]


class BackTranslation(Record):
    function_index: int
    text: str
    label: Literal["entailment", "neutral", "contradiction"] | None = None


class QueryRecord(Record):
    """queries.jsonl: an instruction joined with one real user query."""

    id: str
    instruction_id: str
    instruction: str
    query: str
    prompt: str


class ResponsesRecord(Record):
    """responses.jsonl: raw sampled responses to one prompt."""

    prompt_id: str
    responses: list[str]


class VerifiedResponse(Record):
    text: str
    pass_rate: float  # share of the functions that returned True
    outcomes: list[bool | None]  # per function: its bool, or None when it failed to run
    passed: bool  # meets the verify keep rule (pass_rate above verify.threshold()): SFT-eligible
    score: float | None = None  # relevance, set by the score stage (None: not judged or unparsable)


class VerifiedRecord(Record):
    """verified.jsonl (and scored.jsonl): each response with its pass rate over the functions."""

    prompt_id: str
    responses: list[VerifiedResponse]


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class SFTRecord(Record):
    """sft.jsonl: TRL conversational format, with the functions that verified the answer."""

    messages: list[Message]
    instruction_id: str
    functions: list[str]
    pass_rate: float


class DPORecord(Record):
    """dpo.jsonl: TRL conversational preference format, with the functions that judged the pair."""

    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    level: Literal["query", "instruction"]
    functions: list[str]
