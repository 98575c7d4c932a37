import pytest
import yaml

from autoif.config import (
    CROSSVAL_PRESETS,
    SCALES,
    Config,
    ConfigError,
    config_from_dict,
    dump_default_yaml,
    load_config,
)


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_dumped_config_loads_back_unchanged(scale, tmp_path):
    config = load_config(None, [f"scale={scale}"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_default_yaml(config))
    assert load_config(path) == config


def test_dump_has_a_comment_for_every_field():
    text = dump_default_yaml()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith("#") and i > 0:
            assert lines[i - 1].lstrip().startswith("#"), f"no comment above: {line}"


def test_default_is_demo_scale_and_explicit_keys_win():
    assert Config().scale == "demo"
    assert Config().augment.k == SCALES["demo"]["augment"]["k"]
    c = load_config(None, ["scale=paper", "augment.k=3"])
    assert c.augment.k == 3 and c.queries.k == SCALES["paper"]["queries"]["k"]


@pytest.mark.parametrize(
    "override,message",
    [
        (["llm.bogus=1"], "config error: unknown key 'llm.bogus'"),
        (["nosuchsection.x=1"], "config error: unknown key 'nosuchsection'"),
        (
            ["llm.backend=foo"],
            "config error: llm.backend: Input should be 'local', 'openai', 'vllm' or 'anthropic' (got 'foo')",
        ),
        (
            ["crossval.min_cases=0"],
            "config error: crossval.min_cases: Input should be greater than or equal to 1 (got 0)",
        ),
        (["llm.max_concurrency=many"], "config error: llm.max_concurrency: Input should be a valid integer"),
        (["export.chosen_min_pass_rate=0.0"], "config error: export: rejected_max_pass_rate (0.0) must be below"),
        (["noequals"], "config error: --set needs key=value, got 'noequals'"),
        (["llm..model=x"], "config error: bad key in --set: 'llm..model'"),
        (["llm.model.sub=x"], "config error: 'llm.model.sub': 'model' is not a section"),
    ],
)
def test_bad_values_give_one_line_naming_the_key(override, message):
    tree = {"llm": {"model": "m"}} if "model.sub" in override[0] else None
    with pytest.raises(ConfigError) as err:
        if tree:
            from autoif.config import _set_dotted

            _set_dotted(tree, override[0].split("=")[0], "x")
        else:
            load_config(None, override)
    text = str(err.value)
    assert text.startswith(message)
    assert "\n" not in text


def test_set_values_are_yaml_scalars():
    c = load_config(
        None,
        [
            "llm.cache=false",
            "sandbox.timeout_s=0.5",
            "llm.model=7",
            "sandbox.allowed_imports=[re, json]",
            "llm.base_url=http://127.0.0.1:8000/v1",
        ],
    )
    assert c.llm.cache is False and c.sandbox.timeout_s == 0.5 and c.llm.model == "7"
    assert c.sandbox.allowed_imports == ["re", "json"] and c.llm.base_url == "http://127.0.0.1:8000/v1"


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("llm: [\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line 2"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listy)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == Config()


def test_crossval_presets_and_overrides():
    assert load_config().crossval.resolved() == CROSSVAL_PRESETS["paper"]
    official = load_config(None, ["crossval.preset=official"]).crossval.resolved()
    assert official == {
        "min_functions": 3,
        "min_cases": 10,
        "function_accuracy": 0.8,
        "function_accuracy_strict": False,
        "case_rule": "any",
    }
    tuned = load_config(None, ["crossval.preset=official", "crossval.min_cases=5"]).crossval.resolved()
    assert tuned["min_cases"] == 5 and tuned["case_rule"] == "any"


def test_yaml_file_sections(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump({"llm": {"backend": "openai", "base_url": "http://x/v1"}, "verify": {"preset": "official"}})
    )
    c = load_config(path, ["llm.max_retries=2"])
    assert c.llm.backend == "openai" and c.llm.max_retries == 2 and c.verify.threshold() == 0.0
    assert config_from_dict({}) == Config()


def test_on_off_switches_follow_the_supervision_model():
    from autoif.config import load_config

    embedded = load_config(None, [])
    assert embedded.seeds.library_enabled(embedded.llm) and not embedded.score.active(embedded.llm)
    endpoint = load_config(None, ["llm.backend=openai", "llm.model=Qwen/Qwen2-72B-Instruct"])
    assert not endpoint.seeds.library_enabled(endpoint.llm) and endpoint.score.active(endpoint.llm)
    # A bare YAML on/off (a boolean to YAML 1.1) is taken as the switch it names.
    forced = load_config(None, ["score.enabled=on", "seeds.builtin_library=off"])
    assert forced.score.active(forced.llm) and not forced.seeds.library_enabled(forced.llm)


def test_a_config_written_before_stall_s_loads_its_timeout_as_the_stall_limit(tmp_path):
    """Run directories of before llm.stall_s hold llm.timeout_s in their config.yaml; they still load."""
    path = tmp_path / "old.yaml"
    path.write_text("llm:\n  backend: openai\n  timeout_s: 120\n")
    assert load_config(path).llm.stall_s == 120
    assert load_config(path, ["llm.stall_s=30"]).llm.stall_s == 30
