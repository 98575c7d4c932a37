"""The report's sections, each a function from the run's data to one `<section>` element.

Every section has a stable id (tests and links rely on them) and `data-state`: `present`,
`empty` (the run wrote the file but no record survived) or `missing` (the run did not write it).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..records import CrossvalRecord, DPORecord, Message, SFTRecord
from ..rundir import (
    BACKTRANSLATE,
    COMPOSE,
    CONFIG,
    CROSSVAL,
    DPO,
    FUNNEL,
    INSTRUCTIONS,
    QUERIES,
    RESPONSES,
    RESULTS_SUFFIX,
    SCORED,
    SFT,
    STAGE_NAMES,
    VERIFIED,
)
from . import plots
from .html import code_block, esc, fmt, json_html, missing, percent, table, text_block
from .run_data import Combinations, FileScan, RunData

SECTIONS = {  # id -> title, in page order
    "summary": "Summary",
    "funnel": "Funnel",
    "distributions": "Accuracy and pass-rate distributions",
    "scores": "Relevance scores",
    "instructions": "Kept instructions",
    "combinations": "Combined constraints",
    "sft": "SFT records",
    "dpo": "DPO pairs",
    "evals": "Evaluation results",
    "contamination": "Contamination check",
    "config": "Configuration",
    "llm-cache": "LLM calls and cache",
}
OPEN_ITEMS = 2  # the first items of a sample start unfolded


def section(sid: str, state: str, body: str) -> str:
    return (
        f'<section id="{sid}" class="report-section" data-state="{state}"><h2>{esc(SECTIONS[sid])}</h2>{body}</section>'
    )


def _state_of(*scans: FileScan) -> str:
    present = [s for s in scans if s.present]
    if not present:
        return "missing"
    return "present" if any(s.records for s in present) else "empty"


def _unreadable(scan_: FileScan) -> str:
    if not scan_.invalid:
        return ""
    return (
        f'<p class="note">{esc(scan_.name)}: {scan_.invalid:,} unreadable line(s) skipped '
        f"(first: {esc(scan_.first_error)})</p>"
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _stage_rows(run: RunData) -> dict[str, dict]:
    """funnel.json's stages that are well-formed objects, by name."""
    stages = run.funnel.data.get("stages") if isinstance(run.funnel.data, dict) else None
    return {k: v for k, v in stages.items() if isinstance(v, dict)} if isinstance(stages, dict) else {}


# ------------------------------------------------------------------------------------------ summary
def summary(run: RunData) -> str:
    llm = _llm_stats(run)
    hit_rate = percent(llm["hits"], llm["hits"] + llm["misses"]) if llm else "—"
    cards = [
        ("instructions", run.count(INSTRUCTIONS.name), "instructions (seeds + augmented)"),
        ("crossval", run.count(CROSSVAL.name), "kept by cross-validation"),
        ("backtranslate", run.count(BACKTRANSLATE.name), "kept by back-translation"),
        ("prompts", run.count(QUERIES.name), "prompts (instruction + query)"),
        ("responses", run.responses if run.files[RESPONSES.name].present else None, "responses sampled"),
        (
            "passed",
            run.responses_passed if run.files[VERIFIED.name].present else None,
            "responses passing verification",
        ),
        (
            "dropped",
            sum(run.response_drops.values()) if run.files[VERIFIED.name].present else None,
            "responses never trained on"
            + (
                " (" + ", ".join(f"{k}: {v}" for k, v in run.response_drops.most_common()) + ")"
                if run.response_drops
                else ""
            ),
        ),
        ("sft", run.count(SFT.name), "SFT records"),
        ("dpo", run.count(DPO.name), "DPO pairs"),
    ]
    html = '<div class="cards">' + "".join(
        f'<div class="card" id="card-{key}"><div class="value">{esc(fmt(value))}</div>'
        f'<div class="label">{esc(label)}</div></div>'
        for key, value, label in cards
    )
    html += (
        f'<div class="card" id="card-cache"><div class="value">{esc(hit_rate)}</div>'
        f'<div class="label">LLM cache hit rate</div></div></div>'
    )
    if run.training_records == 0:
        html = _no_records_banner(run) + html
    return section("summary", "present" if run.training_records else "empty", html)


