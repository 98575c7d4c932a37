"""The `local` backend: a transformers causal LM in this process, on CPU or GPU.

Every sample (request x sample index) is a row. One worker thread owns the model and decodes rows in
a batch of up to `batch_size`, continuously: a row is emitted the moment it finishes (EOS, a stop
string, max_tokens), and pending rows (from any `generate()` call, in any thread) are prefilled and
take the finished rows' slots while the others keep decoding. Rows are left-padded; the KV cache
is the model's `DynamicCache` with layers that append in place (`kv.GrowingLayer`): a decode step
writes one column, a new row whose prompt fits the batch's columns is written into a finished
row's slot, and the whole cache is copied only when rows leave without replacement or join
without a free slot.

A sample depends only on its request, its sample index and the seed, not on its batch mates: each
sampled row draws its uniforms from its own generator seeded with `Sampling.seed_for(index)` and
turns them into tokens by inverse-CDF sampling on its own row of probabilities (greedy rows take
the argmax). `model.generate` cannot do this: its one global RNG makes a sample depend on the
others in its batch. What batching still changes is floating-point rounding: the BLAS kernels round
a row differently depending on how many rows share the matmul (fp32 on CPU: up to ~3e-5 on a
logit, even for identical rows without padding). That flips a token only when a uniform falls
within ~1e-6 of a CDF boundary or two greedy logits tie that closely: in a measured run, 1 of 32
sampled 64-token answers differed between batch sizes 8 and 16. Once cached, a sample never changes.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..errors import require
from . import decode_attention
from .base import Backend, BackendError, Completion, Emit, Job, Request
from .cache import Cache
from .embedded import chat_prompt_ids, model_identity, resolve_model


class LocalBackend(Backend):
    kind = "local"

    def __init__(
        self,
        model: str = "embedded",
        cache: Cache | None = None,
        *,
        batch_size: int = 64,
        batch_wait_ms: float = 5.0,
        device: str = "auto",
        dtype: str = "auto",
        attention: str = "auto",
        cache_dir: str | os.PathLike = "~/.cache/autoif",
        kv_budget_tokens: int | None = None,
    ) -> None:
        super().__init__(model, cache)
        self.batch_size = batch_size
        # Rows x columns the batch's KV cache may reach; None: a quarter of the memory free at load.
        self.kv_budget_tokens = kv_budget_tokens
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.device = device
        self.dtype = dtype
        self.attention = attention
        self.cache_dir = cache_dir
        self._start_lock = threading.Lock()
        self._engine: _Engine | None = None
        self._scheduler: _Scheduler | None = None
        self._finalizer: weakref.finalize | None = None
        self._resolved_dtype: str | None = None
        self._resolved_attention: str | None = None

    @classmethod
    def from_config(cls, llm, cache: Cache | None = None, paths=None) -> LocalBackend:
        from ..config import PathsConfig

        return cls(
            llm.model,
            cache,
            batch_size=llm.batch_size,
            batch_wait_ms=llm.batch_wait_ms,
            device=llm.device,
            dtype=llm.dtype,
            attention=llm.attention,
            cache_dir=(paths or PathsConfig()).cache_dir,
        )

    @property
    def cache_identity(self) -> str:
        attention = self.resolved_attention
        kernel = "sdpa" if attention == "sdpa" else decode_attention.version()
        return model_identity(self.model, self.resolved_dtype, self.device, kernel)

    @property
    def resolved_dtype(self) -> str:
        """The weights dtype the model runs in: `dtype`, with "auto" decided (and measured on a CPU) once."""
        if self._resolved_dtype is None:
            self._resolved_dtype = resolve_dtype(self.dtype, self.device, self.model, self.cache_dir, self.batch_size)
        return self._resolved_dtype

    @property
    def resolved_attention(self) -> str:
        """The decode step's attention: "sdpa" or autoif's kernel (`decode_attention.resolve`), decided once."""
        if self._resolved_attention is None:
            torch = require("torch", "local", "the local backend")
            device = _pick_device(torch, self.device).type
            self._resolved_attention = decode_attention.resolve(self.attention, self.resolved_dtype, device)
        return self._resolved_attention

    @property
    def engine(self) -> _Engine:
        """The loaded model and tokenizer (loaded on first use)."""
        return self._started()[0]

    def _started(self) -> tuple[_Engine, _Scheduler]:
        with self._start_lock:
            if self._scheduler is None:
                engine = self._engine or _Engine.load(
                    self.model, self.cache_dir, self.device, self.resolved_dtype, self.resolved_attention
                )
                self._engine = engine
                budget = self.kv_budget_tokens or engine.kv_budget_tokens()
                self._scheduler = _Scheduler(engine, self.batch_size, self.batch_wait_s, budget)
                # A backend dropped without close() must not leave its thread (and model) behind.
                self._finalizer = weakref.finalize(self, self._scheduler.close)
            assert self._engine is not None  # loaded with the scheduler
            return self._engine, self._scheduler

    def _run(self, jobs: list[Job], emit: Emit) -> None:
        engine, scheduler = self._started()
        ticket = _Ticket(emit, sum(len(job.samples) for job in jobs))
        rows = []
        for job_index, job in enumerate(jobs):
            prompt = engine.encode(job.request)
            rows += [engine.make_row(ticket, job_index, i, job.request, prompt) for i in job.samples]
        for row in [r for r in rows if r.error]:
            ticket.deliver(row, Completion("", error=row.error, rejected=True))  # a prompt too long
        # Shorter prompts first, so that rows prefilled together need little padding.
        scheduler.submit(sorted((r for r in rows if not r.error), key=lambda r: len(r.prompt)))
        try:
            ticket.wait()
        except BaseException:
            ticket.cancelled = True  # interrupted: the worker drops this call's rows
            raise
        if ticket.error is not None:
            raise ticket.error

    def close(self) -> None:
        with self._start_lock:
            if self._finalizer is not None:
                self._finalizer()  # closes the scheduler once
            self._scheduler = self._finalizer = None
            self._engine = None


def resolve_dtype(dtype: str, device: str, model: str, cache_dir: str | os.PathLike, rows: int) -> str:
    """The weights dtype for `dtype` as configured: itself, or for "auto" bf16 (fp16 where bf16 is not
    supported) on a GPU, and on a CPU bf16 only where a short measurement of the model's own matmul
    shapes at `rows` rows a pass finds it faster than fp32 (`autoif.precision`, cached per machine):
    machines of one kind differ, so CPU flags do not decide. Answers are cached under this dtype."""
    if dtype != "auto":
        return dtype
    torch = require("torch", "local", "the local backend")
    dev = _pick_device(torch, device)
    if dev.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if dev.type != "cpu":
        return "float32"
    from ..precision import cpu_bf16_decode_faster

    transformers = require("transformers", "local", "the local backend")
    try:
        config = transformers.AutoConfig.from_pretrained(resolve_model(model, cache_dir))
    except (OSError, ValueError) as exc:
        raise _load_error(model, exc) from None
    return "bfloat16" if cpu_bf16_decode_faster(config, cache_dir, rows) else "float32"


def _load_error(model: str, exc: Exception) -> BackendError:
    """One line for a model (or its config) that transformers cannot load."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BackendError(f"cannot load model '{model}': {first}")


