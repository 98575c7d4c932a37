"""The one name -> "module:attribute" registry helper, and the one seeded-RNG helper."""

import subprocess
import sys

import pytest

from autoif.errors import AutoifError
from autoif.llm import BACKENDS, BackendError
from autoif.registry import Registry
from autoif.seeding import seeded_rng


def test_unknown_name_suggests_the_closest_or_lists_all():
    reg = Registry("widget", {"alpha": "json:dumps", "beta": "json:loads"})
    with pytest.raises(AutoifError, match=r"^unknown widget 'alpah' \(did you mean 'alpha'\?\)$"):
        reg.load("alpah")
    with pytest.raises(AutoifError, match=r"^unknown widget 'zzz' \(known: alpha, beta\)$"):
        reg.check("zzz")
    with pytest.raises(BackendError, match="unknown LLM backend 'vlm' \\(did you mean 'vllm'\\?\\)"):
        BACKENDS.load("vlm")


def test_load_imports_only_the_chosen_module():
    import json

    reg = Registry("widget", {"dumps": "json:dumps"})
    assert list(reg) == ["dumps"] and "dumps" in reg and reg.load("dumps") is json.dumps
    # Registries of every kind are read without importing what they name (no torch, no Ray).
    code = (
        "import sys; from autoif.stages import STAGES; from autoif.executors import EXECUTORS; "
        "from autoif.llm import BACKENDS; from autoif.train import TRAINERS; list(STAGES); "
        "print(sorted(m for m in ('autoif.stages.augment', 'autoif.executors.ray', 'autoif.llm.local', "
        "'autoif.train.sft', 'torch', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_malformed_entry_is_refused_at_definition():
    with pytest.raises(ValueError, match="expected 'module:attribute'"):
        Registry("widget", {"x": "json.dumps"})


def test_seeded_rng_depends_on_the_whole_key_only():
    draw = [seeded_rng(7, "queries", "i-1").random() for _ in range(2)]
    assert draw[0] == draw[1]
    assert seeded_rng(7, "queries", "i-2").random() != draw[0]
    assert seeded_rng(8, "queries", "i-1").random() != draw[0]