def _no_records_banner(run: RunData) -> str:
    rows = _stage_rows(run)
    where = ""
    for name in STAGE_NAMES:
        row = rows.get(name)
        if row is not None and _int(row.get("out")) == 0:
            dropped = _dict(row.get("dropped"))
            reasons = ", ".join(f"{k}: {fmt(v)}" for k, v in dropped.items()) or "no drop reason recorded"
            where = (
                f" Records ran out at stage <code>{esc(name)}</code> ({esc(fmt(_int(row.get('in'))))} in, 0 out;"
                f" dropped: {esc(reasons)})."
            )
            break
    if not where and not any(s.present for s in run.files.values()):
        where = " The output directory holds no stage output at all."
    return (
        f'<div class="banner" id="no-records">No surviving records: this run produced no SFT records '
        f"and no DPO pairs.{where}</div>"
    )


# ------------------------------------------------------------------------------------------- funnel
def funnel(run: RunData) -> str:
    rows = _stage_rows(run)
    parts = []
    if run.funnel.error:
        parts.append(missing(FUNNEL, f"unreadable ({run.funnel.error})"))
    elif not run.funnel.present:
        parts.append(missing(FUNNEL))
    names = [n for n in STAGE_NAMES if n in rows] + [n for n in rows if n not in STAGE_NAMES]
    if names:
        uri = plots.funnel(names, [_int(rows[n].get("in")) for n in names], [_int(rows[n].get("out")) for n in names])
        parts.append(f'<figure id="funnel-plot"><img alt="records in and out of each stage" src="{uri}"></figure>')
    body_rows = []
    for name in list(STAGE_NAMES) + [n for n in rows if n not in STAGE_NAMES]:
        row = rows.get(name)
        files = run.stage_files.get(name, [])
        file_cells = "<br>".join(_file_cell(run.files[f]) for f in files) or '<span class="muted">—</span>'
        if row is None:
            body_rows.append(
                [f"<code>{esc(name)}</code>", "", "", "", '<span class="muted">not run</span>', "", "", file_cells]
            )
            continue
        n_in, n_out = _int(row.get("in")), _int(row.get("out"))
        dropped = _dict(row.get("dropped"))
        counts = _dict(row.get("counts"))
        dropped_html = "<br>".join(f"{esc(k)}: <b>{esc(fmt(v))}</b>" for k, v in dropped.items()) or "—"
        counts_html = (
            f"<details><summary>{len(counts)} counter{'s' if len(counts) > 1 else ''}</summary>"
            + "<br>".join(f"{esc(k)}: {esc(fmt(v))}" for k, v in counts.items())
            + "</details>"
            if counts
            else "—"
        )
        shards = f"{fmt(_int(row.get('shards_run')))} run, {fmt(_int(row.get('shards_reused')))} reused"
        body_rows.append(
            [
                f"<code>{esc(name)}</code>",
                esc(fmt(n_in)),
                esc(fmt(n_out)),
                esc(percent(n_out, n_in)),
                dropped_html,
                counts_html,
                esc(shards),
                file_cells,
            ]
        )
    parts.append(
        table(
            ["stage", "in", "out", "out/in", "dropped (reason: records)", "other counts", "shards", "output files"],
            body_rows,
            "funnel",
        )
    )
    parts.append(_dropped_responses(run))
    return section("funnel", "present" if rows else "missing", "".join(parts))


# What each verify drop reason means, for the report's reader (quality.py and pairs.py define them).
_DROP_MEANING = {
    "truncated": "cut off at responses.max_tokens",
    "too_short": "fewer words than quality.min_words",
    "echo": "mostly repeats the prompt",
    "other_language": "not in the query's language",
    "garbage": "control characters or U+FFFD",
}


