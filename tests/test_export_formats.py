"""The export copies of a run's training data: LLaMA-Factory files and a Hugging Face datasets copy."""

import json

import pytest

from autoif.errors import AutoifError
from autoif.records import DPORecord, SFTRecord


def export_records():
    sft = [
        SFTRecord(
            messages=[{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}],
            instruction_id="i1",
            functions=["def evaluate(r):\n    return True"],
            pass_rate=1.0,
        ),
        SFTRecord(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Q2"},
                {"role": "assistant", "content": "A2"},
            ],
            instruction_id="i2",
            functions=[],
            pass_rate=0.75,
        ),
    ]
    dpo = [
        DPORecord(
            prompt=[{"role": "user", "content": "Q1"}],
            chosen=[{"role": "assistant", "content": "good"}],
            rejected=[{"role": "assistant", "content": "bad"}],
            level="query",
            functions=["f"],
        )
    ]
    return sft, dpo


def test_llamafactory_files(tmp_path):
    from autoif.export_formats import write_llamafactory

    sft, dpo = export_records()
    (tmp_path / "llamafactory").mkdir()
    (tmp_path / "llamafactory" / "stale.json").write_text("{}")
    path = write_llamafactory(tmp_path, sft, dpo)
    assert path == tmp_path / "llamafactory"
    info = json.loads((path / "dataset_info.json").read_text())
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [*(v["file_name"] for v in info.values()), "dataset_info.json"]
    )
    load = lambda name: json.loads((path / info[name]["file_name"]).read_text())  # noqa: E731
    assert load("autoif_sft_alpaca") == [
        {"instruction": "Q1", "input": "", "output": "A1", "system": "", "history": []},
        {"instruction": "Q2", "input": "", "output": "A2", "system": "Be brief.", "history": []},
    ]
    assert load("autoif_sft_sharegpt")[1] == {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Q2"},
            {"from": "gpt", "value": "A2"},
        ]
    }
    assert load("autoif_dpo_alpaca") == [
        {"instruction": "Q1", "input": "", "chosen": "good", "rejected": "bad", "system": "", "history": []}
    ]
    assert load("autoif_dpo_sharegpt") == [
        {
            "conversations": [{"from": "human", "value": "Q1"}],
            "chosen": {"from": "gpt", "value": "good"},
            "rejected": {"from": "gpt", "value": "bad"},
        }
    ]
    assert info["autoif_dpo_sharegpt"]["ranking"] is True and info["autoif_sft_sharegpt"]["formatting"] == "sharegpt"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_hf_dataset_copy_round_trips(tmp_path):
    datasets = pytest.importorskip("datasets")
    from autoif.export_formats import save_hf_dataset

    sft, dpo = export_records()
    path = save_hf_dataset(tmp_path, sft, dpo)
    loaded = datasets.load_from_disk(str(path))
    assert loaded["sft"].to_list() == [r.model_dump(mode="json") for r in sft]
    assert loaded["dpo"].to_list() == [r.model_dump(mode="json") for r in dpo]
    empty = datasets.load_from_disk(str(save_hf_dataset(tmp_path, [], [])))
    assert len(empty["sft"]) == 0 and "messages" in empty["sft"].features


def test_push_to_hub_without_a_token_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    from autoif.export_formats import save_hf_dataset

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    sft, dpo = export_records()
    with pytest.raises(AutoifError, match="needs a Hugging Face token") as err:
        save_hf_dataset(tmp_path, sft, dpo, push_to_hub="me/autoif-data")
    assert "\n" not in str(err.value) and not (tmp_path / "hf_dataset").exists()
