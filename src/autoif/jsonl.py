"""Atomic jsonl reading and writing: a reader names the file and line of a bad record (or of a byte
that is not UTF-8); a writer never leaves a half-written file (temp file + fsync + rename)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ValidationError

from .errors import AutoifError

M = TypeVar("M", bound=BaseModel)


@overload
def read_jsonl(path: str | os.PathLike, model: type[M]) -> list[M]: ...


@overload
def read_jsonl(path: str | os.PathLike, model: None = None) -> list[dict[str, Any]]: ...


def read_jsonl(path: str | os.PathLike, model: type[M] | None = None) -> list[M] | list[dict[str, Any]]:
    """Records of a jsonl file, validated as `model` (or plain dicts); errors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise AutoifError(f"no such file: {path}")
    out: list[Any] = []
    # Bytes, decoded line by line: a stray byte that is not UTF-8 is reported with its line number
    # (a text-mode reader raises a bare UnicodeDecodeError from deep inside the iteration).
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise AutoifError(f"{path} line {lineno}: not UTF-8 text (byte {raw[exc.start]:#04x})") from None
            if not line.strip():
                continue
            if model is None:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise AutoifError(f"{path} line {lineno}: not JSON: {exc.msg}") from None
                if not isinstance(record, dict):
                    raise AutoifError(f"{path} line {lineno}: expected a JSON object")
                out.append(record)
                continue
            try:
                out.append(model.model_validate_json(line))
            except ValidationError as err:
                e = err.errors()[0]
                where = ".".join(str(p) for p in e["loc"]) or "record"
                raise AutoifError(f"{path} line {lineno}: {where}: {e['msg']}") from None
    return out


def read_json(path: str | os.PathLike) -> Any:
    """The value of a JSON file; a file that is not UTF-8 JSON is an AutoifError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise AutoifError(f"no such file: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = raw.count(b"\n", 0, exc.start) + 1
        raise AutoifError(f"{path} line {lineno}: not UTF-8 text (byte {raw[exc.start]:#04x})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AutoifError(f"{path} line {exc.lineno}: not JSON: {exc.msg}") from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` whole or not at all: a temporary file beside it, then renamed over it.
    A write that fails (a full disk, a read-only directory) is an AutoifError naming the path; the
    file is then as it was before."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _unwritten(path, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _unwritten(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unwritten(path: Path, exc: OSError) -> AutoifError:
    before = "kept as it was" if path.is_file() else "not created"
    return AutoifError(
        f"cannot write {path}: {exc.strerror or exc}; nothing was lost ({path.name} {before}; "
        "free space or fix the permissions, then rerun to resume)"
    )


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """`path` if `atomic_write_text` can write it: not a directory, and the nearest existing
    directory above it writable; else an AutoifError saying so (checked before any work is done)."""
    if not str(path).strip():
        raise AutoifError(f"{what} is empty: give a file")
    path = Path(path).expanduser()
    if path.is_dir():
        raise AutoifError(f"{what} {path} is a directory: give a file")
    above = path.parent
    while not above.exists():
        above = above.parent
    if not above.is_dir() or not os.access(above, os.W_OK | os.X_OK):
        raise AutoifError(f"{what} {path} cannot be written: {above} is not a writable directory")
    return path


def dumps_records(records: Iterable[BaseModel | dict]) -> str:
    lines = []
    for r in records:
        data = r.model_dump(mode="json") if isinstance(r, BaseModel) else r
        lines.append(json.dumps(data, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


def write_jsonl(path: str | os.PathLike, records: Iterable[BaseModel | dict]) -> None:
    atomic_write_text(path, dumps_records(records))