def _dropped_responses(run: RunData) -> str:
    """Responses verify kept in verified.jsonl but marked never to train on, by reason, with examples."""
    if not run.response_drops:
        return ""
    items = []
    for reason, n in run.response_drops.most_common():
        meaning = _DROP_MEANING.get(reason, "repetition (a Gopher rule)" if reason.endswith("_frac") else "")
        examples = "".join(
            f'<div class="message"><span class="role">{esc(prompt_id)} · pass rate {x.pass_rate:.3g}</span>'
            f"{text_block(x.text)}</div>"
            for prompt_id, x in run.drop_examples.get(reason, [])
        )
        items.append(
            f'<details class="item"><summary><code>{esc(reason)}</code> <b>{esc(fmt(n))}</b> '
            f'<span class="muted">{esc(meaning)}</span></summary>{examples}</details>'
        )
    total = sum(run.response_drops.values())
    return (
        f'<h3 id="dropped-responses">Responses never trained on ({esc(fmt(total))})</h3>'
        '<p class="note">Verified, kept in <code>verified.jsonl</code> with a drop reason: never an SFT record, a '
        "DPO chosen or (but truncated ones with <code>export.truncated_rejected</code>) a rejected. A seeded "
        "sample of each reason.</p>" + "".join(items)
    )


def _file_cell(scan_: FileScan) -> str:
    if not scan_.present:
        return f'<code>{esc(scan_.name)}</code> <span class="muted">not produced</span>'
    bad = f', <span class="missing">{scan_.invalid:,} unreadable</span>' if scan_.invalid else ""
    return f"<code>{esc(scan_.name)}</code> {scan_.records:,} records{bad}"


# ------------------------------------------------------------------------------------ distributions
def _thresholds(run: RunData) -> dict[str, plots.Threshold]:
    cfg = run.config
    if cfg is None:
        return {}
    rules = cfg.crossval.resolved()
    fa = rules["function_accuracy"]
    sft_max = cfg.export.sft_max_prompt_pass_rate
    thresholds = {
        "function": plots.Threshold(fa, f"keep {'>' if rules['function_accuracy_strict'] else '≥'} {fa:g}"),
        "case": plots.Threshold(
            0.5 if rules["case_rule"] == "majority" else 0.0,
            "keep > 0.5" if rules["case_rule"] == "majority" else "keep > 0",
        ),
        "pass": plots.Threshold(cfg.verify.threshold(), f"SFT-eligible > {cfg.verify.threshold():g}"),
        "score": plots.Threshold(cfg.score.min_score, f"keep ≥ {cfg.score.min_score:g}"),
    }
    if sft_max < 1:  # at 1 the option filters nothing: no line
        thresholds["prompt"] = plots.Threshold(sft_max, f"SFT from prompts ≤ {sft_max:g}")
    return thresholds


def _figure(
    values: Sequence[float],
    scan_: FileScan,
    fig_id: str,
    what: str,
    *,
    title: str,
    xlabel: str,
    edges: Sequence[float],
    threshold: plots.Threshold | None,
) -> str:
    if not scan_.present:
        inner = missing(scan_.name)
    elif not values:
        where = "holds no records" if not scan_.records else f"has none in its {scan_.records:,} records"
        inner = f'<p class="missing">no {esc(what)}: <code>{esc(scan_.name)}</code> {esc(where)}</p>'
    else:
        uri = plots.histogram(values, title=title, xlabel=xlabel, edges=edges, threshold=threshold)
        stats = f"n = {len(values):,}, mean {statistics.fmean(values):.3g}, median {statistics.median(values):.3g}"
        inner = (
            f'<img alt="histogram of {esc(what)}" src="{uri}">'
            f"<figcaption>{esc(title)} from <code>{esc(scan_.name)}</code>: {esc(stats)}</figcaption>"
        )
    return f'<figure id="{fig_id}">{inner}{_unreadable(scan_)}</figure>'


