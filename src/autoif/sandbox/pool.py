"""The parent side: `Sandbox`, a pool of long-lived confined workers fed with batches of checks."""

from __future__ import annotations

import contextlib
import json
import logging
import marshal
import math
import mmap
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

from ..errors import AutoifError
from .guard import DEFAULT_ALLOWED_IMPORTS
from .outcome import OUTCOME_OF_CODE, Outcome
from .protocol import CODE, DEFINING, DONE, DONE_FRAME, FINAL_CODES, LENGTH, MAX_BATCH_CHECKS, PENDING, frame

log = logging.getLogger("autoif.sandbox")

# Functions a worker keeps compiled (least recently used evicted first, as the parent says).
WORKER_FUNCTION_CACHE = 2048
# Seconds a worker may take to start (imports nltk and langdetect on a loaded machine).
START_TIMEOUT_S = 120.0
# Seconds a worker may take to take in one request frame.
SEND_TIMEOUT_S = 30.0

_FINAL_MASK = bytes(1 if code in FINAL_CODES else 0 for code in range(256))
_TIMEOUT, _CRASH = CODE["timeout"], CODE["crash"]

Grid = list[list[Outcome]]


@dataclass
class _Segment:
    """Function `row` of grid `grid` on that grid's responses [start, stop)."""

    grid: int
    row: int
    fid: int
    start: int
    stop: int


@dataclass
class _Batch:
    segments: list[_Segment]
    size: int
    # Requeued once already after a worker died before starting any of its checks.
    retried: bool = False


@dataclass
class _Worker:
    slot: int
    proc: subprocess.Popen
    request_fd: int
    reply_fd: int
    results: mmap.mmap
    scratch: Path
    known: OrderedDict = field(default_factory=OrderedDict)  # fid -> None, oldest first
    batch: _Batch | None = None
    reply: bytearray = field(default_factory=bytearray)
    progress: tuple = (0, 0)  # (first unfinished check, its state byte) when last seen changing
    progress_at: float = 0.0
    batch_deadline: float = 0.0


@dataclass
class _Call:
    """One check_many call: its input and the grids being filled."""

    grids: Sequence[tuple[Sequence[str], Sequence[str]]]
    out: list[Grid]


