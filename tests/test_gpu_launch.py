"""What a first multi-GPU run depends on, checked without a GPU: the launch commands recipes build, as
accelerate itself reads them; the shipped accelerate configs; the extras' versions against what TRL
supports; the GPUs of a vLLM engine and of the online-DPO sampler against the model's size.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
from pathlib import Path

import pytest

from autoif.config import ConfigError, load_config
from autoif.errors import AutoifError
from autoif.llm.sizing import GPU, ModelSize, fewest_gpus, model_size
from autoif.recipe import LaunchSpec, Plan, load_recipe

accelerate_launch = pytest.importorskip("accelerate.commands.launch")
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402
from packaging.specifiers import SpecifierSet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def _extra(name: str) -> list[str]:
    match = re.search(rf"^{re.escape(name)} = \[(.*)\]", PYPROJECT, re.M)
    assert match, f"no extra '{name}' in pyproject.toml"
    return re.findall(r'"([^"]+)"', match[1])


def _accelerate_args(command: str):
    """`accelerate launch ...` as accelerate reads it: its parser, the config file's defaults, and the
    environment its launcher (DeepSpeed's or torchrun's) would give each process."""
    args = accelerate_launch.launch_command_parser().parse_args(shlex.split(command)[2:])
    args, defaults, _ = accelerate_launch._validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, env


def _meeting_point(args) -> str | None:
    """Where accelerate tells machines 1.. to find machine 0 (None: one machine)."""
    if getattr(args, "master_addr", None):
        return f"{args.master_addr}:{args.master_port}"
    return getattr(args, "rdzv_endpoint", None)


LAUNCHED = [(path, step) for path in RECIPES for step in load_recipe(path).train if step.launch]


@pytest.mark.parametrize(("path", "step"), LAUNCHED, ids=[f"{p.stem}:{s.name}" for p, s in LAUNCHED])
def test_shipped_launch_commands_reach_machine_zero(path, step, tmp_path, monkeypatch):
    """Each launched step of a shipped recipe, as accelerate reads its command: on several machines
    they meet at machine 0's address (without it accelerate went on with the address 'None')."""
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(path)
    command = Plan(recipe, path, recipe.name).step(f"train.{step.name}").command
    args, _ = _accelerate_args(command)
    assert args.num_processes == step.launch.num_processes and args.num_machines == step.launch.num_machines
    if step.launch.num_machines > 1:
        assert _meeting_point(args) == f"{step.launch.main_process_ip}:{step.launch.main_process_port}"
        assert int(args.node_rank) == step.launch.machine_rank and args.nnodes == str(step.launch.num_machines)
    else:
        assert "--main_process_ip" not in command


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_machines": 2}, "num_machines > 1 needs main_process_ip"),
        ({"num_machines": 2, "main_process_ip": "10.0.0.1", "machine_rank": 2}, "machine_rank 2 is not below"),
        ({"num_machines": 3, "main_process_ip": "10.0.0.1"}, "num_processes 8 is not a multiple of num_machines 3"),
    ],
)
def test_a_launch_spec_that_cannot_meet_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        LaunchSpec(accelerate_config="zero3", **fields)


def test_the_fsdp_config_saves_whole_weights(tmp_path):
    """FSDP with SHARDED_STATE_DICT made `Trainer.save_model` write no weights: `final/` had only the
    tokenizer. What accelerate hands the processes says FULL_STATE_DICT."""
    config = ROOT / "src" / "autoif" / "train" / "accelerate" / "fsdp.yaml"
    args, env = _accelerate_args(f"accelerate launch --config_file {config} --num_processes 8 -m autoif.cli")
    assert args.use_fsdp and env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"


def test_deepspeed_is_in_the_gpu_training_extra():
    """`accelerate launch` with the ZeRO-3 config refuses to start without DeepSpeed."""
    assert any(Requirement(r).name == "deepspeed" for r in _extra("train-gpu"))
    assert "autoif[train]" in _extra("train-gpu")
    from accelerate.utils import is_deepspeed_available

    if not is_deepspeed_available():
        pytest.skip("deepspeed is not installed here (pip install 'autoif[train-gpu]')")
    args, env = _accelerate_args(
        f"accelerate launch --config_file {ROOT / 'src/autoif/train/accelerate/zero3.yaml'} --num_processes 8 -m x"
    )
    assert args.use_deepspeed and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"


