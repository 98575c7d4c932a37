"""Records declare every field: a misspelt name is an error (set, read or loaded), optional fields
are left out of the file when absent, and a real run's files load and write back byte for byte."""

import pytest
from pydantic import ValidationError

from autoif.errors import AutoifError
from autoif.jsonl import dumps_records, read_jsonl
from autoif.records import BackTranslation, CrossvalRecord, Instruction, VerifiedResponse, VerifierSamples
from autoif.stages import STAGES, load_stage
from small_run import OUTPUTS


def test_assigning_a_misspelt_field_raises():
    response = VerifiedResponse(text="Hi.", pass_rate=1.0, outcomes=[True], passed=True)
    with pytest.raises(ValidationError, match="scroe"):
        response.scroe = 7.0
    response.score = 7.0  # the declared field
    assert response.score == 7.0


def test_reading_an_undeclared_field_raises():
    with pytest.raises(AttributeError, match="seedid"):
        _ = Instruction(id="a", text="Answer in French.", source="augmented", seed_id="s").seedid


def test_assignment_is_validated():
    bt = BackTranslation(function_index=0, text="Answer in French.")
    with pytest.raises(ValidationError, match="label"):
        bt.label = "agreement"
    with pytest.raises(ValidationError, match="error"):
        bt.error = "timeout"


def test_unknown_key_in_a_file_is_one_line_naming_file_line_and_key(tmp_path):
    path = tmp_path / "verifiers.jsonl"
    path.write_text(
        '{"instruction_id": "a", "instruction": "Answer in French.", "raw": []}\n'
        '{"instruction_id": "b", "instruction": "Use no commas.", "raw": [], "sorce": "seed"}\n'
    )
    with pytest.raises(AutoifError) as err:
        read_jsonl(path, VerifierSamples)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and "line 2" in message and "sorce" in message


def test_optional_fields_are_written_only_when_present():
    plain = CrossvalRecord(instruction_id="a", instruction="Answer in French.", functions=[], cases=[])
    assert plain.source is None and plain.back_translations is None
    assert plain.model_dump() == {
        "instruction_id": "a",
        "instruction": "Answer in French.",
        "functions": [],
        "cases": [],
    }
    missing = BackTranslation(function_index=1, text="", error="llm_error", detail="timed out")
    carried = plain.model_copy(update={"source": "builtin", "back_translations": [missing]})
    assert carried.model_dump(mode="json")["back_translations"] == [
        # `label` is part of the contract (null when unjudged); `error` and `detail` only when there is one.
        {"function_index": 1, "text": "", "label": None, "error": "llm_error", "detail": "timed out"}
    ]
    assert carried.model_dump()["source"] == "builtin"


def test_round_trip_keeps_what_a_file_holds(tmp_path):
    lines = (
        '{"id": "lib-x", "text": "Use no commas.", "source": "builtin", "constraint": "punctuation:no_comma", '
        '"functions": ["def evaluate(response):\\n    return \\",\\" not in response"], '
        '"cases": [{"input": "a, b", "output": false}]}\n'
        '{"id": "aug-1", "text": "Answer in French.", "source": "augmented", "seed_id": "seed-000"}\n'
        '{"id": "seed-000", "text": "Answer in English.", "source": "seed"}\n'
    )
    path = tmp_path / "instructions.jsonl"
    path.write_text(lines)
    records = read_jsonl(path, Instruction)
    assert records[0].functions and records[1].seed_id == "seed-000" and records[2].constraint is None
    assert dumps_records(records) == lines


def test_every_file_of_a_real_run_loads_and_writes_back_unchanged(small_run):
    """The models declare everything the stages write: each file of the small real run validates
    (an unknown key would fail) and dumps back to the very same bytes."""
    _, out = small_run
    checked = []
    for name in STAGES:
        for model, file_name in load_stage(name).files().items():
            path = out / file_name
            assert dumps_records(read_jsonl(path, model)) == path.read_text(encoding="utf-8"), file_name
            checked.append(file_name)
    assert sorted(checked) == sorted(OUTPUTS)