def distributions(run: RunData) -> str:
    th = _thresholds(run)
    crossval, verified = run.files[CROSSVAL.name], run.files[VERIFIED.name]
    unit = [i / 10 for i in range(11)]
    body = (
        '<p class="note">The AutoIF paper\'s Figure 4 view: how well the kept functions agree with the kept '
        "test cases, how many functions agree with each case, how often sampled responses pass "
        "their instruction's functions, and how many of each prompt's responses pass. Dashed: this run's keep "
        'threshold.</p><div class="plots">'
    )
    body += _figure(
        run.function_accuracy,
        crossval,
        "hist-function-accuracy",
        "function accuracies",
        title="Function accuracy",
        xlabel="share of kept cases a function agrees with",
        edges=unit,
        threshold=th.get("function"),
    )
    body += _figure(
        run.case_accuracy,
        crossval,
        "hist-case-accuracy",
        "test-case accuracies",
        title="Test-case accuracy",
        xlabel="share of functions agreeing with a case",
        edges=unit,
        threshold=th.get("case"),
    )
    body += _figure(
        run.pass_rates,
        verified,
        "hist-pass-rate",
        "response pass rates",
        title="Response pass rate",
        xlabel="share of the instruction's functions passed",
        edges=unit,
        threshold=th.get("pass"),
    )
    body += _figure(
        run.prompt_pass_rates,
        verified,
        "hist-prompt-pass-rate",
        "prompt pass rates",
        title="Prompt pass rate",
        xlabel="share of a prompt's responses that pass and may be trained on",
        edges=_share_edges(run.most_responses),
        threshold=th.get("prompt"),
    )
    body += "</div>" + _prompt_outcomes(run)
    state = _state_of(crossval, verified)
    if state == "present" and not (run.function_accuracy or run.case_accuracy or run.pass_rates):
        state = "empty"
    return section("distributions", state, body)


def _share_edges(k: int) -> list[float]:
    """Bin edges for shares of k responses: one bin centred on each of 0, 1/k, ... 1 (all-fail and
    all-pass alone), at most 20 bins for large k."""
    bins = max(1, min(k, 20))
    return [(i - 0.5) / bins for i in range(bins + 2)]


def _prompt_outcomes(run: RunData) -> str:
    """One sentence on how hard the prompts were: all-pass, all-fail and mixed prompts."""
    n = sum(run.prompt_outcomes.values())
    if not n:
        return ""
    every, none_, mixed = (run.prompt_outcomes[k] for k in ("all_pass", "all_fail", "mixed"))
    return (
        f'<p class="note" id="prompt-outcomes">Of {fmt(n)} prompts, {fmt(every)} ({percent(every, n)}) had every '
        f"response pass (little to learn from), {fmt(none_)} ({percent(none_, n)}) had none "
        f"pass (no SFT record) and {fmt(mixed)} ({percent(mixed, n)}) mixed outcomes. A response passes when it "
        "meets verify's keep rule and has no drop reason; <code>export.sft_max_prompt_pass_rate</code> and "
        "<code>export.dpo_min_prompt_mix</code> select prompts by this share.</p>"
    )


def scores(run: RunData) -> str:
    scored = run.files[SCORED.name]
    edges = [x / 2 - 0.25 for x in range(22)]  # one bin per half point, centred on 0, 0.5, ... 10
    body = ""
    if run.config is not None and not run.config.score.active(run.config.llm_for("score")):
        body += '<p class="note">Scoring was switched off in this run (<code>score.enabled</code>).</p>'
    body += (
        '<div class="plots">'
        + _figure(
            run.scores,
            scored,
            "hist-score",
            "relevance scores",
            title="Relevance score",
            xlabel="judge score (0: unrelated to the query, 10: helpful and related)",
            edges=edges,
            threshold=_thresholds(run).get("score"),
        )
        + "</div>"
    )
    if scored.present:
        judged = len(run.scores)
        body += (
            f'<p class="note">{judged:,} responses judged; {run.unscored:,} without a score (not needing a '
            "judgement, such as responses that cannot be chosen, or an unparsable judgement).</p>"
        )
    return section("scores", "empty" if scored.present and not run.scores else _state_of(scored), body)


