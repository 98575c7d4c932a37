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
positions with a label go through the LM head. A prompt that several rows share (DPO's chosen and
rejected answers; 15% of the published pairs' tokens) runs once: its keys and values are computed in
one pass and each answer attends to them at its own positions, the gradient reaching the prompt's
pass through them. The LM head is applied as one matrix product and a log-softmax whose
backward autograd takes. The real tokens see the same computation (causal attention never looks at
the right padding), so the log-probabilities are equal up to float rounding. Anything else (a GPU,
left padding, packed rows, a PEFT prompt-learning model's extra arguments, scaled or soft-capped
logits, an MoE router loss) goes to TRL's own forward.
"""

from __future__ import annotations

import types
from typing import Any

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
        "run in groups of similar length, each cut to its longest row, a prompt several rows share (DPO) runs "
        "once, and only answer tokens go through the LM head (train/cpu_forward.py); the same log-probs up to "
        "float rounding. Batches it cannot compute exactly (a GPU, left padding, packed rows, scaled logits, "
        "MoE) take TRL's own forward",
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
    """TRL's FusedCausalLMOutput for a right-padded batch: rows whose prompt another row shares (DPO's chosen
    and rejected) run the prompt once (shared_prompt_passes), the others in groups of similar length
    (length_groups)."""
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    lengths = attention_mask.sum(1).tolist()
    head = model.get_output_embeddings()
    label_mask = labels[:, 1:] != -100
    # One embedding lookup for every pass: each lookup's backward writes a dense gradient of the whole
    # vocabulary's embeddings (28M numbers for SmolLM2), so one per pass cost 5% of a DPO step.
    embeds = model.get_input_embeddings()(input_ids)
    # Scored positions (t predicts token t + 1) gathered pass by pass; a pass's hidden column j is position start + j.
    hidden_pieces, target_pieces, places = [], [], []

    def collect(rows, starts, hidden):
        positions = starts.unsqueeze(1) + torch.arange(hidden.size(1))
        keep = torch.nn.functional.pad(label_mask[rows], (0, hidden.size(1))).gather(1, positions)
        targets = torch.nn.functional.pad(labels[rows, 1:], (0, hidden.size(1)), value=-100).gather(1, positions)
        hidden_pieces.append(hidden[keep])
        target_pieces.append(targets[keep])
        row, column = keep.nonzero(as_tuple=True)
        places.append(rows[row] * label_mask.size(1) + positions[row, column])  # flat in (batch, length - 1)

    argument = prompt_cache(model)
    prompts = shared_prompts(input_ids, label_mask) if argument else {}
    for rows, starts, hidden in shared_prompt_passes(model, argument, embeds, lengths, prompts):
        collect(rows, starts, hidden)
    shared = {row for rows in prompts.values() for row in rows}
    plain = [row for row in range(len(lengths)) if row not in shared]
    for group in length_groups([lengths[row] for row in plain]):
        rows = torch.tensor([plain[i] for i in group])
        width = lengths[plain[group[0]]]
        hidden = model.base_model(
            inputs_embeds=embeds[rows, :width], attention_mask=attention_mask[rows, :width], use_cache=False
        ).last_hidden_state[:, :-1]
        collect(rows, torch.zeros(len(rows), dtype=torch.long), hidden)
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


def prompt_cache(model) -> str | None:
    """The backbone's KV-cache argument (transformers 5.25 renamed past_key_values to cache) where a
    prompt's keys and values can be computed once and attended to from several rows exactly: a model
    that takes a cache and explicit positions, every layer attending to the whole past (a sliding-window
    layer would drop keys a longer row sees), no gradient checkpointing (it turns the cache off).
    None where they cannot."""
    import inspect

    config = model.config.get_text_config()
    parameters = inspect.signature(model.base_model.forward).parameters
    argument = next((name for name in ("cache", "past_key_values") if name in parameters), None)
    # transformers 5.x renamed is_gradient_checkpointing (deprecated) to is_activation_checkpointing.
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    full_attention = getattr(config, "sliding_window", None) is None and set(
        getattr(config, "layer_types", None) or ["full_attention"]
    ) == {"full_attention"}
    return argument if full_attention and "position_ids" in parameters and not checkpointing else None


def shared_prompts(input_ids, label_mask) -> dict[tuple[int, ...], list[int]]:
    """Rows by their prompt (the tokens before the first scored position), for prompts at least two rows
    share: DPO's batch holds each pair's chosen and rejected answer after the same prompt."""
    first = label_mask.int().argmax(1).tolist()
    scored = label_mask.any(1).tolist()
    rows: dict[tuple[int, ...], list[int]] = {}
    for row, (start, any_label) in enumerate(zip(first, scored, strict=True)):
        if any_label and start > 0:
            rows.setdefault(tuple(input_ids[row, :start].tolist()), []).append(row)
    return {prompt: group for prompt, group in rows.items() if len(group) > 1}


def shared_prompt_passes(model, argument, embeds, lengths, prompts):
    """(rows, starts, hidden) for the rows of `prompts`: each prompt runs through the backbone once (the
    prompts in length groups), then each row's answer runs in groups of similar length, attending to its
    prompt's keys and values (right-padded to the group's longest prompt and masked) at its own
    positions, the cache passed as `argument` (prompt_cache). Gradients flow into the prompt's pass
    through the keys and values (autograd)."""
    import torch
    from transformers import DynamicCache

    if not prompts:
        return
    texts = list(prompts)
    prompt_lengths = [len(text) for text in texts]
    keys_values: list[list[tuple]] = [[] for _ in texts]  # per prompt, per layer: (keys, values) of its tokens
    for group in length_groups(prompt_lengths):
        width = prompt_lengths[group[0]]
        inputs = pad_stack([embeds[prompts[texts[index]][0], : prompt_lengths[index]] for index in group], width)
        mask = pad_stack([torch.ones(prompt_lengths[index], dtype=torch.long) for index in group], width)
        filled: Any = DynamicCache()  # its layers are full-attention DynamicLayers (prompt_cache)
        model.base_model(inputs_embeds=inputs, attention_mask=mask, use_cache=True, **{argument: filled})
        for i, index in enumerate(group):
            keys_values[index] = [
                (layer.keys[i, :, : prompt_lengths[index]], layer.values[i, :, : prompt_lengths[index]])
                for layer in filled.layers
            ]

    prompt_of = {row: index for index, text in enumerate(texts) for row in prompts[text]}
    rows_in = sorted(prompt_of)
    answers = [lengths[row] - prompt_lengths[prompt_of[row]] for row in rows_in]
    for group in length_groups(answers):
        rows = [rows_in[i] for i in group]
        starts = [prompt_lengths[prompt_of[row]] for row in rows]
        width, past = answers[group[0]], max(starts)
        inputs = pad_stack([embeds[row, start : lengths[row]] for row, start in zip(rows, starts, strict=True)], width)
        mask = torch.zeros(len(rows), past + width, dtype=torch.long)
        for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
            mask[i, :start] = 1
            mask[i, past : past + lengths[row] - start] = 1
        cache = DynamicCache()
        for layer in range(len(keys_values[0])):
            # (heads, tokens, head size) per row: tokens padded on dimension -2
            keys, values = (
                torch.stack(
                    [
                        torch.nn.functional.pad(keys_values[prompt_of[row]][layer][kind], (0, 0, 0, past - start))
                        for row, start in zip(rows, starts, strict=True)
                    ]
                )
                for kind in (0, 1)
            )
            cache.update(keys, values, layer)
        start_tensor = torch.tensor(starts)
        positions = start_tensor.unsqueeze(1) + torch.arange(width)
        hidden = model.base_model(
            inputs_embeds=inputs, attention_mask=mask, position_ids=positions, use_cache=True, **{argument: cache}
        ).last_hidden_state
        yield torch.tensor(rows), start_tensor, hidden


def pad_stack(pieces, width: int):
    """Tensors of (length, ...) stacked into (len(pieces), width, ...), zeros after each one's length."""
    out = pieces[0].new_zeros(len(pieces), width, *pieces[0].shape[1:])
    for i, piece in enumerate(pieces):
        out[i, : len(piece)] = piece
    return out
