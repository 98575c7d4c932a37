"""A check's outcome is a function of (function source, response, limits) only.

Functions that carry state in every way an LLM-written checker plausibly does (a global list, a
mutable default argument, a `global` counter, a closure, a class attribute, an `lru_cache` with
side effects), that rebind their own names or code (through a frame, through `gc`), or that change
state outside their namespace (an attribute of an imported module, the decimal context, csv's
field size limit, the calendar's first weekday, a file in the scratch directory, the random
generator) give, for each response, the outcome of a fresh definition: whatever the order of the
responses, the batch they are in, the number of workers, the checks that ran before, and the
executor (local or Ray) that ran the verify stage.

Each stateful function is written as "<true on a fresh definition> and <a predicate of the
response>", so the expected grid is the predicates' grid; that this is what a fresh sandbox gives
for each check alone is itself checked (`test_expected_grid_is_each_check_alone_in_a_fresh_sandbox`).
"""

from __future__ import annotations

import ast
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from autoif.sandbox import Outcome, Sandbox
from autoif.sandbox.guard import RANDOM_SEED, defines_only

# gc and types for the function that rewrites code through the garbage collector; the rest are
# what the stateful functions import. A small allowlist keeps worker start-up short.
ALLOWED = ("re", "string", "random", "decimal", "csv", "calendar", "functools", "gc", "types")
FIRST_RANDOM = random.Random(RANDOM_SEED).random()

