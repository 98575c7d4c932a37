"""The four trainers run real TRL steps on a tiny model built from a config (SmolLM2's tokenizer).

Each test checks what a user relies on: a finite loss, weights that moved, a checkpoint that
reloads, and for online DPO two sample-verify-train iterations logged. Online DPO and GRPO apply
the export's truncation rule (a sample cut off at the token limit is never chosen and earns no
reward), checked at the function level with the real sandbox and in the trainers' logs.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")

from autoif.errors import AutoifError  # noqa: E402
from autoif.train import trainer  # noqa: E402
from autoif.train.end_of_turn import end_of_turn_token  # noqa: E402
from autoif.train.sft import sft_trainer  # noqa: E402
from tiny_models import smollm2_dir, tiny_causal_lm, with_long_eos, write_training_data  # noqa: E402

# Functions as a run carries them. On a tiny random model's text each passes by chance, so the
# sampled responses spread over pass rates 0, 0.5 and 1 and pairs can be built.
FUNCTIONS = [
    "def evaluate(response):\n    return len(response) % 2 == 0\n",
    "def evaluate(response):\n    return len(response) % 3 == 0\n",
]


def _msg(role, content):
    return {"role": role, "content": content}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A base model's tokenizer: its EOS (`<|endoftext|>`) is not the chat template's end of turn."""
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny-base") / "model", eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def tiny_that_ends(tiny, tmp_path_factory) -> Path:
    return with_long_eos(tiny, tmp_path_factory.mktemp("tiny-that-ends") / "model")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_training_data(tmp_path_factory.mktemp("run"), FUNCTIONS)


def _settings(method: str, tiny: Path, run_dir: Path, out: Path, **extra):
    settings_class, train = trainer(method)
    common = {
        "model": str(tiny),
        "data": str(run_dir),
        "output_dir": str(out),
        "max_steps": 2,
        "global_batch_size": 2,
        "per_device_batch_size": 2,
        "max_length": 64,
        "logging_steps": 1,
        "save_steps": 2,
        "learning_rate": 1e-3,
        "warmup_steps": 0,
        "bf16": "off",  # fp32 as before; `auto` would time bf16 on this CPU (test_bf16_choice_...)
    }
    return settings_class(**{**common, **extra}), train


def _losses(checkpoint_dir: Path) -> list[float]:
    state = json.loads((checkpoint_dir / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def _weights_moved(before: Path, after: Path) -> bool:
    a = transformers.AutoModelForCausalLM.from_pretrained(before)
    b = transformers.AutoModelForCausalLM.from_pretrained(after)
    return any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def _stops_on(model_dir: Path, token: str) -> bool:
    """Whether generation from the model saved at `model_dir` ends at `token`."""
    eos = transformers.GenerationConfig.from_pretrained(model_dir).eos_token_id
    token_id = transformers.AutoTokenizer.from_pretrained(model_dir).convert_tokens_to_ids(token)
    return token_id in ([eos] if isinstance(eos, int) else eos or [])


def test_end_of_turn_token_is_read_from_the_chat_template():
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_dir())
    assert end_of_turn_token(tokenizer) == "<|im_end|>"
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}"
    assert end_of_turn_token(tokenizer) is None  # a turn ended by plain text: nothing to stop on
    tokenizer.chat_template = None
    assert end_of_turn_token(tokenizer) is None


