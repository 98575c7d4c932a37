"""What a library constraint is, and the registry that holds them.

A constraint is a small class (the IFEval checker's shape): an id, how it samples its parameters,
how it is phrased, the source of its verification functions, and how it writes test cases for
the parameters it sampled. Function sources are templates in which each parameter appears as its
name in capitals (`MAX_WORDS`); binding replaces the name by the value's Python literal, so every
bound function is a self-contained `evaluate(response)` that runs under any way of exec'ing it.
"""

from __future__ import annotations

import difflib
import random
import re
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...errors import AutoifError


@dataclass(frozen=True)
class LibraryEntry:
    """One instruction of the built-in library, with the functions and cases that check it."""

    id: str  # stable for a seed: "<constraint>-<index>"
    constraint: str  # the registry id, e.g. "length:min_words"
    instruction: str
    functions: list[str]
    cases: list[dict]  # {"input": response text, "output": bool}
    params: dict[str, Any] = field(default_factory=dict)


class Constraint:
    """Base of every constraint. Subclasses set the class attributes and write `cases`."""

    id: ClassVar[str]  # namespaced, e.g. "keywords:include"
    phrasings: ClassVar[tuple[str, ...]]  # str.format templates over the parameters and `fields`
    functions: ClassVar[tuple[str, ...]]  # evaluate(response) sources, parameters in CAPITALS

    def sample(self, rng: random.Random) -> dict[str, Any]:
        """The parameters of one instance (none by default)."""
        return {}

    def fields(self, params: dict[str, Any]) -> dict[str, Any]:
        """Extra phrasing fields derived from the parameters (plurals, quoted lists)."""
        return {}

    def cases(self, params: dict[str, Any], rng: random.Random) -> tuple[list[str], list[str]]:
        """Responses that follow the instance and responses that break it (at least two of each)."""
        raise NotImplementedError

    def instruction(self, params: dict[str, Any], phrasing: str) -> str:
        """The instance phrased by `phrasing`, one of the constraint's phrasings."""
        return phrasing.format(**{**params, **self.fields(params)})

    def bound_functions(self, params: dict[str, Any]) -> list[str]:
        return [bind(source, params) for source in self.functions]


class Code(str):
    """A parameter bound into function sources as written (an operator such as `>=`), not as a literal."""


def bind(source: str, params: dict[str, Any]) -> str:
    """The function source with every parameter name in capitals replaced by the value's literal."""
    source = textwrap.dedent(source).strip("\n")
    if not params:
        return source
    names = re.compile(r"\b({})\b".format("|".join(re.escape(name.upper()) for name in params)))

    def literal(match: re.Match) -> str:
        value = params[match.group(1).lower()]
        return str(value) if isinstance(value, Code) else repr(value)

    return names.sub(literal, source)


class UnknownConstraint(AutoifError, KeyError):
    """A constraint id that is not registered; the message suggests the closest ones."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Mapping):
    """A flat, read-only mapping from constraint id to constraint, filled by `register`."""

    def __init__(self) -> None:
        self._items: dict[str, Constraint] = {}

    def register(self, cls: type[Constraint]) -> type[Constraint]:
        """Class decorator: add one instance of cls under cls.id; a second class with that id is an error."""
        if cls.id in self._items:
            raise ValueError(
                f"duplicate constraint id {cls.id!r} ({cls.__name__} and {type(self._items[cls.id]).__name__})"
            )
        self._items[cls.id] = cls()
        return cls

    def __getitem__(self, key: str) -> Constraint:
        try:
            return self._items[key]
        except KeyError:
            close = difflib.get_close_matches(str(key), list(self._items), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownConstraint(f"unknown constraint {key!r}{hint}") from None

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
