"""Secrets out of endpoint messages: servers quote the API key ("Incorrect API key provided:
sk-...") or the request's headers in their errors, and those errors are logged, printed and kept
in records."""

from __future__ import annotations

import re

REDACTED = "[redacted]"
# "Bearer <anything up to a space or quote>" and OpenAI-style keys ("sk-", "sk-proj-"...), masked
# ("sk-abc***xyz") or not.
_TOKENS = re.compile(r"(?i)\b(bearer)\s+(?!\[redacted\])[^\s\"',;}\]]+|\bsk-[A-Za-z0-9_*.\-]{4,}")
_SHORTEST_SECRET = 4  # shorter ones would blank out ordinary words


def redact(text: str, *secrets: str) -> str:
    """`text` with each of `secrets`, any `Bearer ...` and any `sk-...`-shaped token replaced."""
    for secret in secrets:
        if len(secret) >= _SHORTEST_SECRET:
            text = text.replace(secret, REDACTED)
    return _TOKENS.sub(lambda m: f"{m.group(1)} {REDACTED}" if m.group(1) else REDACTED, text)
