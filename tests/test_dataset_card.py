"""The dataset card written beside the `datasets` copy: from a real run's funnel (a real LLM stage
on a tiny model), its config, a real contamination check and real exported records."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from autoif.dataset_card import CARD
from autoif.evals import contamination
from autoif.jsonl import dumps_records
from autoif.pipeline import Pipeline

sys.path.insert(0, str(Path(__file__).parent))
from test_cost import AnswerStage, NumbersStage, config  # noqa: E402
from test_export_formats import export_records  # noqa: E402


@pytest.mark.slow
def test_card_tells_the_funnel_models_contamination_config_and_use(tmp_path, tiny):
    datasets = pytest.importorskip("datasets")
    from huggingface_hub import DatasetCard

    from autoif.export_formats import save_hf_dataset

    cfg = config(tmp_path, tiny, llm={"base_url": "http://user:secret@127.0.0.1:1/v1"})
    funnel = Pipeline(cfg, stages=[NumbersStage(), AnswerStage()]).run()
    sft, dpo = export_records()
    (tmp_path / "sft.jsonl").write_text(dumps_records(sft))
    (tmp_path / "dpo.jsonl").write_text(dumps_records(dpo))
    report = contamination(tmp_path)  # writes contamination.json
    path = save_hf_dataset(tmp_path, sft, dpo, card_license="apache-2.0")

    text = (path / CARD).read_text()
    card = DatasetCard(text)  # the hub library parses its metadata
    assert card.data.license == "apache-2.0" and "autoif" in card.data.tags
    assert f"- `sft`: {len(sft)} rows" in text and f"- `dpo`: {len(dpo)} rows" in text
    assert "| numbers | 0 | 6 | - |" in text and "| responses | 6 | 6 | - |" in text
    line = funnel["stages"]["responses"]["llm"]
    assert f"| responses | local | {tiny} | no | {line['prompt_tokens']} | {line['completion_tokens']} | $" in text
    for name in report["benchmarks"]:
        assert f"| {name} | " in text
    assert "```yaml\n" in text and "card_license" in text and "secret" not in text
    assert 'load_from_disk("' in text and 'sft, dpo = data["sft"], data["dpo"]' in text and "train_dataset=dpo" in text
    loaded = datasets.load_from_disk(str(path))  # the card beside the data does not disturb it
    assert loaded["sft"].num_rows == len(sft)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import tiny_causal_lm

    return str(tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model"))
