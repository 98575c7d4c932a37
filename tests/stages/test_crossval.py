"""Cross-validation against the official AutoIF release, on its own sample data.

`eval_func_rft.jsonl` holds 5 instructions x 8 raw generations of {func, cases} by a strong model.
Through collect() and cross_validate() with `crossval.preset: official`, executed in our sandbox, we
must keep exactly what the official release's rules keep. The expectation is worked out
independently: OFFICIAL_RULES below re-implements the rules of QwenLM/AutoIF
code/3_cross_validation.py and runs them the official way (plain exec in a separate Python
process, a 5 s alarm per call) on the same candidates:

- distinct functions (stripped, lines mentioning 'download' or 'requests' removed) that exec;
- distinct (input, output) cases;
- an instruction with fewer than 3 functions or 10 cases is skipped;
- a case is kept when any function returns a result equal to its output;
- a function's accuracy is over the kept cases; functions with accuracy >= 0.8 are kept;
- the instruction survives with at least one kept function.

Known differences from the official scripts as a whole (docs/crossval.md), asserted below:
- parsing: the official regex + json.loads drops 3 of the 40 generations (one with an invalid \\'
  escape, two with Python True/False literals); our parser recovers them, so instructions 1 and 3
  have more candidates here;
- outputs given as strings ("True", "false") are truth values for us; the official code compares
  the function's bool with the string, which never matches, so it never keeps such a case;
- a function that defines no `evaluate`, or returns a non-bool, never counts as agreeing (the
  official code counts exec-able functions towards the 3 and accepts 1 == True); none occurs here.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import FIXTURES

from autoif.config import CrossvalConfig
from autoif.stages.crossval import collect, cross_validate
from autoif.stages.parsing import function_key  # blank and whitespace-only lines do not count (our parser dedents)

OFFICIAL_RULES = r'''
import json, signal, sys


def on_alarm(signum, frame):
    raise TimeoutError("function execution timed out")


def call(func, response):
    """(result, defines_evaluate) of one function on one response, the official way."""
    local_vars = {}
    try:
        exec(func, globals(), local_vars)
    except Exception:
        return None, False
    if "evaluate" not in local_vars:
        return None, False
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(5)
    try:
        return local_vars["evaluate"](response), True
    except Exception:
        return None, True
    finally:
        signal.alarm(0)


items = json.load(open(sys.argv[1]))
results = []
for item in items:
    eval_funcs = []
    for func in item["functions"]:
        func = "\n".join(line for line in func.strip().split("\n") if "download" not in line and "requests" not in line)
        try:
            exec(func)  # at module level, like the official script: its imports land in this module's globals
        except Exception:
            continue
        eval_funcs.append(func)
    eval_funcs = sorted(set(eval_funcs))
    test_cases = [json.loads(case) for case in sorted(set(json.dumps(case) for case in item["cases"]))]
    if len(eval_funcs) < 3 or len(test_cases) < 10:
        results.append(None)
        continue
    outcomes = {func: [call(func, inp) for inp, _ in test_cases] for func in eval_funcs}
    kept = [j for j, (_, out) in enumerate(test_cases)
            if any(res is not None and res == out for res, _ in (outcomes[f][j] for f in eval_funcs))]
    valid = []
    for func in eval_funcs:
        if not outcomes[func][0][1]:
            continue  # no evaluate: the official loop skips it
        hits = [1 if outcomes[func][j][0] is not None and outcomes[func][j][0] == test_cases[j][1] else 0 for j in kept]
        accuracy = sum(hits) / len(hits) if hits else 0
        if accuracy >= 0.8:
            valid.append([func, accuracy])
    results.append({"functions": valid, "cases": [test_cases[j] for j in kept]} if valid else None)
json.dump(results, open(sys.argv[2], "w"))
'''


def load_fixture() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "eval_func_rft.jsonl").read_text().splitlines()]


def official_reading(raw: list[str]) -> dict:
    """The official script's parsing: first ```json fence, json.loads, outputs as given."""
    functions, cases = [], []
    for generation in raw:
        try:
            answer = json.loads(re.findall(r"```json(.*?)```", generation, re.DOTALL)[0].strip())
        except (IndexError, json.JSONDecodeError):
            continue
        functions.append(answer["func"])
        cases += [[case["input"], case["output"]] for case in answer["cases"]]
    return {"functions": functions, "cases": cases}


