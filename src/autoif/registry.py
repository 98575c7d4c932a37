"""Registries from a name to "module:attribute", imported only when that name is used.

Stages, executors, LLM backends, trainers and benchmarks are each one `Registry`: the modules
behind the names that a run does not use are never imported (the HTTP backend pays nothing for
torch, the local executor nothing for Ray, `autoif --help` nothing for any of them), and an
unknown name is one AutoifError line that suggests the closest known name.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .errors import AutoifError


def unknown_name(kind: str, name: str, known: Iterable[str], error: type[AutoifError] = AutoifError) -> AutoifError:
    """The error for a name that is not among `known`: "unknown stage 'evens' (did you mean 'even'?)"."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"
    return error(f"unknown {kind} '{name}' ({hint})")


class Registry(Mapping[str, str]):
    """An ordered, read-only map name -> "module:attribute" whose `load(name)` imports the attribute.

    `kind` names the things in error messages ("stage", "LLM backend"); `error` is the AutoifError
    subclass an unknown name raises.
    """

    def __init__(self, kind: str, entries: Mapping[str, str], error: type[AutoifError] = AutoifError) -> None:
        for name, target in entries.items():
            module, sep, attr = target.partition(":")
            if not (module and sep and attr):
                raise ValueError(f"{kind} '{name}': expected 'module:attribute', got {target!r}")
        self.kind, self.error = kind, error
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> str:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, name: str) -> str:
        """`name` itself when it is registered, else the did-you-mean error."""
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries, self.error)
        return name

    def load(self, name: str) -> Any:
        """The registered attribute (a class, usually), its module imported now."""
        module, _, attr = self._entries[self.check(name)].partition(":")
        return getattr(importlib.import_module(module), attr)
