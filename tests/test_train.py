"""The four trainers run real TRL steps on a tiny model built from a config (SmolLM2's tokenizer).

Each test checks what a user relies on: a finite loss, weights that moved, a checkpoint that
reloads, and for online DPO two sample-verify-train iterations logged.
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
from tiny_models import tiny_causal_lm  # noqa: E402

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
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    questions = ["Name a fruit.", "Say hello.", "Count to three.", "Give a colour."]
    sft = [
        {
            "messages": [_msg("user", f"{q} Answer in lowercase."), _msg("assistant", f"answer {i}")],
            "instruction_id": "lib-x",
            "functions": FUNCTIONS,
            "pass_rate": 1.0,
        }
        for i, q in enumerate(questions)
    ]
    dpo = [
        {
            "prompt": [_msg("user", f"{q} Answer in lowercase.")],
            "chosen": [_msg("assistant", "fine")],
            "rejected": [_msg("assistant", "NOT FINE AT ALL")],
            "level": "query",
            "functions": FUNCTIONS,
        }
        for q in questions
    ]
    (out / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft))
    (out / "dpo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dpo))
    return out


def _settings(method: str, tiny: Path, run_dir: Path, out: Path, **extra):
    settings_class, train = trainer(method)
    common = dict(
        model=str(tiny),
        data=str(run_dir),
        output_dir=str(out),
        max_steps=2,
        global_batch_size=2,
        per_device_batch_size=2,
        max_length=64,
        logging_steps=1,
        save_steps=2,
        learning_rate=1e-3,
        warmup_steps=0,
    )
    return settings_class(**{**common, **extra}), train


def _losses(checkpoint_dir: Path) -> list[float]:
    state = json.loads((checkpoint_dir / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def _weights_moved(before: Path, after: Path) -> bool:
    a = transformers.AutoModelForCausalLM.from_pretrained(before)
    b = transformers.AutoModelForCausalLM.from_pretrained(after)
    return any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_sft_trains_saves_and_resumes(tiny, run_dir, tmp_path):
    settings, train = _settings("sft", tiny, run_dir, tmp_path / "sft")
    final = train(settings)
    losses = _losses(tmp_path / "sft" / "checkpoint-2")
    assert losses and all(math.isfinite(x) for x in losses)
    assert _weights_moved(tiny, final)
    # Resume: two more steps continue from checkpoint-2 rather than starting over.
    settings, train = _settings("sft", tiny, run_dir, tmp_path / "sft", max_steps=4, resume="latest")
    train(settings)
    state = json.loads((tmp_path / "sft" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4


def test_dpo_trains_from_a_checkpoint(tiny, run_dir, tmp_path):
    settings, train = _settings("dpo", tiny, run_dir, tmp_path / "dpo")
    assert settings.beta == 0.3 and settings.loss_type == "sigmoid"  # the paper's defaults
    final = train(settings)
    assert all(math.isfinite(x) for x in _losses(tmp_path / "dpo" / "checkpoint-2"))
    assert _weights_moved(tiny, final)


def test_online_dpo_runs_two_iterations(tiny, run_dir, tmp_path):
    out = tmp_path / "online"
    settings, train = _settings(
        "online-dpo",
        tiny,
        run_dir,
        out,
        max_steps=-1,
        iterations=2,
        samples_per_prompt=4,
        max_new_tokens=12,
        temperature=1.0,
        final_eval=True,
    )
    final = train(settings)
    log = [json.loads(line) for line in (out / "online_dpo_log.jsonl").read_text().splitlines()]
    trained = [e for e in log if not e.get("evaluation_only")]
    assert [e["iteration"] for e in trained] == [0, 1]
    for entry in trained:
        assert entry["pairs"] > 0 and 0.0 <= entry["mean_pass_rate"] <= 1.0
        assert math.isfinite(entry["train_loss"])
    assert log[-1]["evaluation_only"] and final == out / "iter-2"
    assert transformers.AutoModelForCausalLM.from_pretrained(final) is not None
    # The second iteration sampled from the policy the first one trained.
    assert trained[1]["policy"] == str(out / "iter-1")
    # Rerunning resumes: nothing left to do, the same final policy.
    assert train(settings) == final


def test_grpo_trains_with_the_verifier_reward(tiny, run_dir, tmp_path):
    settings, train = _settings(
        "grpo", tiny, run_dir, tmp_path / "grpo", max_steps=1, num_generations=2, max_completion_length=8, save_steps=1
    )
    final = train(settings)
    state = json.loads((tmp_path / "grpo" / "checkpoint-1" / "trainer_state.json").read_text())
    rewards = [h for h in state["log_history"] if any(k.startswith("rewards/") or k == "reward" for k in h)]
    assert rewards, state["log_history"]
    assert all(math.isfinite(x) for x in _losses(tmp_path / "grpo" / "checkpoint-1"))
    assert (final / "config.json").is_file()


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
