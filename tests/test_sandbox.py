"""The sandbox on well-behaved functions: values, error codes, batching order, worker reuse, the
compile cache, the official release's functions, NLTK/langdetect inside functions, config."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from autoif.config import SandboxConfig
from autoif.errors import AutoifError
from autoif.nltk_data import PUNKT_FILES, ensure_punkt_tab
from autoif.sandbox import ERRORS, Outcome, Sandbox, pass_rate, pool
from autoif.sandbox.guard import RANDOM_SEED

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "autoif-official"

T, F = Outcome(True), Outcome(False)


def err(code: str) -> Outcome:
    return Outcome(None, code)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, timeout_s=2.0) as sb:
        yield sb


def test_values_grid_shape_and_isolation_report(sandbox):
    functions = [
        "def evaluate(response):\n    return len(response.split()) <= 3",
        "import re\n\ndef evaluate(response):\n    return re.search(r'\\d', response) is not None",
    ]
    grid = sandbox.check(functions, ["one two", "a b c d", "no 4 digits here"])
    assert grid == [[T, F, F], [F, F, T]]
    # This machine's kernel has both; the report is what tests of the kernel layer rely on.
    assert sandbox.isolation["seccomp"] is True
    assert sandbox.isolation["landlock_abi"] >= 1
    assert sandbox.isolation["rlimits"]["RLIMIT_AS"] == 1024 * 1024 * 1024


@pytest.mark.parametrize(
    "source, expected",
    [
        ("def evaluate(response)\n    return True", "compile"),
        ("def evaluate(response):\n    return True\nraise ValueError('top level fails')", "compile"),
        ("x = 1", "no_evaluate"),
        ("evaluate = 3", "no_evaluate"),
        ("import socket\ndef evaluate(response):\n    return True", "forbidden_import"),
        ("def evaluate(response):\n    import subprocess\n    return True", "forbidden_import"),
        (
            "def evaluate(response):\n    try:\n        import os\n    except ImportError:\n"
            "        return True\n    return False",
            "forbidden_import",
        ),
        ("def evaluate(response):\n    return 1", "not_bool"),
        ("def evaluate(response):\n    return 'True'", "not_bool"),
        ("def evaluate(response):\n    return None", "not_bool"),
        ("def evaluate(response):\n    return response[1000]", "exception"),
        ("def evaluate(response, other):\n    return True", "exception"),
    ],
)
def test_error_codes(sandbox, source, expected):
    assert expected in ERRORS
    assert sandbox.check([source], ["a", "b"]) == [[err(expected), err(expected)]]


def test_only_real_bools_are_values(sandbox):
    # bool subclasses and objects with __bool__ are not values; True/False from an expression are.
    functions = [
        "class B(int):\n    pass\ndef evaluate(r):\n    return B(1)",
        "def evaluate(r):\n    return r == 'x'",
        "def evaluate(r):\n    return not r",
    ]
    assert sandbox.check(functions, ["x"]) == [[err("not_bool")], [T], [F]]


def test_official_release_functions_match_plain_execution(sandbox):
    """Every function of the official samples on every response and test case, against the same
    source executed plainly in this process (these fixtures are trusted)."""
    grids = []
    for name in ("query_rft.jsonl", "dpo_query_w_funcs.jsonl", "back_trans.jsonl"):
        for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            inputs = list(row.get("gpt-answer", [])) + [case[0] for case in row.get("cases", [])]
            grids.append(([func for func, _ in row["eval_func"]], inputs))
    results = sandbox.check_many(grids)
    assert sum(len(fs) * len(rs) for fs, rs in grids) > 1000
    counts = {"value": 0, "not_bool": 0, "exception": 0}
    for (functions, responses), grid in zip(grids, results):
        for source, row in zip(functions, grid):
            namespace: dict = {}
            exec(source, namespace)
            for response, outcome in zip(responses, row):
                try:
                    value = namespace["evaluate"](response)
                except Exception:
                    assert outcome == err("exception")
                    counts["exception"] += 1
                    continue
                if value is True or value is False:
                    assert outcome == Outcome(value)
                    counts["value"] += 1
                else:
                    assert outcome == err("not_bool")
                    counts["not_bool"] += 1
    assert counts["value"] > 500 and counts["exception"] > 0
    # The release's prime-number checker returns the strings 'true'/'false': not a value.
    prime = json.loads((FIXTURES / "dpo_query_w_funcs.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert sandbox.check([prime["eval_func"][0][0]], ["2, 3, 5", "4, 6"]) == [[err("not_bool")] * 2]


def test_check_many_keeps_order_across_batches_and_workers(sandbox):
    # 400 grids of different shapes, about 6,000 checks: many batches over both workers.
    grids, expected = [], []
    for g in range(400):
        n_functions, n_responses = 1 + g % 4, 1 + g % 7
        functions = [f"def evaluate(response):\n    return response.endswith('-{g}-{i}')" for i in range(n_functions)]
        responses = [f"r{j}-{g}-{j % n_functions}" for j in range(n_responses)]
        grids.append((functions, responses))
        expected.append([[Outcome(j % n_functions == i) for j in range(n_responses)] for i in range(n_functions)])
    assert sandbox.check_many(grids) == expected
    assert sandbox.check_many([]) == []


def test_empty_grids(sandbox):
    assert sandbox.check([], ["a"]) == []
    assert sandbox.check(["def evaluate(r):\n    return True"], []) == [[]]


def test_bad_input_is_one_clear_error(sandbox):
    with pytest.raises(AutoifError, match=r"grid 0 functions\[1\] is int"):
        sandbox.check(["def evaluate(r): return True", 7], ["a"])
    with pytest.raises(AutoifError, match=r"grid 0 responses must be a list of strings"):
        sandbox.check(["def evaluate(r): return True"], "abc")
    with pytest.raises(AutoifError, match=r"grid 1 must be a \(functions, responses\) pair"):
        sandbox.check_many([([], []), ("x",)])
    for kwargs, what in [
        ({"workers": 0}, "workers"),
        ({"timeout_s": -1}, "timeout_s"),
        ({"memory_mb": 8}, "memory_mb"),
        ({"allowed_imports": ["os; rm"]}, "allowed_imports"),
    ]:
        with pytest.raises(AutoifError, match=what):
            Sandbox(**kwargs)


def test_workers_are_reused_and_every_check_starts_fresh(sandbox):
    pids = sandbox.worker_pids
    # The top level counts its executions, the function its calls, in the function's own globals:
    # every check sees one of each, as after a fresh definition (tests/test_sandbox_state.py has
    # the stateful functions in detail).
    counter = (
        "runs = [0]\nruns[0] += 1\ncalls = [0]\n"
        "def evaluate(response):\n    calls[0] += 1\n    return runs[0] == 1 and calls[0] == 1"
    )
    for _ in range(2):
        assert sandbox.check([counter], [str(i) for i in range(20)]) == [[T] * 20]
    assert sandbox.worker_pids == pids


def test_worker_function_cache_eviction(sandbox, monkeypatch):
    # With room for 4 functions per worker, 30 distinct functions force evictions that the
    # parent orders and the worker follows; a mismatch would crash the worker.
    monkeypatch.setattr(pool, "WORKER_FUNCTION_CACHE", 4)
    functions = [f"def evaluate(r):\n    return r == '{i}'" for i in range(30)]
    for _ in range(2):
        grids = [([f], [str(i), "x"]) for i, f in enumerate(functions)]
        assert sandbox.check_many(grids) == [[[T, F]] for _ in functions]


def test_nltk_and_langdetect_work_inside_functions(sandbox):
    functions = [
        "import nltk\ndef evaluate(response):\n    return len(nltk.sent_tokenize(response)) == 3",
        "from nltk.tokenize import word_tokenize\n"
        "def evaluate(response):\n    return len(word_tokenize(response)) > 10",
        "from langdetect import detect\ndef evaluate(response):\n    return detect(response) == 'en'",
    ]
    text = "Dr. Smith arrived at 5 p.m. yesterday. He was late. The meeting had already started."
    assert sandbox.check(functions, [text]) == [[T], [T], [T]]


def test_langdetect_gives_the_same_answer_every_time(sandbox, monkeypatch):
    # Unseeded, langdetect's probabilities for a short text change from one call to the next;
    # the workers seed it (as they seed each function's `random`), so an outcome does not.
    from langdetect import DetectorFactory, detect_langs

    monkeypatch.setattr(DetectorFactory, "seed", RANDOM_SEED)
    texts = ["Hallo ok", "si bueno", "ciao bella ok", "das ist gut"]
    expected = {text: str(detect_langs(text)) for text in texts}
    source = (
        f"from langdetect import detect_langs\nEXPECTED = {expected!r}\n"
        "def evaluate(response):\n    return str(detect_langs(response)) == EXPECTED[response]\n"
    )
    assert sandbox.check([source], texts * 5) == [[T] * 20]


def test_lazily_imported_standard_library_works_after_confinement(sandbox):
    # strptime imports _strptime and locale on first use, after the worker is confined.
    functions = [
        "import datetime\ndef evaluate(r):\n    return datetime.datetime.strptime(r, '%Y-%m-%d').year == 2024",
        "import statistics, textwrap, unicodedata\ndef evaluate(r):\n"
        "    return statistics.mean([1, 3]) == 2 and textwrap.shorten(r, 5) != '' and "
        "unicodedata.category('a') == 'Ll'",
    ]
    assert sandbox.check(functions, ["2024-02-29"]) == [[T], [T]]


def test_classes_dataclasses_and_annotations(sandbox):
    # String annotations make dataclasses look the class's module up in sys.modules; functions
    # are compiled without this test's (or the worker's) `from __future__ import annotations`.
    source = """from __future__ import annotations