def test_sft_trains_saves_and_resumes(tiny_base, run_dir, tmp_path):
    """From a base model whose EOS (`<|endoftext|>`) is not the template's end of turn: every answer's
    labels end with the end of turn, and the trained model stops on it."""
    assert not _stops_on(tiny_base, "<|im_end|>")
    settings, train = _settings("sft", tiny_base, run_dir, tmp_path / "sft")
    trainer = sft_trainer(settings)  # as `train` builds it
    tokenizer = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    for i, labels in enumerate(batch["labels"].tolist()):  # the rows in file order: answer 0, 1, ...
        assert tokenizer.decode([t for t in labels if t != -100]) == f"answer {i}<|im_end|>\n"
    final = train(settings)
    losses = _losses(tmp_path / "sft" / "checkpoint-2")
    assert losses and all(math.isfinite(x) for x in losses)
    assert _weights_moved(tiny_base, final)
    assert _stops_on(final, "<|im_end|>") and _stops_on(final, "<|endoftext|>")
    assert transformers.AutoTokenizer.from_pretrained(final).eos_token == "<|im_end|>"
    # Resume: two more steps continue from checkpoint-2 rather than starting over.
    settings, train = _settings("sft", tiny_base, run_dir, tmp_path / "sft", max_steps=4, resume="latest")
    train(settings)
    state = json.loads((tmp_path / "sft" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4


def test_dpo_trains_from_a_checkpoint(tiny_base, run_dir, tmp_path):
    settings, train = _settings("dpo", tiny_base, run_dir, tmp_path / "dpo")
    assert settings.beta == 0.3 and settings.loss_type == "sigmoid"  # the paper's defaults
    final = train(settings)
    assert all(math.isfinite(x) for x in _losses(tmp_path / "dpo" / "checkpoint-2"))
    assert _weights_moved(tiny_base, final)
    assert _stops_on(final, "<|im_end|>")  # a base model's policy stops where its answers end


def _params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("reference", ["sft", "previous"])
def test_online_dpo_runs_two_iterations(tiny_that_ends, run_dir, tmp_path, monkeypatch, reference):
    """Two sample-verify-train iterations, logged, resumable; and the weights DPO measured the
    policy against, taken from each iteration's real trainer: the SFT (starting) model at both
    iterations by default (the paper's Eq. 2), the iteration-1 policy at iteration 2 with
    `reference: previous`. TRL's logs agree: at the first step of iteration 2 the implicit rewards
    log(policy / reference) are zero only when the reference is the policy itself."""
    from autoif.train import online_dpo

    references = []
    real_run_dpo = online_dpo.run_dpo

    def recording_run_dpo(*args, **kwargs):  # the real pass; keeps the reference it trained against
        trainer, tokenizer = real_run_dpo(*args, **kwargs)
        references.append(_params(trainer.ref_model))
        return trainer, tokenizer

    monkeypatch.setattr(online_dpo, "run_dpo", recording_run_dpo)
    out = tmp_path / "online"
    settings, train = _settings(
        "online-dpo",
        tiny_that_ends,
        run_dir,
        out,
        max_steps=-1,
        iterations=2,
        samples_per_prompt=6,
        max_new_tokens=12,
        temperature=1.0,
        final_eval=True,
        reference=reference,
        learning_rate=1e-4,  # moves the policy without breaking it: iteration 2 still has pairs
    )
    assert settings.num_train_epochs == 2  # the paper's epochs per iteration
    final = train(settings)
    log = [json.loads(line) for line in (out / "online_dpo_log.jsonl").read_text().splitlines()]
    trained = [e for e in log if not e.get("evaluation_only")]
    assert [e["iteration"] for e in trained] == [0, 1]
    for entry in trained:
        assert entry["pairs"] > 0 and 0.0 <= entry["mean_pass_rate"] <= 1.0
        assert math.isfinite(entry["train_loss"])
        assert 0 < entry["truncated"] < entry["samples"] == 6 * entry["prompts"]  # both kinds, counted
    assert log[-1]["evaluation_only"] and final == out / "iter-2"
    # The second iteration sampled from the policy the first one trained.
    assert trained[1]["policy"] == str(out / "iter-1")

    sft = _params(transformers.AutoModelForCausalLM.from_pretrained(tiny_that_ends))
    iter1 = _params(transformers.AutoModelForCausalLM.from_pretrained(out / "iter-1"))
    assert not _same(sft, iter1)  # iteration 1 trained: the two candidates differ
    assert len(references) == 2
    assert _same(references[0], sft)  # iteration 1 starts from the SFT model: the same in both modes
    expected, other = (sft, iter1) if reference == "sft" else (iter1, sft)
    assert _same(references[1], expected) and not _same(references[1], other)
    assert [e["reference"] for e in trained] == [
        str(tiny_that_ends),
        str(out / "iter-1" if reference == "previous" else tiny_that_ends),
    ]
    state = next((out / "iter-2-checkpoints").glob("checkpoint-*/trainer_state.json"))
    first_step = next(h for h in json.loads(state.read_text())["log_history"] if "rewards/chosen" in h)
    rewards = [first_step["rewards/chosen"], first_step["rewards/rejected"]]
    # Zero up to float rounding: the reference's log-probs are precomputed in batches of their own.
    assert all(abs(r) < 1e-5 for r in rewards) == (reference == "previous"), rewards

    # Rerunning resumes: nothing left to do, the same final policy.
    assert train(settings) == final
    assert len(references) == 2


def test_online_dpo_never_chooses_a_truncated_sample():
    """One iteration's samples, scored in the real sandbox: 'sixsix' (6 characters) passes both
    functions, 'seventh' (7) neither; each comes once whole and once cut off at the token limit."""
    from autoif.llm import Completion
    from autoif.sandbox import Sandbox
    from autoif.train.online_dpo import OnlineDPOSettings, score_and_pair

    prompts = [{"prompt": [_msg("user", "Say hi.")], "functions": FUNCTIONS}]
    samples = [
        [
            Completion("sixsix", "stop", 3),
            Completion("sixsi+", "length", 12),
            Completion("seventh", "stop", 3),
            Completion("sevent+", "length", 12),
        ]
    ]
    with Sandbox(workers=1) as sandbox:
        rows, numbers = score_and_pair(sandbox, prompts, samples, OnlineDPOSettings(), 0)
        asked, _ = score_and_pair(sandbox, prompts, samples, OnlineDPOSettings(truncated_rejected=True), 0)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [("sixsix", "seventh")]
    assert numbers == {
        "mean_pass_rate": 0.5,
        "samples": 4,
        "truncated": 2,
        "quality_dropped": 0,
        "pairs": 1,
        "prompts_without_pair": 0,
        "prompts": 1,
    }
    assert {r["chosen"][0]["content"] for r in asked} == {"sixsix"}
    assert {r["rejected"][0]["content"] for r in asked} == {"seventh", "sevent+"}


@pytest.mark.parametrize("dtype", ["bfloat16", "auto"])
def test_online_dpo_samples_in_the_sampling_dtype(tiny_that_ends, monkeypatch, dtype):
    """The sampler loads the policy in `sampling_dtype` (bfloat16 samples ~1.8x faster on this CPU;
    training keeps float32) and still answers every prompt K times."""
    import autoif.llm.local as local
    from autoif.train.online_dpo import OnlineDPOSettings, sample

    loaded = []
    real_load = local._Engine.load.__func__

    def recording_load(cls, model, cache_dir, device, dtype, *rest):  # the real load; keeps the dtype asked for
        engine = real_load(cls, model, cache_dir, device, dtype, *rest)
        loaded.append((dtype, next(engine.model.parameters()).dtype))
        return engine

    monkeypatch.setattr(local._Engine, "load", classmethod(recording_load))
    settings = OnlineDPOSettings(
        samples_per_prompt=3, max_new_tokens=8, sampler="local", sampling_batch_size=4, sampling_dtype=dtype
    )
    prompts = [{"prompt": [_msg("user", "Say hi.")], "functions": FUNCTIONS}] * 2
    answers = sample(str(tiny_that_ends), prompts, settings, 0)
    assert [len(a) for a in answers] == [3, 3]
    ((asked, held),) = loaded
    # "auto" is decided before loading: bf16 only where measured faster on this CPU.
    assert asked == dtype if dtype != "auto" else asked in ("float32", "bfloat16")
    assert held == getattr(torch, asked)


def test_grpo_reward_is_zero_for_a_truncated_completion():
    """Three passing completions as TRL hands them over: one cut off at max_completion_length (4
    ids, none of them a stop id), one that ended on EOS at that length, one that ended early."""
    from autoif.sandbox import Sandbox
    from autoif.train.rewards import make_verifier_reward

    logged = []
    with Sandbox(workers=1) as sandbox:
        reward = make_verifier_reward(sandbox, stop_ids={2}, max_completion_length=4)
        rewards = reward(
            prompts=[[_msg("user", "Say hi.")]] * 3,
            completions=[[_msg("assistant", "sixsix")]] * 3,
            functions=[FUNCTIONS] * 3,
            completion_ids=[[11, 12, 13, 14], [11, 12, 13, 2], [11, 2]],
            log_metric=lambda name, value: logged.append((name, value)),
        )
    assert rewards == [0.0, 1.0, 1.0]
    assert logged == [("verifier_reward/truncated", pytest.approx(1 / 3))]


def _quality_fixture(expected):
    path = Path(__file__).parent / "fixtures" / "quality" / "smollm2.jsonl"
    cases = [json.loads(line) for line in path.read_text().splitlines()]
    return next(c for c in cases if c["expected"] == expected)


def test_degenerate_samples_earn_nothing_in_grpo_and_pair_with_nothing_in_online_dpo():
    """Real SmolLM2 answers that pass a function accepting every text: a fluent one and one that
    repeats a formula line a dozen times. The quality gate of `autoif run` applies to training
    samples too: the repetitive one gets reward 0 and is neither a chosen nor a rejected."""
    from autoif.llm import Completion
    from autoif.quality import QualityConfig
    from autoif.sandbox import Sandbox
    from autoif.train.online_dpo import OnlineDPOSettings, score_and_pair
    from autoif.train.rewards import make_verifier_reward

    good, bad = _quality_fixture(None), _quality_fixture("top_4gram_char_frac")
    accept = ["def evaluate(response):\n    return True\n"]
    logged = []
    with Sandbox(workers=1) as sandbox:
        reward = make_verifier_reward(sandbox, quality=QualityConfig())
        rewards = reward(
            prompts=[[_msg("user", bad["prompt"])], [_msg("user", good["prompt"])]],
            completions=[[_msg("assistant", bad["response"])], [_msg("assistant", good["response"])]],
            functions=[accept, accept],
            log_metric=lambda name, value: logged.append((name, value)),
        )
        assert rewards == [0.0, 1.0] and logged == [("verifier_reward/quality_dropped", 0.5)]
        without_gate = make_verifier_reward(sandbox)(
            prompts=[[_msg("user", bad["prompt"])]], completions=[bad["response"]], functions=[accept]
        )
        assert without_gate == [1.0]

        prompts = [{"prompt": [_msg("user", bad["prompt"])], "functions": FUNCTIONS}]
        fail = "Hello"  # 5 characters: passes neither function, a rejected
        samples = [
            [Completion(bad["response"], "stop", 9), Completion("sixsix", "stop", 3), Completion(fail, "stop", 9)]
        ]
        rows, numbers = score_and_pair(sandbox, prompts, samples, OnlineDPOSettings(), 0)
        ungated, _ = score_and_pair(sandbox, prompts, samples, OnlineDPOSettings(quality_gate=False), 0)
    assert numbers["quality_dropped"] == 1
    texts = {m["content"] for r in rows for m in r["chosen"] + r["rejected"]}
    assert bad["response"] not in texts and {"sixsix", fail} <= texts
    # 627 characters: it passes one function of two, so without the gate it is a chosen.
    assert bad["response"] in {m["content"] for r in ungated for m in r["chosen"]}


def test_grpo_trains_with_the_verifier_reward(tiny_base, run_dir, tmp_path):
    settings, train = _settings(
        "grpo",
        tiny_base,
        run_dir,
        tmp_path / "grpo",
        max_steps=1,
        num_generations=2,
        max_completion_length=8,
        save_steps=1,
    )
    final = train(settings)
    state = json.loads((tmp_path / "grpo" / "checkpoint-1" / "trainer_state.json").read_text())
    rewards = [h for h in state["log_history"] if any(k.startswith("rewards/") or k == "reward" for k in h)]
    assert rewards, state["log_history"]
    # The random model ends no completion within 8 tokens: every one is cut off, logged, and earns 0.
    assert all(h["verifier_reward/truncated"] == 1.0 and h["reward"] == 0.0 for h in rewards)
    assert all(math.isfinite(x) for x in _losses(tmp_path / "grpo" / "checkpoint-1"))
    assert (final / "config.json").is_file()
    assert _stops_on(final, "<|im_end|>")  # from a base model: samples end where the template ends a turn


def test_max_records_is_a_seeded_random_sample(tmp_path):
    """What every trainer reads with `max_records`: a random sample fixed by the seed, in file
    order, nested across sizes (a data-scaling ablation's points share their records)."""
    from autoif.train.common import TrainSettings, read_records

    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(100)))

    def draw(n, seed=42):
        return [r["n"] for r in read_records(TrainSettings(data=str(path), max_records=n, seed=seed), ("n",))]

    ten = draw(10)
    assert ten == draw(10)  # the same seed, the same sample
    assert len(set(ten)) == 10 and ten == sorted(ten) and ten != list(range(10))  # not the first ten
    assert draw(10, seed=7) != ten
    assert set(ten) < set(draw(30))
    assert draw(100) == draw(500) == list(range(100))


