"""A sandbox worker: `python -m autoif.sandbox.worker REQUEST_FD REPLY_FD RESULTS_FD`.

Started by `Sandbox` as a fresh interpreter (never a fork of the parent), with a minimal
environment, a private scratch directory as its working directory, and stdin/stdout/stderr on
/dev/null once it is ready. It reads its configuration, imports and warms up the allowed modules,
then confines itself (rlimits, capabilities, Landlock, seccomp; see `isolation.py`) and serves
batches until its request pipe closes.

A batch is a list of segments, each one function over a run of responses. A function's source is
compiled once per worker, on its first check (the code is cached by function id until the parent
evicts it), and every check starts from the state that source defines: the check runs the cached
code object's top level into a fresh namespace, then `evaluate(response)`, as one timed call. Two
things make that cheap. A function whose top level only imports, defines plain functions and
binds literals (`guard.defines_only`; most generated functions) keeps the namespace of its first
execution, which no call of it can change. Every function keeps its builtins copy, importer and
module copies across checks. After each check the function's `random` copy is reseeded, the
per-module settings it may have changed are reset and, when it could have written files, the
scratch directory is emptied.

Where a check runs. The worker process holds the result area, the protocol pipes and every
function's cached objects, so it runs only functions that cannot reach them:
- a function whose code could reach shared state (`guard.needs_full_check`: introspection,
  attribute writes, private attributes, class patterns, a dunder name in a string) has every
  check, and its definition, run in a *checker process* of its own (`checker.py`): forked from
  the worker's zygote for that one check, holding nothing but that call;
- any other function runs in the worker, where its calls are guarded: an audited operation
  (frames, `gc`, `compile`/`eval`, `ctypes`, `open(fd)`... `guard.install_audit_hook`), an
  import of a module outside the plain ones by the function or by library code on its behalf
  (`guard.guard_library_imports`) abandons the call (`NeedsIsolation`), and the check, and
  every later one of that function, runs in a checker process instead. A call is abandoned
  before it gets what it reached for, so the worker's state is as before it.

The first execution of a top level is a timed call of its own, with the DEFINING marker: a top
level that raises, hangs or kills the worker is the outcome of every check of the function and
is not run again. Every call runs under a wall-clock limit: while a batch
runs, ITIMER_REAL ticks ten times per timeout period, and the tick handler raises `_Timeout` (a
BaseException, so `except Exception` does not swallow it; it is raised again at every later tick)
in a call that has been running for a whole period. Counting ticks per call number costs a call
nothing but an increment, where arming a timer per call would cost two system calls. A call that
does not return to Python in time is killed by the parent (with the worker's process group:
its zygote and checker too). The outcome byte of each check goes to the shared result area as
soon as it is known (see `protocol.py`).
"""

from __future__ import annotations

import ast
import contextlib
import gc
import importlib
import json
import marshal
import mmap
import os
import shutil
import signal
import sys
import sysconfig
from types import CodeType

from . import isolation
from .checker import Zygote
from .guard import (
    FILE_WRITING_MODULES,
    MODULE_STATE,
    RANDOM_SEED,
    SOURCE_FILENAME,
    CallState,
    FunctionEnv,
    ImportPolicy,
    ModuleStateResets,
    defines_only,
    guard_library_imports,
    install_audit_hook,
    names_used,
    needs_full_check,
)
from .protocol import (
    CODE,
    DEFINING,
    DONE,
    DONE_FRAME,
    ERRORS,
    FALSE,
    MAX_BATCH_CHECKS,
    RUNNING,
    TRUE,
    frame,
    read_frame,
    write_all,
)

_C_COMPILE, _C_NO_EVALUATE, _C_FORBIDDEN = CODE["compile"], CODE["no_evaluate"], CODE["forbidden_import"]
_C_TIMEOUT, _C_MEMORY, _C_EXCEPTION, _C_NOT_BOOL = CODE["timeout"], CODE["memory"], CODE["exception"], CODE["not_bool"]
_C_CRASH = CODE["crash"]


_TICKS_PER_TIMEOUT = 10
# Modules after whose use a check leaves something to undo (settings, files).
_STATEFUL_MODULES = frozenset(MODULE_STATE) | FILE_WRITING_MODULES


class _Timeout(BaseException):
    """The per-call timer fired."""


