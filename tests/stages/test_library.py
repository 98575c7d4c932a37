"""The built-in verified library: its shape, determinism, registry, and that every entry survives our
own cross-validation in the real sandbox with all its functions and cases."""

import re
from collections import Counter

import pytest

from autoif.benchmark_prompts import NgramIndex, installed_prompts
from autoif.config import CROSSVAL_PRESETS, load_config
from autoif.devsplit import SPLITS
from autoif.errors import AutoifError
from autoif.stages.base import Context
from autoif.stages.crossval import collect, cross_validate
from autoif.stages.library import CONSTRAINTS, UnknownConstraint, build_library
from autoif.stages.library.base import Code, Constraint, Registry, bind
from autoif.stages.seeds import SeedsStage
from autoif.stages.verifiers import library_generation

# 0: the verifiers prompt's few-shot examples; 42: the default config seed.
SEEDS = (0, 42)


def test_at_least_forty_namespaced_constraints():
    assert len(CONSTRAINTS) >= 40
    assert all(re.fullmatch(r"[a-z]+:[a-z_]+", cid) for cid in CONSTRAINTS)
    namespaces = Counter(cid.split(":")[0] for cid in CONSTRAINTS)
    assert {"length", "structure", "format", "start", "end", "punctuation", "case", "keywords", "language"} <= set(
        namespaces
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_every_entry_has_functions_and_both_kinds_of_cases(seed):
    entries = build_library(seed)
    assert [e.constraint for e in entries] == list(CONSTRAINTS)
    for e in entries:
        assert e.id == f"{e.constraint}-0"
        assert e.functions, e.id
        for source in e.functions:
            compile(source, e.id, "exec")
            assert source.startswith("def evaluate(response):"), e.id
        outputs = [c["output"] for c in e.cases]
        assert outputs.count(True) >= 2 and outputs.count(False) >= 2, e.id
        assert outputs[:2] == [True, False], e.id  # a few-shot prefix shows both kinds
        assert all(isinstance(c["input"], str) and c["input"].strip() for c in e.cases), e.id
        assert len({c["input"] for c in e.cases}) == len(e.cases), e.id
        assert e.instruction[0].isupper() and not re.search(r"[{}]", e.instruction), e.instruction


def test_parameters_are_bound_as_literals():
    e = next(e for e in build_library(3) if e.constraint == "keywords:frequency")
    assert e.params["word"] in e.instruction
    assert repr(e.params["word"]) in e.functions[0] and "WORD" not in e.functions[0]
    assert f" {e.params['op']} {e.params['n']}" in e.functions[0]
    assert (
        bind("def evaluate(response):\n    return len(response) OP MAX_LEN", {"op": Code("<="), "max_len": 10})
        == "def evaluate(response):\n    return len(response) <= 10"
    )


def test_deterministic_for_a_seed():
    assert build_library(7, per_constraint=2) == build_library(7, per_constraint=2)
    one, other = build_library(7), build_library(8)
    assert [e.id for e in one] == [e.id for e in other]
    assert sum(a.params != b.params or a.cases != b.cases for a, b in zip(one, other)) > len(one) // 2


def test_instances_are_distinct_parameter_and_phrasing_pairs():
    entries = build_library(5, per_constraint=12)
    by_constraint: dict[str, list] = {}
    for e in entries:
        by_constraint.setdefault(e.constraint, []).append(e)
    # Every constraint, those without parameters included, has 12 training instances (issue 29).
    assert {cid: len(v) for cid, v in by_constraint.items()} == dict.fromkeys(CONSTRAINTS, 12)
    for cid, instances in by_constraint.items():
        assert [e.id for e in instances] == [f"{cid}-{i}" for i in range(12)]
        instructions = [e.instruction for e in instances]
        assert len(set(instructions)) == 12, cid  # a distinct (parameters, phrasing) pair each
        if type(CONSTRAINTS[cid]).sample is Constraint.sample:
            assert all(e.params == {} for e in instances), cid  # only the phrasing varies
    # An instance does not depend on how many others were asked for.
    assert build_library(5, per_constraint=1) == [e for e in entries if e.id.endswith("-0")]


def test_instructions_share_no_13_gram_with_benchmark_prompts():
    """Our phrasings are our own: no instruction, on either side of the dev hold-out, shares a word
    13-gram with an IFEval or IFBench prompt (or is one, when shorter), the contamination check's rule."""
    prompts = [p for p in installed_prompts() if p.benchmark in ("IFEval", "IFBench")]
    if not prompts:
        pytest.skip("IFEval and IFBench data not installed (make installs the benchmark data packages)")
    index = NgramIndex(prompts)
    instructions = {e.instruction for split in SPLITS for e in build_library(42, 30, split=split)}
    assert [text for text in sorted(instructions) if index.match(text)] == []


def test_registry_rejects_duplicates_and_suggests_close_ids():
    registry = Registry()

    @registry.register
    class Shout(Constraint):
        id = "case:shout"

    with pytest.raises(ValueError, match="duplicate constraint id 'case:shout'"):
        registry.register(type("Again", (Constraint,), {"id": "case:shout"}))
    with pytest.raises(UnknownConstraint, match=r"did you mean 'length:max_words'"):
        CONSTRAINTS["length:max_word"]
    with pytest.raises(KeyError):  # a Mapping's missing key, and a user-facing AutoifError
        CONSTRAINTS["nothing:like_it_at_all"]
    assert issubclass(UnknownConstraint, AutoifError)
    assert "length:max_word" not in CONSTRAINTS and CONSTRAINTS.get("length:max_word") is None


def test_seeds_stage_adds_the_library_per_config():
    config = load_config(None, ["seeds.builtin_library='on'", "seeds.library_per_constraint=2", "seed=11"])
    records = list(SeedsStage().run([], Context(config)))
    builtin = [r for r in records if r.source == "builtin"]
    expected = build_library(11, per_constraint=2)
    assert [r.id for r in builtin] == [f"lib-{e.id}" for e in expected]
    assert builtin[0].functions == expected[0].functions and builtin[0].cases == expected[0].cases
    off = load_config(None, ["seeds.builtin_library='off'"])
    assert all(r.source == "seed" for r in SeedsStage().run([], Context(off)))


def test_whole_library_survives_cross_validation_in_the_sandbox():
    """Every entry, as crossval sees it (the verifiers stage's JSON form, our parser, the sandbox,
    the paper's keep rules), keeps all its functions and all its cases: every function agrees with
    every case. Run with the sandbox's default limits, as a pipeline run would."""
    from autoif.sandbox import Sandbox

    entries = [e for seed in SEEDS for e in build_library(seed, per_constraint=2)]
    candidates = [collect(library_generation(e.functions, e.cases)) for e in entries]
    for e, cand in zip(entries, candidates):
        assert not cand.parse_failures, e.id
        assert cand.functions == e.functions, e.id
        assert cand.cases == [(c["input"], c["output"]) for c in e.cases], e.id

    sandbox_config = load_config().sandbox
    with Sandbox(
        workers=sandbox_config.workers, timeout_s=sandbox_config.timeout_s, memory_mb=sandbox_config.memory_mb
    ) as sandbox:
        grids = sandbox.check_many([(c.functions, [inp for inp, _ in c.cases]) for c in candidates])

    disagreements = [
        (e.id, i, j, outcome.value, outcome.error)
        for e, cand, grid in zip(entries, candidates, grids)
        for i, row in enumerate(grid)
        for j, outcome in enumerate(row)
        if outcome.error is not None or outcome.value is not cand.cases[j][1]
    ]
    assert disagreements == []
    for e, cand, grid in zip(entries, candidates, grids):
        selection = cross_validate(cand.functions, cand.cases, grid, CROSSVAL_PRESETS["paper"])
        assert selection.reason is None, e.id
        assert selection.functions == [(f, 1.0) for f in e.functions], e.id
        assert selection.cases == [(c["input"], c["output"], 1.0) for c in e.cases], e.id
