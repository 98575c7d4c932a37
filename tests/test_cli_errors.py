"""Mistakes and failures found before the work, or at the write, as one line and exit 2."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from autoif.cli import cli

DATA = Path(__file__).parent / "data"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def one_line(result, fragment: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert fragment in result.stderr, result.stderr


def test_eval_out_that_is_a_file_fails_before_scoring(tmp_path):
    taken = tmp_path / "results"
    taken.write_text("not a directory\n")
    started = time.monotonic()
    result = invoke("eval", "ifeval", "--responses", str(DATA / "ifeval_frozen.jsonl"), "--out", str(taken))
    one_line(result, f"output directory {taken} is a file; choose a directory with --out")
    assert time.monotonic() - started < 5 and taken.read_text() == "not a directory\n"


def test_empty_paths_are_refused_not_taken_for_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args, name in [
        (("run", "-o", "", "--until", "seeds"), "--out"),
        (("recipe", "r.yaml", "-o", " "), "--out"),
        (("eval", "ifeval", "--out", ""), "--out"),
        (("train", "sft", "--data", ""), "--data"),
        (("report", ""), "OUT"),
    ]:
        one_line(invoke(*args), f"{name} is empty")
    assert list(tmp_path.iterdir()) == []  # nothing was written anywhere


def _no_room(limit: int):
    """For the child: files may grow to `limit` bytes, and a write past it fails with an OSError
    (EFBIG), as on a full disk, instead of killing the process with SIGXFSZ."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_failed_write_names_the_path_and_loses_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("the previous run's config\n")
    proc = subprocess.run(
        [sys.executable, "-m", "autoif.cli", "run", "-o", str(out), "--until", "seeds"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_no_room(2048),  # the config alone is longer
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    error = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and f"cannot write {out / 'config.yaml'}: File too large; nothing was lost" in error[0]
    assert (out / "config.yaml").read_text() == "the previous run's config\n"
    assert sorted(p.name for p in out.iterdir()) == [".lock", "config.yaml"]  # no temporary file left
