"""The command line as a user meets it: exit codes and one-line errors, in a real subprocess."""

import subprocess
import sys

import yaml

from autoif.config import Config, config_from_dict


def autoif(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "autoif.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def assert_one_line_exit_2(proc, fragment):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in lines[0]


def test_config_prints_loadable_default():
    proc = autoif("config")
    assert proc.returncode == 0
    assert config_from_dict(yaml.safe_load(proc.stdout)) == Config()


def test_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("llm: [\n")
    assert_one_line_exit_2(autoif("config", "-c", str(bad)), "is not valid YAML at line 2")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("llm:\n  modle: x\n")
    assert_one_line_exit_2(autoif("run", "-c", str(unknown)), "unknown key 'llm.modle'")
    assert_one_line_exit_2(autoif("run", "-c", str(tmp_path / "missing.yaml")), "no such config file")
    assert_one_line_exit_2(autoif("config", "--set", "sandbox.timeout_s=-1"), "sandbox.timeout_s")


def test_unknown_stage_is_usage_error(tmp_path):
    assert_one_line_exit_2(autoif("run", "-o", str(tmp_path), "--only", "crossvall"), "did you mean 'crossval'")


def test_debug_shows_traceback(tmp_path):
    proc = autoif("--debug", "config", "-c", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_help_does_not_import_heavy_modules():
    heavy = ("torch", "transformers", "trl", "openai")
    code = f"import sys, autoif.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bad_query_pool_fails_before_any_work(tmp_path):
    """A missing query file, an unknown field and a benchmark as a pool: one line, exit 2, at once."""
    missing = autoif("run", "-o", str(tmp_path), "--set", f"queries.source={tmp_path / 'nope.jsonl'}")
    assert_one_line_exit_2(missing, "nope.jsonl")
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"text": "How do I bake bread at home without a mixer?"}\n')
    unknown = autoif("run", "-o", str(tmp_path), "--set", f"queries.source={pool}", "--set", "queries.field=questoin")
    assert_one_line_exit_2(unknown, "questoin")
    bench = autoif("run", "-o", str(tmp_path), "--set", "queries.source=google/IFEval")
    assert_one_line_exit_2(bench, "IFEval")
    assert not (tmp_path / "seeds.jsonl").exists()  # refused before stage 1 ran


def test_out_that_is_a_file_is_usage_error(tmp_path):
    file = tmp_path / "out.txt"
    file.write_text("not a directory\n")
    assert_one_line_exit_2(autoif("run", "-o", str(file)), f"output directory {file} is a file")
    assert_one_line_exit_2(autoif("run", "-o", str(file / "sub")), f"cannot create output directory {file / 'sub'}")


def test_out_held_by_a_live_run_is_refused_and_a_stale_lock_taken_over(tmp_path):
    """A run refuses an OUT whose lock another process holds (naming its PID), without touching it;
    a lock file left by a dead run (its PID still written) is simply taken."""
    import os
    import time

    from autoif.runlock import RunLock

    out = tmp_path / "out"
    with RunLock(out):  # this test process is the live run
        started = time.monotonic()
        refused = autoif("run", "-o", str(out), "--until", "seeds")
        assert_one_line_exit_2(refused, f"{out} is in use by another autoif run (pid {os.getpid()}")
        assert time.monotonic() - started < 60
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the refused run wrote nothing
    (out / ".lock").write_text("999999999\n")  # as a run killed with SIGKILL leaves it
    done = autoif("run", "-o", str(out), "--until", "seeds")
    assert done.returncode == 0, done.stderr
    assert (out / "seeds.jsonl").is_file() and (out / ".lock").read_text() == ""