# What `_define_and_call` returns when the top level, run again, does not make a function.
_TOP_LEVEL_RAISED, _NO_EVALUATE = object(), object()
# `run_call`'s answer for a call abandoned because it needs a checker process (`NeedsIsolation`).
_ISOLATE = -1
# What a definition can end in: TRUE (it made a function) or one of these.
_DEFINITION_ERRORS = frozenset(CODE[name] for name in ERRORS) - {_C_EXCEPTION, _C_NOT_BOOL}


class _Function:
    __slots__ = (
        "fid",
        "source",
        "code",
        "env",
        "ready",
        "error",
        "reusable",
        "full_check",
        "opens_files",
        "quiet",
        "imports_seen",
    )

    @property
    def live_env(self) -> FunctionEnv:
        """`env` of a function that compiled: everything but `define` runs after it set it."""
        assert self.env is not None
        return self.env

    def __init__(self, fid: int, source: str) -> None:
        self.fid = fid
        self.source = source
        self.code: CodeType | None = None  # set by `Worker.define`, with `env`, once it compiles
        self.env: FunctionEnv | None = None
        # An `evaluate` from a namespace no check has used yet (or, when `reusable`, one no check
        # can change); None: the next check runs the top level again.
        self.ready = None
        self.error = 0  # nonzero: the outcome code of every call (definition failed)
        self.reusable = False  # the namespace of one execution serves every check (`defines_only`)
        self.full_check = False  # runs every check in a checker process of its own (`checker.py`)
        self.opens_files = False  # names `open`: the scratch directory is emptied after each check
        # `ready` serves every check and a check leaves nothing to undo: the batch loop calls it
        # directly, as long as the function imports nothing new (`imports_seen`).
        self.quiet = False
        self.imports_seen = 0


