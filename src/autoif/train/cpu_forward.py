"""A CPU forward for TRL's fused LM head that computes no padding and scores only the tokens with a label.

TRL's DPO and SFT trainers call `model(input_ids, attention_mask, labels, fused_lm_head=True)` and read
per-token log-probabilities (TRL's `add_fused_lm_head`). On a device without Triton, TRL's head runs
the backbone on the whole padded batch and projects every position onto the 49k vocabulary, prompt
and padding included, then recomputes the projection in the backward pass. On the published DPO
pairs that is most of the work: chosen and rejected answers share one padded batch, so a short
chosen answer is padded to the length of a rejected one that loops to 512 tokens (1.8x the real
tokens at 2 pairs per pass), and a third of the real tokens are prompt.

Here, on a CPU, the rows of a batch (right-padded, as TRL's collators pad) are split into groups of
similar length, each group runs through the backbone cut to its own longest row, and only the
positions with a label go through the LM head, as one matrix product and a log-softmax whose
backward autograd takes. The real tokens see the same computation (causal attention never looks at
the right padding), so the log-probabilities are equal up to float rounding. Anything else (a GPU,
a PEFT prompt-learning model, packed rows) goes to TRL's own forward.
"""

from __future__ import annotations

import types

# What a separate backbone pass costs beyond its tokens, in tokens: rows are grouped so that the
# padding a group adds is worth more than one more pass (Python and small-matmul overhead).
PASS_COST_TOKENS = 64
# Positions scored per LM-head product: bounds the temporary tensors of the metrics (entropy, top-1).
HEAD_CHUNK_TOKENS = 1024


def length_groups(lengths: list[int], pass_cost: int = PASS_COST_TOKENS) -> list[list[int]]:
    """Row indices in groups that minimise padded tokens plus `pass_cost` per group: the rows sorted
    longest first, cut into runs by dynamic programming (a run pads to its first row)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best = [0] + [0] * len(order)  # best[j]: cost of the first j rows of `order`
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        best[j], cut[j] = min((best[i] + (j - i) * lengths[order[i]] + pass_cost, i) for i in range(j))
    groups = []
    j = len(order)
    while j:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def use_cpu_forward(model, outputs: tuple[str, ...] = ("log_probs",)) -> None:
    """Route `model(..., fused_lm_head=True)` on a CPU through `trimmed_forward`; call it after TRL's
    `add_fused_lm_head` has patched `model`. `outputs` lists the metrics to compute besides the
    log-probs ("entropy", "mean_logits", "is_top1"), without gradient: the trainers only log them."""
    trl_forward = model.forward

    def forward(self, *args, fused_lm_head=False, **kwargs):
        if fused_lm_head and not args and trimmable(kwargs):
            return trimmed_forward(self, outputs=outputs, **kwargs)
        return trl_forward(*args, fused_lm_head=fused_lm_head, **kwargs)

    model.forward = types.MethodType(forward, model)


def trimmable(kwargs: dict) -> bool:
    """Whether a call is one `trimmed_forward` computes exactly: a right-padded CPU batch with labels."""
    import torch

    known = {"input_ids", "attention_mask", "labels", "use_cache", "num_items_in_batch"}
    ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
    if set(kwargs) - known or ids is None or mask is None or kwargs.get("labels") is None or ids.device.type != "cpu":
        return False
    # Right padding: each row's mask is ones then zeros.
    return bool(torch.equal(mask, (torch.arange(mask.size(1)) < mask.sum(1, keepdim=True)).to(mask.dtype)))


def trimmed_forward(model, input_ids, attention_mask, labels, outputs, num_items_in_batch=None, use_cache=None):
    """TRL's FusedCausalLMOutput for a right-padded batch, its rows grouped by length (length_groups)."""
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    lengths = attention_mask.sum(1).tolist()
    head = model.get_output_embeddings()
    label_mask = labels[:, 1:] != -100
    hidden_rows, targets, places = [], [], []
    for group in length_groups(lengths):
        rows, width = torch.tensor(group), lengths[group[0]]
        hidden = model.base_model(
            input_ids=input_ids[rows, :width], attention_mask=attention_mask[rows, :width], use_cache=False
        ).last_hidden_state[:, :-1]
        keep = label_mask[rows, : width - 1]
        hidden_rows.append(hidden[keep])
        targets.append(labels[rows, 1:width][keep])
        row, column = keep.nonzero(as_tuple=True)
        places.append(rows[row] * label_mask.size(1) + column)  # flat positions in (batch, length - 1)
    hidden_rows, targets, place = torch.cat(hidden_rows), torch.cat(targets), torch.cat(places)

    scored: dict[str, list] = {name: [] for name in ("log_probs", *outputs)}
    for start in range(0, len(targets), HEAD_CHUNK_TOKENS):
        chunk = slice(start, start + HEAD_CHUNK_TOKENS)
        logits = head(hidden_rows[chunk]).float()
        log_probs = torch.log_softmax(logits, dim=-1)
        scored["log_probs"].append(log_probs.gather(-1, targets[chunk].unsqueeze(-1)).squeeze(-1))
        with torch.no_grad():
            if "entropy" in outputs:
                scored["entropy"].append(-(log_probs.exp() * log_probs).sum(-1))
            if "mean_logits" in outputs:
                scored["mean_logits"].append(logits.mean(-1))
            if "is_top1" in outputs:  # argmax takes the first maximum: a tie with an earlier token is not top-1
                scored["is_top1"].append(logits.argmax(-1) == targets[chunk])

    # Back to TRL's (batch, length - 1) layout, zero (False) where there is no label.
    per_token = {}
    for name, pieces in scored.items():
        values = torch.cat(pieces) if pieces else hidden_rows.new_zeros(0, dtype=torch.float32)
        flat = values.new_zeros(label_mask.numel()).index_put((place,), values)
        per_token[name] = flat.view(label_mask.shape)
    count = label_mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return FusedCausalLMOutput(
        loss=-per_token["log_probs"].sum() / count,
        label_mask=label_mask,
        **{name: per_token.get(name) for name in ("log_probs", "entropy", "mean_logits", "is_top1")},
    )
