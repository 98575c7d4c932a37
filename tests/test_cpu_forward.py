"""The trimmed CPU forward against TRL's fused LM head, on a tiny real model (random weights): the same log-probs,
metrics and gradients for a right-padded batch; TRL's own forward for a batch it cannot compute.

The training runs' per-step losses with and without it are in test_train.py
(test_precompute_and_grouping_give_todays_losses)."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")
trl_utils = pytest.importorskip("trl.trainer.utils")
transformers = pytest.importorskip("transformers")

from autoif.train.cpu_forward import install, length_groups, prompt_cache, shared_prompts  # noqa: E402
from autoif.train.dpo import DPO_METRICS  # noqa: E402

PAD = 0
VOCAB = 1000


def test_length_groups_cover_every_row_once_and_minimise_padding_plus_passes():
    lengths = [40, 300, 38, 512, 35, 290, 510, 41]
    groups = length_groups(lengths, pass_cost=64)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert [lengths[g[0]] for g in groups] == sorted((lengths[g[0]] for g in groups), reverse=True)

    def cost(groups):
        return sum(len(g) * max(lengths[i] for i in g) + 64 for g in groups)

    # Brute force over the runs of the longest-first order (optimal groups are such runs).
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best = min(
        cost([order[a:b] for a, b in itertools.pairwise((0, *cuts, len(order)))])
        for k in range(len(order))
        for cuts in itertools.combinations(range(1, len(order)), k)
    )
    assert cost(groups) == best
    assert [sorted(g) for g in groups] == [[3, 6], [1, 5], [0, 2, 4, 7]]
    assert length_groups(lengths, pass_cost=10**6) == [order]  # a pass dearer than any padding: one group
    assert length_groups([], pass_cost=64) == []


@pytest.fixture(scope="module")
def model():
    return _tiny_llama()


def _tiny_llama():
    """A 2-layer Llama with a small vocabulary (the batches are random token ids: no tokenizer needed),
    given TRL's fused LM head as DPOTrainer gives it to its policy."""
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        pad_token_id=PAD,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config)
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", *DPO_METRICS))
    return model


def _batch(lengths: list[int], prompt: int, left: bool = False) -> dict:
    """Rows of random tokens padded to the longest, labels on each row's tokens after `prompt`."""
    generator = torch.Generator().manual_seed(0)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        span = slice(width - n, width) if left else slice(0, n)
        ids[row, span] = torch.randint(1, VOCAB, (n,), generator=generator)
        mask[row, span] = 1
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, : prompt + (width - min(lengths) if left else 0)] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "use_cache": False}


def _run(model, batch: dict) -> tuple[dict, dict, int]:
    """The fused forward's per-token fields, the LM head's gradient of its loss, and the backbone's passes."""
    passes = []
    hook = model.base_model.register_forward_hook(lambda *_: passes.append(1))
    model.zero_grad()
    try:
        out = model(**batch, fused_lm_head=True)
        out.loss.backward()
    finally:
        hook.remove()
    fields = {name: getattr(out, name) for name in ("loss", "log_probs", "entropy", "mean_logits", "is_top1")}
    return fields, {"lm_head": model.lm_head.weight.grad.clone()}, len(passes)


def test_trimmed_forward_gives_trls_log_probs_and_falls_through_where_it_cannot(model):
    lengths = [60, 6, 56, 9, 7]
    right = _batch(lengths, prompt=3)
    # Left padding, an argument it does not take: TRL's forward (small batches: TRL's is the slow one).
    left = _batch([12, 5, 9], prompt=3, left=True)
    extra = {**_batch([12, 5, 9], prompt=3), "position_ids": torch.arange(12).expand(3, -1)}
    trl = {name: _run(model, batch) for name, batch in (("right", right), ("left", left), ("extra", extra))}

    install(model, DPO_METRICS)
    install(model, DPO_METRICS)  # a second call changes nothing
    fields, grads, passes = _run(model, right)
    assert passes == len(length_groups(lengths)) == 2  # the backbone ran per length group
    trl_fields, trl_grads, _ = trl["right"]
    for name in ("loss", "log_probs", "entropy", "mean_logits"):
        torch.testing.assert_close(fields[name], trl_fields[name], rtol=1e-4, atol=1e-5, msg=name)
    assert torch.equal(fields["is_top1"], trl_fields["is_top1"])
    assert (fields["log_probs"][right["labels"][:, 1:] == -100] == 0).all()
    torch.testing.assert_close(grads["lm_head"], trl_grads["lm_head"], rtol=1e-4, atol=1e-6)

    for name in ("left", "extra"):
        fields, grads, passes = _run(model, {"left": left, "extra": extra}[name])
        assert passes == 1, name
        assert torch.equal(fields["log_probs"], trl[name][0]["log_probs"]), name


