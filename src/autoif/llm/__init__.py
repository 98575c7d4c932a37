"""The LLM layer: `make_backend(config).generate(requests)`.

Backends sit in a registry from name to "module:Class" (`autoif.registry`), imported only when
chosen, so that the HTTP backend never pays for torch and `autoif --help` stays fast.
"""

from __future__ import annotations

from ..registry import Registry
from .base import (
    NO_CACHE_TO_REPLAY,
    Backend,
    BackendError,
    BackendStats,
    Completion,
    Job,
    Request,
    Sampling,
    failure,
)
from .cache import Cache, ResponseCache

BACKENDS = Registry(
    "LLM backend",
    {
        "openai": "autoif.llm.openai_backend:OpenAIBackend",
        "local": "autoif.llm.local:LocalBackend",
        "vllm": "autoif.llm.vllm_backend:VLLMBackend",
        "anthropic": "autoif.llm.anthropic_backend:AnthropicBackend",
    },
    error=BackendError,
)
# `llm.batch: true`: the backend that sends a stage's requests through the provider's batch API.
BATCH_BACKENDS = {
    "openai": "autoif.llm.batch:OpenAIBatchBackend",
    "anthropic": "autoif.llm.anthropic_backend:AnthropicBatchBackend",
}


def backend_class(name: str) -> type[Backend]:
    return BACKENDS.load(name)


def make_backend(config, cache: Cache | None = None) -> Backend:
    """A backend for `config` (the whole `Config` or its `llm` section).

    With the whole Config and `llm.cache` on, the response cache is opened at `llm.cache_path`
    (relative to `paths.out`) unless one is passed in.
    """
    from ..config import Config

    llm = config.llm if isinstance(config, Config) else config
    if cache is None and isinstance(config, Config) and llm.cache:
        cache = ResponseCache(config.resolve_under_out(llm.cache_path))
    cache_only = getattr(llm, "cache_only", False)
    if cache_only and cache is None:
        raise BackendError(NO_CACHE_TO_REPLAY)
    cls = backend_class(llm.backend)
    if getattr(llm, "batch", False):
        if llm.backend not in BATCH_BACKENDS:
            raise BackendError(f"llm.batch is for the {' and '.join(BATCH_BACKENDS)} backends, not '{llm.backend}'")
        cls = Registry("batch backend", BATCH_BACKENDS, error=BackendError).load(llm.backend)
    backend = cls.from_config(llm, cache=cache, paths=config.paths if isinstance(config, Config) else None)
    backend.cache_only = cache_only
    return backend


__all__ = [
    "Backend",
    "BackendError",
    "BackendStats",
    "Completion",
    "failure",
    "Job",
    "Request",
    "ResponseCache",
    "Sampling",
    "make_backend",
    "backend_class",
    "BACKENDS",
]