import functools, re
from dataclasses import dataclass, field
from enum import Enum
from typing import List


class Kind(Enum):
    WORD = 1


@dataclass
class Words:
    items: List[str] = field(default_factory=list)
    kind: "Kind" = Kind.WORD

    def count(self) -> int:
        return len(self.items)


@functools.lru_cache(maxsize=None)
def limit(n: int) -> int:
    return n + 1


def evaluate(response: str) -> bool:
    return Words(re.findall(r"\\w+", response)).count() < limit(2) and Words().kind is Kind.WORD
"""
    plain = "def evaluate(response: str) -> bool:\n    return evaluate.__annotations__['response'] is str"
    assert sandbox.check([source, plain], ["two words", "now three words"]) == [[T, F], [T, T]]


def test_thread_safe(sandbox):
    source = "def evaluate(response):\n    return int(response) % 3 == 0"
    results, errors = {}, []

    def run(k):
        try:
            results[k] = sandbox.check([source], [str(k * 100 + j) for j in range(50)])
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k, grid in results.items():
        assert grid == [[Outcome((k * 100 + j) % 3 == 0) for j in range(50)]]


def test_from_config_and_allowlist():
    cfg = SandboxConfig(workers=1, timeout_s=0.5, memory_mb=512, allowed_imports=["re"])
    with Sandbox.from_config(cfg) as sb:
        assert sb.workers == 1 and sb.timeout_s == 0.5 and sb.memory_mb == 512
        grid = sb.check(
            [
                "import re\ndef evaluate(r):\n    return bool(re.match('a', r))",
                "import json\ndef evaluate(r):\n    return True",
            ],
            ["abc"],
        )
        assert grid == [[T], [err("forbidden_import")]]
        assert sb.isolation["rlimits"]["RLIMIT_AS"] == 512 * 1024 * 1024
    with pytest.raises(AutoifError, match="check on a closed Sandbox"):
        sb.check([], [])


def test_memory_limit_below_worker_needs_is_a_clear_error():
    with pytest.raises(AutoifError, match="sandbox.memory_mb=64 is too small"):
        Sandbox(workers=1, memory_mb=64, allowed_imports=["re"])


def test_outcome_and_pass_rate():
    assert T.passed and not F.passed and not err("timeout").passed
    with pytest.raises(AttributeError):
        T.value = False  # frozen
    assert pass_rate([]) == 0.0
    assert pass_rate([T, F, err("crash"), T]) == 0.5
    assert pass_rate([err("not_bool")]) == 0.0


def test_ensure_punkt_tab_writes_nltk_format_once(tmp_path, monkeypatch):
    import nltk.data
    from nltk.tokenize.punkt import PunktTokenizer

    data = ensure_punkt_tab(tmp_path / "nltk_data")
    model = data / "tokenizers" / "punkt_tab" / "english"
    assert sorted(p.name for p in model.iterdir()) == sorted(PUNKT_FILES)
    stamp = {p.name: p.stat().st_mtime_ns for p in model.iterdir()}
    assert ensure_punkt_tab(tmp_path / "nltk_data") == data
    assert {p.name: p.stat().st_mtime_ns for p in model.iterdir()} == stamp  # idempotent
    assert not list(model.parent.glob(".english-*"))  # no staging directory left behind
    # NLTK itself loads it (only from its data path, as in the workers with NLTK_DATA).
    monkeypatch.setattr(nltk.data, "path", [str(data)])
    tokenizer = PunktTokenizer("english")
    params = tokenizer._params
    assert "dr" in params.abbrev_types and "however" in params.sent_starters
    assert params.ortho_context["a"] > 0 and ("##number##", "international") in params.collocations
    assert tokenizer.tokenize("Dr. Who came at 5 p.m. today. He left.") == ["Dr. Who came at 5 p.m. today.", "He left."]


def test_missing_kernel_mechanisms_are_reported_not_silent(monkeypatch):
    from autoif.sandbox import isolation

    report = isolation.IsolationReport()
    monkeypatch.setattr(isolation, "landlock_abi", lambda: 0)
    isolation.apply_landlock(["/usr"], ["/tmp"], report)  # returns before restricting anything
    assert report.landlock_abi == 0 and "Landlock is not available" in report.warnings[0]
    isolation.apply_seccomp(report)  # no_new_privs was not set: refuses to proceed, says so
    assert report.seccomp is False and "seccomp needs no_new_privs" in report.warnings[1]
    monkeypatch.setattr(isolation.platform, "machine", lambda: "riscv64")
    isolation.apply_seccomp(report)
    assert "no seccomp filter for architecture riscv64" in report.warnings[2]
    for arch in ("x86_64", "aarch64"):
        program = isolation.build_filter(arch, 1234)
        assert len(program) % 8 == 0 and len(program) // 8 > len(isolation.DENIED)


def test_worker_warnings_are_logged_by_the_parent(caplog):
    with (
        caplog.at_level("WARNING", logger="autoif.sandbox"),
        Sandbox(workers=1, allowed_imports=["re", "no_such_module_here"]) as sb,
    ):
        assert sb.check(["import no_such_module_here\ndef evaluate(r):\n    return True"], ["x"]) == [[err("compile")]]
    assert any("'no_such_module_here' cannot be imported" in r.getMessage() for r in caplog.records)
