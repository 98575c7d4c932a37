"""The Hugging Face NLI path, for real, with a tiny sequence-classification model built here.

No NLI model ships on PyPI and the hub is out of reach, so the model is a 2-layer BERT from a
config with a WordPiece tokenizer trained on the fixtures' instructions, saved with
`save_pretrained` and loaded back through `HFNLI` exactly as the paper's mDeBERTa would be. Its
weights are random, so its labels mean nothing; setting the classifier's bias makes it answer one
label for every pair, which drives the stage's keep/drop decision end to end.
"""

import json

import pytest
from test_backtranslate import FIXTURES, backtranslation_recordings, make_context, official_records, run_stage

from autoif.errors import AutoifError
from autoif.stages.nli import HFNLI, labels_from_id2label, make_nli
from autoif.stages.parsing import NLI_LABELS
from replay import ReplayBackend

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"AutoIF fixtures not found at {FIXTURES}")

ID2LABEL = {0: "entailment", 1: "neutral", 2: "contradiction"}
MAX_LENGTH = 64


def corpus():
    texts = ["Answer in lowercase letters only.", "Write at least three paragraphs separated by blank lines."]
    if FIXTURES.is_dir():
        texts += (FIXTURES / "seed_instruction.txt").read_text().splitlines()
        for line in (FIXTURES / "back_trans.jsonl").read_text().splitlines():
            row = json.loads(line)
            texts += [row["instruction"], *row["back_instruction"]]
    return texts


def build_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(corpus(), trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=MAX_LENGTH,
    )


def save_model(path, tokenizer, id2label=ID2LABEL, force=None):
    """A 2-layer BERT classifier saved at `path`; `force` = a label every pair gets."""
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_LENGTH,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    with torch.random.fork_rng(devices=[]):  # the same weights every time, the caller's RNG untouched
        torch.manual_seed(0)
        model = transformers.BertForSequenceClassification(config)
    if force is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor([10.0 if ID2LABEL[i] == force else 0.0 for i in range(3)]))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def tiny_nli(tmp_path_factory, tokenizer):
    return save_model(tmp_path_factory.mktemp("nli"), tokenizer)


def fixture_pairs():
    pairs = [
        ("Answer in all lowercase letters", "Write the whole answer in capital letters."),
        ("Use no commas", "Answer without using any comma."),
    ]
    if FIXTURES.is_dir():
        for line in (FIXTURES / "back_trans.jsonl").read_text().splitlines():
            row = json.loads(line)
            pairs += [(row["instruction"], b) for b in row["back_instruction"]]
    return pairs


def test_labels_are_valid_and_batching_changes_nothing(tiny_nli):
    pairs = fixture_pairs()
    batched = HFNLI(tiny_nli, batch_size=4).classify(pairs)
    one_by_one = HFNLI(tiny_nli, batch_size=1).classify(pairs)
    assert len(batched) == len(pairs) and set(batched) <= set(NLI_LABELS)
    assert batched == one_by_one
    # The same pairs with and without padding give the same logits (the attention mask works).
    nli = HFNLI(tiny_nli, batch_size=len(pairs))
    inputs = nli.tokenizer([p for p, _ in pairs], [h for _, h in pairs], padding=True, return_tensors="pt")
    alone = nli.tokenizer(*pairs[0], return_tensors="pt")
    with torch.inference_mode():
        padded_first = nli.model(**inputs).logits[0]
        unpadded_first = nli.model(**alone).logits[0]
    assert torch.allclose(padded_first, unpadded_first, atol=1e-5)


def test_long_pairs_are_truncated_to_the_model(tiny_nli):
    long_premise = "Answer in lowercase letters only. " * 200
    assert HFNLI(tiny_nli).classify([(long_premise, "Use no capital letters.")])[0] in NLI_LABELS


@pytest.mark.parametrize(
    "id2label,shown",
    [
        ({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, "0: LABEL_0, 1: LABEL_1, 2: LABEL_2"),
        ({0: "entailment", 1: "not_entailment"}, "0: entailment, 1: not_entailment"),
        ({0: "entailment", 1: "entailment", 2: "contradiction"}, "1: entailment"),
    ],
)
def test_classes_not_naming_the_three_labels_are_one_line_errors(tmp_path, tokenizer, id2label, shown):
    path = save_model(tmp_path, tokenizer, id2label=id2label)
    with pytest.raises(AutoifError) as err:
        HFNLI(path)
    message = str(err.value)
    assert "\n" not in message and shown in message and "entailment, neutral and contradiction" in message


def test_label_names_are_read_in_any_case_and_order():
    roberta_mnli = {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}
    assert labels_from_id2label(roberta_mnli, "m") == {0: "contradiction", 1: "neutral", 2: "entailment"}
    assert labels_from_id2label({"0": "Entailment", "1": "Neutral", "2": "Contradiction"}, "m") == ID2LABEL


def test_missing_model_is_a_one_line_error(tmp_path):
    with pytest.raises(AutoifError, match="cannot load NLI model") as err:
        HFNLI(str(tmp_path / "no-such-model"))
    assert "\n" not in str(err.value) and "backtranslate.nli.backend=llm" in str(err.value)


def test_made_from_config(tmp_path, tiny_nli):
    ctx = make_context(
        tmp_path,
        None,
        "backtranslate.nli.backend=hf",
        f"backtranslate.nli.model={tiny_nli}",
        "backtranslate.nli.batch_size=5",
    )
    nli = make_nli(ctx.config)
    assert isinstance(nli, HFNLI) and nli.batch_size == 5 and nli.max_length == MAX_LENGTH


@needs_fixtures
@pytest.mark.parametrize("force,kept", [("contradiction", 0), ("entailment", 5), ("neutral", 5)])
def test_back_trans_fixture_through_the_stage(tmp_path, tokenizer, force, kept):
    """back_trans.jsonl end to end: replayed official back-translations, then the tiny HF model."""
    records, answers = official_records()
    model = save_model(tmp_path / "model", tokenizer, force=force)
    ctx = make_context(
        tmp_path,
        ReplayBackend(backtranslation_recordings(answers)),
        "backtranslate.nli.backend=hf",
        f"backtranslate.nli.model={model}",
        "backtranslate.nli.batch_size=4",
    )
    out, dropped = run_stage(ctx, records)
    n_pairs = sum(min(3, len(r.functions)) for r in records)
    assert ctx.counts == {f"nli:{force}": n_pairs}  # every pair classified
    assert len(out) == kept and len(dropped) == len(records) - kept
    assert all(d.reason == "contradiction" for d in dropped)
    for record in out:
        assert {bt.label for bt in record.back_translations or []} == {force}