# ------------------------------------------------------------------------------------- instructions
def instructions(run: RunData) -> str:
    body = ""
    if run.instruction_sources:
        rows = [[esc(source), esc(fmt(n))] for source, n in sorted(run.instruction_sources.items())]
        body += "<h3>instructions.jsonl by source</h3>" + table(["source", "instructions"], rows)
    if run.nli_labels:
        rows = [[esc(label), esc(fmt(n))] for label, n in sorted(run.nli_labels.items())]
        body += "<h3>Back-translation NLI labels (kept instructions)</h3>" + table(["label", "functions"], rows)
    scan_ = run.files[run.instructions_file]
    if not scan_.present:
        body += missing(run.instructions_file)
    elif not run.instructions:
        body += f'<p class="missing">No instruction survived: <code>{esc(scan_.name)}</code> holds no records.</p>'
    else:
        body += (
            f'<h3>Sample of kept instructions</h3><p class="note">{len(run.instructions)} of '
            f"{scan_.records:,} from <code>{esc(scan_.name)}</code> (a seeded random sample, "
            "in file order).</p>"
        )
        body += "".join(_instruction_item(r, i < OPEN_ITEMS) for i, r in enumerate(run.instructions))
    body += _unreadable(scan_)
    return section("instructions", _state_of(scan_), body)


def _instruction_item(record: CrossvalRecord, open_: bool) -> str:
    accs = [f.accuracy for f in record.functions]
    mean = f", mean accuracy {statistics.fmean(accs):.2f}" if accs else ""
    head = (
        f'{esc(record.instruction)} <span class="badge">{len(record.functions)} functions{esc(mean)}</span> '
        f'<span class="badge">{len(record.cases)} cases</span>'
    )
    functions = "".join(
        f'<div class="function"><span class="badge">function {i + 1}: accuracy {f.accuracy:.3g}</span>'
        f"{code_block(f.source, label=f'function {i + 1}')}</div>"
        for i, f in enumerate(record.functions)
    )
    case_rows = [
        [text_block(c.input, "text case"), "✔ true" if c.output else "✘ false", esc(f"{c.accuracy:.3g}")]
        for c in record.cases
    ]
    body = (
        f'<p class="muted">id <code>{esc(record.instruction_id)}</code></p><h4>Functions</h4>{functions}'
        "<h4>Test cases</h4>" + table(["input", "expected", "accuracy"], case_rows)
    )
    if record.back_translations:
        rows = [[esc(fmt(bt.function_index)), esc(bt.text), esc(bt.label or "—")] for bt in record.back_translations]
        body += "<h4>Back-translations</h4>" + table(["function", "instruction written back", "NLI label"], rows)
    return f'<details class="item"{" open" if open_ else ""}><summary>{head}</summary>{body}</details>'


