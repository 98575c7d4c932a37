"""The run report (issue 8): real run data rendered, then opened in headless Chromium.

The run directory is built from the official AutoIF release's sample data (real LLM outputs)
converted into our record formats; what the release does not record (a test case's accuracy, a
response's pass rate) is computed by running its functions in our real sandbox. Chromium is
driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`): no port, no extra
package, nothing downloaded. The screenshot and the print PDF land in `artifacts/report/` at the
repository root (gitignored), next to a copy of the page.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from html import escape
from pathlib import Path

import pytest

from autoif.config import dump_default_yaml, load_config
from autoif.errors import AutoifError
from autoif.jsonl import write_jsonl
from autoif.pipeline import StageReport
from autoif.records import (
    CaseResult,
    CrossvalRecord,
    DPORecord,
    FunctionResult,
    Instruction,
    Message,
    QueryRecord,
    ResponsesRecord,
    SFTRecord,
    VerifiedRecord,
    VerifiedResponse,
    VerifierSamples,
)
from autoif.report import REPORT_FILE, render_report, write_report
from autoif.report.sections import SECTIONS

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "autoif-official"
ARTIFACTS = REPO / "artifacts" / "report"
CHROMIUM = shutil.which("chromium")

needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"AutoIF fixtures not found at {FIXTURES}")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (`make test` installs Debian's `chromium`)"
)


# ------------------------------------------------------------------------------- the run directory
def official(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def official_lines(name: str) -> list[str]:
    return [line.strip() for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def user(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


def assistant(text: str) -> list[Message]:
    return [Message(role="assistant", content=text)]


def as_bool(label) -> bool:
    """The release writes some case labels as the strings 'True'/'False'."""
    return label if isinstance(label, bool) else str(label).strip().lower() == "true"


def build_run(out: Path) -> dict:
    """A small run directory from the release's data; returns the numbers the report must show."""
    from autoif.sandbox import Sandbox, pass_rate

    cfg = load_config(None, [f"paths.out={out}"])
    seeds = [
        Instruction(id=f"seed-{i}", text=t, source="seed") for i, t in enumerate(official_lines("seed_instruction.txt"))
    ]
    augmented = [
        Instruction(id=f"aug-{i}", text=t, source="augmented")
        for i, t in enumerate(official_lines("augment_instructions.txt"))
    ]
    write_jsonl(out / "seeds.jsonl", seeds)
    write_jsonl(out / "instructions.jsonl", seeds + augmented)
    write_jsonl(
        out / "verifiers.jsonl",
        [
            VerifierSamples(instruction_id=f"ver-{i}", instruction=r["instruction"], raw=r["gpt-answer"])
            for i, r in enumerate(official("eval_func_rft.jsonl"))
        ],
    )

    # Kept instructions: the release's cross-validated functions (with its accuracies) and cases.
    back_trans = official("back_trans.jsonl")
    rft = official("query_rft.jsonl")
    by_instruction = {r["instruction"]: r for r in rft}
    sources = [(f"bt-{i}", r) for i, r in enumerate(back_trans)] + [
        (f"rft-{i}", r) for i, r in enumerate(by_instruction.values())
    ]
    ids = {r["instruction"]: iid for iid, r in sources}
    prompts = [(f"p-{i}", r) for i, r in enumerate(rft)]
    with Sandbox(workers=2, timeout_s=2.0) as sandbox:
        case_grids = sandbox.check_many(
            [([f for f, _ in r["eval_func"]], [c[0] for c in r["cases"]]) for _, r in sources]
        )
        response_grids = sandbox.check_many([([f for f, _ in r["eval_func"]], r["gpt-answer"]) for _, r in prompts])

    crossval = []
    for (iid, r), grid in zip(sources, case_grids):
        cases = [
            CaseResult(
                input=inp,
                output=as_bool(label),
                accuracy=sum(row[j].value is as_bool(label) for row in grid) / len(grid),
            )
            for j, (inp, label) in enumerate(r["cases"])
        ]
        extra = {}
        if "back_instruction" in r:  # the release's back-translations; no NLI label recorded
            extra["back_translations"] = [
                {"function_index": k, "text": t, "label": None} for k, t in enumerate(r["back_instruction"])
            ]
        crossval.append(
            CrossvalRecord(
                instruction_id=iid,
                instruction=r["instruction"],
                cases=cases,
                functions=[FunctionResult(source=f, accuracy=a) for f, a in r["eval_func"]],
                **extra,
            )
        )
    write_jsonl(out / "crossval.jsonl", crossval)
    write_jsonl(out / "backtranslate.jsonl", [r for r in crossval if r.back_translations])

    queries, responses, verified = [], [], []
    for (pid, r), grid in zip(prompts, response_grids):
        query = r["prompt"].split("\n[Query] ", 1)[1]
        queries.append(
            QueryRecord(
                id=pid,
                instruction_id=ids[r["instruction"]],
                instruction=r["instruction"],
                query=query,
                prompt=r["prompt"],
            )
        )
        responses.append(ResponsesRecord(prompt_id=pid, responses=r["gpt-answer"]))
        rated = []
        for j, text in enumerate(r["gpt-answer"]):
            outcomes = [row[j] for row in grid]
            rate = pass_rate(outcomes)
            rated.append(
                VerifiedResponse(
                    text=text,
                    pass_rate=rate,
                    outcomes=[o.value for o in outcomes],
                    passed=rate > cfg.verify.threshold(),
                )
            )
        verified.append(VerifiedRecord(prompt_id=pid, responses=rated))
    # More prompts, with the pass rates the release recorded (one function each, not shipped): most
    # responses above fail their functions, as they really did, and SFT needs some that pass.
    for i, r in enumerate(official("dpo_query_eval_score_results.jsonl")):
        instruction, query = r["query"].split(". ", 1)
        pid = f"q-{i}"
        queries.append(
            QueryRecord(
                id=pid,
                instruction_id=f"q-instr-{instruction}",
                instruction=instruction + ".",
                query=query,
                prompt=r["query"],
            )
        )
        responses.append(ResponsesRecord(prompt_id=pid, responses=[text for text, _ in r["response"]]))
        verified.append(
            VerifiedRecord(
                prompt_id=pid,
                responses=[
                    VerifiedResponse(
                        text=text, pass_rate=rate, outcomes=[rate == 1.0], passed=rate > cfg.verify.threshold()
                    )
                    for text, rate in r["response"]
                ],
            )
        )
    write_jsonl(out / "queries.jsonl", queries)
    write_jsonl(out / "responses.jsonl", responses)
    write_jsonl(out / "verified.jsonl", verified)

    # The release's relevance judgements (its judge's last line is `Score: N`). It keeps no pass rate
    # for judged responses; its judge only saw responses that passed their functions.
    judged = defaultdict(list)
    for r in official("query_rft_score.jsonl"):
        score = float(re.search(r"Score:\s*(\d+(?:\.\d+)?)\s*$", r["gen"][-1]).group(1))
        judged[(r["instruction"], r["query"])].append(
            VerifiedResponse(text=r["response"], pass_rate=1.0, outcomes=[True], passed=True, score=score)
        )
    scored = verified + [VerifiedRecord(prompt_id=f"judged-{i}", responses=rs) for i, rs in enumerate(judged.values())]
    write_jsonl(out / "scored.jsonl", scored)

    # Export as the export stage shapes it: SFT from passing responses; DPO pairs at query level
    # (pass rate >= 0.5 against 0) and instruction level (a True case against a False one).
    functions_of = {r.instruction_id: [f.source for f in r.functions] for r in crossval}
    sft, dpo = [], []
    for q, v in zip(queries, verified):
        funcs = functions_of.get(q.instruction_id, [])
        good = list(dict.fromkeys(x.text for x in v.responses if x.passed))
        bad = list(dict.fromkeys(x.text for x in v.responses if x.pass_rate == 0))
        sft += [
            SFTRecord(
                messages=user(q.prompt) + assistant(t),
                instruction_id=q.instruction_id,
                functions=funcs,
                pass_rate=next(x.pass_rate for x in v.responses if x.text == t),
            )
            for t in good
        ]
        dpo += [
            DPORecord(
                prompt=user(q.prompt), chosen=assistant(c), rejected=assistant(rj), level="query", functions=funcs
            )
            for c, rj in zip(good[:2], bad[:2])
        ]
    for r in crossval:
        good = [c.input for c in r.cases if c.output and c.accuracy > 0.5]
        bad = [c.input for c in r.cases if not c.output and c.accuracy > 0.5]
        dpo += [
            DPORecord(
                prompt=user(r.instruction),
                chosen=assistant(c),
                rejected=assistant(rj),
                level="instruction",
                functions=functions_of[r.instruction_id],
            )
            for c, rj in zip(good[:2], bad[:2])
        ]
    write_jsonl(out / "sft.jsonl", sft)
    write_jsonl(out / "dpo.jsonl", dpo)

    # funnel.json in the shape the pipeline writes (StageReport rows). The release's sample files are
    # not one connected run, so these rows are illustrative: this directory's file sizes, and drop
    # reasons and counters named as the stages record them. So are the LLM cache numbers.
    def row(n_in, n_out, dropped=None, counts=None):
        return StageReport(n_in, n_out, dropped=dropped or {}, counts=counts or {}, shards_run=1).as_dict()

    n_passed = sum(x.passed for v in verified for x in v.responses)
    stages = {
        "seeds": row(0, len(seeds)),
        "augment": row(len(seeds), len(seeds) + len(augmented), counts={"augmented_kept": len(augmented)}),
        "verifiers": row(len(seeds) + len(augmented), len(official("eval_func_rft.jsonl"))),
        "crossval": row(
            len(crossval) + 2,
            len(crossval),
            dropped={"no_function_kept": 1, "too_few_cases": 1},
            counts={"case_dropped:disagreement": 3, "function_dropped:compile": 2},
        ),
        "backtranslate": row(
            len(crossval), len(back_trans), dropped={"contradiction": len(crossval) - len(back_trans)}
        ),
        "queries": row(len(crossval), len(queries)),
        "responses": row(len(queries), len(responses)),
        "verify": row(len(responses), len(verified), counts={"responses_passed": n_passed}),
        "score": row(len(verified), len(scored), counts={"responses_judged": sum(len(v) for v in judged.values())}),
        "export": row(len(scored), len(sft), counts={"records_out:dpo.jsonl": len(dpo)}),
    }
    llm = {
        "backend": "embedded",
        "model": "SmolLM2-135M-Instruct",
        "hits": 120,
        "misses": 360,
        "completion_tokens": 51234,
        "errors": 0,
    }
    (out / "funnel.json").write_text(json.dumps({"stages": stages, "llm": llm}, indent=2))
    (out / "config.yaml").write_text(dump_default_yaml(cfg))
    # The paper's Table 1 IFEval numbers for Qwen2-7B, in the shape of an eval results file.
    (out / "ifeval_results.json").write_text(
        json.dumps(
            {
                "benchmark": "ifeval",
                "model": "Qwen2-7B",
                "prompts": 541,
                "metrics": {
                    "prompt_level_strict": 0.377,
                    "prompt_level_loose": 0.436,
                    "instruction_level_strict": 0.494,
                    "instruction_level_loose": 0.534,
                },
            }
        )
    )
    (out / "contamination.json").write_text(
        json.dumps(
            {
                "ngram": 13,
                "training_prompts": len(sft) + len(dpo),
                "benchmarks": {
                    "ifeval": {"prompts": 541, "overlapping_prompts": 0, "overlap_rate": 0.0, "top_pairs": []}
                },
            }
        )
    )
    prompt_pass_rates = [sum(x.passed for x in v.responses) / len(v.responses) for v in verified]
    return {
        "function_accuracies": sum(len(r.functions) for r in crossval),
        "case_accuracies": sum(len(r.cases) for r in crossval),
        "pass_rates": sum(len(v.responses) for v in verified),
        "prompts": len(verified),
        "all_pass": prompt_pass_rates.count(1.0),
        "all_fail": prompt_pass_rates.count(0.0),
        "scores": sum(len(v) for v in judged.values()),
        "sft": len(sft),
        "dpo": len(dpo),
        "kept": len(back_trans),
        "hit_rate": "25.0%",
    }


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    expected = build_run(out)
    return out, expected


