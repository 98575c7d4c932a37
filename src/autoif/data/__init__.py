"""Data shipped with autoif: the paper's 36 hand-written seed instructions."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from autoif.errors import AutoifError

SEED_FILE = "seed_instructions.txt"


def load_seed_instructions(path: str | Path | None = None) -> list[str]:
    """The seed instructions: the shipped ones (path None) or a user file.

    A file holds one instruction a line; blank lines and lines starting with `#` are skipped.
    A missing, unreadable or empty file is an AutoifError naming the path.
    """
    if path is None:
        where = f"built-in {SEED_FILE}"
        text = resources.files(__package__).joinpath(SEED_FILE).read_text(encoding="utf-8")
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise AutoifError(f"seed instruction file not found: {where}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AutoifError(f"cannot read seed instruction file {where}: {exc}") from None
    instructions = [line.strip() for line in text.splitlines()]
    instructions = [line for line in instructions if line and not line.startswith("#")]
    if not instructions:
        raise AutoifError(f"seed instruction file has no instructions: {where}")
    return instructions
