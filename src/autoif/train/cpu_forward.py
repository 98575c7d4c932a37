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
left padding, packed rows, a PEFT prompt-learning model's extra arguments, scaled or soft-capped
logits, an MoE router loss) goes to TRL's own forward.
"""

from __future__ import annotations

import types

from pydantic import BaseModel, Field

# What a separate backbone pass costs beyond its tokens, in tokens: rows are grouped so that the
# padding a group adds is worth more than one more pass (Python and small-matmul overhead).
PASS_COST_TOKENS = 64
# Positions scored per LM-head product: bounds the temporary tensors of the metrics (entropy, top-1).
HEAD_CHUNK_TOKENS = 1024
# Keyword arguments `trimmed_forward` computes; any other one with a value goes to TRL's forward.
TRIMMABLE_KWARGS = {"input_ids", "attention_mask", "labels", "use_cache", "num_items_in_batch"}
# Config fields with which the logits are more than the LM head's product (TRL's forward applies them).
SCALED_LOGITS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


class CpuForwardSettings(BaseModel):
    """The trimmed CPU forward, mixed into the settings of the trainers that use it (SFT, DPO)."""

    cpu_forward: bool = Field(
        True,
        description="on a CPU, TRL's per-token log-probs computed without padding: each forward pass's rows "
        "run in groups of similar length, each cut to its longest row, and only answer tokens go through the "
        "LM head (train/cpu_forward.py); the same log-probs up to float rounding. Batches it cannot compute "
        "exactly (a GPU, left padding, packed rows, scaled logits, MoE) take TRL's own forward",
    )


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


def with_cpu_forward(trainer_class: type, outputs: tuple[str, ...]) -> type:
    """`trainer_class` (TRL's SFTTrainer or DPOTrainer) with its models' fused LM head routed through
    `trimmed_forward` on a CPU. `outputs`: the metrics TRL's trainer asks its policy's head for besides
    the log-probs (TRL keeps that tuple inside its __init__; the reference is asked for log-probs only).

    TRL patches the models (`add_fused_lm_head`) inside its __init__, and DPOTrainer then computes the
    reference log-probs (precompute_ref_log_probs) before returning: that pass goes through the public
    `compute_ref_log_probs(model, inputs)`, which installs the trimmed forward on the model it is given;
    the training passes get it when __init__ returns."""

    class CpuForward(trainer_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            install(policy(self.model), outputs)
            if getattr(self, "ref_model", None) is not None:
                install(self.ref_model, ())

    if hasattr(trainer_class, "compute_ref_log_probs"):

        class CpuForwardReference(CpuForward):
            def compute_ref_log_probs(self, model, inputs):
                # The policy itself when there is no separate reference (precompute, PEFT).
                install(policy(model), outputs if model is self.model else ())
                return super().compute_ref_log_probs(model, inputs)

        CpuForward = CpuForwardReference  # type: ignore[misc]

    CpuForward.__name__ = CpuForward.__qualname__ = f"CpuForward{trainer_class.__name__}"
    return CpuForward


def policy(model):
    """The transformers model under a PEFT wrapper (where TRL installs its head), else `model`."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def install(model, outputs: tuple[str, ...]) -> None:
    """Route `model(..., fused_lm_head=True)` through `trimmed_forward` where it computes TRL's result;
    call it after TRL's `add_fused_lm_head` has patched `model` (a second call does nothing). A model
    whose logits are more than its LM head's product, or that is not a plain transformers model (a
    DeepSpeed engine), keeps TRL's forward."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel) or getattr(model.forward, "trims_padding", False):
        return
    config = model.config.get_text_config()
    if config is not model.config or hasattr(config, "output_router_logits"):
        return  # a vision-language wrapper or an MoE model (router loss): TRL's forward
    if any(getattr(config, name, None) is not None for name in SCALED_LOGITS):
        return
    trl_forward = model.forward

    def forward(self, *args, fused_lm_head=False, **kwargs):
        if fused_lm_head and not args and trimmable(kwargs):
            given = {name: value for name, value in kwargs.items() if value is not None}
            return trimmed_forward(self, outputs=outputs, **given)
        return trl_forward(*args, fused_lm_head=fused_lm_head, **kwargs)

    forward.trims_padding = True  # type: ignore[attr-defined]
    model.forward = types.MethodType(forward, model)


def trimmable(kwargs: dict) -> bool:
    """Whether a call is one `trimmed_forward` computes exactly: a right-padded CPU batch with labels
    and no other argument (PEFT passes its defaults as None)."""
    import torch

    given = {name for name, value in kwargs.items() if value is not None}
    ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
    if given - TRIMMABLE_KWARGS or ids is None or mask is None or kwargs.get("labels") is None:
        return False
    labels = kwargs["labels"]
    if ids.device.type != "cpu" or ids.dim() != 2 or mask.shape != ids.shape or labels.shape != ids.shape:
        return False
    lengths = mask.sum(1, keepdim=True)
    # Right padding (each row's mask is ones then zeros), no empty row, no label on padding, and a label
    # to score (TRL's forward keeps a batch without one connected to the model).
    return (
        bool(torch.equal(mask, (torch.arange(mask.size(1)) < lengths).to(mask.dtype)))
        and bool(lengths.min() > 0)
        and bool((labels[mask == 0] == -100).all())
        and bool((labels[:, 1:] != -100).any())
    )


def trimmed_forward(model, input_ids, attention_mask, labels, outputs, num_items_in_batch=None, use_cache=None):
    """TRL's FusedCausalLMOutput for a right-padded batch, its rows grouped by length (length_groups)."""
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    lengths = attention_mask.sum(1).tolist()
    head = model.get_output_embeddings()
    label_mask = labels[:, 1:] != -100
    hidden_pieces, target_pieces, places = [], [], []
    for group in length_groups(lengths):
        rows, width = torch.tensor(group), lengths[group[0]]
        hidden = model.base_model(
            input_ids=input_ids[rows, :width], attention_mask=attention_mask[rows, :width], use_cache=False
        ).last_hidden_state[:, :-1]
        keep = label_mask[rows, : width - 1]
        hidden_pieces.append(hidden[keep])
        target_pieces.append(labels[rows, 1:width][keep])
        row, column = keep.nonzero(as_tuple=True)
        places.append(rows[row] * label_mask.size(1) + column)  # flat positions in (batch, length - 1)
    hidden_rows, targets, place = torch.cat(hidden_pieces), torch.cat(target_pieces), torch.cat(places)

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