# name -> (source, the fresh-definition outcome as a predicate of the response)
STATEFUL: dict[str, tuple[str, object]] = {
    "global_list": (
        "calls = []\n"
        "def evaluate(response):\n"
        "    calls.append(response)\n"
        "    return len(calls) == 1 and len(response) % 2 == 0\n",
        lambda r: len(r) % 2 == 0,
    ),
    "mutable_default": (
        "def evaluate(response, seen=[]):\n    seen.append(response)\n    return len(seen) == 1 and 'a' in response\n",
        lambda r: "a" in r,
    ),
    "global_counter": (
        "count = 0\n"
        "def evaluate(response):\n"
        "    global count\n"
        "    count += 1\n"
        "    return count == 1 and response[-1] in '02468'\n",
        lambda r: r[-1] in "02468",
    ),
    "closure_counter": (
        "def counter():\n"
        "    n = 0\n"
        "    def tick():\n"
        "        nonlocal n\n"
        "        n += 1\n"
        "        return n\n"
        "    return tick\n"
        "tick = counter()\n"
        "def evaluate(response):\n"
        "    return tick() == 1 and response[0] in 'aeiou'\n",
        lambda r: r[0] in "aeiou",
    ),
    "class_counter": (
        "class Calls:\n"
        "    n = 0\n"
        "def evaluate(response):\n"
        "    Calls.n += 1\n"
        "    return Calls.n == 1 and len(response.split()) == 2\n",
        lambda r: len(r.split()) == 2,
    ),
    "lru_cache_side_effect": (
        "import functools\n"
        "seen = []\n"
        "@functools.lru_cache(maxsize=None)\n"
        "def remember(response):\n"
        "    seen.append(response)\n"
        "    return len(seen)\n"
        "def evaluate(response):\n"
        "    return remember(response) == 1 and response.isascii()\n",
        lambda r: r.isascii(),
    ),
    "rebinds_helper_through_frame": (
        "def helper(response):\n"
        "    return '1' in response\n"
        "def evaluate(response):\n"
        "    try:\n"
        "        raise RuntimeError\n"
        "    except RuntimeError as exc:\n"
        "        namespace = exc.__traceback__.tb_frame.f_globals\n"
        "    verdict = namespace['helper'](response)\n"
        "    namespace['helper'] = lambda r: False\n"
        "    return verdict\n",
        lambda r: "1" in r,
    ),
    "replaces_own_code_through_frame": (
        "def evaluate(response):\n"
        "    try:\n"
        "        raise RuntimeError\n"
        "    except RuntimeError as exc:\n"
        "        me = exc.__traceback__.tb_frame.f_globals['evaluate']\n"
        "    me.__code__ = (lambda response: False).__code__\n"
        "    return 'e' in response\n",
        lambda r: "e" in r,
    ),
    "replaces_code_through_gc": (
        # Every function named evaluate that the collector tracks, this one's and others' alike.
        "import gc, types\n"
        "def evaluate(response):\n"
        "    for obj in gc.get_objects():\n"
        "        if isinstance(obj, types.FunctionType) and obj.__name__ == 'evaluate':\n"
        "            obj.__code__ = (lambda response, *rest: False).__code__\n"
        "    return 'r' in response\n",
        lambda r: "r" in r,
    ),
    "update_wrapper_on_helper": (
        # A library call that changes the helper in place: the namespace is not kept.
        "import functools\n"
        "def helper(response):\n"
        "    return response\n"
        "def evaluate(response):\n"
        "    first = helper.__name__ == 'helper'\n"
        "    functools.update_wrapper(helper, str.upper)\n"
        "    return first and 'p' in response\n",
        lambda r: "p" in r,
    ),
    "module_attribute": (
        "import string\n"
        "def evaluate(response):\n"
        "    first = not hasattr(string, 'seen')\n"
        "    string.seen = True\n"
        "    return first and response[0] in string.ascii_lowercase\n",
        lambda r: r[0] in "abcdefghijklmnopqrstuvwxyz",
    ),
    "decimal_traps": (
        # `traps[...] = ` changes the process-wide context in place (no attribute write).
        "import decimal\n"
        "def evaluate(response):\n"
        "    traps = decimal.getcontext().traps\n"
        "    first = not traps[decimal.Inexact]\n"
        "    traps[decimal.Inexact] = True\n"
        "    return first and len(response) > 6\n",
        lambda r: len(r) > 6,
    ),
    "csv_limit": (
        "import csv\n"
        "def evaluate(response):\n"
        "    return csv.field_size_limit(len(response)) == 131072 and 'o' in response\n",
        lambda r: "o" in r,
    ),
    "calendar_weekday": (
        "import calendar\n"
        "def evaluate(response):\n"
        "    first = calendar.firstweekday() == 0\n"
        "    calendar.setfirstweekday(calendar.SUNDAY)\n"
        "    return first and ' ' in response\n",
        lambda r: " " in r,
    ),
    "imports_inside_evaluate": (
        # Keeps its namespace, then imports a module with process-wide settings on its first call.
        "def evaluate(response):\n"
        "    import calendar\n"
        "    first = calendar.firstweekday() == 0\n"
        "    calendar.setfirstweekday(calendar.SATURDAY)\n"
        "    return first and len(response) % 3 == 0\n",
        lambda r: len(r) % 3 == 0,
    ),
    "scratch_file": (
        "def evaluate(response):\n"
        "    with open('calls.txt', 'a') as log:\n"
        "        log.write('x')\n"
        "    with open('calls.txt') as log:\n"
        "        return log.read() == 'x' and len(response) < 9\n",
        lambda r: len(r) < 9,
    ),
    "random_draw": (
        "import random\ndef evaluate(response):\n    return random.random() + len(response) / 100 > 0.9\n",
        lambda r: FIRST_RANDOM + len(r) / 100 > 0.9,
    ),
    "stateless_reused": (
        "import re\ndef evaluate(response):\n    return re.search(r'[13579]', response) is not None\n",
        lambda r: any(c in "13579" for c in r),
    ),
}
NAMES = list(STATEFUL)
SOURCES = [STATEFUL[name][0] for name in NAMES]
RESPONSES = [
    "apple 10",
    "echo 3",
    "banana split 4",
    "ice 17",
    "orange 22",
    "rock 5",
    "umbrella 8",
    "zebra 1",
    "oak 2 tree",
    "élan 6",
    "tree",
    "go 11",
]


def expected(names=NAMES, responses=RESPONSES) -> list[list[Outcome]]:
    return [[Outcome(bool(STATEFUL[name][1](r))) for r in responses] for name in names]


def shuffled(items: list, seed: int) -> list:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, timeout_s=2.0, allowed_imports=ALLOWED) as sb:
        yield sb


def test_expected_grid_is_each_check_alone_in_a_fresh_sandbox():
    """The reference: a check alone in a new sandbox, for every function on a response where it
    should pass and one where it should fail (each row of the expected grid has both values)."""
    want = expected()
    for name, source, row in zip(NAMES, SOURCES, want):
        for value in (True, False):
            j = row.index(Outcome(value))
            with Sandbox(workers=1, timeout_s=2.0, allowed_imports=ALLOWED) as sb:
                assert sb.check([source], [RESPONSES[j]]) == [[Outcome(value)]], (name, RESPONSES[j])


def test_every_check_starts_fresh_in_one_grid_and_again(sandbox):
    assert sandbox.check(SOURCES, RESPONSES) == expected()
    assert sandbox.check(SOURCES, RESPONSES) == expected()  # the same workers, after those checks


