"""The chat template's end-of-turn token, as what generation stops on.

A base model's tokenizer often ends text with one token (`<|endoftext|>`) while the chat template
it is fine-tuned with closes each turn with another (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`).
The trained model learns to write the template's token at the end of an answer; unless that token
is one of the ids its generation config stops on, generation runs on past it to the token limit.
"""

from __future__ import annotations

import logging

log = logging.getLogger("autoif.train")

# Text that no template rewrites: what follows it in the rendered conversation ends the turn.
_PROBE = "autoif-end-of-turn-probe"


def end_of_turn_token(tokenizer) -> str | None:
    """The special token the chat template writes right after an assistant turn's text; None when the
    tokenizer has no template, or the template ends a turn with plain text only."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    conversation = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": _PROBE}]
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
    _, found, after = rendered.partition(_PROBE)
    if not found:
        return None
    special = set(tokenizer.all_special_tokens) | {
        t.content for t in tokenizer.added_tokens_decoder.values() if t.special
    }
    for token in tokenizer.convert_ids_to_tokens(tokenizer(after, add_special_tokens=False)["input_ids"]):
        if token in special:
            return token
    return None


def stop_at_end_of_turn(model, tokenizer) -> None:
    """Add the template's end-of-turn token to the ids `model`'s generation config stops on (kept
    with the model when it is saved), as TRL's SFTConfig(eos_token=...) does for SFT."""
    token = end_of_turn_token(tokenizer)
    if token is None:
        return
    token_id = tokenizer.convert_tokens_to_ids(token)
    declared = model.generation_config.eos_token_id
    ids = [] if declared is None else [declared] if isinstance(declared, int) else list(declared)
    if token_id not in ids:
        model.generation_config.eos_token_id = [token_id, *ids]
        log.info("generation stops at the chat template's end of turn %s (id %d) too", token, token_id)
