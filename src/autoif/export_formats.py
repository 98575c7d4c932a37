"""Copies of the exported data for other tools: LLaMA-Factory files and a Hugging Face `datasets` copy.

Both take the run's output directory and the SFT and DPO records of `sft.jsonl` / `dpo.jsonl`, and
write one subdirectory of it whole (`llamafactory/`, `hf_dataset/`): it is built beside its
destination and renamed into place, so a reader never sees half of it.

LLaMA-Factory (formats of its `data/README.md`): alpaca files (`instruction`, `input`, `output`, or
`chosen`/`rejected` for preference data, plus `system` and `history`) and sharegpt files
(`conversations` of `{"from": "human"|"gpt"|"system", "value"}`, and for preference data `chosen` /
`rejected` messages), with the `dataset_info.json` that registers them. Names: `autoif_sft_alpaca`,
`autoif_sft_sharegpt`, `autoif_dpo_alpaca`, `autoif_dpo_sharegpt`.

Hugging Face: a `DatasetDict` with splits `sft` and `dpo` in the TRL conversational columns of
the jsonl files, saved with `save_to_disk` with a dataset card (`dataset_card.py`) beside it as
README.md; optionally pushed to the hub, card included.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .dataset_card import CARD, card_text, push_card
from .errors import AutoifError, require
from .records import DPORecord, Message, SFTRecord
from .rundir import DPO, SFT

LLAMAFACTORY_DIR = "llamafactory"
HF_DATASET_DIR = "hf_dataset"
SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "system": "system"}
TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def write_copies(
    out_dir: Path, llamafactory: bool, hf_dataset: bool, push_to_hub: str | None = None, card_license: str = "other"
) -> None:
    """The copies a run's export settings ask for, from `out_dir/sft.jsonl` and `out_dir/dpo.jsonl`
    (a hub push implies the `datasets` copy, which it is made from)."""
    if not (llamafactory or hf_dataset or push_to_hub):
        return
    sft = SFT.read(out_dir)
    dpo = DPO.read(out_dir)
    if llamafactory:
        write_llamafactory(out_dir, sft, dpo)
    if hf_dataset or push_to_hub:
        save_hf_dataset(out_dir, sft, dpo, push_to_hub=push_to_hub, card_license=card_license)


# ---------------------------------------------------------------------------------- LLaMA-Factory
def write_llamafactory(
    out_dir: str | os.PathLike, sft_records: Sequence[SFTRecord], dpo_records: Sequence[DPORecord]
) -> Path:
    """Write the four LLaMA-Factory datasets and their dataset_info.json into `out_dir/llamafactory/`.

    Train with LLaMA-Factory's `dataset_dir: OUT/llamafactory` and `dataset: autoif_sft_sharegpt` (etc.).
    """
    files = {
        "autoif_sft_alpaca": [_alpaca(r.messages[:-1], output=_last(r.messages)) for r in sft_records],
        "autoif_sft_sharegpt": [{"conversations": [_sharegpt_turn(m) for m in r.messages]} for r in sft_records],
        "autoif_dpo_alpaca": [
            _alpaca(r.prompt, chosen=_last(r.chosen), rejected=_last(r.rejected)) for r in dpo_records
        ],
        "autoif_dpo_sharegpt": [
            {
                "conversations": [_sharegpt_turn(m) for m in r.prompt],
                "chosen": _sharegpt_turn(r.chosen[-1]),
                "rejected": _sharegpt_turn(r.rejected[-1]),
            }
            for r in dpo_records
        ],
    }
    alpaca_columns = {"prompt": "instruction", "query": "input", "system": "system", "history": "history"}
    info = {
        "autoif_sft_alpaca": {
            "file_name": "autoif_sft_alpaca.json",
            "columns": {**alpaca_columns, "response": "output"},
        },
        "autoif_sft_sharegpt": {
            "file_name": "autoif_sft_sharegpt.json",
            "formatting": "sharegpt",
            "columns": {"messages": "conversations"},
        },
        "autoif_dpo_alpaca": {
            "file_name": "autoif_dpo_alpaca.json",
            "ranking": True,
            "columns": {**alpaca_columns, "chosen": "chosen", "rejected": "rejected"},
        },
        "autoif_dpo_sharegpt": {
            "file_name": "autoif_dpo_sharegpt.json",
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        },
    }

    def write(tmp: Path) -> None:
        for name, rows in files.items():
            (tmp / f"{name}.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        (tmp / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    return _write_dir(Path(out_dir) / LLAMAFACTORY_DIR, write)


def _last(messages: Sequence[Message]) -> str:
    return messages[-1].content


def _alpaca(prompt: Sequence[Message], **response: str) -> dict[str, Any]:
    """An alpaca row: the last user turn is the instruction, earlier turns the history."""
    system = prompt[0].content if prompt and prompt[0].role == "system" else ""
    turns = [m for m in prompt if m.role != "system"]
    if not turns or turns[-1].role != "user":
        raise AutoifError("LLaMA-Factory export: a prompt must end with a user message")
    history = [[turns[i].content, turns[i + 1].content] for i in range(0, len(turns) - 1, 2)]
    return {"instruction": turns[-1].content, "input": "", **response, "system": system, "history": history}


def _sharegpt_turn(message: Message) -> dict[str, str]:
    return {"from": SHAREGPT_ROLES[message.role], "value": message.content}


# ---------------------------------------------------------------------------------- HF datasets
def _features(datasets):
    messages = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]
    functions = [datasets.Value("string")]
    sft = datasets.Features(
        {
            "messages": messages,
            "instruction_id": datasets.Value("string"),
            "functions": functions,
            "pass_rate": datasets.Value("float64"),
        }
    )
    dpo = datasets.Features(
        {
            "prompt": messages,
            "chosen": messages,
            "rejected": messages,
            "level": datasets.Value("string"),
            "functions": functions,
        }
    )
    return sft, dpo


def save_hf_dataset(
    out_dir: str | os.PathLike,
    sft_records: Sequence[SFTRecord],
    dpo_records: Sequence[DPORecord],
    push_to_hub: str | None = None,
    card_license: str = "other",
) -> Path:
    """Save a DatasetDict (splits `sft`, `dpo`) to `out_dir/hf_dataset/` (`datasets.load_from_disk`
    reads it back); with `push_to_hub`, also push it to that hub repo, created private.

    Pushing needs a token: HF_TOKEN (or HUGGING_FACE_HUB_TOKEN) in the environment, or a stored
    `huggingface-cli login`; without one it fails before anything is written.
    """
    datasets = require("datasets", "hf", "the Hugging Face datasets copy of the export")
    sft_features, dpo_features = _features(datasets)

    def split(records, features):
        # By columns, so that an empty split still has every column (from_list([]) has none).
        rows = [r.model_dump(mode="json") for r in records]
        return datasets.Dataset.from_dict({k: [row[k] for row in rows] for k in features}, features=features)

    data = datasets.DatasetDict({"sft": split(sft_records, sft_features), "dpo": split(dpo_records, dpo_features)})
    token = None
    if push_to_hub:
        token = next((os.environ[k] for k in TOKEN_ENV if os.environ.get(k)), None)
        if token is None:
            token = require("huggingface_hub", "hf", "pushing to the hub").get_token()
        if not token:
            raise AutoifError(
                f"--push-to-hub {push_to_hub} needs a Hugging Face token: set HF_TOKEN or run `huggingface-cli login`"
            )
    # One shard per split at least: datasets writes an empty split as zero shards, which it cannot load.
    shards = {name: 1 for name, split in data.items() if split.num_rows == 0}
    card = card_text(out_dir, push_to_hub, card_license)

    def write(tmp: Path) -> None:
        data.save_to_disk(str(tmp), num_shards=shards)
        (tmp / CARD).write_text(card, encoding="utf-8")

    path = _write_dir(Path(out_dir) / HF_DATASET_DIR, write)
    if push_to_hub:
        assert token is not None  # checked above, before anything was written
        try:
            # One config per split: sft and dpo have different columns, and a DatasetDict pushes only
            # splits of one schema. Each is its config's `train` split, as TRL's datasets are.
            for name, split_data in data.items():
                split_data.push_to_hub(push_to_hub, config_name=name, split="train", token=token, private=True)
            push_card(push_to_hub, card, token)
        except Exception as exc:  # network, auth and hub errors all end the same way: one line
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            # The hub's own words (e.g. "Invalid credentials in Authorization header") come on a later line.
            said = getattr(exc, "server_message", None)
            why = f"{first} ({' '.join(said.split())})" if said and said not in first else first
            raise AutoifError(f"push to the hub repo {push_to_hub} failed: {why}") from None
    return path


# ---------------------------------------------------------------------------------------- helpers
def _write_dir(final: Path, write: Callable[[Path], None]) -> Path:
    """Build a directory with `write(tmp)` beside `final`, then swap it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    old = None
    try:
        write(tmp)
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists():
            os.replace(old / final.name, final)  # put the previous copy back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return final