def test_order_of_responses_does_not_matter(sandbox):
    for seed in range(4):
        order = shuffled(RESPONSES, seed)
        assert sandbox.check(SOURCES, order) == expected(responses=order)


def test_order_of_functions_and_earlier_checks_do_not_matter(sandbox):
    for seed in range(3):
        names = shuffled(NAMES, seed)
        grid = sandbox.check([STATEFUL[n][0] for n in names], RESPONSES)
        assert grid == expected(names=names)
    # One function at a time, each right after all the others ran on the same workers.
    for name in NAMES:
        assert sandbox.check([STATEFUL[name][0]], RESPONSES) == expected(names=[name])


def test_batches_do_not_matter(sandbox):
    # One response per call, then runs of 5, then check_many: the same grid.
    one_by_one = [[sandbox.check([s], [r])[0][0] for r in RESPONSES] for s in SOURCES]
    assert one_by_one == expected()
    runs = [RESPONSES[i : i + 5] for i in range(0, len(RESPONSES), 5)]
    per_run = [sandbox.check(SOURCES, run) for run in runs]
    assert [sum((grid[i] for grid in per_run), []) for i in range(len(SOURCES))] == expected()
    grids = sandbox.check_many([(SOURCES, run) for run in runs] + [(SOURCES[::-1], RESPONSES)])
    assert grids == [expected(responses=run) for run in runs] + [expected(names=NAMES[::-1])]


# The functions whose code could reach shared state (introspection, attribute writes): each of
# their checks runs in a checker process of its own (sandbox/checker.py), a fork per check.
IN_CHECKERS = [
    "class_counter",
    "rebinds_helper_through_frame",
    "replaces_own_code_through_frame",
    "replaces_code_through_gc",
    "module_attribute",
]


def test_many_responses_over_many_batches_and_worker_counts():
    """About 5,000 checks in shuffled grids: cut into many batches, over 1 and 3 workers. The
    functions run in checker processes, whose checks no batching can affect and which cost a
    fork each, get one grid of 24 responses."""
    responses = [f"{RESPONSES[i % len(RESPONSES)]} {i}" for i in range(360)]
    in_worker = [name for name in NAMES if name not in IN_CHECKERS]
    layout = [(in_worker, shuffled(responses, seed)[: 60 + 60 * seed]) for seed in range(5)]
    layout.append((IN_CHECKERS, shuffled(responses, 5)[:24]))
    grids = [([STATEFUL[name][0] for name in names], rs) for names, rs in layout]
    want = [expected(names=names, responses=rs) for names, rs in layout]
    for workers in (1, 3):
        with Sandbox(workers=workers, timeout_s=2.0, allowed_imports=ALLOWED) as sb:
            assert sb.check_many(grids) == want
            assert sb.check_many(grids[::-1]) == want[::-1]


def test_a_function_that_rewrites_other_functions_through_gc_leaves_them_alone(sandbox):
    # The kept namespaces of functions that cannot change themselves are reachable through gc
    # by a function with the full check; the worker forgets them after such a function ran.
    gc_writer = STATEFUL["replaces_code_through_gc"][0]
    plain = STATEFUL["stateless_reused"][0]
    names = ["stateless_reused", "replaces_code_through_gc", "stateless_reused"]
    assert sandbox.check([plain, gc_writer, plain], RESPONSES) == expected(names=names)


@pytest.mark.parametrize(
    "source, keeps_namespace",
    [
        (STATEFUL["stateless_reused"][0], True),
        (STATEFUL["random_draw"][0], True),
        (
            "import re\nLIMIT = -3\nWORDS = ('a', 'b')\ndef evaluate(response, limit=LIMIT, *, flags=re.I) -> bool:\n"
            "    return len(response) > limit\n",
            True,
        ),
        (
            '"""Doc."""\nfrom typing import List\ndef words(r: str) -> List[str]:\n    return r.split()\n'
            "def evaluate(response: str) -> bool:\n    return len(words(response)) < 3\n",
            True,
        ),
        (STATEFUL["global_list"][0], False),  # a list at the top level
        (STATEFUL["mutable_default"][0], False),  # a default that is not a literal
        (STATEFUL["global_counter"][0], False),  # rebinds a global
        (STATEFUL["closure_counter"][0], False),  # calls at the top level
        (STATEFUL["lru_cache_side_effect"][0], False),  # a decorator
        (STATEFUL["update_wrapper_on_helper"][0], False),  # changes a function object in place
        ("class C:\n    pass\ndef evaluate(response):\n    return True\n", False),
        ("if __name__ == '__main__':\n    pass\ndef evaluate(response):\n    return True\n", False),
    ],
)
def test_which_namespaces_are_kept(source, keeps_namespace):
    tree = ast.parse(source)
    assert defines_only(tree, compile(tree, "<evaluate>", "exec", dont_inherit=True)) is keeps_namespace