# ------------------------------------------------------------------------------------- combinations
def combinations(run: RunData) -> str:
    """Stage compose's combinations: sizes drawn, conflicts found and by which evidence, how often
    responses held every constraint, and the share of the export they make."""
    scan_ = run.files[COMPOSE.name]
    combos = run.combinations
    counts = _dict(_stage_rows(run).get("compose", {}).get("counts"))
    if not scan_.present:
        return section("combinations", "missing", missing(COMPOSE.name))
    if not combos.size:
        off = run.config is not None and not run.config.compose.enabled
        why = " (<code>compose.enabled</code> is false in this run)" if off else ""
        body = f'<p class="missing">No combination in <code>compose.jsonl</code>{why}.</p>'
        return section("combinations", "empty", body + _unreadable(scan_))

    drawn = {int(k.split(":", 1)[1]): _int(v) for k, v in counts.items() if k.startswith("combinations_drawn:")}
    sizes = sorted(set(drawn) | set(combos.size.values()))
    kept = Counter(combos.size.values())
    satisfied = Counter(combos.size[c] for c in combos.satisfied)
    verified = Counter(combos.size[c] for c in combos.verified)
    rows = [
        [
            esc(fmt(size)),
            esc(fmt(drawn[size]) if size in drawn else "—"),
            esc(fmt(kept[size])),
            esc(fmt(combos.responses[size])),
            esc(f"{fmt(combos.all_hold[size])} ({percent(combos.all_hold[size], combos.responses[size])})"),
            esc(fmt(satisfied[size])),
            esc(fmt(verified[size] - satisfied[size])),
        ]
        for size in sizes
    ]
    body = (
        '<p class="note">Prompts that combine kept instructions (stage compose). A response holds a constraint '
        "when its functions' pass rate is above verify's threshold; it passes only when every constraint holds. "
        "Satisfied: some response to the combination's prompts holds every constraint; unsatisfied: none does "
        "(it may be satisfiable but unseen; it gives no SFT record).</p>"
    )
    body += '<h3 id="combinations-by-size">By size</h3>' + table(
        ["constraints", "drawn", "kept", "responses", "all constraints hold", "satisfied", "unsatisfied"],
        rows,
        "combinations",
    )
    body += '<h3 id="combinations-evidence">Conflicts and compatibility, by evidence</h3>' + table(
        ["evidence", "finding", "combinations"],
        [[esc(e), esc(f), f'<span class="num">{esc(fmt(n))}</span>'] for e, f, n in _evidence_rows(combos, counts)],
        "evidence",
    )
    if combos.rewrites:
        rewrite_rows = [[esc(k), esc(fmt(n))] for k, n in combos.rewrites.most_common()]
        body += (
            '<h3 id="combinations-rewrites">LLM rewrites</h3><p class="note">kept: the LLM\'s text is the '
            "instruction; otherwise why the template join was used (back-translation with NLI).</p>"
            + table(["rewrite", "combinations"], rewrite_rows)
        )
    sft_total, dpo_total = run.count(SFT.name), run.count(DPO.name)
    shares = [
        f"{fmt(n)} of {fmt(total)} {what} ({percent(n, total)})"
        for n, total, what in ((combos.sft, sft_total, "SFT records"), (combos.dpo, dpo_total, "DPO pairs"))
        if total is not None
    ]
    if shares:
        body += f'<p class="note" id="combinations-export">Combinations in the export: {esc("; ".join(shares))}.</p>'
    return section("combinations", "present", body + _unreadable(scan_))


def _evidence_rows(combos: Combinations, counts: dict) -> list[tuple[str, str, int]]:
    """(evidence, what it found, combinations): declared rules, execution, the LLM and its overrides."""
    rows = [
        ("declared", f"incompatible by library rule {k.split(':', 1)[1]} (dropped)", _int(v))
        for k, v in sorted(counts.items())
        if k.startswith("declared_conflict:")
    ]
    evidence = Counter(combos.evidence.values())
    unproven = {c for c, e in combos.evidence.items() if e == "unproven"}
    rows += [
        ("execution", "compatible: a constituent's test case holds every constraint", evidence["case"]),
        ("execution", "compatible: constituents' cases joined hold every constraint", evidence["joined_cases"]),
        ("execution", "compatible: no case, but a response holds every constraint", len(unproven & combos.satisfied)),
        (
            "execution",
            "unproven and no response holds every constraint",
            len(unproven & (combos.verified - combos.satisfied)),
        ),
    ]
    verdicts = Counter(combos.llm_check.values())
    rows += [("LLM", f"verdict: {v}", n) for v, n in sorted(verdicts.items())]
    conflicts = {c for c, v in combos.llm_check.items() if v == "conflict"}
    if conflicts:
        rows += [
            ("LLM overridden", "conflict, but a test case proves compatibility", len(conflicts - unproven)),
            (
                "LLM overridden",
                "conflict, but a response proves compatibility",
                len(conflicts & unproven & combos.satisfied),
            ),
            (
                "LLM",
                "conflict not overridden (no response holds every constraint)",
                len(conflicts & unproven & (combos.verified - combos.satisfied)),
            ),
        ]
    return rows


