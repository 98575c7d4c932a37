"""What a piece of code reads of the config, declared and enforced: the basis of resume keys.

A stage declares the config paths it reads (`reads = ("export", "verify", "llm.model")`: a whole
section, or one field); its resume key is `read_values(config, reads)`, nothing else of the config.
While it runs, it sees the config only through `ConfigView(config, reads)`, which raises
`UndeclaredRead` on any other path: a read left out of `reads` fails the first test that takes
that code path, instead of letting a resume keep output made under other settings.

A field marked `OPERATIONAL` (`Field(..., json_schema_extra=OPERATIONAL)`) says how work is done,
never what comes out (a retry count, a cache file, the number of worker processes): reading its
section does not put it in the key, so changing it redoes nothing.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel

# A field whose value never changes any output (see the module's doc).
OPERATIONAL: dict[str, Any] = {"operational": True}


class UndeclaredRead(RuntimeError):
    """Code read a config path it did not declare: a bug in that code (its resume key would miss it)."""


def is_operational(section: type[BaseModel], name: str) -> bool:
    extra = section.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and extra.get("operational") is True


def field_paths(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every leaf field of a config schema as a dotted path, sections walked recursively."""
    for name, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            yield from field_paths(sub, f"{prefix}{name}.")
        else:
            yield prefix + name


def _resolve(config: BaseModel, path: str) -> tuple[BaseModel, str]:
    """'backtranslate.nli.model' -> (the nli section, 'model'); an unknown path raises ValueError."""
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
        child = getattr(node, part, None)
        if part not in type(node).model_fields or not isinstance(child, BaseModel):
            raise ValueError(f"'{path}' is not a config path")
        node = child
    if leaf not in type(node).model_fields:
        raise ValueError(f"'{path}' is not a config path")
    return node, leaf


def _output_values(value: Any) -> Any:
    """A section's values without its operational fields (recursively); a plain value as JSON."""
    if not isinstance(value, BaseModel):
        return _plain(value)
    return {
        name: _output_values(getattr(value, name))
        for name in type(value).model_fields
        if not is_operational(type(value), name)
    }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def read_values(config: BaseModel, reads: Iterable[str]) -> dict[str, Any]:
    """The values at the declared paths, operational fields left out: what a resume key holds."""
    values: dict[str, Any] = {}
    for path in sorted(set(reads)):
        node, leaf = _resolve(config, path)
        if is_operational(type(node), leaf):
            raise ValueError(f"'{path}' is operational: it changes no output, so reading it means nothing")
        values[path] = _output_values(getattr(node, leaf))
    return values


def reads_field(reads: Iterable[str], path: str) -> bool:
    """Whether declaring `reads` covers the leaf field `path` (the field itself or a section above it)."""
    return any(path == r or path.startswith(r + ".") for r in reads)


class ConfigView:
    """`config` as code that declared `reads` may see it: a declared section is the section itself,
    a section with only some fields declared is a view of those fields, anything else raises
    `UndeclaredRead`. A section's methods run on the view, so what they read is checked too."""

    def __init__(self, model: BaseModel, reads: Iterable[str], prefix: str = "") -> None:
        self._model = model
        self._reads = frozenset(reads)
        self._prefix = prefix
        if not prefix:  # a declared path that names no field is a typo, found before anything runs
            for path in self._reads:
                _resolve(model, path)

    @property
    def declared(self) -> frozenset[str]:
        """The paths this view lets through."""
        return self._reads

    def __getattr__(self, name: str) -> Any:
        model = self._model
        path = self._prefix + name
        if name in type(model).model_fields:
            value = getattr(model, name)
            if reads_field(self._reads, path):
                return value
            if isinstance(value, BaseModel) and any(r.startswith(path + ".") for r in self._reads):
                return ConfigView(value, self._reads, path + ".")
            raise UndeclaredRead(f"config '{path}' was read but not declared in `reads` ({sorted(self._reads)})")
        attr = getattr(type(model), name, None)
        if isinstance(attr, types.FunctionType) and not name.startswith("model_"):
            return types.MethodType(attr, self)
        raise UndeclaredRead(f"config '{path}' is not a field or method a declared read may use")

    def __repr__(self) -> str:
        return f"ConfigView({type(self._model).__name__}, reads={sorted(self._reads)})"
