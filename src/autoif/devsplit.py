"""The hold-out rule of the dev set (`autoif eval dev`): which built-in data is never trained on.

A thing is dev when the sha256 of its key, read as a number in [0, 1) (`dev_score`), falls below
DEV_SHARE. The rule holds no state and draws nothing at random: the same key is on the same side in
every run, process and version, and adding a constraint, parameters or a query moves nothing else.
Keys:

- a library instance's parameters: `params_key(constraint id, params)` (canonical JSON);
- a phrasing of a constraint: `phrasing_key(constraint id, text)` (the template's text, so
  reordering phrasings moves none and rewording one is a new phrasing);
- a query of the built-in pool: `query_key(text)` (stripped, lower-cased, spaces collapsed, so
  two spellings of one query are on one side).

A constraint has only a few phrasings (three, mostly), too few for a share to be left to chance:
its dev phrasings are the round(DEV_SHARE x n) ones (one at least) with the lowest `dev_score`, so
both sides always have one (a phrasing added to a constraint may take the dev place of another).
Parameter spaces too small to split keep only the phrasing hold-out (`stages/library/__init__.py`).
The built-in query pool's dev part is never a training query (`stages/queries.py`); external pools
(ShareGPT, files, the hub) are not filtered, and the dev set takes its queries from the built-in
pool's dev part only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

DEV_SHARE = 0.2
SPLITS = ("train", "dev")


def dev_score(key: str) -> float:
    """The key's place in [0, 1): the first 8 bytes of its sha256 as a fraction."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def is_dev(key: str) -> bool:
    """True when `key` belongs to the dev side."""
    return dev_score(key) < DEV_SHARE


def params_key(constraint: str, params: dict[str, Any]) -> str:
    canonical = json.dumps(params, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"params\x00{constraint}\x00{canonical}"


def phrasing_key(constraint: str, phrasing: str) -> str:
    return f"phrasing\x00{constraint}\x00{phrasing}"


def query_key(query: str) -> str:
    return "query\x00" + " ".join(query.lower().split())


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