# --------------------------------------------------------------------------- headless Chromium
class Chromium:
    """Headless Chromium over the DevTools protocol on a pipe: commands go to its fd 3 and
    replies come from its fd 4, as NUL-terminated JSON messages."""

    def __init__(self, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Open for the browser's whole life (its stderr), closed in close(): no `with` can span that.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        # bash, not sh: dash cannot redirect from a descriptor above 9.
        self.proc = subprocess.Popen(
            [
                "bash",
                "-c",
                f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}',
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--hide-scrollbars",
                "--disable-background-networking",
                "--mute-audio",
                "about:blank",
            ],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._messages: queue.Queue = queue.Queue()
        self._events: list[dict] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_browser, 1 << 16):
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            for message in complete:
                self._messages.put(json.loads(message))
        self._messages.put(None)  # the browser closed the pipe

    def _receive(self, deadline: float) -> dict:
        try:
            message = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError("Chromium did not answer in time") from None
        if message is None:
            raise RuntimeError(f"Chromium exited: {self._log_tail()}")
        return message

    def _log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-2000:].decode(errors="replace")

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        try:
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise RuntimeError(f"Chromium exited: {self._log_tail()}") from None
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self._events:
                if event.get("method") == method and event.get("sessionId") == session:
                    self._events.remove(event)
                    return event
            self._events.append(self._receive(deadline))

    def events(self, session: str) -> list[dict]:
        return [e for e in self._events if e.get("sessionId") == session]

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        self.log.close()