def test_missing_field_is_one_line(tiny, tmp_path):
    bad = tmp_path / "dpo.jsonl"
    bad.write_text(json.dumps({"prompt": [_msg("user", "hi")], "rejected": [_msg("assistant", "x")]}) + "\n")
    settings, train = _settings("dpo", tiny, bad, tmp_path / "out")
    with pytest.raises(AutoifError, match="lacks field 'chosen'"):
        train(settings)
    # Through the CLI: one line on stderr, exit code 2.
    proc = subprocess.run(
        [sys.executable, "-m", "autoif.cli", "train", "online-dpo", "--model", str(tiny), "--data", str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "lacks field 'functions'" in proc.stderr


@pytest.mark.parametrize("name", ["zero3.yaml", "fsdp.yaml"])
def test_shipped_accelerate_configs_load(name):
    """The multi-GPU configs the README points at are valid `accelerate launch` configs."""
    from importlib import resources

    from accelerate.commands.config.config_args import ClusterConfig

    path = resources.files("autoif.train").joinpath("accelerate", name)
    config = ClusterConfig.from_yaml_file(str(path))
    assert config.mixed_precision == "bf16"
    assert config.distributed_type.value in ("DEEPSPEED", "FSDP")


@pytest.mark.parametrize("name", ["SFTConfig", "DPOConfig", "GRPOConfig"])
def test_activation_checkpointing_follows_our_setting(name, tmp_path):
    """TRL's configs turn gradient checkpointing on by default (a third more compute per step); ours is
    off unless asked, and the TRL config built from our settings must say the same."""
    import trl

    from autoif.train.common import TrainSettings, trl_args

    for wanted in (False, True):
        args = trl_args(TrainSettings(gradient_checkpointing=wanted), getattr(trl, name), tmp_path)
        assert args.activation_checkpointing is wanted and args.gradient_checkpointing is wanted


def _launch_two_processes(trainer_name: str, model: Path, data: Path, out: Path, *sets: str) -> None:
    """`autoif train` under `accelerate launch --multi_gpu --num_processes 2`, as a user runs it on 2 GPUs;
    here the processes find no GPU and meet over gloo (accelerate's `--cpu` would start one process
    without MPI)."""
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    argv += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "autoif.cli"]
    argv += ["train", trainer_name, "--model", str(model), "--data", str(data), "--output", str(out)]
    for item in ("max_length=64", "per_device_batch_size=1", "global_batch_size=2", "logging_steps=1", *sets):
        argv += ["--set", item]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_online_dpo_under_a_two_process_launch_samples_and_logs_once(tiny_that_ends, run_dir, tmp_path):
    """Two processes: each samples and scores half of the prompts, both train on all the pairs (the
    same steps), the main one logs, and a second launch resumes at the next iteration. (Each process
    once ran the whole loop: two log entries per iteration, pairs of its own.)"""
    out = tmp_path / "online"
    common = ("samples_per_prompt=4", "max_new_tokens=8", "temperature=1.0", "max_steps=1", "final_eval=false")
    _launch_two_processes("online-dpo", tiny_that_ends, run_dir, out, "iterations=1", *common)
    log = [json.loads(line) for line in (out / "online_dpo_log.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in log] == [0] and log[0]["steps"] == [1, 1]
    assert log[0]["samples"] == 4 * log[0]["prompts"] == 16  # each process sampled half, all counted once
    assert (out / "iter-1" / "config.json").is_file() and (out / "iter-1" / "tokenizer.json").is_file()

    _launch_two_processes("online-dpo", tiny_that_ends, run_dir, out, "iterations=2", *common)
    log = [json.loads(line) for line in (out / "online_dpo_log.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in log] == [0, 1] and log[1]["steps"] == [1, 1]
    assert log[1]["policy"] == str(out / "iter-1")


@pytest.mark.slow
def test_grpo_under_a_two_process_launch(tiny, run_dir, tmp_path):
    out = tmp_path / "grpo"
    _launch_two_processes(
        "grpo", tiny, run_dir, out, "max_steps=1", "num_generations=2", "max_completion_length=8", "save_steps=1"
    )
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 1
    assert transformers.AutoModelForCausalLM.from_pretrained(out / "final") is not None


class _Loaded(Exception):
    """Raised by the spy at the first model load: what came before it is all the test needs."""


@pytest.mark.parametrize("name", ["sft", "dpo", "grpo", "online-dpo"])
def test_trainers_build_their_trl_config_before_loading_the_model(name, tiny, run_dir, tmp_path, monkeypatch):
    """transformers learns that ZeRO-3 is on when the TRL config is built, and only a model loaded after
    that is loaded as each process's shard: loaded before, every process holds all of it (~1 TB a node
    for 70B). Online DPO trains through `run_dpo`, checked on its own (its sampler loads first)."""
    from autoif.train.dpo import run_dpo

    events = []
    real_post_init = transformers.TrainingArguments.__post_init__

    def config_built(self):
        events.append("config")
        real_post_init(self)

    def model_loaded(*args, **kwargs):
        events.append("load")
        raise _Loaded

    monkeypatch.setattr(transformers.TrainingArguments, "__post_init__", config_built)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_loaded)
    settings, train = _settings(
        name, tiny, run_dir, tmp_path / name, **({"num_generations": 2} if name == "grpo" else {})
    )
    with pytest.raises(_Loaded):
        if name == "online-dpo":
            run_dpo(settings, [], tmp_path / name, model=str(tiny), reference=str(tiny))
        else:
            train(settings)
    assert events == ["config", "load"]


# ------------------------------------------------------------------ speed settings, same arithmetic
def _varied_run(out: Path) -> Path:
    """A run directory whose answers differ in length (1 to 24 words), so grouping by length reorders."""
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    dpo, sft = [], []
    for i in range(8):
        prompt = [_msg("user", f"Question {i}: name some words.")]
        chosen = " ".join(words[j % 8] for j in range(1 + 3 * i))
        rejected = " ".join(words[(j + i) % 8].upper() for j in range(24 - 3 * i))
        dpo.append(
            {
                "prompt": prompt,
                "chosen": [_msg("assistant", chosen)],
                "rejected": [_msg("assistant", rejected)],
                "level": "query",
                "functions": FUNCTIONS,
            }
        )
        sft.append({"messages": [*prompt, _msg("assistant", chosen)], "functions": FUNCTIONS, "pass_rate": 1.0})
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("dpo.jsonl", dpo), ("sft.jsonl", sft)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def test_step_grouped_sampler_keeps_each_steps_rows_and_sorts_them():
    from autoif.train.common import StepGroupedSampler

    base = [5, 0, 3, 7, 1, 6, 2, 4, 8]
    lengths = [10, 80, 30, 50, 20, 90, 40, 60, 70]
    order = list(StepGroupedSampler(base, lengths, step_rows=4))
    steps = [order[i : i + 4] for i in range(0, len(order), 4)]
    assert [sorted(s) for s in steps] == [sorted(base[i : i + 4]) for i in range(0, len(base), 4)]
    assert all([lengths[i] for i in s] == sorted((lengths[i] for i in s), reverse=True) for s in steps)


@pytest.mark.parametrize("method", ["dpo", "sft"])
def test_precompute_and_grouping_give_todays_losses(method, tiny, tmp_path):
    """Reference log-probs computed once, steps grouped by length and the trimmed CPU forward (together,
    and the forward alone): the same per-step losses as TRL's defaults (a reference pass per step,
    random order, TRL's forward) to 4 significant digits, on the same steps."""
    run = _varied_run(tmp_path / "run")
    today = {"group_by_length": False, "cpu_forward": False}
    today |= {"precompute_ref_log_probs": False} if method == "dpo" else {}
    runs = {}
    for label, extra in (("today", today), ("fast", {}), ("trimmed", {**today, "cpu_forward": True})):
        settings, train = _settings(
            method,
            tiny,
            run,
            tmp_path / label,
            global_batch_size=4,
            per_device_batch_size=2,
            max_steps=2,
            save_steps=100,
            **extra,
        )
        train(settings)
        runs[label] = _losses(tmp_path / label)
    assert len(runs["today"]) == 2 and all(math.isfinite(x) for x in runs["today"])
    for label in ("fast", "trimmed"):
        assert [f"{x:.4g}" for x in runs[label]] == [f"{x:.4g}" for x in runs["today"]], label


def test_max_rejected_tokens_bounds_the_rejected_answers(tiny, tmp_path):
    from autoif.train.dpo import dpo_rows, run_dpo

    run = _varied_run(tmp_path / "run")
    settings, _ = _settings("dpo", tiny, run, tmp_path / "dpo", max_rejected_tokens=5)
    rows = dpo_rows([json.loads(line) for line in (run / "dpo.jsonl").read_text().splitlines()])
    trainer, _ = run_dpo(settings, rows, tmp_path / "dpo")
    rejected = [len(ids) for ids in trainer.train_dataset["rejected_ids"]]
    chosen = [len(ids) for ids in trainer.train_dataset["chosen_ids"]]
    assert max(rejected) == 5 and max(chosen) > 5  # only rejected answers are bounded


def test_bf16_choice_is_measured_once_per_machine(tmp_path):
    from autoif.precision import CACHE_FILE, cpu_bf16_autocast_faster

    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128)
    first = cpu_bf16_autocast_faster(config, tmp_path)
    cached = json.loads((tmp_path / CACHE_FILE).read_text())
    (entry,) = cached.values()
    assert entry["fp32_s"] > 0 and entry["bf16_s"] > 0 and first == (entry["speedup"] >= 1.1)
    assert cpu_bf16_autocast_faster(config, tmp_path) == first
    assert json.loads((tmp_path / CACHE_FILE).read_text()) == cached  # read back, not measured again


def test_bf16_on_and_off_are_read_as_typed_where_yaml_makes_them_booleans(tmp_path):
    from autoif.config import load_config

    settings_class, _ = trainer("dpo")
    for typed, meant in (("on", "on"), ("off", "off"), ("auto", "auto"), ('"on"', "on")):
        settings = load_config(None, [f"bf16={typed}", "model=m", "data=d"], model=settings_class)
        assert settings.bf16 == meant
    recipe_style = tmp_path / "train.yaml"
    recipe_style.write_text("model: m\ndata: d\nbf16: off\n")
    assert load_config(str(recipe_style), [], model=settings_class).bf16 == "off"
    with pytest.raises(AutoifError, match="bf16"):
        load_config(None, ["bf16=maybe", "model=m", "data=d"], model=settings_class)