def load_causal_lm(model: str, cache_dir: str | os.PathLike, device: str, dtype: str) -> tuple[Any, Any, str]:
    """A transformers causal LM in eval mode on its device, its tokenizer, and the path it was loaded
    from (`model`: "embedded", a hub id or a path; device as in the llm section, `dtype` a resolved
    one, see `resolve_dtype`). Chat template or not: log-likelihood evaluations (evals/loglik.py)
    score base models too."""
    transformers = require("transformers", "local", "the local backend")
    torch = require("torch", "local", "the local backend")
    dev = _pick_device(torch, device)
    torch_dtype = getattr(torch, dtype)
    path = resolve_model(model, cache_dir)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        lm = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise _load_error(model, exc) from None
    lm.to(dev).eval()
    return lm, tokenizer, path


# ---------------------------------------------------------------------------------------------- rows
class _Ticket:
    """One `_run` call: hands finished rows to its `emit` and wakes the caller when all are done."""

    def __init__(self, emit: Emit, count: int) -> None:
        self._emit = emit
        self._left = count
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.error: BaseException | None = None
        self.cancelled = False
        if count == 0:
            self._done.set()

    def deliver(self, row: _Row, completion: Completion) -> None:
        row.finished = True
        try:
            self._emit(row.job_index, row.sample_index, completion)
        except BaseException as exc:  # e.g. the cache's disk is full: the caller raises it
            self.error = self.error or exc
        self._count_down()

    def fail(self, row: _Row, exc: BaseException) -> None:
        row.finished = True
        self.error = self.error or exc
        self._count_down()

    def _count_down(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left == 0:
                self._done.set()

    def wait(self) -> None:
        self._done.wait()


@dataclass(eq=False)
class _Row:
    """One sample being produced."""

    ticket: _Ticket
    job_index: int
    sample_index: int
    prompt: list[int]
    max_new: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    uniforms: list[float] | None  # this row's own random stream; None when greedy
    error: str | None = None
    generated: list[int] = field(default_factory=list)
    finished: bool = False

    @property
    def over(self) -> bool:
        """The row holds a batch slot for nothing: finished, or its caller cancelled it."""
        return self.finished or self.ticket.cancelled

    def next_uniform(self) -> float:
        """The uniform that draws this row's next token (a sampled row's; a greedy row has none)."""
        assert self.uniforms is not None, "a greedy row draws no uniforms"
        return self.uniforms[len(self.generated)]


# -------------------------------------------------------------------------------------------- engine
class _Engine:
    """The model, its tokenizer and the batched forward passes and sampling over rows."""

    def __init__(self, model: Any, tokenizer: Any, torch: Any, name: str) -> None:
        self.model, self.tokenizer, self.torch, self.name = model, tokenizer, torch, name
        self.device = next(model.parameters()).device
        # transformers >= 5.x names the cache argument `cache`, earlier versions `past_key_values`.
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        from .kv import GrowingLayer

        def new_cache() -> Any:
            cache = DynamicCache(config=model.config)
            cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
            return cache

        self._new_cache = new_cache
        self._plain_layer = GrowingLayer
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos = frozenset(eos + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos, default=0)
        self.context = getattr(model.config, "max_position_embeddings", None) or 1 << 30
        # Fast tokenizers raise "Already borrowed" when threads share one: callers encode, the worker decodes.
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def load(
        cls, model: str, cache_dir: str | os.PathLike, device: str, dtype: str, attention: str = "sdpa"
    ) -> _Engine:
        lm, tokenizer, path = load_causal_lm(model, cache_dir, device, dtype)
        if attention == decode_attention.NAME:
            decode_attention.install(lm)
        if tokenizer.chat_template is None:
            raise BackendError(f"model '{model}' has no chat template: the local backend needs a chat/instruct model")
        return cls(lm, tokenizer, require("torch", "local", "the local backend"), path)

    def kv_budget_tokens(self) -> int | None:
        """How many rows x columns of KV cache fit in a quarter of the memory free now (None: unknown).

        A quarter, because a cache buffer holds up to 1.5x its columns and merging two batches
        copies it once more; the rest is the model, activations and the caller's own memory.
        """
        config = self.model.config
        layers = getattr(config, "num_hidden_layers", None)
        heads = getattr(config, "num_attention_heads", None)
        if not layers or not heads:
            return None
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        per_token = 2 * layers * kv_heads * head_dim * next(self.model.parameters()).element_size()
        free = _free_memory(self.torch, self.device)
        return None if free is None else max(1, free // 4 // per_token)

    # ------------------------------------------------------------------------------- text <-> rows
    def encode(self, request: Request) -> list[int]:
        with self._tokenizer_lock:
            return chat_prompt_ids(self.tokenizer, request.messages)

    def decode(self, ids: list[int]) -> str:
        with self._tokenizer_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

    def make_row(self, ticket: _Ticket, job_index: int, sample_index: int, request: Request, prompt: list[int]) -> _Row:
        s = request.sampling
        room = self.context - len(prompt)
        max_new = min(s.max_tokens, room)
        uniforms = None
        if s.temperature > 0 and max_new > 0:
            seed = s.seed_for(sample_index)
            gen = self.torch.Generator()
            gen.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
            uniforms = self.torch.rand(max_new, generator=gen).tolist()
        stop = tuple(x for x in s.stop if x)  # an empty stop string would end every sample at once
        row = _Row(ticket, job_index, sample_index, prompt, max_new, s.temperature, s.top_p, stop, uniforms)
        if room <= 0:
            row.error = f"prompt of {len(prompt)} tokens leaves no room in the {self.context}-token context"
        return row

    # ------------------------------------------------------------------------------- forward passes
    def prefill(self, rows: list[_Row]) -> tuple[_Batch, Any]:
        """Run the prompts of `rows` (each distinct prompt once) -> their batch and last logits."""
        torch = self.torch
        distinct: dict[tuple[int, ...], int] = {}
        which = [distinct.setdefault(tuple(r.prompt), len(distinct)) for r in rows]
        prompts = list(distinct)
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = self._new_cache()
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_arg: cache},
        )
        logits = out.logits[:, -1]
        if len(prompts) < len(rows):  # samples of one request share their prompt's prefill
            index = torch.tensor(which, device=self.device)
            cache.batch_select_indices(index)
            mask, logits = mask[index], logits[index]
        plain = all(type(layer) is self._plain_layer for layer in cache.layers)
        return _Batch(rows, cache, mask, mask.sum(-1), plain), logits

    def step(self, batch: _Batch, tokens: Any) -> Any:
        """Feed each row its last token -> next logits."""
        torch = self.torch
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((batch.mask.shape[0], 1))], dim=-1)
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=batch.mask,
            position_ids=batch.positions[:, None],
            use_cache=True,
            **{self._cache_arg: batch.cache},
        )
        batch.positions = batch.positions + 1
        return out.logits[:, -1]

    def choose(self, logits: Any, rows: list[_Row]) -> Any:
        """The next token of every row: argmax when greedy, else inverse-CDF sampling with the row's
        own uniform, so that the choice depends on nothing but the row's own logits and seed."""
        torch = self.torch
        if all(r.uniforms is not None for r in rows):
            tokens = torch.empty(len(rows), dtype=torch.long, device=logits.device)
        else:
            tokens = logits.argmax(-1)
        # Rows with top_p < 1 walk their tokens from the most likely down, the others in vocabulary
        # order (no sort needed): each row's rule is its own, whatever its batch mates use.
        for nucleus in (False, True):
            group = [i for i, r in enumerate(rows) if r.uniforms is not None and (r.top_p < 1.0) == nucleus]
            if group:
                index = torch.tensor(group, device=logits.device)
                tokens[index] = self._sample(logits[index], [rows[i] for i in group], nucleus)
        return tokens

    def _sample(self, logits: Any, rows: list[_Row], nucleus: bool) -> Any:
        torch = self.torch
        temperature = torch.tensor([r.temperature for r in rows], device=logits.device)
        probs = torch.softmax(logits.float() / temperature[:, None], dim=-1)
        order = None
        if nucleus:
            top_p = torch.tensor([r.top_p for r in rows], device=logits.device)
            probs, order = probs.sort(dim=-1, descending=True, stable=True)
            # Keep the smallest head whose mass reaches top_p (always at least the first token).
            probs = probs * ((probs.cumsum(-1) - probs) < top_p[:, None])
        cdf = probs.cumsum(-1)
        u = torch.tensor([r.next_uniform() for r in rows], device=logits.device)
        total = cdf[:, -1]
        # The first token whose cumulative mass exceeds u * total; kept strictly below the total so
        # that rounding can never land past the last token with mass.
        point = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
        choice = torch.searchsorted(cdf, point[:, None], right=True)
        if order is not None:
            choice = order.gather(-1, choice)
        return choice[:, 0]

    # -------------------------------------------------------------------------------- batch surgery
    def select(self, batch: _Batch, keep: list[int]) -> _Batch | None:
        """Only the rows at `keep`, with the left columns no row needs any more cut off."""
        if not keep:
            return None
        if len(keep) < len(batch.rows):
            index = self.torch.tensor(keep, device=self.device)
            batch.cache.batch_select_indices(index)
            batch.mask, batch.positions = batch.mask[index], batch.positions[index]
            batch.rows = [batch.rows[i] for i in keep]
            self._trim(batch)
        return batch

    def refill(self, batch: _Batch, tokens: Any, new: _Batch | None, new_tokens: Any) -> tuple[_Batch | None, Any]:
        """`batch` without its finished rows, with the rows of `new` (if any) and their next tokens.

        A new row takes a finished row's slot in place when its prompt fits the batch's columns
        (a copy of that row's cache only); the other finished rows are cut out (`select`) and the
        other new rows appended (`merge`), which copy the whole cache.
        """
        dead = [i for i, row in enumerate(batch.rows) if row.over]
        if new is not None and dead and batch.plain:
            width, new_width = batch.mask.shape[1], new.mask.shape[1]
            fits = [j for j, n in enumerate(new.mask.sum(-1).tolist()) if n <= width][: len(dead)]
            if fits:
                copied = min(width, new_width)
                slots = self.torch.tensor(dead[: len(fits)], device=self.device)
                rows = self.torch.tensor(fits, device=self.device)
                for layer, other in zip(batch.cache.layers, new.cache.layers):
                    layer.place(slots, other, rows, copied)
                batch.mask[slots] = 0
                batch.mask[slots, width - copied :] = new.mask[rows, new_width - copied :]
                batch.positions[slots] = new.positions[rows]
                tokens[slots] = new_tokens[rows]
                for slot, j in zip(dead, fits):
                    batch.rows[slot] = new.rows[j]
                placed = set(fits)
                rest = [j for j in range(len(new.rows)) if j not in placed]
                new, new_tokens = self.select(new, rest), new_tokens[rest]
        keep = [i for i, row in enumerate(batch.rows) if not row.over]
        kept = self.select(batch, keep)
        if kept is not None:
            tokens = tokens[keep] if len(keep) < len(tokens) else tokens
            self._trim(kept)  # the replaced rows' columns may be needed by no row now
        if new is None:
            return kept, tokens if kept is not None else None
        if kept is None:
            return new, new_tokens
        return self.merge(kept, new), self.torch.cat([tokens, new_tokens])

    def merge(self, batch: _Batch, new: _Batch) -> _Batch:
        """One batch of both, each left-padded to the longer of the two caches."""
        torch, F = self.torch, self.torch.nn.functional
        width = max(batch.mask.shape[1], new.mask.shape[1])
        for layer, other in zip(batch.cache.layers, new.cache.layers):
            layer.merge(other, width)
        batch.mask = torch.cat([F.pad(m, (width - m.shape[1], 0)) for m in (batch.mask, new.mask)])
        batch.positions = torch.cat([batch.positions, new.positions])
        batch.rows = batch.rows + new.rows
        self._trim(batch)
        return batch

    def _trim(self, batch: _Batch) -> None:
        if not batch.plain:
            return
        used = batch.mask.any(0)
        first = int(used.int().argmax())
        if first > 0:
            for layer in batch.cache.layers:
                layer.trim(first)
            batch.mask = batch.mask[:, first:]