class Sandbox:
    """Runs untrusted `evaluate(response) -> bool` functions in confined worker processes.

    `check(functions, responses)[i][j]` is function i on response j; `check_many(grids)` does many
    such grids in few messages. See `autoif.sandbox` for what is enforced and by what.

    Contract: a check's outcome is a function of (function source, response, limits) only. Every
    check starts from the state the source defines, as after a fresh definition, whatever the
    order of the responses, how they are cut into batches, the number of workers, the executor
    and the checks that ran before (exceptions, which a function has to seek out: the clock,
    memory addresses, in-place changes to public library data; docs/sandbox.md). No function
    can change another check's outcome or its own later ones (checker processes, `checker.py`).
    """

    def __init__(
        self,
        workers: int | None = None,
        timeout_s: float = 2.0,
        memory_mb: int = 1024,
        allowed_imports: Sequence[str] | None = None,
    ) -> None:
        if workers is None:
            workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if not isinstance(workers, int) or workers < 1:
            raise AutoifError(f"sandbox: workers must be a positive integer, got {workers!r}")
        if not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= 600:
            raise AutoifError(f"sandbox: timeout_s must be in (0, 600] seconds, got {timeout_s!r}")
        if not isinstance(memory_mb, int) or memory_mb < 64:
            raise AutoifError(f"sandbox: memory_mb must be an integer >= 64, got {memory_mb!r}")
        allowed = tuple(DEFAULT_ALLOWED_IMPORTS if allowed_imports is None else allowed_imports)
        for name in allowed:
            if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
                raise AutoifError(f"sandbox: allowed_imports holds {name!r}, which is not a module name")
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.allowed_imports = allowed
        # A call the worker cannot interrupt (C code that never returns to Python) is killed here.
        self._hard_limit_s = self.timeout_s + max(1.0, 0.5 * self.timeout_s)
        self._lock = threading.Lock()
        self._fids: dict[str, int] = {}
        self._next_fid = 0
        self._broken: dict[int, int] = {}  # fid -> outcome code of a definition that kills workers
        self._warned: set[str] = set()
        self.isolation: dict = {}
        self._root = Path(tempfile.mkdtemp(prefix="autoif-sandbox-"))
        self._nltk_data = self._prepare_nltk_data() if any(n.split(".")[0] == "nltk" for n in allowed) else None
        self._selector = selectors.DefaultSelector()
        self._workers: list[_Worker | None] = [None] * workers
        self._generation = 0
        self._owner_pid = os.getpid()
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._root, self._selector, self._owner_pid)
        try:
            self._start_workers(range(workers))
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_config(cls, cfg) -> Sandbox:
        """From an `autoif.config.SandboxConfig`."""
        return cls(
            workers=cfg.workers, timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb, allowed_imports=cfg.allowed_imports
        )

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._finalizer()

    @property
    def workers(self) -> int:
        return len(self._workers)

    @property
    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w is not None]

    # ------------------------------------------------------------------------------ checking
    def check(self, functions: Sequence[str], responses: Sequence[str]) -> Grid:
        """grid[i][j]: function i on response j."""
        return self.check_many([(functions, responses)])[0]

    def check_many(self, grids: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[Grid]:
        """Many (functions, responses) grids at once, batched across the workers; results in order."""
        grids = list(grids)
        call = _Call(grids, [])
        for g, grid in enumerate(grids):
            try:
                functions, responses = grid
            except (TypeError, ValueError):
                raise AutoifError(f"sandbox: grid {g} must be a (functions, responses) pair") from None
            _require_strings(functions, f"grid {g} functions")
            _require_strings(responses, f"grid {g} responses")
            # Placeholders: every cell is set to an Outcome before check_many returns.
            call.out.append(cast(Grid, [[None] * len(responses) for _ in functions]))
        with self._lock:
            if not self._finalizer.alive:
                raise AutoifError("sandbox: check on a closed Sandbox")
            if os.getpid() != self._owner_pid:
                raise AutoifError("sandbox: a Sandbox cannot be used from a forked process; create one there")
            segments = [
                _Segment(g, row, self._fid(source), 0, len(responses))
                for g, (functions, responses) in enumerate(grids)
                if responses
                for row, source in enumerate(functions)
            ]
            try:
                self._run(call, self._plan(segments))
            except BaseException:
                # Interrupted mid-batch: those workers hold unknown state; start fresh ones next time.
                for w in self._workers:
                    if w is not None and w.batch is not None:
                        self._retire(w)
                raise
        return call.out

    def _fid(self, source: str) -> int:
        fid = self._fids.get(source)
        if fid is None:
            if len(self._fids) >= 50_000:  # forget old sources; workers evict them by LRU
                self._fids.clear()
                self._broken.clear()
            fid = self._fids[source] = self._next_fid
            self._next_fid += 1
        return fid

    def _plan(self, segments: list[_Segment]) -> deque:
        """Cut the work into batches: about four per worker, so a slow batch does not hold the
        others up, but big enough that message costs stay small."""
        total = sum(s.stop - s.start for s in segments)
        target = max(128, min(MAX_BATCH_CHECKS, math.ceil(total / (4 * len(self._workers)))))
        batches: deque[_Batch] = deque()
        current: list[_Segment] = []
        size, fids = 0, set()
        for seg in segments:
            start = seg.start
            while start < seg.stop:
                take = min(target - size, seg.stop - start)
                current.append(replace(seg, start=start, stop=start + take))
                fids.add(seg.fid)
                size += take
                start += take
                if size >= target or len(fids) >= WORKER_FUNCTION_CACHE // 2:
                    batches.append(_Batch(current, size))
                    current, size, fids = [], 0, set()
        if current:
            batches.append(_Batch(current, size))
        return batches

    def _run(self, call: _Call, queue: deque) -> None:
        while True:
            while queue:
                idle = self._idle_workers()
                if not idle:
                    break
                for w in idle:
                    if queue:
                        self._send(call, w, queue.popleft(), queue)
            busy = [w for w in self._workers if w is not None and w.batch is not None]
            if not busy:
                if queue:
                    continue  # the sends failed and were requeued, or needed no worker
                return
            now = time.monotonic()
            wake = min(min(w.progress_at + self._hard_limit_s, w.batch_deadline) for w in busy)
            for key, _ in self._selector.select(max(0.0, wake - now)):
                self._on_readable(call, key.data, queue)
            now = time.monotonic()
            for w in busy:
                if w.batch is None or self._workers[w.slot] is not w:
                    continue
                self._observe(w, now)
                if now - w.progress_at > self._hard_limit_s or now > w.batch_deadline:
                    self._fail(call, w, _TIMEOUT, queue)

    def _idle_workers(self) -> list[_Worker]:
        """Idle workers, after replacing the retired ones (only done when there is work)."""
        missing = [slot for slot, w in enumerate(self._workers) if w is None]
        if missing:
            self._start_workers(missing)
        return [w for w in self._workers if w is not None and w.batch is None]

    # ---------------------------------------------------------------------------- messages
    def _send(self, call: _Call, w: _Worker, batch: _Batch, queue: deque) -> None:
        live = []
        for seg in batch.segments:
            broken = self._broken.get(seg.fid)
            if broken is None:
                live.append(seg)
            else:
                call.out[seg.grid][seg.row][seg.start : seg.stop] = [OUTCOME_OF_CODE[broken]] * (seg.stop - seg.start)
        if not live:
            return
        if len(live) != len(batch.segments):
            batch = _Batch(live, sum(s.stop - s.start for s in live), batch.retried)
        new_functions, evict = [], []
        for seg in batch.segments:
            if seg.fid in w.known:
                w.known.move_to_end(seg.fid)
            else:
                w.known[seg.fid] = None
                new_functions.append((seg.fid, call.grids[seg.grid][0][seg.row]))
        while len(w.known) > WORKER_FUNCTION_CACHE:
            evict.append(w.known.popitem(last=False)[0])
        responses: list[str] = []
        base_of_grid: dict[int, int] = {}
        segments = []
        span: dict[int, list[int]] = {}
        for seg in batch.segments:
            lo_hi = span.setdefault(seg.grid, [seg.start, seg.stop])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], seg.start), max(lo_hi[1], seg.stop)
        for g, (lo, hi) in span.items():
            base_of_grid[g] = len(responses) - lo
            responses.extend(call.grids[g][1][lo:hi])
        for seg in batch.segments:
            segments.append((seg.fid, base_of_grid[seg.grid] + seg.start, seg.stop - seg.start))
        message = frame(marshal.dumps((evict, new_functions, responses, segments)))
        w.results[: batch.size] = bytes(batch.size)
        w.batch = batch
        now = time.monotonic()
        w.progress, w.progress_at = (0, PENDING), now
        w.batch_deadline = now + SEND_TIMEOUT_S + batch.size * (2 * self.timeout_s + self._hard_limit_s)
        if not self._write(w, message):
            self._fail(call, w, _CRASH, queue)

    def _write(self, w: _Worker, data: bytes) -> bool:
        view = memoryview(data)
        deadline = time.monotonic() + SEND_TIMEOUT_S
        while view:
            try:
                view = view[os.write(w.request_fd, view) :]
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with selectors.DefaultSelector() as sel:
                    sel.register(w.request_fd, selectors.EVENT_WRITE)
                    sel.select(min(remaining, 1.0))
            except OSError:  # broken pipe: the worker is gone
                return False
        return True

    def _on_readable(self, call: _Call, w: _Worker, queue: deque) -> None:
        if self._workers[w.slot] is not w:
            return
        try:
            chunk = os.read(w.reply_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the worker exited, died, or closed its end of the pipe
            if w.batch is None:
                self._retire(w)
            else:
                # Let a worker that merely lost its pipe finish the check it is running, so
                # that what the shared area shows is final.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.proc.wait(self._hard_limit_s)
                self._fail(call, w, _CRASH, queue)
            return
        if w.batch is None:  # nothing was asked: a hostile write
            self._retire(w)
            return
        w.reply += chunk
        if len(w.reply) < DONE_FRAME.size:
            return
        tag, count = DONE_FRAME.unpack_from(w.reply)
        assert w.batch is not None  # a reply comes only from a busy worker
        if len(w.reply) != DONE_FRAME.size or tag != DONE or count != w.batch.size:
            self._fail(call, w, _CRASH, queue)
            return
        w.reply.clear()
        data = w.results[: w.batch.size]
        finished = data.translate(_FINAL_MASK).find(b"\x00")
        if finished != -1:  # claims done but is not: a worker that lies is a crashed worker
            self._fail(call, w, _CRASH, queue)
            return
        self._accept(call, w.batch, data, w.batch.size)
        w.batch = None

    # ---------------------------------------------------------------------- failure handling
    def _observe(self, w: _Worker, now: float) -> None:
        assert w.batch is not None  # only busy workers are observed
        data = w.results[: w.batch.size]
        p = data.translate(_FINAL_MASK).find(b"\x00")
        seen = (w.batch.size, 0) if p == -1 else (p, data[p])
        if seen != w.progress:
            w.progress, w.progress_at = seen, now

    def _fail(self, call: _Call, w: _Worker, code: int, queue: deque) -> None:
        """The worker died, lied or overran: keep what it finished, blame the check it was
        running (`code`: timeout or crash), resend the rest, replace the worker."""
        batch = w.batch
        assert batch is not None  # only a busy worker fails
        data = w.results[: batch.size]
        self._retire(w)
        p = data.translate(_FINAL_MASK).find(b"\x00")
        if p == -1:
            self._accept(call, batch, data, batch.size)
            return
        self._accept(call, batch, data, p)
        state = data[p]
        # Died between checks: nothing to blame, unless it keeps happening.
        if state == PENDING and (p > 0 or not batch.retried):
            queue.appendleft(_Batch(*self._tail(batch, p), retried=p == 0))
            return
        seg, column = self._locate(batch, p)
        if state == DEFINING:
            self._broken[seg.fid] = code
        call.out[seg.grid][seg.row][column] = OUTCOME_OF_CODE[code]
        if p + 1 < batch.size:
            queue.appendleft(_Batch(*self._tail(batch, p + 1)))

    def _accept(self, call: _Call, batch: _Batch, data: bytes, upto: int) -> None:
        pos = 0
        table = OUTCOME_OF_CODE.__getitem__
        for seg in batch.segments:
            n = seg.stop - seg.start
            k = min(n, upto - pos)
            if k <= 0:
                return
            call.out[seg.grid][seg.row][seg.start : seg.start + k] = map(table, data[pos : pos + k])
            pos += n

    @staticmethod
    def _locate(batch: _Batch, index: int) -> tuple[_Segment, int]:
        """The segment holding check `index` of the batch, and that check's response index."""
        pos = 0
        for seg in batch.segments:
            n = seg.stop - seg.start
            if index < pos + n:
                return seg, seg.start + index - pos
            pos += n
        raise IndexError(index)

    @staticmethod
    def _tail(batch: _Batch, index: int) -> tuple[list[_Segment], int]:
        """The segments covering checks [index, size) of the batch, and their count."""
        out, pos = [], 0
        for seg in batch.segments:
            n = seg.stop - seg.start
            if pos + n > index:
                skip = max(0, index - pos)
                out.append(replace(seg, start=seg.start + skip))
            pos += n
        return out, batch.size - index

    # ------------------------------------------------------------------------------ workers
    def _prepare_nltk_data(self) -> Path | None:
        from ..nltk_data import ensure_punkt_tab

        try:
            return ensure_punkt_tab()
        except (AutoifError, OSError) as exc:
            self._warn(f"NLTK punkt_tab data unavailable, nltk.sent_tokenize will fail in functions: {exc}")
            return None

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("sandbox: %s", message)

    def _environment(self, scratch: Path) -> dict[str, str]:
        """All the environment a worker gets: nothing of the parent's (API keys stay home)."""
        import autoif

        env = {
            "PATH": os.defpath,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(scratch),
            "TMPDIR": str(scratch),
            "PYTHONPATH": str(Path(autoif.__file__).resolve().parent.parent),
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONSAFEPATH": "1",
            "PYTHONHASHSEED": "0",
            "PYTHONUTF8": "1",
            # numpy (pulled in by nltk) must not start BLAS threads: the worker is single-threaded.
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        if self._nltk_data is not None:
            env["NLTK_DATA"] = str(self._nltk_data)
        return env

    def _spawn(self, slot: int) -> _Worker:
        self._generation += 1
        scratch = self._root / f"worker{slot}-{self._generation}"
        scratch.mkdir(mode=0o700)
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        results_fd = os.memfd_create("autoif-sandbox-results", os.MFD_CLOEXEC)
        try:
            os.ftruncate(results_fd, MAX_BATCH_CHECKS)
            results = mmap.mmap(results_fd, MAX_BATCH_CHECKS)
            proc = subprocess.Popen(
                [sys.executable, "-m", "autoif.sandbox.worker", str(request_r), str(reply_w), str(results_fd)],
                pass_fds=(request_r, reply_w, results_fd),
                env=self._environment(scratch),
                cwd=scratch,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            for fd in (request_r, request_w, reply_r, reply_w):
                os.close(fd)
            raise
        finally:
            os.close(results_fd)
        os.close(request_r)
        os.close(reply_w)
        config = {
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "scratch": str(scratch),
            "allowed_imports": list(self.allowed_imports),
        }
        os.write(request_w, frame(marshal.dumps(config)))
        os.set_blocking(request_w, False)
        os.set_blocking(reply_r, False)
        return _Worker(slot, proc, request_w, reply_r, results, scratch)

    def _start_workers(self, slots) -> None:
        """Start workers in parallel and wait until each is confined and ready."""
        started = [self._spawn(slot) for slot in slots]
        deadline = time.monotonic() + START_TIMEOUT_S
        for w in started:
            self._workers[w.slot] = w
            ready = self._read_ready(w, deadline)
            if ready.get("error"):
                raise AutoifError(ready["error"])
            self._selector.register(w.reply_fd, selectors.EVENT_READ, w)
            if not self.isolation:
                self.isolation = ready["isolation"]
            for message in ready["warnings"]:
                self._warn(message)

    def _read_ready(self, w: _Worker, deadline: float) -> dict:
        buf = bytearray()
        need = LENGTH.size
        while len(buf) < need:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AutoifError(f"sandbox: a worker did not start within {START_TIMEOUT_S:.0f} s")
            with selectors.DefaultSelector() as sel:
                sel.register(w.reply_fd, selectors.EVENT_READ)
                sel.select(remaining)
            try:
                chunk = os.read(w.reply_fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                code = w.proc.wait()
                raise AutoifError(
                    f"sandbox: a worker exited during start-up (exit code {code}); its error is printed above"
                )
            buf += chunk
            if need == LENGTH.size and len(buf) >= LENGTH.size:
                need += LENGTH.unpack_from(buf)[0]
                if need > 1 << 20:
                    raise AutoifError("sandbox: a worker sent a malformed ready message")
        return json.loads(bytes(buf[LENGTH.size : need]))

    def _retire(self, w: _Worker) -> None:
        """Kill a worker and free its slot (a fresh one starts when the slot is next needed)."""
        _kill(w)
        if w.reply_fd >= 0 and w.reply_fd in self._selector.get_map():
            self._selector.unregister(w.reply_fd)
        _release(w)
        if self._workers[w.slot] is w:
            self._workers[w.slot] = None


def _require_strings(items, what: str) -> None:
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise AutoifError(f"sandbox: {what} must be a list of strings, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise AutoifError(f"sandbox: {what}[{i}] is {type(item).__name__}, not str")


def _kill(w: _Worker) -> None:
    # The worker leads its own process group: with it go its checker zygote and a checker
    # that may be running (which also die with their parents, by PR_SET_PDEATHSIG).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(w.proc.pid, signal.SIGKILL)
    w.proc.wait()


def _close_request(w: _Worker) -> None:
    if w.request_fd >= 0:
        os.close(w.request_fd)
        w.request_fd = -1


def _release(w: _Worker) -> None:
    _close_request(w)
    if w.reply_fd >= 0:
        os.close(w.reply_fd)
        w.reply_fd = -1
    w.results.close()
    shutil.rmtree(w.scratch, ignore_errors=True)


def _shutdown(workers: list, root: Path, selector, owner_pid: int) -> None:
    """Close every worker: EOF on its request pipe ends it; one that lingers is killed.
    A forked copy of the owner leaves the owner's workers alone."""
    if os.getpid() != owner_pid:
        return
    live = [w for w in workers if w is not None]
    for w in live:
        _close_request(w)
    deadline = time.monotonic() + 2.0
    for w in live:
        try:
            w.proc.wait(max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill(w)
        _release(w)
    workers[:] = [None] * len(workers)
    selector.close()
    shutil.rmtree(root, ignore_errors=True)
