"""Prompt templates, one text file each beside this module, filled with `str.format` fields.

A template's text is part of the LLM cache key (through the messages), so editing a prompt
regenerates exactly the requests that used it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def template(name: str) -> str:
    try:
        return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyError(f"no prompt template '{name}'") from None


def render(name: str, **fields: object) -> str:
    return template(name).format(**fields)
