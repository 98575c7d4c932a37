"""Benchmark prompts: the one table of packaged files, the one tokenizer and the one 13-gram index
that the query pool's refusal and `eval contamination` share."""

import json

import pytest

from autoif.benchmark_prompts import (
    BENCHMARK_FILES,
    BenchmarkPrompt,
    NgramIndex,
    installed_prompts,
    ngrams,
    normalize,
    package_file,
    packaged_file,
    words,
)
from autoif.evals import BENCHMARKS, benchmark, contamination
from autoif.stages.querypool import benchmark_index

LONG = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"


def test_words_are_casefolded_runs_of_letters_and_digits():
    assert words("Straße, snake_case & C3PO!") == ["strasse", "snake", "case", "c3po"]
    assert normalize("  Hello,\n  WORLD ") == "hello world"


def test_ngrams_of_short_texts_are_the_whole_text():
    assert ngrams("Hello, World!") == [("hello", "world")]
    assert ngrams("...") == []
    assert len(ngrams(" ".join(f"w{i}" for i in range(20)))) == 8
    repeated = ngrams(" ".join(["a b"] * 10))  # 20 words, two distinct 13-grams, first seen first
    assert repeated == [tuple(("a b " * 7).split()[:13]), tuple(("b a " * 7).split()[:13])]


def test_index_matches_same_words_first_then_a_shared_ngram():
    first = BenchmarkPrompt("A", "a0", LONG + " and more")
    second = BenchmarkPrompt("B", "b0", "Prefix. " + LONG)
    index = NgramIndex([first, second])
    assert index.match("PREFIX " + LONG.upper()) is second  # the same words as the second prompt
    assert index.match("Well: " + LONG + ", right?") is first  # its first 13-gram: in both, the first added wins
    assert index.match("one two three") is None
    shared = index.shared("x " + LONG)
    assert sorted(shared) == [0, 1]
    assert shared[0] == ngrams(LONG)[:2] and shared[1] == ngrams(LONG)[:2]


def needs(benchmark_name):
    path = packaged_file(benchmark_name)
    if path is None:
        pytest.skip(f"{benchmark_name} data not installed (make installs the benchmark data packages)")
    return path


def test_evals_read_their_data_from_the_table():
    for name in BENCHMARKS:
        bench = benchmark(name)
        assert bench.packaged_file() == packaged_file(bench.title)
    path = needs("IFEval")
    assert any(path.as_posix().endswith(f"{e.package}/{e.path}") for e in BENCHMARK_FILES)


def test_installed_prompts_hold_each_text_once():
    needs("IFBench")
    prompts = installed_prompts()
    assert len({normalize(p.text) for p in prompts}) == len(prompts) == len({p.id for p in prompts})
    # Two packages ship IFBench's test set (nearly the same prompts): each prompt counts once.
    copies = [package_file(e.package, e.path) for e in BENCHMARK_FILES if e.benchmark == "IFBench"]
    sizes = [len(path.read_text().splitlines()) for path in copies if path is not None]
    ifbench = [p for p in prompts if p.benchmark == "IFBench"]
    assert max(sizes) <= len(ifbench) < sum(sizes) or len(sizes) == 1


def test_pool_refusal_and_contamination_see_the_same_overlap(tmp_path):
    path = needs("IFEval")
    record = json.loads(path.read_text().splitlines()[7])
    leaked = "Thanks! " + record["prompt"].upper()  # the same words, a different text
    assert benchmark_index().match(leaked).text == record["prompt"]

    run = tmp_path / "run"
    run.mkdir()
    sft = {"messages": [{"role": "user", "content": leaked}, {"role": "assistant", "content": "ok"}]}
    (run / "sft.jsonl").write_text(json.dumps(sft) + "\n")
    found = contamination(run, ["ifeval"])["benchmarks"]["ifeval"]
    assert found["overlapping_training_prompts"] == 1
    pair = found["top_pairs"][0]
    assert pair["benchmark_id"] == str(record["key"]) and pair["benchmark_prompt"] == record["prompt"]
    assert pair["example"] == " ".join(ngrams(record["prompt"])[0])  # the first shared 13-gram, in text order
