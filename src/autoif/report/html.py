"""HTML building blocks for the report: escaping, highlighted code, text blocks, tables, JSON.

Everything the report shows comes from LLM output or user files, so every piece of text passes
through `esc` (or pygments, which escapes too) before it reaches the page: a response holding
`</script>` or `<img onerror=...>` is shown as text, never parsed as markup. Functions here return
HTML strings that are safe to concatenate; their arguments are raw text.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import Any

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer, YamlLexer

MAX_TEXT = 20_000  # characters of one text shown; a longer one is cut, with a note
CODE_OPEN_LINES = 14  # code blocks longer than this start collapsed
_UNSAFE_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_FORMATTER = HtmlFormatter(cssclass="hl", nowrap=False)
_LEXERS = {"python": PythonLexer(), "yaml": YamlLexer()}


def clean(text: Any) -> str:
    """Text that a UTF-8 HTML page can hold: control characters and lone surrogates (JSON can carry
    both) become U+FFFD, so writing the page never fails on what a model produced."""
    return _UNSAFE_CHARS.sub("\ufffd", str(text))


def esc(text: Any) -> str:
    return html.escape(clean(text), quote=True)


def cut(text: str, limit: int = MAX_TEXT) -> tuple[str, str]:
    """(text shown, HTML note about what was cut or "")."""
    if len(text) <= limit:
        return text, ""
    return text[:limit], f'<p class="note">… {len(text) - limit:,} more characters not shown</p>'


def text_block(text: str, cls: str = "text") -> str:
    """A response or prompt: whitespace kept, scrolls on screen beyond a height, full in print."""
    shown, note = cut(clean(text))
    return f'<pre class="{cls}">{esc(shown)}</pre>{note}'


def code_block(source: str, language: str = "python", label: str = "code") -> str:
    """Highlighted code; longer than CODE_OPEN_LINES lines it collapses into a <details>."""
    shown, note = cut(clean(source))
    body = highlight(shown, _LEXERS[language], _FORMATTER) + note
    lines = shown.count("\n") + 1
    if lines <= CODE_OPEN_LINES:
        return body
    first = shown.strip().splitlines()[0] if shown.strip() else ""
    return (
        f'<details class="code"><summary><code>{esc(first[:90])}</code> '
        f'<span class="muted">{esc(label)}, {lines} lines</span></summary>{body}</details>'
    )


def code_css() -> str:
    return _FORMATTER.get_style_defs(".hl")


def fmt(value: Any) -> str:
    """A number as people read it: thousands separators, 4 significant digits for fractions."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() and abs(value) >= 1000 else f"{value:.4g}"
    return "—" if value is None else str(value)


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "—"


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """A table; `headers` are raw text (none: no header row), `rows` cells are HTML already."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f'<table class="{cls}">{thead}<tbody>{body}</tbody></table>'


def missing(name: str, why: str = "not produced by this run") -> str:
    return f'<p class="missing"><code>{esc(name)}</code>: {esc(why)}</p>'


# --------------------------------------------------------------------------- JSON of unknown shape
JSON_ROWS = 20  # rows of a list of objects shown
JSON_DEPTH = 4


def json_html(value: Any, depth: int = 0) -> str:
    """Any JSON value as nested tables (eval results, contamination reports, whose exact shape
    belongs to the commands that write them): objects as key/value rows, lists of objects as a
    table with a column per key, lists of scalars inline."""
    if isinstance(value, dict):
        if not value:
            return '<span class="muted">{}</span>'
        if depth >= JSON_DEPTH:
            return f"<code>{esc(json.dumps(value, ensure_ascii=False)[:500])}</code>"
        key_values = [(f"<code>{esc(k)}</code>", json_html(v, depth + 1)) for k, v in value.items()]
        return table([], key_values, "json")
    if isinstance(value, list):
        if not value:
            return '<span class="muted">[]</span>'
        if all(isinstance(v, dict) for v in value) and depth < JSON_DEPTH:
            columns = list(dict.fromkeys(k for v in value[:JSON_ROWS] for k in v))
            rows = [
                [
                    json_html(v.get(c), JSON_DEPTH) if isinstance(v.get(c), (dict, list)) else _scalar(v.get(c))
                    for c in columns
                ]
                for v in value[:JSON_ROWS]
            ]
            more = len(value) - JSON_ROWS
            note = f'<p class="note">… {more:,} more rows</p>' if more > 0 else ""
            return table(columns, rows, "json") + note
        shown = ", ".join(
            _scalar(v)
            if not isinstance(v, (dict, list))
            else f"<code>{esc(json.dumps(v, ensure_ascii=False)[:200])}</code>"
            for v in value[:JSON_ROWS]
        )
        return shown + (
            f' <span class="muted">… {len(value) - JSON_ROWS:,} more</span>' if len(value) > JSON_ROWS else ""
        )
    return _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        shown, note = cut(clean(value), 2000)
        return f'<span class="str">{esc(shown)}</span>{note}'
    return f'<span class="num">{esc(fmt(value))}</span>'


# ---------------------------------------------------------------------------------------- style
CSS = """
:root { --fg: #1d2433; --muted: #5f6b7a; --line: #d9dee5; --bg: #ffffff; --panel: #f6f8fa;
  --accent: #2f6fb0; --good: #1f7a3a; --bad: #b3261e; --warn: #8a5a00; }
* { box-sizing: border-box; }
html { font-size: 15px; }
body { margin: 0; color: var(--fg); background: var(--bg); line-height: 1.45;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header.top { padding: 1.2rem 1.5rem 0.6rem; border-bottom: 1px solid var(--line); }
header.top h1 { margin: 0 0 0.2rem; font-size: 1.5rem; }
nav.toc { display: flex; flex-wrap: wrap; gap: 0.3rem 1rem; padding: 0.5rem 1.5rem;
  border-bottom: 1px solid var(--line); position: sticky; top: 0; background: var(--bg); z-index: 2;
  font-size: 0.9rem; }
nav.toc a { color: var(--accent); text-decoration: none; }
main { max-width: 1280px; margin: 0 auto; padding: 0 1.5rem 3rem; }
section.report-section { padding-top: 1.2rem; scroll-margin-top: 2.5rem; }
section.report-section > h2 { font-size: 1.2rem; border-bottom: 2px solid var(--line); padding-bottom: 0.2rem; }
h3 { font-size: 1rem; margin: 1rem 0 0.4rem; }
code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.82rem; }
pre { margin: 0.3rem 0; }
pre.text { white-space: pre-wrap; overflow-wrap: anywhere; background: var(--panel); border: 1px solid var(--line);
  border-radius: 4px; padding: 0.5rem 0.6rem; max-height: 22rem; overflow: auto; }
.hl { background: var(--panel); border: 1px solid var(--line); border-radius: 4px; overflow-x: auto; }
.hl pre { padding: 0.5rem 0.6rem; margin: 0; white-space: pre; }
details { margin: 0.3rem 0; }
details > summary { cursor: pointer; }
details.item { border: 1px solid var(--line); border-radius: 6px; padding: 0.4rem 0.7rem; margin: 0.5rem 0; }
details.item[open] { background: #fcfdfe; }
details.item > summary { font-weight: 600; }
div.item { border: 1px solid var(--line); border-radius: 6px; padding: 0.5rem 0.7rem; margin: 0.6rem 0; }
pre.text.case { margin: 0; padding: 0.1rem 0.3rem; max-height: 10rem; background: none; border: none; }
table { border-collapse: collapse; margin: 0.4rem 0; font-size: 0.9rem; }
th, td { border: 1px solid var(--line); padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: var(--panel); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.json td { overflow-wrap: anywhere; }
.muted, .note { color: var(--muted); }
.note { font-size: 0.85rem; margin: 0.2rem 0; }
.missing { color: var(--warn); font-style: italic; }
.banner { border: 2px solid var(--bad); color: var(--bad); background: #fdf1f0; border-radius: 6px;
  padding: 0.6rem 0.9rem; font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(10.5rem, 1fr)); gap: 0.6rem; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 0.5rem 0.7rem; background: var(--panel); }
.card .value { font-size: 1.35rem; font-weight: 700; }
.card .label { font-size: 0.8rem; color: var(--muted); }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(20rem, 1fr)); gap: 1rem; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { font-size: 0.85rem; color: var(--muted); }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 0.8rem; }
.side h4 { margin: 0.3rem 0; font-size: 0.9rem; }
.side.chosen h4 { color: var(--good); }
.side.rejected h4 { color: var(--bad); }
.badge { display: inline-block; font-size: 0.75rem; padding: 0 0.4rem; border-radius: 3px;
  border: 1px solid var(--line); background: var(--panel); font-weight: 500; }
.bar { display: inline-block; height: 0.6rem; background: var(--accent); vertical-align: middle; }
.role { font-size: 0.8rem; font-weight: 600; color: var(--muted); text-transform: uppercase; }
@media (max-width: 760px) { .pair { grid-template-columns: 1fr; } main { padding: 0 0.8rem 2rem; } }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  html { font-size: 11px; }
  nav.toc { display: none; }
  main { max-width: none; padding: 0; }
  pre.text, pre.text.case { max-height: none; overflow: visible; }
  .hl pre { white-space: pre-wrap; overflow-wrap: anywhere; }
  figure, .pair, .card, tr { break-inside: avoid; }
  section.report-section > h2 { break-after: avoid; }
  details::details-content { content-visibility: visible; display: block; }
  details > summary { list-style: none; }
  a { color: inherit; text-decoration: none; }
}
"""
