"""Stage `queries`: K real user queries per kept instruction, joined into the prompt a user would write.

Input: the instructions that survived back-translation and their combinations (`compose.jsonl`,
else `backtranslate.jsonl`, else `crossval.jsonl`). For each, K queries are drawn from the pool
(`stages/querypool.py`) without replacement, by a generator seeded with the global seed and the
instruction id alone, so the draw depends neither on sharding nor on run order. Each prompt joins
instruction and query the way users write them: instruction before or after the query, inline or
on its own line, sometimes flagged ("Note: ..."); the join templates are the blocks of
`prompts/query_join.txt`, one drawn per query. The built-in pool's dev part (`autoif/devsplit.py`)
is never drawn, from any pool: it is the dev set's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache

from ..config import QueriesConfig
from ..devsplit import is_dev, query_key
from ..prompts import template
from ..records import CrossvalRecord, QueryRecord
from ..rundir import QUERIES
from .base import Context, Stage
from .querypool import load_queries

JOIN_TEMPLATES = "query_join"
_TERMINAL = tuple(".!?:;)]}\"'`")


@lru_cache(maxsize=1)
def join_templates() -> tuple[str, ...]:
    """The join templates: blocks of prompts/query_join.txt separated by lines of `---`."""
    blocks = template(JOIN_TEMPLATES).split("\n---\n")
    return tuple(block.strip("\n") for block in blocks if block.strip())


def closed(text: str) -> str:
    """The text ending in punctuation, so that two joined sentences read as two sentences."""
    text = text.strip()
    return text if text.endswith(_TERMINAL) else text + "."


def join(instruction: str, query: str, template_text: str) -> str:
    return template_text.format(instruction=closed(instruction), query=closed(query))


def training_queries(cfg: QueriesConfig) -> list[str]:
    """The pool's queries a training prompt may use: all of them but the dev set's.

    The dev set's queries are the built-in pool's dev part; another pool (ShareGPT, a file, the hub) may
    hold the same queries (the built-in pool is itself drawn from real user queries), so they are
    dropped from every pool, by the same normalised key.
    """
    pool = load_queries(cfg)
    if cfg.source == "builtin":
        return [q for q in pool if not is_dev(query_key(q))]
    held_out = _builtin_dev_keys()
    return [q for q in pool if query_key(q) not in held_out]


@lru_cache(maxsize=1)
def _builtin_dev_keys() -> frozenset[str]:
    keys = (query_key(q) for q in load_queries(QueriesConfig(source="builtin", min_chars=0, max_chars=100_000)))
    return frozenset(key for key in keys if is_dev(key))


def query_id(instruction_id: str, query: str) -> str:
    """Stable id of one (instruction, query) pair."""
    return "q-" + hashlib.sha256(f"{instruction_id}\x00{query}".encode()).hexdigest()[:16]


class QueriesStage(Stage[CrossvalRecord]):
    name = "queries"
    output = QUERIES.name
    input = "compose|backtranslate|crossval"
    output_type = QueryRecord

    reads = ("queries", "seed")

    def key_inputs(self, config):
        # The pool's content and the templates change the output as much as the config does.
        pool = "\x00".join(training_queries(config.queries))
        return {"pool": hashlib.sha256(pool.encode()).hexdigest(), "templates": list(join_templates())}

    def run(self, records: list[CrossvalRecord], ctx: Context) -> Iterable[QueryRecord]:
        pool = training_queries(ctx.config.queries)
        templates = join_templates()
        k = ctx.config.queries.k
        for record in records:
            rng = ctx.rng("queries", record.instruction_id)
            if len(pool) < k:
                ctx.count("pool_smaller_than_k")
            for index in rng.sample(range(len(pool)), min(k, len(pool))):
                query = pool[index]
                prompt = join(record.instruction, query, templates[rng.randrange(len(templates))])
                yield QueryRecord(
                    id=query_id(record.instruction_id, query),
                    instruction_id=record.instruction_id,
                    instruction=record.instruction,
                    query=query,
                    prompt=prompt,
                )
