"""The vllm backend's translation, tested without vLLM (which cannot run here): our requests and
the samples still missing from the cache -> vLLM requests (n, per-sample seeds, SamplingParams
fields), and vLLM outputs -> completions. Outputs are given as plain data shaped like vLLM's
`RequestOutput` (`.outputs[i].index/.text/.token_ids/.finish_reason`).
"""

from __future__ import annotations

import importlib.util
import random
from types import SimpleNamespace

import pytest

from autoif.config import Config
from autoif.errors import MissingDependency
from autoif.llm import Job, Request, make_backend
from autoif.llm.vllm_backend import VLLMCall, chunked, completions, plan_calls, sampling_kwargs


def output(*samples):
    """A RequestOutput-shaped value: samples given as (index, text, token_ids, finish_reason)."""
    return SimpleNamespace(
        outputs=[SimpleNamespace(index=i, text=t, token_ids=ids, finish_reason=f) for i, t, ids, f in samples]
    )


def test_sampling_kwargs_carry_every_setting():
    request = Request.user("Hi", n=4, temperature=0.7, top_p=0.9, max_tokens=64, stop=["\n\n", "END"], seed=10)
    assert sampling_kwargs(request.sampling, 3, 1) == {
        "n": 3,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["\n\n", "END"],
        "seed": 11,
    }
    assert sampling_kwargs(Request.user("Hi").sampling, 1, 5)["seed"] is None


def test_only_missing_samples_are_asked_for_each_with_its_own_seed():
    seeded = Request.user("Hi", n=10, temperature=0.8, seed=100)
    # Samples 0, 2, 3 and 7 are cached: vLLM gets one request per run of consecutive missing ones.
    calls, errors = plan_calls([Job(seeded, [1, 4, 5, 6, 8, 9])], [[1, 2, 3]], max_model_len=2048)
    assert errors == []
    assert [(c.samples, c.params["n"], c.params["seed"]) for c in calls] == [
        ((1,), 1, 101),
        ((4, 5, 6), 3, 104),
        ((8, 9), 2, 108),
    ]
    # vLLM seeds child j of a request `seed + j`: every sample gets seed_for(its index), as in a fresh run.
    rng = random.Random(0)
    for _ in range(50):
        missing = sorted(rng.sample(range(10), rng.randint(1, 10)))
        calls, _ = plan_calls([Job(seeded, missing)], [[1]], 2048)
        assert sorted(s for c in calls for s in c.samples) == missing
        for call in calls:
            assert [call.params["seed"] + j for j in range(call.params["n"])] == [
                seeded.sampling.seed_for(s) for s in call.samples
            ]


def test_unseeded_requests_ask_for_all_missing_samples_at_once():
    calls, _ = plan_calls([Job(Request.user("Hi", n=8), [1, 5, 6])], [[1, 2]], 2048)
    assert [(c.samples, c.params["n"], c.params["seed"]) for c in calls] == [((1, 5, 6), 3, None)]


def test_prompts_longer_than_the_context_become_sample_errors():
    jobs = [Job(Request.user("long", n=2), [0, 1]), Job(Request.user("short"), [0])]
    calls, errors = plan_calls(jobs, [list(range(600)), [1, 2, 3]], max_model_len=512)
    assert [(c.job_index, c.prompt_token_ids) for c in calls] == [(1, (1, 2, 3))]
    assert [(j, s) for j, s, _ in errors] == [(0, 0), (0, 1)]
    assert "600 tokens" in errors[0][2] and "512-token context" in errors[0][2]


def test_chunks_bound_the_samples_of_one_generate_call():
    calls = [VLLMCall(j, tuple(range(n)), (1,), {}) for j, n in enumerate([3, 2, 4, 9, 1])]
    assert [[c.job_index for c in chunk] for chunk in chunked(calls, 5)] == [[0, 1], [2], [3], [4]]


def test_outputs_become_completions_in_sample_order():
    call = VLLMCall(0, (4, 5, 6), (1, 2), {"n": 3})
    got = completions(call, output((2, "c", [7], "length"), (0, "a", [5, 6, 2], "stop"), (1, "", [], "abort")))
    assert [(s, str(c), c.finish_reason, c.tokens, c.error) for s, c in got] == [
        (4, "a", "stop", 3, None),
        (5, "", None, None, "vLLM ended the sample with finish_reason='abort'"),
        (6, "c", "length", 1, None),
    ]
    with pytest.raises(RuntimeError, match="2 outputs for a request with n=3"):
        completions(call, output((0, "a", [1], "stop"), (1, "b", [1], "stop")))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_without_vllm_the_backend_is_a_one_line_hint():
    config = Config.model_validate({"llm": {"backend": "vllm", "cache": False}})
    with pytest.raises(MissingDependency, match=r"pip install 'autoif\[vllm\]'") as info:
        make_backend(config)
    assert "\n" not in str(info.value)
