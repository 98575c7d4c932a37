"""Log-likelihoods of continuations under a transformers causal LM, batched and cached per request.

The definition is lm-evaluation-harness's `HFLM.loglikelihood`, so that a multiple-choice accuracy
computed from these numbers means what published ones do:

- a context's trailing whitespace moves to the continuation; the continuation's tokens are those of
  `tokenize(context + continuation)` past the tokens of `tokenize(context)` (no special tokens);
- the model reads `(context + continuation)[:-1]` (the last max-context + 1 tokens of it), right
  padded, and a continuation's log-likelihood is the sum of its tokens' log-probabilities.

How it is fast: a continuation's input is its context's tokens plus all but its last token, so the
single-token continuations of one question (" A", " B", " C", " D") share one input and cost one
forward pass, whose last position's logits score all of them. Inputs are deduplicated, sorted by
length (little padding) and cut into batches of at most `batch_tokens` padded tokens; only the
positions that score a continuation get logits (`logits_to_keep`), not the whole vocabulary at every
position. A request's numbers go into the run's response cache (`llm.cache`) as soon as its batch is
done, so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Iterator, Sequence
from typing import Any

from ..config import Config
from ..errors import AutoifError
from ..llm.base import NO_CACHE_TO_REPLAY, NOT_CACHED

# Padded tokens per forward pass: a few MB of activations for a 135M model, and enough rows that the
# CPU's matrix kernels stay busy.
BATCH_TOKENS = 8192
# Rows of the matmuls timed to decide llm.dtype "auto" on a CPU: scoring runs whole prompts, not one token.
PROBE_ROWS = 256
# A request joins a batch only if its input is at least this share of the batch's longest.
MIN_FILL = 0.9


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The context's and the continuation's token ids, as lm-evaluation-harness splits them."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    head = tokenizer.encode(context, add_special_tokens=False)
    return head, whole[len(head) :]


def request_key(identity: str, context: str, continuations: Sequence[str]) -> str:
    """The response-cache key of one request's log-likelihoods (apart from generation keys)."""
    text = json.dumps(["loglikelihood", identity, context, list(continuations)], ensure_ascii=False)
    return "loglik:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


class LoglikScorer:
    """Scores (context, continuations) requests with the model of `config.llm`, loaded as the local
    backend loads it ("embedded", a hub id or a path; device and dtype from the llm section)."""

    def __init__(self, config: Config, *, batch_tokens: int = BATCH_TOKENS) -> None:
        llm = config.llm
        # vLLM's model is scored by transformers on the same weights (its own prompt log-probabilities
        # come back per token of one prompt, with no batching across continuations); an HTTP
        # endpoint's weights are out of reach.
        if llm.backend not in ("local", "vllm"):
            raise AutoifError(
                f"log-likelihood benchmarks need the model's weights (llm.backend=local or vllm); "
                f"llm.backend={llm.backend} serves only generated text"
            )
        from ..llm import ResponseCache
        from ..llm.embedded import model_identity
        from ..llm.local import resolve_dtype

        self.config = config
        self.batch_tokens = batch_tokens
        # "auto" decided as the local backend decides it, on a prefill-sized pass of PROBE_ROWS rows.
        self.dtype = resolve_dtype(llm.dtype, llm.device, llm.model, config.paths.cache_dir, PROBE_ROWS)
        self.identity = model_identity(llm.model, self.dtype, llm.device)
        self.cache = ResponseCache(config.resolve_under_out(llm.cache_path)) if llm.cache else None
        if llm.cache_only and self.cache is None:
            raise AutoifError(NO_CACHE_TO_REPLAY)
        self._model: Any = None
        self.computed = 0  # requests scored by the model (the others came from the cache)

    def load(self) -> tuple[Any, Any]:
        """The model and its tokenizer, loaded on first use."""
        if self._model is None:
            from ..llm.local import load_causal_lm

            llm = self.config.llm
            self._model = load_causal_lm(llm.model, self.config.paths.cache_dir, llm.device, self.dtype)[:2]
        return self._model

    def score(
        self, requests: Sequence[tuple[str, Sequence[str]]], *, desc: str = "log-likelihoods"
    ) -> list[list[float]]:
        """Per request, the log-likelihood of each continuation after the context."""
        keys = [request_key(self.identity, ctx, conts) for ctx, conts in requests]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        out: list[list[float] | None] = [json.loads(found[k]) if k in found else None for k in keys]
        todo = [i for i, r in enumerate(out) if r is None]
        if todo and self.config.llm.cache_only:
            raise AutoifError(f"{len(todo)} of {len(requests)} {desc} are {NOT_CACHED}")
        if todo:
            self._score_missing(requests, keys, todo, out, desc)
        return [r for r in out if r is not None]

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self._model = None

    # ------------------------------------------------------------------------------------ forward
    def _score_missing(self, requests, keys: list[str], todo: list[int], out: list, desc: str) -> None:
        from tqdm.auto import tqdm

        model, tokenizer = self.load()
        limit = getattr(model.config, "max_position_embeddings", None) or 1 << 30
        # Per request: each continuation's (model input, continuation ids).
        pieces: dict[int, list[Piece]] = {}
        for i in todo:
            context, continuations = requests[i]
            pieces[i] = []
            for continuation in continuations:
                head, tail = encode_pair(tokenizer, context, continuation)
                if not tail:
                    raise AutoifError(f"continuation {continuation!r} adds no token to its context")
                pieces[i].append((tuple((head + tail)[-(limit + 1) :][:-1]), tail))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        bar = tqdm(total=len(todo), desc=desc, disable=None)
        for batch in batches(todo, pieces, self.batch_tokens):
            scores = iter(forward(model, [p for i in batch for p in pieces[i]], pad))
            for i in batch:
                out[i] = [next(scores) for _ in pieces[i]]
                self.computed += 1
                if self.cache is not None:
                    self.cache.put(keys[i], json.dumps(out[i]))
            bar.update(len(batch))
        bar.close()