# -------------------------------------------------------------------------------------- sft and dpo
def _messages(messages: Sequence[Message]) -> str:
    return "".join(
        f'<div class="message"><span class="role">{esc(m.role)}</span>{text_block(m.content)}</div>' for m in messages
    )


def _functions(functions: Sequence[str]) -> str:
    if not functions:
        return ""
    blocks = "".join(code_block(f, label=f"function {i + 1}") for i, f in enumerate(functions))
    return f"<details><summary>{len(functions)} verification function(s)</summary>{blocks}</details>"


def sft(run: RunData) -> str:
    scan_ = run.files[SFT.name]
    if not scan_.present:
        body = missing(SFT.name)
    elif not run.sft:
        body = '<p class="missing">No SFT record survived: <code>sft.jsonl</code> is empty.</p>'
    else:
        body = (
            f'<p class="note">{len(run.sft)} of {scan_.records:,} records (a seeded random sample, '
            "in file order).</p>" + "".join(_sft_item(r, i < OPEN_ITEMS) for i, r in enumerate(run.sft))
        )
    return section("sft", _state_of(scan_), body + _unreadable(scan_))


def _sft_item(record: SFTRecord, open_: bool) -> str:
    user = next((m.content for m in record.messages if m.role == "user"), "")
    head = (
        f'{esc(user[:140])}{"…" if len(user) > 140 else ""} <span class="badge">pass rate {record.pass_rate:.3g}</span>'
    )
    body = (
        f'<p class="muted">instruction <code>{esc(record.instruction_id)}</code></p>'
        + _messages(record.messages)
        + _functions(record.functions)
    )
    return f'<details class="item"{" open" if open_ else ""}><summary>{head}</summary>{body}</details>'


def dpo(run: RunData) -> str:
    scan_ = run.files[DPO.name]
    if not scan_.present:
        body = missing(DPO.name)
    elif not scan_.records:
        body = '<p class="missing">No DPO pair survived: <code>dpo.jsonl</code> is empty.</p>'
    else:
        levels = ", ".join(f"{fmt(n)} at {level} level" for level, n in sorted(run.dpo_levels.items()))
        body = f'<p class="note">{scan_.records:,} pairs: {esc(levels)}. Chosen on the left, rejected on the right.</p>'
        for level, title in (
            ("query", "Query level (sampled responses)"),
            ("instruction", "Instruction level (test cases)"),
        ):
            pairs = run.dpo.get(level) or []
            if pairs:
                body += (
                    f'<h3>{esc(title)}</h3><p class="note">{len(pairs)} of {run.dpo_levels[level]:,} '
                    "(a seeded random sample).</p>" + "".join(_dpo_item(p) for p in pairs)
                )
    return section("dpo", _state_of(scan_), body + _unreadable(scan_))


def _dpo_item(record: DPORecord) -> str:
    return (
        f'<div class="item dpo-pair"><span class="badge">{esc(record.level)} level</span>'
        f'{_messages(record.prompt)}<div class="pair">'
        f'<div class="side chosen"><h4>chosen</h4>{_messages(record.chosen)}</div>'
        f'<div class="side rejected"><h4>rejected</h4>{_messages(record.rejected)}</div></div>'
        f"{_functions(record.functions)}</div>"
    )


# ------------------------------------------------------------------------- evals, config, llm cache
def evals(run: RunData) -> str:
    if not run.evals:
        return section(
            "evals",
            "missing",
            missing(f"*{RESULTS_SUFFIX}", "not produced by this run (no evaluation results in the run directory)"),
        )
    body = ""
    for doc in run.evals:
        name = doc.name.removesuffix(RESULTS_SUFFIX)
        body += f'<h3 id="eval-{esc(name)}">{esc(name)} <span class="muted">({esc(doc.name)})</span></h3>'
        body += missing(doc.name, f"unreadable ({doc.error})") if doc.error else json_html(doc.data)
    return section("evals", "present", body)


