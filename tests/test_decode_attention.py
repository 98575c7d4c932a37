"""autoif's decode attention (`llm.attention`): the compiled kernel against torch's SDPA on the local
backend's own shapes and cache views, the model path that uses it, the cache key, and a failed build.

The kernel is compiled once per machine (about half a minute) where torch keeps its extensions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from autoif.llm import Request, decode_attention  # noqa: E402
from autoif.llm.base import BackendError  # noqa: E402
from autoif.llm.embedded import model_identity  # noqa: E402
from autoif.llm.local import LocalBackend  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import tiny_causal_lm  # noqa: E402


@pytest.fixture(scope="module")
def kernel():
    return decode_attention.kernel()


def _reference(q, k, v, keep, scale):
    """SDPA in fp32 over the repeated key/value heads: what the kernel computes, to fp32 rounding."""
    group = q.shape[1] // k.shape[1]
    k, v = (x.float().repeat_interleave(group, dim=1) for x in (k, v))
    mask = None if keep is None else keep[:, None, None, :]
    out = torch.nn.functional.scaled_dot_product_attention(q.float()[:, :, None], k, v, attn_mask=mask, scale=scale)
    return out[:, :, 0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(9, 3, 64), (4, 4, 128), (6, 1, 64)])
def test_kernel_equals_sdpa_on_cache_views_with_left_padding(kernel, dtype, heads, kv_heads, dim):
    gen = torch.Generator().manual_seed(heads * dim)
    rows, length, room = 5, 37, 60
    # The local backend's cache: a view [:, :, start:end] of a wider buffer (kv.GrowingLayer).
    buffer_k = torch.randn(rows, kv_heads, room, dim, generator=gen).to(dtype)
    buffer_v = torch.randn(rows, kv_heads, room, dim, generator=gen).to(dtype)
    k, v = buffer_k[:, :, 7 : 7 + length], buffer_v[:, :, 7 : 7 + length]
    q = torch.randn(rows, heads, dim, generator=gen).to(dtype)
    keep = torch.ones(rows, length, dtype=torch.bool)
    for row in range(rows):
        keep[row, : 6 * row] = False  # left padding, a different amount a row
    scale = dim**-0.5
    out = kernel.decode_attention(q, k, v, keep, scale)
    assert out.shape == q.shape and out.dtype == dtype
    want = _reference(q, k, v, keep, scale)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2  # bf16: the output's own rounding
    torch.testing.assert_close(out.float(), want, atol=tolerance, rtol=tolerance)
    # No mask is every column; a mask of one row is every row's.
    torch.testing.assert_close(
        kernel.decode_attention(q, k, v, torch.empty(0, dtype=torch.bool), scale).float(),
        _reference(q, k, v, None, scale),
        atol=tolerance,
        rtol=tolerance,
    )
    torch.testing.assert_close(
        kernel.decode_attention(q, k, v, keep[2:3], scale).float(),
        _reference(q, k, v, keep[2:3].expand(rows, -1), scale),
        atol=tolerance,
        rtol=tolerance,
    )


def test_kernel_refuses_what_it_does_not_cover(kernel):
    q, k = torch.zeros(2, 4, 32), torch.zeros(2, 2, 5, 32)
    with pytest.raises(RuntimeError, match="head size 32"):
        kernel.decode_attention(q, k, k, torch.empty(0, dtype=torch.bool), 1.0)
    with pytest.raises(RuntimeError, match="multiple"):
        k = torch.zeros(2, 2, 5, 64)
        kernel.decode_attention(torch.zeros(2, 3, 64), k, k, torch.empty(0), 1.0)


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory) -> Path:
    # Head size 64 (4 heads of 64, 2 key/value heads), as SmolLM2's: the kernel's case.
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny64") / "model", hidden=256)


def test_a_bf16_decode_step_with_the_kernel_matches_sdpa_and_prefill_is_sdpas(tiny64):
    prompts = ["Say hello.", "Write one sentence about the sea, please.", "Count to three."]
    logits = {}
    for attention in ("sdpa", "autoif"):
        backend = LocalBackend(str(tiny64), batch_size=4, device="cpu", dtype="bfloat16", attention=attention)
        engine = backend.engine
        expected = "sdpa" if attention == "sdpa" else decode_attention.NAME
        assert backend.resolved_attention == expected == engine.model.config._attn_implementation
        requests = [Request.user(p, temperature=0.0, max_tokens=8) for p in prompts]
        rows = [engine.make_row(None, i, 0, r, engine.encode(r)) for i, r in enumerate(requests)]
        with torch.inference_mode():
            batch, first = engine.prefill(rows)  # left-padded prompts of different lengths
            steps = [first]
            tokens = first.argmax(-1)
            for _ in range(4):
                steps.append(engine.step(batch, tokens))
                tokens = steps[0].argmax(-1)  # the same tokens for both attentions
        logits[attention] = torch.stack(steps).float()
        backend.close()
    torch.testing.assert_close(logits["autoif"][0], logits["sdpa"][0], atol=0, rtol=0)  # prefill: SDPA itself
    spread = logits["sdpa"][1:].abs().max()
    assert (logits["autoif"][1:] - logits["sdpa"][1:]).abs().max() <= 0.05 * spread  # bf16 rounding, no more


def test_the_cache_key_names_the_kernel_for_bf16_only(tiny64):
    bf16 = LocalBackend(str(tiny64), device="cpu", dtype="bfloat16", attention="auto")
    assert bf16.resolved_attention == decode_attention.NAME
    assert bf16.cache_identity == model_identity(str(tiny64), "bfloat16", "cpu", decode_attention.version())
    sdpa = LocalBackend(str(tiny64), device="cpu", dtype="bfloat16", attention="sdpa")
    assert sdpa.cache_identity == model_identity(str(tiny64), "bfloat16", "cpu") != bf16.cache_identity
    assert "attention" not in sdpa.cache_identity and decode_attention.NAME in bf16.cache_identity
    # fp32 (the exactly reproducible measure) keeps SDPA and its key; asking for the kernel there is an error.
    fp32 = LocalBackend(str(tiny64), device="cpu", dtype="float32", attention="auto")
    assert fp32.resolved_attention == "sdpa"
    assert fp32.cache_identity == model_identity(str(tiny64), "float32")
    with pytest.raises(BackendError, match="runs bf16 on a CPU, not float32"):
        _ = LocalBackend(str(tiny64), device="cpu", dtype="float32", attention="autoif").resolved_attention


def test_a_failed_build_is_one_line_and_auto_falls_back_to_sdpa(monkeypatch, tmp_path, caplog):
    # No C++ compiler: torch's build fails; "auto" decodes with SDPA (and says so), "autoif" is an error.
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    decode_attention.build.cache_clear()
    try:
        with pytest.raises(BackendError) as failed:
            decode_attention.kernel()
        assert str(failed.value).startswith("llm.attention: cannot build autoif's decode attention: ")
        assert "\n" not in str(failed.value)
        with caplog.at_level("WARNING", logger="autoif.llm"):
            assert decode_attention.resolve("auto", "bfloat16", "cpu") == "sdpa"
        assert "decoding with SDPA" in caplog.text
        with pytest.raises(BackendError):
            decode_attention.resolve("autoif", "bfloat16", "cpu")
    finally:
        decode_attention.build.cache_clear()  # the next test builds (or loads) the real one