class Worker:
    def __init__(self, config: dict, results: mmap.mmap) -> None:
        # True in a checker process (see `checker.py`), which runs one check of any function.
        self.isolated = False
        self.zygote: Zygote | None = None  # set at start-up, before the first batch
        self.timeout_s = float(config["timeout_s"])
        self.scratch = config["scratch"]
        self.results = results
        self.state = CallState()
        self.policy = ImportPolicy(config["allowed_imports"])
        self.functions: dict[int, _Function] = {}
        self.warnings: list[str] = []
        self.tick_s = self.timeout_s / _TICKS_PER_TIMEOUT
        self.watched_seq = -1  # the call the timer saw running at its last tick
        self.watched_ticks = 0
        self.alarm_handler = self._on_alarm  # one bound method, so handler checks compare by identity
        # Taken at start-up, once the allowed modules are imported (see `main`), before any check.
        self.resets: ModuleStateResets

    # ------------------------------------------------------------------------------ set-up
    def prepare_modules(self, allowed: list[str]) -> None:
        """Import every allowed module now, so that imports inside functions are cheap and
        nothing is read from disk after confinement that need not be."""
        for name in allowed:
            try:
                __import__(name)
            except Exception as exc:  # an allowed module that is not installed: report it
                self.warnings.append(f"allowed module {name!r} cannot be imported ({type(exc).__name__}: {exc})")
        if self.policy.allowed("datetime") or self.policy.allowed("time"):
            importlib.import_module("_strptime")  # strptime imports it on first use: not under the timer
        if "nltk" in sys.modules:
            try:
                sys.modules["nltk"].sent_tokenize("Warm up. The punkt model loads once.")
            except Exception as exc:
                self.warnings.append(
                    f"nltk.sent_tokenize does not work in the sandbox ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''})"
                )
        if "langdetect" in sys.modules:
            try:
                from langdetect import detector_factory

                detector_factory.init_factory()  # loads the language profiles once
                # Unseeded, langdetect draws from the OS: the same text could get another language.
                detector_factory.DetectorFactory.seed = RANDOM_SEED
            except Exception as exc:
                self.warnings.append(f"langdetect profiles could not be loaded ({type(exc).__name__}: {exc})")

    def read_paths(self) -> list[str]:
        """What a function may read: the Python installation and import path, system libraries,
        NLTK data and time zones (Landlock)."""
        paths = {sysconfig.get_path(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
        paths.update(p for p in sys.path if p and os.path.isabs(p))
        paths.update(os.environ.get("NLTK_DATA", "").split(os.pathsep))
        paths.update(
            (
                "/lib",
                "/lib64",
                "/usr/lib",
                "/usr/lib64",
                "/usr/local/lib",
                "/usr/share/zoneinfo",
                "/etc/ld.so.cache",
                "/etc/localtime",
                "/dev/urandom",
                "/dev/random",
            )
        )
        return sorted(os.path.realpath(p) for p in paths if p)

    def confine(self, memory_mb: int, close_in_zygote) -> isolation.IsolationReport:
        """Confine the worker, forking its checker zygote on the way: the zygote gets the same
        limits and Landlock domain and a seccomp filter that lets it fork (see `checker.py`); the
        worker then gives up making processes and guards its calls (`guard.install_audit_hook`,
        `guard.guard_library_imports`)."""
        report = isolation.IsolationReport()
        isolation.set_limits(memory_mb, report)
        isolation.drop_capabilities(report)
        isolation.set_no_new_privs(report)
        isolation.apply_landlock(self.read_paths(), [self.scratch, os.devnull], report)
        self.zygote = Zygote.start(self.run_isolated, close_in_zygote)
        isolation.set_process_limit(report)
        isolation.apply_seccomp(report)
        install_audit_hook(self.state)
        guard_library_imports(self.state)
        return report

    def silence_std_streams(self) -> None:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        # The worker's standard streams for its whole life: no context manager.
        streams = (open(0, closefd=False), open(1, "w", closefd=False), open(2, "w", closefd=False))  # noqa: SIM115
        sys.stdin, sys.stdout, sys.stderr = streams
        # typeshed marks these Final; the worker replaces them on purpose, for its whole life.
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams  # type: ignore[misc]

    def _on_alarm(self, signum, frame) -> None:
        state = self.state
        if not state.armed:
            return
        if state.seq != self.watched_seq:  # a new call since the last tick
            self.watched_seq, self.watched_ticks = state.seq, 0
            return
        self.watched_ticks += 1
        if self.watched_ticks >= _TICKS_PER_TIMEOUT:  # running for at least a whole period
            state.timed_out = True
            raise _Timeout()

    def start_timer(self) -> None:
        signal.signal(signal.SIGALRM, self.alarm_handler)
        signal.setitimer(signal.ITIMER_REAL, self.tick_s, self.tick_s)

    # ------------------------------------------------------------------------------ checks
    def compile(self, fn: _Function) -> None:
        """Compile the source and classify it (statically); a source that does not compile is
        the outcome of every check."""
        try:
            with self.trusted():
                tree = ast.parse(fn.source, SOURCE_FILENAME)
                # dont_inherit: not this module's `from __future__ import annotations`.
                code = compile(tree, SOURCE_FILENAME, "exec", dont_inherit=True)
        except MemoryError:
            fn.error = _C_MEMORY
            return
        except BaseException:  # SyntaxError, ValueError (null bytes), RecursionError (nesting)...
            fn.error = _C_COMPILE
            return
        fn.code = code
        fn.full_check = needs_full_check(code)
        fn.reusable = not fn.full_check and defines_only(tree, code)
        fn.opens_files = "open" in names_used(code)
        fn.env = FunctionEnv(self.policy, self.state, fn.fid, self.isolated)

    def define(self, fn: _Function) -> None:
        """Compile the source and run its top level in a fresh namespace, once: a top level that
        fails is the outcome of every check, and is not run again. A function that may not run
        in the worker is defined in a checker process."""
        self.compile(fn)
        if fn.error:
            return
        if fn.full_check and not self.isolated:
            self.define_isolated(fn)
            return
        namespace = fn.live_env.namespace()
        outcome = self.run_call(_exec_top_level, (fn.code, namespace))
        if outcome == _ISOLATE:
            self.tidy(fn)
            self.define_isolated(fn)
            return
        if outcome != TRUE:  # the top level raised: the source does not make a function
            fn.error = _C_COMPILE if outcome == _C_EXCEPTION else outcome
            self.tidy(fn)
            return
        evaluate = namespace.get("evaluate")
        if not callable(evaluate):
            fn.error = _C_NO_EVALUATE
            self.tidy(fn)
            return
        fn.ready = evaluate
        self.classify(fn)

    def check(self, fn: _Function, response: str) -> int:
        """One check, from the state the function's source defines; its outcome code (the batch
        loop calls a quiet function's `ready` itself)."""
        if fn.full_check and not self.isolated:
            return self.check_isolated(fn, response)
        evaluate = fn.ready
        if evaluate is not None:
            if not fn.reusable:
                fn.ready = None  # used once: the next check defines the function again
            code = self.run_call(evaluate, response)
        else:
            namespace = fn.live_env.namespace()
            code = self.run_call(_define_and_call, (fn.code, namespace, response))
            if fn.reusable and code in (TRUE, FALSE):  # the top level ran to its end
                fn.ready = namespace["evaluate"]
        self.classify(fn)
        self.tidy(fn)
        if code == _ISOLATE:
            self.isolate(fn)
            return self.check_isolated(fn, response)
        return code

    # ------------------------------------------------------------------ checker processes
    @staticmethod
    def isolate(fn: _Function) -> None:
        """From now on every check of the function runs in a checker process."""
        fn.full_check, fn.reusable, fn.quiet, fn.ready = True, False, False, None

    def define_isolated(self, fn: _Function) -> None:
        self.isolate(fn)
        assert self.zygote is not None  # started by `confine`, before the first batch
        with self.trusted():
            outcome = self.zygote.run(fn.source, None)
        self.empty_scratch()
        if outcome != TRUE:
            fn.error = outcome if outcome in _DEFINITION_ERRORS else _C_CRASH

    def check_isolated(self, fn: _Function, response: str) -> int:
        assert self.zygote is not None  # started by `confine`, before the first batch
        with self.trusted():
            code = self.zygote.run(fn.source, response)
        self.empty_scratch()
        return code

    def run_isolated(self, source: str, response: str | None) -> int:
        """In a checker process: the definition (`response` None: TRUE or the definition's
        error) or one check of any function, as one timed call from a fresh definition."""
        self.isolated = True
        self.start_timer()
        fn = _Function(0, source)
        if response is None:
            self.define(fn)
            return fn.error or TRUE
        self.compile(fn)
        if fn.error:
            return fn.error
        return self.run_call(_define_and_call, (fn.code, fn.live_env.namespace(), response))

    def classify(self, fn: _Function) -> None:
        """Decide, after the function's imports so far, whether it is quiet."""
        env = fn.live_env
        fn.imports_seen = len(env.touched)
        fn.quiet = (
            fn.ready is not None
            and fn.reusable
            and not fn.opens_files
            and env.random is None
            and _STATEFUL_MODULES.isdisjoint(env.touched)
        )

    def tidy(self, fn: _Function) -> None:
        """Undo what the last execution of the function may have changed outside its namespace:
        the settings of the modules it imported, its random generator, the scratch directory."""
        env = fn.live_env
        if env.touched:
            self.resets.after(env)
            if env.random is not None:
                env.random.seed(RANDOM_SEED)
        if fn.opens_files or not FILE_WRITING_MODULES.isdisjoint(env.touched):
            self.empty_scratch()

    def run_call(self, func, arg) -> int:
        """One timed call `func(arg)`; its outcome code."""
        state = self.state
        state.seq += 1
        state.forbidden = state.timed_out = state.isolate = False
        try:
            state.armed = True
            try:
                value = func(arg)
                if value is True:
                    code = TRUE
                elif value is False:
                    code = FALSE
                elif value is _TOP_LEVEL_RAISED:
                    code = _C_COMPILE
                elif value is _NO_EVALUATE:
                    code = _C_NO_EVALUATE
                else:
                    code = _C_NOT_BOOL
                value = None  # a hostile __del__ runs now, under the timer
            except _Timeout:
                code = _C_TIMEOUT
            except MemoryError:
                code = _C_MEMORY
            except BaseException:  # SystemExit, KeyboardInterrupt, RecursionError and the rest
                code = _C_EXCEPTION
            state.armed = False
        except _Timeout:  # fired while the exception above was being released
            state.armed = False
            code = _C_TIMEOUT
        if state.isolate:
            code = _ISOLATE
        elif state.timed_out:
            code = _C_TIMEOUT
        elif state.forbidden:
            code = _C_FORBIDDEN
        return code

    def run_batch(self, message: bytes) -> int:
        with self.trusted():
            evict, new_functions, responses, segments = marshal.loads(message)
        for fid in evict:
            fn = self.functions.pop(fid, None)
            if fn is not None and fn.env is not None:
                fn.env.release()
        for fid, source in new_functions:
            self.functions[fid] = _Function(fid, source)
        results, run_call = self.results, self.run_call
        slot = 0
        self.start_timer()
        for fid, first, count in segments:
            fn = self.functions[fid]
            if fn.code is None and not fn.error:
                results[slot] = DEFINING
                self.define(fn)
            if fn.error:
                results[slot : slot + count] = bytes((fn.error,)) * count
                slot += count
            else:
                for response in responses[first : first + count]:
                    results[slot] = RUNNING
                    if fn.quiet:
                        code = run_call(fn.ready, response)
                        if code == _ISOLATE:
                            self.isolate(fn)
                            code = self.check_isolated(fn, response)
                        elif len(fn.live_env.touched) != fn.imports_seen:  # it imported a module
                            self.classify(fn)
                            self.tidy(fn)
                        results[slot] = code
                    else:
                        results[slot] = self.check(fn, response)
                    slot += 1
        signal.setitimer(signal.ITIMER_REAL, 0)
        return slot

    @contextlib.contextmanager
    def trusted(self):
        """The worker's own audited operations, which the audit hook lets through: nothing of a
        function runs meanwhile (the garbage collector, which could finalize its objects, is off)."""
        state = self.state
        gc.disable()
        state.trusted = True
        try:
            yield
        finally:
            state.trusted = False
            gc.enable()

    def empty_scratch(self) -> None:
        """Remove whatever the last check left in the scratch directory."""
        with self.trusted():
            self._empty_scratch()

    def _empty_scratch(self) -> None:
        for entry in os.listdir(self.scratch):
            path = os.path.join(self.scratch, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    # ----------------------------------------------------------------------------- serving
    def serve(self, request_fd: int, reply_fd: int) -> None:
        while True:
            message = read_frame(request_fd)
            if message is None:
                return
            count = self.run_batch(message)
            write_all(reply_fd, DONE_FRAME.pack(DONE, count))


def _exec_top_level(code_and_globals) -> bool:
    exec(*code_and_globals)
    return True


def _define_and_call(job):
    """Run the top level into a fresh namespace, then its `evaluate` on the response."""
    code, namespace, response = job
    try:
        exec(code, namespace)
    except (_Timeout, MemoryError):
        raise
    except BaseException:
        return _TOP_LEVEL_RAISED
    evaluate = namespace.get("evaluate")
    if not callable(evaluate):
        return _NO_EVALUATE
    return evaluate(response)


def _vm_size_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1])
    return 0


def main(argv: list[str]) -> None:
    request_fd, reply_fd, results_fd = (int(a) for a in argv)
    first = read_frame(request_fd)
    if first is None:  # the parent closed the pipe before sending the configuration
        sys.exit(0)
    config = marshal.loads(first)
    # Never import from the working directory (the scratch directory functions can write to).
    sys.path[:] = [
        p for p in sys.path if p and os.path.isabs(p) and os.path.realpath(p) != os.path.realpath(config["scratch"])
    ]
    results = mmap.mmap(results_fd, MAX_BATCH_CHECKS)
    os.close(results_fd)
    worker = Worker(config, results)
    worker.prepare_modules(config["allowed_imports"])
    vm_kb = _vm_size_kb()
    needed_mb = vm_kb // 1024 + 64
    if config["memory_mb"] < needed_mb:
        write_all(
            reply_fd,
            frame(
                json.dumps(
                    {
                        "error": f"sandbox.memory_mb={config['memory_mb']} is too small: a worker uses about "
                        f"{vm_kb // 1024} MB of address space after importing the allowed modules; use at least "
                        f"{needed_mb}"
                    }
                ).encode()
            ),
        )
        return
    signal.signal(signal.SIGALRM, worker.alarm_handler)
    worker.silence_std_streams()
    worker.resets = ModuleStateResets()
    threads = len(os.listdir("/proc/self/task"))
    gc.collect()
    gc.freeze()  # the start-up heap is never collected again: later collections stay cheap

    def close_in_zygote() -> None:  # what the checker zygote must not hold
        results.close()
        os.close(request_fd)
        os.close(reply_fd)

    report = worker.confine(config["memory_mb"], close_in_zygote)
    if threads > 1:
        report.warnings.append(f"the worker has {threads} threads; Landlock confines only the main one")
    ready = {
        "error": None,
        "pid": os.getpid(),
        "vm_kb": vm_kb,
        "warnings": worker.warnings + report.warnings,
        "isolation": {
            "rlimits": report.rlimits,
            "capabilities_dropped": report.capabilities_dropped,
            "no_new_privs": report.no_new_privs,
            "landlock_abi": report.landlock_abi,
            "seccomp": report.seccomp,
        },
    }
    write_all(reply_fd, frame(json.dumps(ready).encode()))
    worker.serve(request_fd, reply_fd)


if __name__ == "__main__":
    main(sys.argv[1:])