class Page:
    """One tab showing a file, with what it logged and fetched."""

    def __init__(self, browser: Chromium, path: Path, width: int = 1366, height: int = 860) -> None:
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        self.send("Page.navigate", {"url": path.resolve().as_uri()})
        browser.wait_event("Page.loadEventFired", self.session)

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, self.session)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors (CSP violations, failed loads)."""
        errors = []
        for event in self.browser.events(self.session):
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                errors.append("exception: " + json.dumps(params["exceptionDetails"])[:300])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append("log: " + params["entry"]["text"])
        return errors

    def fetched(self) -> list[str]:
        """URLs requested besides the page file itself and data: URIs."""
        return [
            e["params"]["request"]["url"]
            for e in self.browser.events(self.session)
            if e.get("method") == "Network.requestWillBeSent"
            and not e["params"]["request"]["url"].startswith(("file:", "data:"))
        ]

    def screenshot(self, path: Path) -> None:
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000), "scale": 1}
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        path.write_bytes(base64.b64decode(shot["data"]))

    def print_pdf(self, path: Path) -> None:
        pdf = self.send("Page.printToPDF", {"printBackground": True, "preferCSSPageSize": True})
        path.write_bytes(base64.b64decode(pdf["data"]))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


SECTION_STATES = (
    "JSON.stringify(Object.fromEntries([...document.querySelectorAll('section.report-section')]"
    ".map(s => [s.id, s.dataset.state])))"
)


# ------------------------------------------------------------------------------------------ tests
@pytest.mark.slow  # about 15 s: the sandbox builds the run, Chromium renders, screenshots and prints it
@needs_fixtures
@needs_chromium
def test_real_run_report_in_chromium(real_run, browser):
    out, expected = real_run
    path = write_report(out)
    assert path == out / REPORT_FILE and path.is_file()
    assert not list(out.glob(f".{REPORT_FILE}.*")), "atomic write left a temp file"
    page = Page(browser, path)

    assert page.console_errors() == []
    assert page.fetched() == []
    states = json.loads(page.evaluate(SECTION_STATES))
    assert list(states) == list(SECTIONS)  # every section, in order
    # This run is built without stage compose (no compose.jsonl): its section says the file is missing
    # (tests/stages/test_compose_llm.py renders a full one)
    assert states.pop("combinations") == "missing"
    assert all(state == "present" for state in states.values()), states
    # The plots are images that decoded (an SVG that failed to load has naturalWidth 0).
    plots = json.loads(
        page.evaluate(
            "JSON.stringify([...document.querySelectorAll('figure img')]"
            ".map(i => [i.closest('figure').id, i.naturalWidth]))"
        )
    )
    assert {fid for fid, _ in plots} == {
        "funnel-plot",
        "hist-function-accuracy",
        "hist-case-accuracy",
        "hist-pass-rate",
        "hist-prompt-pass-rate",
        "hist-score",
    }
    assert all(width > 0 for _, width in plots), plots
    captions = page.evaluate("[...document.querySelectorAll('figcaption')].map(c => c.textContent).join('\\n')")
    for n in ("function_accuracies", "case_accuracies", "pass_rates", "prompts", "scores"):
        assert f"n = {expected[n]:,}," in captions
    text = page.evaluate("document.body.innerText")
    assert f"{expected['sft']}\nSFT records" in text and f"{expected['dpo']}\nDPO pairs" in text
    assert expected["hit_rate"] in text
    for reason in ("no_function_kept", "too_few_cases", "contradiction"):  # drop reasons of the funnel
        assert reason in page.evaluate("document.getElementById('funnel').innerText")
    # Kept instructions: highlighted code and the release's back-translations; DPO pairs side by side.
    assert page.evaluate("document.querySelectorAll('#instructions details.item').length") == expected["kept"]
    assert page.evaluate("document.querySelectorAll('#instructions .hl .k').length") > 0  # pygments keyword spans
    assert "Answer without using any words that contain the letter 'E'." in text
    sides = page.evaluate("""JSON.stringify([...document.querySelectorAll('#dpo .pair')].slice(0, 3).map(p => {
        const [c, r] = p.querySelectorAll('.side'); const a = c.getBoundingClientRect(), b = r.getBoundingClientRect();
        return [Math.abs(a.top - b.top) < 1, a.right <= b.left];}))""")
    assert json.loads(sides) and all(same_row and left_of for same_row, left_of in json.loads(sides))
    assert "prompt_level_strict" in text and "0.377" in text and "overlap_rate" in text
    assert page.evaluate("document.querySelectorAll('#config .hl').length") == 1
    # Long code starts collapsed on screen; in print, collapsed code is laid out (printed) too.
    collapsed = "[...document.querySelectorAll('details.code:not([open]) .hl pre')]"
    assert page.evaluate(f"{collapsed}.length") > 0
    assert page.evaluate(f"{collapsed}.every(p => !p.checkVisibility())")
    page.send("Emulation.setEmulatedMedia", {"media": "print"})
    assert page.evaluate(f"{collapsed}.every(p => p.checkVisibility())")
    assert page.evaluate("getComputedStyle(document.querySelector('nav.toc')).display") == "none"
    page.send("Emulation.setEmulatedMedia", {"media": ""})

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(ARTIFACTS / "report.png")
    page.print_pdf(ARTIFACTS / "report-print.pdf")
    shutil.copyfile(path, ARTIFACTS / "report.html")
    assert (ARTIFACTS / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (ARTIFACTS / "report-print.pdf").read_bytes()[:5] == b"%PDF-"
    assert page.console_errors() == []


@needs_chromium
def test_zero_surviving_records(tmp_path, browser):
    """A run whose instructions all failed cross-validation still gets a report that says so."""
    write_jsonl(tmp_path / "seeds.jsonl", [Instruction(id="s0", text="Answer in French", source="seed")])
    write_jsonl(tmp_path / "crossval.jsonl", [])
    rows = {
        "seeds": StageReport(0, 1, shards_run=1).as_dict(),
        "crossval": StageReport(1, 0, {"no_function_parsed": 1}, shards_run=1).as_dict(),
    }
    (tmp_path / "funnel.json").write_text(json.dumps({"stages": rows}))
    page = Page(browser, write_report(tmp_path, load_config(None, ["score.enabled=false"])))

    assert page.console_errors() == []
    banner = page.evaluate("document.getElementById('no-records').innerText")
    assert "No surviving records" in banner
    assert "ran out at stage crossval (1 in, 0 out; dropped: no_function_parsed: 1)" in banner
    states = json.loads(page.evaluate(SECTION_STATES))
    assert list(states) == list(SECTIONS)
    assert states["summary"] == "empty" and states["instructions"] == "empty" and states["distributions"] == "empty"
    for sid in ("sft", "dpo", "scores", "evals", "contamination", "config", "llm-cache"):
        assert states[sid] == "missing"
        assert "not produced by this run" in page.evaluate(f"document.getElementById('{sid}').innerText")
    assert "Scoring was switched off" in page.evaluate("document.getElementById('scores').innerText")


@needs_fixtures
def test_prompt_pass_rate_plot_and_sentence(real_run):
    """The per-prompt pass-rate histogram (share of each prompt's responses that pass) and the sentence
    counting all-pass, all-fail and mixed prompts, from the release's responses: most of its prompts
    have no passing answer, a few every one."""
    out, expected = real_run
    html = render_report(out)
    figure = re.search(r'<figure id="hist-prompt-pass-rate"><img [^>]*src="(data:image/svg[^"]+)"', html)
    assert figure, "no prompt pass-rate histogram"
    n, every, none_ = expected["prompts"], expected["all_pass"], expected["all_fail"]
    mixed = n - every - none_
    assert every and none_ and mixed  # the release's data has all three kinds
    assert (
        f'<p class="note" id="prompt-outcomes">Of {n} prompts, {every} ({100 * every / n:.1f}%) had every response '
        f"pass (little to learn from), {none_} ({100 * none_ / n:.1f}%) had none pass (no SFT record) and {mixed} "
        f"({100 * mixed / n:.1f}%) mixed outcomes."
    ) in html
    # With export.sft_max_prompt_pass_rate below 1 the plot draws where SFT stops; at 1 (no filter) it does not.
    cfg = load_config(None, [f"paths.out={out}", "export.sft_max_prompt_pass_rate=0.5"])
    with_line = re.search(r'<figure id="hist-prompt-pass-rate"><img [^>]*src="([^"]+)"', render_report(out, cfg))
    assert with_line and with_line.group(1) != figure.group(1)


def test_empty_directory_and_missing_directory(tmp_path):
    html = render_report(tmp_path)
    assert "The output directory holds no stage output at all." in html
    assert html.count('data-state="missing"') >= len(SECTIONS) - 1  # all but the summary
    with pytest.raises(AutoifError, match="no run directory"):
        write_report(tmp_path / "nope")


def test_summary_counts_responses_never_trained_on(tmp_path):
    """verify's drop reasons (a response cut off at max_tokens: `truncated`) have their own card."""
    kept = VerifiedResponse(text="Whole.", pass_rate=1.0, outcomes=[True], passed=True, finish_reason="stop")
    cut = VerifiedResponse(
        text="Cut", pass_rate=1.0, outcomes=[True], passed=True, finish_reason="length", drop="truncated"
    )
    write_jsonl(tmp_path / "verified.jsonl", [VerifiedRecord(prompt_id="p", responses=[kept, cut, cut])])
    html = render_report(tmp_path)
    card = re.search(r'id="card-dropped"><div class="value">(\d+)</div><div class="label">([^<]*)<', html)
    assert card and card.groups() == ("2", "responses never trained on (truncated: 2)")


def test_dropped_responses_are_listed_by_reason_with_examples(tmp_path):
    """The quality gate's drops, from real SmolLM2 answers (tests/fixtures/quality): each reason
    with its count, what it means, and the dropped texts themselves (escaped)."""
    fixture = Path(__file__).parent / "fixtures" / "quality" / "smollm2.jsonl"
    cases = [json.loads(line) for line in fixture.read_text().splitlines()]
    responses = [
        VerifiedResponse(text=c["response"], pass_rate=1.0, outcomes=[True], passed=True, drop=c["expected"])
        for c in cases
    ]
    write_jsonl(tmp_path / "verified.jsonl", [VerifiedRecord(prompt_id="p<1>", responses=responses)])
    html = render_report(tmp_path)
    dropped = [c for c in cases if c["expected"]]
    assert f'<h3 id="dropped-responses">Responses never trained on ({len(dropped)})</h3>' in html
    by_reason = Counter(c["expected"] for c in dropped)
    for reason, n in by_reason.items():
        assert f"<code>{reason}</code> <b>{n}</b>" in html
    assert "mostly repeats the prompt" in html and "repetition (a Gopher rule)" in html
    echo = next(c for c in dropped if c["expected"] == "echo")
    assert escape(echo["response"]) in html and "p&lt;1&gt;" in html  # texts shown, escaped


HOSTILE = (
    '</script><script>console.error("xss-script")</script>'
    "<img src=x onerror=\"console.error('xss-img')\"><style>body{display:none}</style>"
    '<a href="javascript:console.error(1)">link</a>\u0000 end'
)
# JSON documents read with json.loads can also carry a lone surrogate (record lines cannot: pydantic
# refuses them), which a UTF-8 page cannot hold.
HOSTILE_JSON = HOSTILE + "\ud800"


@needs_chromium
def test_hostile_content_is_shown_as_text(tmp_path, browser):
    """LLM output is untrusted: markup in any field renders as text, nothing runs or loads."""
    function = FunctionResult(source=f"def evaluate(r):\n    return '{HOSTILE}' in r", accuracy=1.0)
    write_jsonl(
        tmp_path / "crossval.jsonl",
        [
            CrossvalRecord(
                instruction_id=HOSTILE,
                instruction=HOSTILE,
                functions=[function],
                cases=[CaseResult(input=HOSTILE, output=True, accuracy=1.0)],
                back_translations=[
                    {"function_index": 0, "text": HOSTILE, "label": "entailment"}
                ],  # labels are a closed set
            )
        ],
    )
    write_jsonl(
        tmp_path / "sft.jsonl",
        [
            SFTRecord(
                messages=user(HOSTILE) + assistant(HOSTILE), instruction_id=HOSTILE, functions=[HOSTILE], pass_rate=1.0
            )
        ],
    )
    write_jsonl(
        tmp_path / "dpo.jsonl",
        [
            DPORecord(
                prompt=user(HOSTILE),
                chosen=assistant(HOSTILE),
                rejected=assistant(HOSTILE),
                level="query",
                functions=[HOSTILE],
            )
        ],
    )
    with open(tmp_path / "dpo.jsonl", "a") as fh:  # a hand-edited line that is no record
        fh.write('{"prompt": "<b>not a list</b>"\n')
    (tmp_path / "funnel.json").write_text(
        json.dumps(
            {
                "stages": {"crossval": {"in": 1, "out": 1, "dropped": {HOSTILE_JSON: 1}}},
                "llm": {"backend": HOSTILE_JSON, "model": HOSTILE_JSON, "hits": 1, "misses": 0},
            }
        )
    )
    (tmp_path / "config.yaml").write_text(f"llm:\n  model: '{HOSTILE}'\n")  # not even valid YAML
    (tmp_path / "x_results.json").write_text(json.dumps({HOSTILE_JSON: [{HOSTILE_JSON: HOSTILE_JSON}]}))
    (tmp_path / "contamination.json").write_text("{not json " + HOSTILE)

    html = render_report(tmp_path)
    assert "<script" not in html and "<img src=x" not in html and '<a href="javascript' not in html
    assert html.count("<style>") == 1 and "\x00" not in html
    page = Page(browser, write_report(tmp_path))
    assert page.console_errors() == []
    assert page.fetched() == []
    assert page.evaluate("document.querySelectorAll('script, img[onerror], a[href^=javascript], iframe').length") == 0
    assert page.evaluate("document.querySelectorAll('style').length") == 1
    assert page.evaluate("getComputedStyle(document.body).display") == "block"
    shown = page.evaluate("document.body.textContent")
    assert shown.count('</script><script>console.error("xss-script")</script>') >= 8  # every field, as text
    assert "1 unreadable line(s) skipped (first: line 2: " in shown
    assert "config.yaml does not load" in shown
    assert "contamination.json: unreadable (not JSON" in page.evaluate("document.body.innerText")
