"""The one way autoif derives a random generator from a seed.

A generator is determined by its whole key (the run's seed and the names of what it is for), never
by the order in which things run: a shard, a constraint or an iteration draws the same numbers
whether it runs first, last, alone or on another machine, and adding a draw elsewhere changes none.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any


def seeded_rng(*key: Any) -> random.Random:
    """A `random.Random` seeded by a hash of `key` (JSON-encoded; other values by their `str`)."""
    digest = hashlib.sha256(json.dumps(list(key), default=str).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
