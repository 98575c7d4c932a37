"""Run untrusted, LLM-written `evaluate(response) -> bool` functions safely and fast.

    with Sandbox(timeout_s=2.0) as sandbox:
        grid = sandbox.check(functions, responses)        # grid[i][j]: function i on response j
        grids = sandbox.check_many([(fs, rs), ...])       # many small grids, few messages
    pass_rate(grid[0])

Only a real `True`/`False` is a value; anything else is an `Outcome` with `value=None` and one
of the ERRORS: compile (the source does not compile or its top level raises), no_evaluate,
forbidden_import, timeout, memory, exception, not_bool, crash. Callers count errors as failures.

A check's outcome is a function of (function source, response, limits) only: every check starts
from the state the function's source defines, as if the function were defined afresh for it
(module-level names, default arguments, closures, the function objects and their code, its module
copies, its random generator, the settings of the modules it uses, the scratch directory), so it
does not depend on the order of the responses, the batch, the number of workers, the executor or
the checks that ran before. No function can change another check's outcome or its own later
ones: a function that could reach the worker's objects (introspection, attribute writes, an
audited operation, a module beyond the plain ones) runs each check in a checker process of its
own, forked for that check, which holds nothing but that call (`checker.py`). The exceptions
(docs/sandbox.md): what a function reads from the clock or memory addresses, and in-place
changes to public data it shares with a library.

How it is fast: long-lived worker processes (one per CPU core by default), each function compiled
once per worker and cached; a function whose top level only imports, defines functions and binds
literals (most generated ones) keeps one namespace, which no call can change; any other re-runs
its cached top level per check; grids cut into a few large batches per worker; outcomes are one
byte per check in a shared memory area, so a batch costs one small message each way.

What is enforced, and by what (details and degraded modes in docs/sandbox.md):

- parent memory and environment not seen: workers are fresh interpreters (not forks) started with a
  minimal environment; Landlock denies reading /proc (so /proc/<ppid>/environ)
- wall-clock and CPU time per call: ITIMER_REAL in the worker (soft); the parent kills a worker
  whose call overruns (hard) and resends the rest; CPU time <= wall time as workers are
  single-threaded (clone refused)
- memory per worker: RLIMIT_AS (MemoryError -> `memory`)
- no network: seccomp refuses socket()/socketpair(); Landlock ABI >= 4 refuses TCP bind/connect
- no new processes or threads: seccomp refuses fork/vfork/clone/clone3/execve; RLIMIT_NPROC=0
  (not for root)
- no writes outside the scratch dir: Landlock (writes only under the worker's scratch dir and
  /dev/null); RLIMIT_FSIZE
- no reading of host files: Landlock (reads only under the Python installation, import path,
  system libraries, NLTK data)
- parent and other processes untouched: seccomp (signals only to the worker itself, no
  ptrace/process_vm_*); capabilities dropped
- no raising of limits: seccomp refuses setrlimit and prlimit64 with a new limit
- importable modules: per-function importer with an allowlist (`forbidden_import`)
- no outcome forged, no state carried between functions or checks: checker processes for the
  functions that could reach shared state (checker.py); for the others, an audit hook and an
  import guard during their calls, per-function globals, builtins and module copies, a fresh
  namespace per check, resets of module settings (guard.py)
- crashes, exits, huge prints, recursion: separate process (`crash`; a fresh worker, or only a
  fresh checker for a function that runs in one);
  stdout/stderr on /dev/null; RecursionError, SystemExit caught

Without seccomp or Landlock (old kernels, other architectures) the worker still runs, and the
parent logs a warning naming each missing protection; `Sandbox.isolation` tells what applied.
"""

from .guard import DEFAULT_ALLOWED_IMPORTS
from .outcome import ERRORS, Outcome, pass_rate
from .pool import Sandbox

__all__ = ["Sandbox", "Outcome", "ERRORS", "pass_rate", "DEFAULT_ALLOWED_IMPORTS"]