def run_official_rules(items: list[dict], tmp_path: Path) -> list[dict | None]:
    given, got = tmp_path / "items.json", tmp_path / "kept.json"
    given.write_text(json.dumps(items))
    subprocess.run(
        [sys.executable, "-c", OFFICIAL_RULES, str(given), str(got)], check=True, timeout=300, capture_output=True
    )
    return json.loads(got.read_text())


def as_kept(selection) -> dict | None:
    """A Selection as {'functions': {source: accuracy}, 'cases': {(input, output)}}; None when dropped."""
    if selection.reason is not None:
        return None
    return {
        "functions": {f: round(a, 6) for f, a in selection.functions},
        "cases": {(inp, out) for inp, out, _ in selection.cases},
    }


def reference_kept(result: dict | None) -> dict | None:
    if result is None:
        return None
    return {
        "functions": {f: round(a, 6) for f, a in result["functions"]},
        "cases": {(inp, out) for inp, out in result["cases"]},
    }


@pytest.fixture(scope="module")
def fixture_run():
    """The fixture's candidates and their sandbox grids (the same under every preset)."""
    from autoif.sandbox import Sandbox

    rows = load_fixture()
    candidates = [collect(row["gpt-answer"]) for row in rows]
    with Sandbox() as sandbox:
        grids = sandbox.check_many([(c.functions, [inp for inp, _ in c.cases]) for c in candidates])
    return rows, candidates, grids


def selections(fixture_run, preset: str):
    _, candidates, grids = fixture_run
    rules = CrossvalConfig(preset=preset).resolved()
    return [cross_validate(c.functions, c.cases, g, rules) for c, g in zip(candidates, grids)]


def test_official_preset_keeps_what_the_official_rules_keep(fixture_run, tmp_path):
    _, candidates, _ = fixture_run
    ours = [as_kept(s) for s in selections(fixture_run, "official")]
    items = [{"functions": c.functions, "cases": [list(case) for case in c.cases]} for c in candidates]
    reference = [reference_kept(r) for r in run_official_rules(items, tmp_path)]
    assert ours == reference


def test_official_preset_expected_result(fixture_run):
    """What the official rules keep from the fixture: instruction 2 (rhetorical questions written as
    hashtags, a self-contradiction) drops out because none of its 8 functions reaches 0.8."""
    _, candidates, grids = fixture_run
    assert [(len(c.functions), len(c.cases)) for c in candidates] == [(8, 23), (8, 24), (8, 24), (8, 18), (7, 24)]
    # Every function defines evaluate and returns a bool on every case: no preset difference hides here.
    assert all(o.error is None for grid in grids for row in grid for o in row)
    found = selections(fixture_run, "official")
    assert [s.reason for s in found] == [None, None, "no_function_kept", None, None]
    assert [(len(s.functions), len(s.cases)) for s in found] == [(2, 19), (4, 20), (0, 0), (6, 14), (7, 15)]
    assert [sorted(round(a, 3) for _, a in s.functions) for s in found] == [
        [0.842, 0.842],
        [0.95] * 4,
        [],
        [0.857] + [1.0] * 5,
        [1.0] * 7,
    ]
    assert found[2].counts["function_dropped:low_accuracy"] == 8