def contamination(run: RunData) -> str:
    doc = run.contamination
    if not doc.present:
        return section("contamination", "missing", missing(doc.name))
    body = missing(doc.name, f"unreadable ({doc.error})") if doc.error else json_html(doc.data)
    return section("contamination", "present", body)


def config(run: RunData) -> str:
    if run.config_text is None:
        return section("config", "missing", missing(CONFIG))
    body = ""
    if run.config_error:
        body += (
            f'<p class="note">config.yaml does not load with this version ({esc(run.config_error)}); '
            "thresholds are not drawn.</p>"
        )
    body += code_block(run.config_text, "yaml", CONFIG)
    return section("config", "present", body)


def _llm_stats(run: RunData) -> dict | None:
    llm = run.funnel.data.get("llm") if isinstance(run.funnel.data, dict) else None
    if not isinstance(llm, dict):
        return None
    return {**llm, "hits": _int(llm.get("hits")), "misses": _int(llm.get("misses"))}


def _llm_per_stage(run: RunData) -> str:
    """Each LLM stage's model, samples, tokens and cost (funnel.json's `stages.<stage>.llm`, cost.py)."""
    rows = []
    for name, row in _stage_rows(run).items():
        line = row.get("llm")
        if not isinstance(line, dict):
            continue
        cost = line.get("cost")
        rows.append(
            [
                f"<code>{esc(name)}</code>",
                esc(f"{line.get('backend', '')}: {line.get('model', '')}"),
                "yes" if line.get("batch") else "no",
                *(f'<span class="num">{esc(fmt(_int(line.get(k))))}</span>' for k in _USAGE_COLUMNS),
                esc("—" if cost is None else f"${cost:.4f}"),
            ]
        )
    if not rows:
        return ""
    data = run.funnel.data if isinstance(run.funnel.data, dict) else {}
    total = (data.get("cost") or {}).get("cost")
    stopped = data.get("stopped")
    notes = [f"all stages: ${total:.4f}" if isinstance(total, (int, float)) else "no model of this run has a price"]
    if isinstance(stopped, dict):
        notes.append(f"the run stopped in {esc(str(stopped.get('stage')))}: {esc(str(stopped.get('reason')))}")
    header = ["stage", "model", "batch", "generated", "from cache", "prompt tokens", "completion tokens", "cost"]
    return table(header, rows) + f"<p>{'; '.join(notes)}</p>"


_USAGE_COLUMNS = ("misses", "hits", "prompt_tokens", "completion_tokens")


def llm_cache(run: RunData) -> str:
    per_stage = _llm_per_stage(run)
    llm = _llm_stats(run)
    if llm is None and per_stage:
        return section("llm-cache", "present", per_stage)
    if llm is None:
        why = (
            "not produced by this run (funnel.json records no LLM use)"
            if run.funnel.present
            else "not produced by this run (no funnel.json)"
        )
        return section("llm-cache", "missing", missing("funnel.json: llm", why))
    total = llm["hits"] + llm["misses"]
    share = 100 * llm["hits"] / total if total else 0
    rows = [[esc(k), f'<span class="num">{esc(fmt(v))}</span>'] for k, v in llm.items()]
    rows.append(
        [
            "cache hit rate",
            f'<span class="bar" style="width:{share * 1.5:.0f}px"></span> '
            f"{esc(percent(llm['hits'], total))} ({esc(fmt(llm['hits']))} of {esc(fmt(total))} samples)",
        ]
    )
    return section("llm-cache", "present", per_stage + table([], rows))


ORDER = [
    summary,
    funnel,
    distributions,
    scores,
    instructions,
    combinations,
    sft,
    dpo,
    evals,
    contamination,
    config,
    llm_cache,
]
