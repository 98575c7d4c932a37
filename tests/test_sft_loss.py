"""SFT learns the answer only: TRL's collator, fed as `autoif train sft` feeds it, masks every prompt
token (label -100) and keeps every answer token, with SmolLM2's real tokenizer and chat template."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from autoif.errors import AutoifError  # noqa: E402
from autoif.train.sft import prompt_completion  # noqa: E402
from tiny_models import tiny_causal_lm  # noqa: E402

CONVERSATIONS = [
    [
        {"role": "user", "content": "Name three fruits. Answer in lowercase letters only."},
        {"role": "assistant", "content": "apple, pear and plum."},
    ],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello in exactly two words."},
        {"role": "assistant", "content": "Hello there."},
    ],
]


def _collated(tmp_path, completion_only_loss: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_causal_lm(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(path)
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "out"),
        completion_only_loss=completion_only_loss,
        max_length=512,
        report_to="none",
        use_cpu=True,
    )
    dataset = datasets.Dataset.from_list([prompt_completion(c) for c in CONVERSATIONS])
    trainer = trl.SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(path),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(CONVERSATIONS))])
    return tokenizer, batch


def test_prompt_tokens_masked_answer_tokens_kept(tmp_path):
    tokenizer, batch = _collated(tmp_path, completion_only_loss=True)
    for row, conversation in enumerate(CONVERSATIONS):
        prompt_ids = tokenizer.apply_chat_template(conversation[:-1], add_generation_prompt=True, return_dict=False)
        full_ids = tokenizer.apply_chat_template(conversation, return_dict=False)
        mask = batch["attention_mask"][row].bool()
        ids = batch["input_ids"][row][mask].tolist()
        labels = batch["labels"][row][mask].tolist()
        assert ids[: len(full_ids)] == full_ids  # the whole conversation, as the template renders it
        n_prompt = len(prompt_ids)
        assert ids[:n_prompt] == prompt_ids
        assert all(label == -100 for label in labels[:n_prompt])  # every prompt token masked
        answer = labels[n_prompt:]
        assert answer == ids[n_prompt:]  # every answer token kept, end-of-turn included
        assert conversation[-1]["content"] in tokenizer.decode(answer)
        assert all(label == -100 for label in batch["labels"][row][~mask].tolist())  # padding


def test_full_sequence_loss_when_asked(tmp_path):
    _, batch = _collated(tmp_path, completion_only_loss=False)
    for row in range(len(CONVERSATIONS)):
        mask = batch["attention_mask"][row].bool()
        assert batch["labels"][row][mask].tolist() == batch["input_ids"][row][mask].tolist()


def test_a_record_without_an_answer_is_one_line():
    with pytest.raises(AutoifError, match="no assistant message"):
        prompt_completion([{"role": "user", "content": "hi"}])