def _pairs_batch(prompts: list[int], chosen: list[int], rejected: list[int]) -> dict:
    """DPOTrainer's layout: the chosen rows, then the rejected rows, row i and i + n after the same prompt;
    right-padded, labels on the answers only."""
    generator = torch.Generator().manual_seed(1)
    texts = [torch.randint(1, VOCAB, (n,), generator=generator) for n in prompts]
    rows = [(i, n) for i, n in enumerate(chosen)] + [(i, n) for i, n in enumerate(rejected)]
    width = max(prompts[i] + n for i, n in rows)
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, (pair, n) in enumerate(rows):
        start = prompts[pair]
        ids[row, :start] = texts[pair]
        ids[row, start : start + n] = torch.randint(1, VOCAB, (n,), generator=generator)
        mask[row, : start + n] = 1
        labels[row, start : start + n] = ids[row, start : start + n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "use_cache": False}


def test_a_prompt_shared_by_chosen_and_rejected_runs_once_with_trls_log_probs_and_gradients():
    # Three pairs: prompts of different lengths (so the prompt and answer passes pad and mask), one rejected
    # answer looping far beyond its chosen one; and an SFT-like row whose prompt no other row shares.
    batch = _pairs_batch(prompts=[12, 7, 9], chosen=[20, 5, 6], rejected=[40, 9, 6])
    lone = _batch([30], prompt=4)  # its own prompt: the rows' own pass, beside the shared ones
    width = max(batch["input_ids"].size(1), lone["input_ids"].size(1))
    for name, fill in (("input_ids", PAD), ("attention_mask", 0), ("labels", -100)):
        rows = [torch.nn.functional.pad(b[name], (0, width - b[name].size(1)), value=fill) for b in (batch, lone)]
        batch[name] = torch.cat(rows)
    model = _tiny_llama()

    def run():
        model.zero_grad()
        passes, tokens = [], []

        def count(module, args, kwargs, output):
            passes.append(1)
            given = kwargs.get("input_ids")
            tokens.append(given.numel() if given is not None else kwargs["inputs_embeds"][..., 0].numel())

        hook = model.base_model.register_forward_hook(count, with_kwargs=True)
        try:
            out = model(**batch, fused_lm_head=True)
            out.loss.backward()
        finally:
            hook.remove()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        return out, grads, len(passes), sum(tokens)

    trl_out, trl_grads, _, trl_tokens = run()
    install(model, DPO_METRICS)
    assert prompt_cache(model) in ("cache", "past_key_values")  # the name depends on the transformers version
    prompts = shared_prompts(batch["input_ids"], batch["labels"][:, 1:] != -100)
    assert sorted(prompts.values()) == [[0, 3], [1, 4], [2, 5]]
    out, grads, passes, tokens = run()
    for name in ("loss", "log_probs", "entropy", "mean_logits"):
        torch.testing.assert_close(getattr(out, name), getattr(trl_out, name), rtol=1e-4, atol=1e-5, msg=name)
    assert torch.equal(out.is_top1, trl_out.is_top1)
    # Every weight's gradient, the backbone's included: they reach the prompt's pass through its keys and values.
    assert grads.keys() == trl_grads.keys() and len(grads) == len(list(model.parameters()))
    for name, grad in grads.items():
        torch.testing.assert_close(grad, trl_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # Each shared prompt ran once: fewer tokens through the backbone, in prompt, answer and lone-row passes.
    assert tokens < trl_tokens and passes >= 3

    # Gradient checkpointing turns the model's cache off: prompts are not shared then (the rows' own passes).
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    assert prompt_cache(model) is None