def test_the_vllm_extra_is_inside_trls_supported_range():
    """TRL refuses vLLM versions outside its range at import; ours must not resolve to one (`vllm>=0.10`
    resolved to 0.33, TRL 1.16 supports 0.22-0.31)."""
    pytest.importorskip("trl")
    trl_vllm = next(
        Requirement(r)
        for r in importlib.metadata.requires("trl") or []
        if Requirement(r).name == "vllm" and 'extra == "vllm"' in r
    )
    ours = SpecifierSet(str(Requirement(_extra("vllm")[0]).specifier))
    minors = [f"0.{minor}.{patch}" for minor in range(5, 45) for patch in (0, 1, 2)]
    allowed = [v for v in minors if v in ours]
    assert allowed and all(v in trl_vllm.specifier for v in allowed), (str(ours), str(trl_vllm.specifier))


def test_gpus_per_engine_must_equal_the_tensor_parallel_size():
    with pytest.raises(ConfigError, match="gpus_per_engine=1 but llm.tensor_parallel_size=4"):
        load_config(None, ["llm.backend=vllm", "llm.tensor_parallel_size=4", "executor.gpus_per_engine=1"])
    config = load_config(None, ["llm.backend=vllm", "llm.tensor_parallel_size=4", "executor.gpus_per_engine=4"])
    assert config.executor.gpus_per_engine == 4


def test_models_of_an_actor_given_no_gpu_run_on_the_cpu():
    """Ray no longer hides a node's GPUs from an actor that asked for none: its models (the local LLM,
    backtranslate's NLI model, both `device=auto`) must not pick `cuda:0`, which may be an engine's."""
    from autoif.executors.ray import on_cpu

    config = load_config(None, [])
    assert config.llm.device == "auto" and on_cpu(config).llm.device == "cpu"
    assert config.llm.device == "auto"  # the driver's own config unchanged
    chosen = load_config(None, ["llm.device=cuda:1"])
    assert on_cpu(chosen).llm.device == "cuda:1"  # a device the user named is kept


def test_grpos_vllm_sampler_gets_a_context_no_longer_than_max_length(tmp_path):
    """Without a context length, TRL's colocated vLLM would reserve KV cache for the model's whole
    context (32k and more) inside its share of each training GPU."""
    pytest.importorskip("trl")
    from autoif.train.grpo import GRPOSettings, grpo_args

    settings = GRPOSettings(use_vllm=True, max_length=2048, output_dir=str(tmp_path), bf16="off")
    args = grpo_args(settings)
    assert args.use_vllm and args.vllm_mode == "colocate" and args.vllm_max_model_length == 2048


# Meta-Llama-3-70B-Instruct's config.json (the fields that size it).
LLAMA3_70B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_attention_heads": 64,
    "num_hidden_layers": 80,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "max_position_embeddings": 8192,
}
H100 = 80 * 1024**3


def test_the_sampler_is_spread_over_enough_gpus_for_its_weights(tmp_path):
    """70.6B parameters, 141 GB in bf16: on 80 GB GPUs with 0.9 for vLLM and half of that for the
    weights, four GPUs; one is refused with the size that fits."""
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_70B))
    size = model_size(str(tmp_path), "bfloat16")
    assert size.weight_bytes == pytest.approx(2 * 70.55e9, rel=0.01) and size.attention_heads == 64
    eight = GPU(H100, 0.9, 8)
    assert fewest_gpus(size, eight) == 4
    assert fewest_gpus(size, eight, asked=8) == 8
    with pytest.raises(AutoifError, match=r"^vllm: 141 GB of weights over 1 GPU\(s\) of 86 GB .*use 4 or more"):
        fewest_gpus(size, eight, asked=1)
    with pytest.raises(AutoifError, match="tensor parallel size 16 is more than this machine's 8"):
        fewest_gpus(size, eight, asked=16)
    with pytest.raises(AutoifError, match="do not fit on the 2 GPU"):
        fewest_gpus(size, GPU(H100, 0.9, 2))
    assert fewest_gpus(ModelSize(15_000_000_000, 28), eight) == 1  # a 7B model: one GPU each


def test_the_online_dpo_sampler_gets_its_tensor_parallel_size(tmp_path):
    """What online DPO hands the vllm sampler: the size asked for (checked against the weights where
    GPUs can be measured), vLLM's context no longer than DPO keeps, its own memory share."""
    pytest.importorskip("torch")
    from autoif.train.online_dpo import OnlineDPOSettings, sampler_tensor_parallel

    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_70B))
    settings = OnlineDPOSettings(sampler="vllm", sampling_tensor_parallel_size=4)
    assert sampler_tensor_parallel(str(tmp_path), settings) == 4