@dataclass(eq=False)
class _Batch:
    """Rows decoded together: their KV cache, attention mask (left padding) and next positions.

    `plain`: every cache layer is a `GrowingLayer` (a plain `DynamicLayer`'s), so rows can join a running batch;
    other caches (sliding windows...) only run batches that start together.
    """

    rows: list[_Row]
    cache: Any
    mask: Any
    positions: Any
    plain: bool


# ------------------------------------------------------------------------------------------ worker
class _Scheduler:
    """The worker thread: admits pending rows into free slots and decodes until the rows finish."""

    def __init__(self, engine: _Engine, batch_size: int, wait_s: float, kv_budget: int | None = None) -> None:
        self._engine = engine
        self._batch_size = batch_size
        self._kv_budget = kv_budget
        self._wait_s = wait_s
        self._pending: deque[_Row] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="autoif-local-llm", daemon=True)
        self._thread.start()

    def submit(self, rows: list[_Row]) -> None:
        with self._cond:
            if self._closed:
                raise BackendError("the local backend is closed")
            self._pending.extend(rows)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _take(self, free: int, idle: bool, live: list[_Row]) -> list[_Row]:
        """Up to `free` pending rows; when idle, block for one and give others `wait_s` to arrive.

        Rows are taken in order while the batch's KV cache at its widest (every row, `live` and
        taken, as wide as the longest prompt plus its new tokens could make it) stays within the
        budget: one long prompt would otherwise widen the cache of every row of a large batch (an
        IFBench prompt of ~2,000 tokens in a batch of 128 ran a 24 GB machine out of memory). A
        row that does not fit waits at the head of the queue until rows finish; alone it always runs.
        """
        with self._cond:
            if idle:
                while not self._pending and not self._closed:
                    self._cond.wait()
                deadline = time.monotonic() + self._wait_s
                while len(self._pending) < free and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._cond.wait(left):
                        break
            if self._closed:
                return []
            rows: list[_Row] = []
            widest = max((_span(r) for r in live), default=0)
            while self._pending and len(rows) < free:
                row = self._pending[0]
                if row.ticket.cancelled:
                    self._pending.popleft()
                    continue
                wider = max(widest, _span(row))
                if self._kv_budget and (live or rows) and (len(live) + len(rows) + 1) * wider > self._kv_budget:
                    break
                rows.append(self._pending.popleft())
                widest = wider
            return rows

    def _loop(self) -> None:
        torch = self._engine.torch
        batch: _Batch | None = None  # after a step, its finished rows stay until refill() replaces or cuts them
        tokens = None
        with torch.inference_mode():
            while True:
                live = [r for r in batch.rows if not r.over] if batch else []
                admit = batch is None or (batch.plain and len(live) < self._batch_size)
                new_rows = self._take(self._batch_size - len(live), batch is None, live) if admit else []
                if self._closed:
                    break
                try:
                    new = new_tokens = None
                    if new_rows:
                        prefilled, logits = self._engine.prefill(new_rows)
                        new_tokens = self._advance(prefilled, logits)
                        new, new_tokens = self._engine.refill(prefilled, new_tokens, None, None)
                    if batch is None:
                        batch, tokens = new, new_tokens
                    else:
                        batch, tokens = self._engine.refill(batch, tokens, new, new_tokens)
                    if batch is not None:
                        tokens = self._advance(batch, self._engine.step(batch, tokens))
                except Exception as exc:  # e.g. out of memory: fail these rows, keep serving others
                    for row in (batch.rows if batch else []) + new_rows:
                        if not row.finished:
                            row.ticket.fail(row, exc)
                    batch, tokens = None, None
        self._fail_all(batch)

    def _advance(self, batch: _Batch, logits: Any) -> Any:
        """Choose each row's next token and emit the rows that finished (they stay in the batch)."""
        chosen = self._engine.choose(logits, batch.rows)
        for row, token in zip(batch.rows, chosen.tolist()):
            if row.ticket.cancelled:
                continue
            done = self._finish(row, token)
            if done is not None:
                row.ticket.deliver(row, done)
        return chosen

    def _finish(self, row: _Row, token: int) -> Completion | None:
        """Record `token`; the row's completion if it is finished now, else None."""
        engine = self._engine
        if token in engine.eos:
            return Completion(engine.decode(row.generated), "stop", len(row.generated), prompt_tokens=len(row.prompt))
        row.generated.append(token)
        # A stop string of n characters ends within the last few tokens: look there first.
        if row.stop and any(s in engine.decode(row.generated[-4 * max(map(len, row.stop)) - 4 :]) for s in row.stop):
            text = engine.decode(row.generated)
            hits = [i for i in (text.find(s) for s in row.stop) if i >= 0]
            if hits:
                return Completion(text[: min(hits)], "stop", len(row.generated), prompt_tokens=len(row.prompt))
        if len(row.generated) >= row.max_new:
            return Completion(engine.decode(row.generated), "length", len(row.generated), prompt_tokens=len(row.prompt))
        return None

    def _fail_all(self, batch: _Batch | None) -> None:
        closed = BackendError("the local backend was closed")
        with self._cond:
            pending, self._pending = list(self._pending), deque()
        for row in (batch.rows if batch else []) + pending:
            if not row.finished:
                row.ticket.fail(row, closed)


def _span(row: _Row) -> int:
    """The most KV columns `row` can need: its prompt and all its new tokens."""
    return len(row.prompt) + row.max_new


# -------------------------------------------------------------------------------- device and dtype
def _free_memory(torch: Any, device: Any) -> int | None:
    """Bytes free on `device` now (CPU: physical memory available to allocate), None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    return None


def _pick_device(torch: Any, device: str) -> Any:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BackendError(f"llm.device: unknown device '{device}' (auto, cpu, cuda, cuda:1...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"llm.device is '{device}' but torch sees no CUDA GPU")
    return dev
