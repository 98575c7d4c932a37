"""The run report: `OUT/report.html`, one self-contained page about a run's output directory.

It shows the funnel of every stage with its drop reasons, the accuracy and pass-rate
distributions (the paper's Figure 4 view), relevance scores, samples of kept instructions with
their functions and test cases, combined constraints (stage compose), SFT records and DPO pairs,
evaluation results and the contamination check when present, the config and the LLM cache hit rate.

The page loads nothing: styles are inline, plots are SVG data URIs, and a Content-Security-Policy
forbids scripts and every fetch, so it opens the same offline, from a mail attachment, or in
print. All text is escaped (`html.esc`): the page shows LLM output, which is untrusted.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from ..config import Config
from ..jsonl import atomic_write_text
from ..rundir import REPORT, RESULTS_MD
from .html import CSS, code_css, esc
from .run_data import read_run
from .sections import ORDER, SECTIONS

REPORT_FILE = REPORT
# No script may run and nothing may be fetched; inline styles and data: images are all the page uses.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render_report(out_dir: Path, config: Config | None = None) -> str:
    """The report page of a run directory, as HTML text."""
    out_dir = Path(out_dir)
    run = read_run(out_dir, config)
    body = "".join(build(run) for build in ORDER)
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title in SECTIONS.items())
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    # A recipe's data run is OUT/data; the experiment's results page is OUT/results.md.
    results = (
        ' · <a href="../results.md">experiment results</a>' if (out_dir.resolve().parent / RESULTS_MD).is_file() else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>autoif run report: {esc(out_dir.resolve().name)}</title>"
        f"<style>{CSS}\n{code_css()}</style></head><body>"
        f'<header class="top"><h1>autoif run report</h1><div class="muted">run directory '
        f"<code>{esc(out_dir.resolve())}</code> · generated {esc(generated)}{results}</div></header>"
        f'<nav class="toc">{nav}</nav><main>{body}</main></body></html>\n'
    )


def write_report(out_dir: Path, config: Config | None = None) -> Path:
    """Write `out_dir/report.html` atomically and return its path.

    `config` (the run's Config) sets the thresholds drawn on the plots; without it they come from
    `out_dir/config.yaml` when that loads. Raises AutoifError when `out_dir` is not a directory,
    MissingDependency when matplotlib is not installed (`pip install 'autoif[report]'`).
    """
    path = Path(out_dir) / REPORT_FILE
    atomic_write_text(path, render_report(out_dir, config))
    return path


__all__ = ["REPORT_FILE", "render_report", "write_report"]
