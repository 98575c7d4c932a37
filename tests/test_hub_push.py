"""`--push-to-hub`: the dataset and its card pushed by the real `datasets` and `huggingface_hub`
clients over HTTP to a local hub (tests/hub_server.py), and a failing hub ends in one line."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import yaml

from autoif.dataset_card import card_text, push_card
from autoif.errors import AutoifError
from autoif.jsonl import dumps_records

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402
from test_export_formats import export_records  # noqa: E402

pytest.importorskip("datasets")
TOKEN = "hf_local_test_token"
REPO = "someone/autoif-data"
# What `datasets` writes on push (as save_hf_dataset pushes: a config per split, each a train split):
# where each config's files are, and their features.
PUSHED = """---
dataset_info:
- config_name: sft
  features:
  - name: instruction_id
    dtype: string
  splits:
  - name: train
    num_examples: 2
configs:
- config_name: sft
  data_files:
  - split: train
    path: sft/train-*
---
"""


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A local hub that both libraries talk to. Their endpoint is read from HF_ENDPOINT once, at import
    (module constants, and the module-level HfApi behind `upload_file`), so it is set where they read it."""
    import datasets
    import huggingface_hub

    with HubServer(TOKEN) as server:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.endpoint)
        template = server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", server.endpoint)
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", server.endpoint)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # LFS, not Xet storage
        # The local hub is reachable on an offline machine too (HF_HUB_OFFLINE=1 is how this one runs).
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


def run_dir(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    out.mkdir()
    sft, dpo = export_records()
    (out / "sft.jsonl").write_text(dumps_records(sft))
    (out / "dpo.jsonl").write_text(dumps_records(dpo))
    (out / "config.yaml").write_text("export:\n  card_license: apache-2.0\n")
    return out


def front_matter(readme: bytes) -> dict:
    return yaml.safe_load(readme.decode().split("---\n")[1])


def test_push_card_replaces_the_readme_and_keeps_the_pushed_metadata(hub, tmp_path):
    hub.create(REPO, {"README.md": PUSHED.encode(), "sft/train-00000-of-00001.parquet": b"PAR1"})
    text = card_text(run_dir(tmp_path), REPO, "apache-2.0")

    push_card(REPO, text, TOKEN)

    readme = hub.files(REPO)["README.md"]
    meta = front_matter(readme)
    assert meta["configs"] == yaml.safe_load(PUSHED.split("---\n")[1])["configs"]
    assert meta["dataset_info"][0]["splits"][0]["name"] == "train"
    assert meta["license"] == "apache-2.0" and "autoif" in meta["tags"]
    body = readme.decode().split("\n---\n", 1)[1]
    assert body == text.split("\n---\n", 1)[1]  # our whole card: funnel, models, use, license, config
    assert f'load_dataset("{REPO}", "dpo", split="train")' in body and "SFTTrainer(" in body and "## Funnel" in body
    assert hub.files(REPO)["sft/train-00000-of-00001.parquet"] == b"PAR1"  # the data is untouched


def test_save_hf_dataset_pushes_the_splits_and_the_card(hub, tmp_path):
    import pyarrow.parquet

    from autoif.export_formats import save_hf_dataset

    out = run_dir(tmp_path)
    sft, dpo = export_records()

    save_hf_dataset(out, sft, dpo, push_to_hub=REPO, card_license="apache-2.0")

    files = hub.files(REPO)
    for name, rows in (("sft", sft), ("dpo", dpo)):  # each split its own config (their columns differ)
        shards = [p for p in files if p.startswith(f"{name}/train-") and p.endswith(".parquet")]
        assert len(shards) == 1, files.keys()
        pushed = pyarrow.parquet.read_table(io.BytesIO(files[shards[0]])).to_pylist()
        assert len(pushed) == len(rows)
        assert all(value == rows[0].model_dump(mode="json")[key] for key, value in pushed[0].items())
    meta = front_matter(files["README.md"])  # datasets' metadata kept: where each config's files are
    assert {c["config_name"]: c["data_files"] for c in meta["configs"]} == {
        "sft": [{"split": "train", "path": "sft/train-*"}],
        "dpo": [{"split": "train", "path": "dpo/train-*"}],
    }
    assert {info["config_name"] for info in meta["dataset_info"]} == {"sft", "dpo"}
    assert meta["license"] == "apache-2.0"
    assert files["README.md"].decode().endswith(card_text(out, REPO, "apache-2.0").split("\n---\n", 1)[1])
    assert (out / "hf_dataset" / "README.md").is_file()  # the local copy is written too


@pytest.mark.parametrize(
    "fault, message",
    [
        ("bad token", "401 Unauthorized' for url '{hub}/api/datasets/someone/autoif-data' (Invalid credentials"),
        (404, "404 Client Error. (Repository not found)"),
        (500, "500 Internal Server Error' for url '{hub}/api/datasets/someone/autoif-data' (the hub is failing)"),
        ("unreachable", "Connection refused"),
    ],
)
def test_a_failing_hub_is_one_line(hub, tmp_path, monkeypatch, fault, message):
    from autoif.export_formats import save_hf_dataset

    sft, dpo = export_records()
    out = run_dir(tmp_path)
    if fault == "bad token":
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    elif fault == "unreachable":
        import datasets

        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    else:
        hub.fail = fault
    with pytest.raises(AutoifError) as raised:
        save_hf_dataset(out, sft, dpo, push_to_hub=REPO)
    said = str(raised.value)
    assert "\n" not in said and said.startswith(f"push to the hub repo {REPO} failed: "), said
    assert message.format(hub=hub.endpoint) in said, said
    assert (out / "hf_dataset" / "README.md").is_file()  # the local copy is kept