# A continuation to score: the model's input ((context + continuation)[:-1]) and the continuation's ids.
Piece = tuple[tuple[int, ...], list[int]]


def batches(todo: list[int], pieces: dict[int, list[Piece]], budget: int) -> Iterator[list[int]]:
    """The requests in batches, longest input first, each within `budget` padded tokens (distinct
    inputs x the longest; a request longer than the budget alone) and without requests much shorter
    than the batch's longest (padding is computed like real tokens: a small `--limit` run's lengths
    are far apart, and a few short rows cost as much as long ones in a wide batch)."""
    longest = {i: max(len(seq) for seq, _ in pieces[i]) for i in todo}
    order = sorted(todo, key=lambda i: -longest[i])
    start = 0
    while start < len(order):
        width = longest[order[start]]
        end, inputs = start, set[tuple[int, ...]]()
        while end < len(order):
            more = inputs | {seq for seq, _ in pieces[order[end]]}
            if end > start and (len(more) * width > budget or longest[order[end]] < MIN_FILL * width):
                break
            inputs, end = more, end + 1
        yield order[start:end]
        start = end


def forward(model: Any, batch: list[Piece], pad: int) -> list[float]:
    """Each piece's log-likelihood: one forward pass over the batch's distinct inputs, right padded
    (causal attention: padding changes no real position), logits only where a token is scored."""
    import torch

    inputs = sorted({seq for seq, _ in batch}, key=len, reverse=True)
    row_of = {seq: n for n, seq in enumerate(inputs)}
    width = len(inputs[0])
    ids = torch.full((len(inputs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(inputs), width), dtype=torch.long)
    for n, seq in enumerate(inputs):
        ids[n, : len(seq)] = torch.tensor(seq)
        mask[n, : len(seq)] = 1
    # (row, position) of each scored token, once: position p's logits predict token p + 1.
    needed = sorted({(row_of[seq], len(seq) - len(tail) + k) for seq, tail in batch for k in range(len(tail))})
    at = {pair: m for m, pair in enumerate(needed)}
    positions = sorted({p for _, p in needed})
    device = next(model.parameters()).device
    kwargs: dict[str, Any] = {"attention_mask": mask.to(device)}
    keeps = "logits_to_keep" in inspect.signature(model.forward).parameters
    if keeps:  # the lm head on those positions only, not the whole vocabulary at every position
        kwargs["logits_to_keep"] = torch.tensor(positions, device=device)
    column = {p: n for n, p in enumerate(positions)} if keeps else {p: p for p in positions}
    with torch.inference_mode():
        logits = model(ids.to(device), **kwargs).logits
        rows = torch.tensor([r for r, _ in needed], device=logits.device)
        cols = torch.tensor([column[p] for _, p in needed], device=logits.device)
        logprobs = torch.log_softmax(logits[rows, cols].float(), dim=-1).cpu()
    return [
        sum(float(logprobs[at[(row_of[seq], len(seq) - len(tail) + k)], token]) for k, token in enumerate(tail))
        for seq, tail in batch
    ]