def test_differences_from_the_official_script(fixture_run, tmp_path):
    """The official script end to end (its parsing, then its rules) against our official preset:
    the same instructions survive, we keep all it keeps, and everything more we keep comes from a
    generation only our parser reads or from a case whose output was a string."""
    rows, _, _ = fixture_run
    official = run_official_rules([official_reading(row["gpt-answer"]) for row in rows], tmp_path)
    assert [None if r is None else (len(r["functions"]), len(r["cases"])) for r in official] == [
        (2, 16),
        (3, 13),
        None,
        (5, 13),
        (7, 10),
    ]

    ours = selections(fixture_run, "official")
    assert [s.reason is None for s in ours] == [r is not None for r in official]
    for row, theirs, mine in zip(rows, official, ours):
        if theirs is None:
            continue
        raw = row["gpt-answer"]
        recovered = collect([g for g in raw if not official_reading([g])["functions"]])
        string_cases = {
            (inp, out.lower() == "true") for inp, out in official_reading(raw)["cases"] if isinstance(out, str)
        }
        their_funcs = {function_key(f) for f, _ in theirs["functions"]}
        my_funcs = {function_key(f) for f, _ in mine.functions}
        assert their_funcs <= my_funcs
        assert my_funcs - their_funcs <= {function_key(f) for f in recovered.functions}
        their_cases = {(inp, out) for inp, out in theirs["cases"]}
        my_cases = {(inp, out) for inp, out, _ in mine.cases}
        assert their_cases <= my_cases
        assert my_cases - their_cases <= string_cases | set(recovered.cases)
    assert [len(mine.functions) - len(theirs["functions"]) for mine, theirs in zip(ours, official) if theirs] == [
        0,
        1,
        1,
        0,
    ]


def test_paper_preset_documented_difference(fixture_run):
    """The paper's rules keep a case only when most functions agree with it, then keep functions
    above 0.5 on that consensus: every instruction survives, instruction 2 included, every function
    the official preset keeps is kept too, and instructions 0 and 1 keep fewer cases."""
    paper, official = selections(fixture_run, "paper"), selections(fixture_run, "official")
    assert [s.reason for s in paper] == [None] * 5
    assert [(len(s.functions), len(s.cases)) for s in paper] == [(8, 10), (8, 11), (8, 10), (7, 14), (7, 15)]
    for p, o in zip(paper, official):
        assert {f for f, _ in o.functions} <= {f for f, _ in p.functions}
        assert all(acc > 0.5 for _, acc in p.functions)
        assert all(acc > 0.5 for _, _, acc in p.cases)
    assert {c[:2] for c in paper[0].cases} < {c[:2] for c in official[0].cases}
    assert {c[:2] for c in paper[1].cases} < {c[:2] for c in official[1].cases}


def test_cli_only_crossval_on_fixture_verifiers(fixture_run, tmp_path):
    """Raw generations made elsewhere dropped in as verifiers.jsonl: `autoif run --only crossval`."""
    rows, _, _ = fixture_run
    out = tmp_path / "out"
    out.mkdir()
    (out / "verifiers.jsonl").write_text(
        "".join(
            json.dumps({"instruction_id": f"official-{i}", "instruction": row["instruction"], "raw": row["gpt-answer"]})
            + "\n"
            for i, row in enumerate(rows)
        )
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "autoif.cli",
            "run",
            "-o",
            str(out),
            "--only",
            "crossval",
            "--set",
            "crossval.preset=official",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr

    kept = [json.loads(line) for line in (out / "crossval.jsonl").read_text().splitlines()]
    expected = selections(fixture_run, "official")
    assert [r["instruction_id"] for r in kept] == ["official-0", "official-1", "official-3", "official-4"]
    for record, selection in zip(kept, [s for s in expected if s.reason is None]):
        assert [(f["source"], f["accuracy"]) for f in record["functions"]] == [
            (f, round(a, 6)) for f, a in selection.functions
        ]
        assert [(c["input"], c["output"]) for c in record["cases"]] == [(i, o) for i, o, _ in selection.cases]
    stage = json.loads((out / "funnel.json").read_text())["stages"]["crossval"]
    assert (stage["in"], stage["out"], stage["dropped"]) == (5, 4, {"no_function_kept": 1})
    assert stage["counts"]["function_dropped:low_accuracy"] == sum(
        s.counts["function_dropped:low_accuracy"] for s in expected
    )
