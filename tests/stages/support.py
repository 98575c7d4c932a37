"""What the stage tests share: the official AutoIF release's recorded outputs (fixtures/autoif-official),
the config they run under, and an independent execution of functions, with no sandbox code involved,
that the sandbox's outcomes are compared with."""

import json
import subprocess
import sys
from pathlib import Path

from autoif.config import load_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "autoif-official"


def fixture(name):
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def config(tmp_path, *sets):
    # Scoring is on as with any real judge (auto switches it off for the embedded model only).
    return load_config(None, [f"paths.out={tmp_path}", "sandbox.workers=2", "score.enabled=on", *sets])


# Executes every function on every response in a fresh process: the reference the sandbox's
# outcomes are compared with. A function "passes" only by returning True.
INDEPENDENT = r"""
import json, signal, sys

def timeout(*_):
    raise TimeoutError

signal.signal(signal.SIGALRM, timeout)
jobs = json.load(open(sys.argv[1]))
results = []
for functions, responses in jobs:
    grid = []
    for response in responses:
        values = []
        for source in functions:
            namespace = {}
            try:
                signal.alarm(5)
                exec(source, namespace)
                value = namespace["evaluate"](response)
                values.append(value if isinstance(value, bool) else None)
            except BaseException:
                values.append(None)
            finally:
                signal.alarm(0)
        grid.append(values)
    results.append(grid)
json.dump(results, open(sys.argv[2], "w"))
"""


def execute_independently(tmp_path, jobs):
    """For each (functions, responses) job, each response's per-function values (bool or None)."""
    src, dst = tmp_path / "jobs.json", tmp_path / "values.json"
    src.write_text(json.dumps(jobs))
    subprocess.run(
        [sys.executable, "-c", INDEPENDENT, str(src), str(dst)], check=True, timeout=300, capture_output=True
    )
    return json.loads(dst.read_text())


def rate(values):
    return sum(v is True for v in values) / len(values)


def back_trans_records():
    """The official release's back-translated instructions as crossval records (ids bt-<n>)."""
    from autoif.records import CaseResult, CrossvalRecord, FunctionResult

    return [
        CrossvalRecord(
            instruction_id=f"bt-{n}",
            instruction=r["instruction"],
            functions=[FunctionResult(source=s, accuracy=a) for s, a in r["eval_func"]],
            cases=[CaseResult(input=i, output=o, accuracy=1.0) for i, o in r["cases"]],
        )
        for n, r in enumerate(fixture("back_trans.jsonl"))
    ]


def library_records(constraints=None):
    """The built-in library as backtranslate.jsonl holds it for a run with the default seed (stage
    seeds' ids), or only the instances of the given constraint ids."""
    from autoif.records import CaseResult, CrossvalRecord, FunctionResult
    from autoif.stages.library import build_library

    return [
        CrossvalRecord(
            instruction_id=f"lib-{e.id}",
            instruction=e.instruction,
            functions=[FunctionResult(source=f, accuracy=1.0) for f in e.functions],
            cases=[CaseResult(input=c["input"], output=c["output"], accuracy=1.0) for c in e.cases],
            source="builtin",
        )
        for e in build_library(seed=42)
        if constraints is None or e.constraint in constraints
    ]