def test_official_release_functions_keep_their_namespace():
    """The speed of the common case: every function of the official samples is run with its
    first namespace (none needs a fresh top level per check)."""
    fixtures = Path(__file__).resolve().parent / "fixtures" / "autoif-official"
    sources = set()
    for name in ("query_rft.jsonl", "dpo_query_w_funcs.jsonl", "back_trans.jsonl"):
        for line in (fixtures / name).read_text(encoding="utf-8").splitlines():
            sources.update(func for func, _ in json.loads(line)["eval_func"])
    assert len(sources) > 20
    for source in sources:
        tree = ast.parse(source)
        assert defines_only(tree, compile(tree, "<evaluate>", "exec", dont_inherit=True)), source


# ------------------------------------------------------------------ verify: local and Ray executors
# The functions of the verify test: each instruction gets three of the stateful functions, and
# several prompts share an instruction, so every function runs on many responses in many shards.
VERIFY_NAMES = [n for n in NAMES if n != "stateless_reused"]


def write_verify_inputs(out: Path, instructions: int = 6, prompts_per_instruction: int = 8, responses: int = 8) -> dict:
    """crossval.jsonl, queries.jsonl and responses.jsonl (DESIGN.md formats) under `out`; returns
    the expected outcomes: prompt id -> one list of function outcomes per response."""
    out.mkdir(parents=True, exist_ok=True)
    crossval, queries, answers, want = [], [], [], {}
    for i in range(instructions):
        names = [VERIFY_NAMES[(3 * i + k) % len(VERIFY_NAMES)] for k in range(3)]
        crossval.append(
            {
                "instruction_id": f"i{i}",
                "instruction": f"instruction {i}",
                "functions": [{"source": STATEFUL[n][0], "accuracy": 1.0} for n in names],
                "cases": [],
            }
        )
        for p in range(prompts_per_instruction):
            pid = f"p{i}-{p}"
            queries.append(
                {"id": pid, "instruction_id": f"i{i}", "instruction": f"instruction {i}", "query": "q", "prompt": "q"}
            )
            texts = [f"{RESPONSES[(p + k) % len(RESPONSES)]} {i}{p}{k}" for k in range(responses)]
            answers.append({"prompt_id": pid, "responses": texts})  # plain strings: responses made elsewhere
            want[pid] = [[bool(STATEFUL[n][1](t)) for n in names] for t in texts]
    for name, rows in (("crossval.jsonl", crossval), ("queries.jsonl", queries), ("responses.jsonl", answers)):
        (out / name).write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return want


def run_verify_cli(out: Path, config: Path, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "autoif.cli", "run", "-c", str(config), "-o", str(out), "--only", "verify", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_local_and_ray_executors_write_the_same_verified_jsonl(ray_cluster, tmp_path):
    """384 responses of 48 prompts in 6 shards, through `autoif run --only verify`: the local
    executor (one sandbox of 2 workers) and the Ray executor (2 sandbox actors, spread over the 2
    nodes) cut the work differently; both give every response its fresh-definition outcomes."""
    config = tmp_path / "config.yaml"
    settings = {"executor": {"shard_size": 8}, "sandbox": {"workers": 2, "allowed_imports": list(ALLOWED)}}
    config.write_text(json.dumps(settings))  # JSON is YAML
    local, ray = tmp_path / "local", tmp_path / "ray"
    want = write_verify_inputs(local)
    write_verify_inputs(ray)
    assert sum(len(v) for v in want.values()) == 384

    run_verify_cli(local, config, "--executor", "local")
    run_verify_cli(
        ray,
        config,
        "--executor",
        "ray",
        "--set",
        f"executor.ray_address={ray_cluster.address}",
        "--set",
        "executor.cpus_per_sandbox=1",
        "--set",
        "executor.sandbox_actors=2",
    )

    assert (ray / "verified.jsonl").read_bytes() == (local / "verified.jsonl").read_bytes()
    got = {}
    for line in (local / "verified.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        got[record["prompt_id"]] = [r["outcomes"] for r in record["responses"]]
    assert got == want
