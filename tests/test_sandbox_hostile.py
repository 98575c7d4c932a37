"""Hostile functions: every attack gets its specific outcome, nothing escapes (host files, the
parent process and its environment are untouched, no connection arrives), and the sandbox keeps
serving correct results afterwards.

Two sandboxes: `default` has the default allowlist (the Python-level layer: forbidden imports,
state isolation); `permissive` also allows os, socket, subprocess, ctypes, signal, resource,
threading... so that the attacks reach the kernel layer (seccomp, Landlock, rlimits) and are
stopped there.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from autoif.sandbox import Outcome, Sandbox
from autoif.sandbox.guard import needs_full_check

SECRET_NAME, SECRET_VALUE = "AUTOIF_TEST_API_KEY", "sk-test-0123456789-not-a-real-key"
TIMEOUT_S = 0.5
POWERFUL = [
    "os",
    "errno",
    "sys",
    "socket",
    "subprocess",
    "ctypes",
    "signal",
    "resource",
    "threading",
    "builtins",
    "importlib",
    "time",
    "gc",
    "json",
    "re",
    "string",
    "collections",
    "decimal",
    "random",
]
NORMAL = "def evaluate(response):\n    return response.upper() == 'HI'"

T, F = Outcome(True), Outcome(False)


def err(code: str) -> Outcome:
    return Outcome(None, code)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A host directory with a file that must survive, and a secret in the parent's environment."""
    root = tmp_path_factory.mktemp("host")
    sentinel = root / "sentinel.txt"
    sentinel.write_text("keep me")
    (root / "secret.txt").write_text(SECRET_VALUE)
    os.environ[SECRET_NAME] = SECRET_VALUE
    yield root
    os.environ.pop(SECRET_NAME, None)


@pytest.fixture(scope="module")
def permissive(host):
    with Sandbox(workers=2, timeout_s=TIMEOUT_S, memory_mb=512, allowed_imports=POWERFUL) as sb:
        yield sb


@pytest.fixture(scope="module")
def default(host):
    with Sandbox(workers=2, timeout_s=TIMEOUT_S) as sb:
        yield sb


def attack(sandbox, host, source: str, expected: Outcome, responses=("hi",)) -> None:
    """Run the attack, check its outcome, then check nothing escaped and the sandbox still works."""
    environment = dict(os.environ)
    grid = sandbox.check([source], list(responses))
    assert grid == [[expected] * len(responses)]
    assert (host / "sentinel.txt").read_text() == "keep me"
    assert sorted(p.name for p in host.iterdir()) == ["secret.txt", "sentinel.txt"]
    assert dict(os.environ) == environment and os.environ[SECRET_NAME] == SECRET_VALUE
    assert sandbox.check([NORMAL], ["hi", "ho"]) == [[T, F]]


def f(body: str) -> str:
    """An evaluate function with `body` indented inside it."""
    return "def evaluate(response):\n" + "".join(f"    {line}\n" for line in body.strip("\n").splitlines())


# ------------------------------------------------------------------------------------ files
def test_delete_host_file(permissive, host):
    attack(permissive, host, f(f"import os\nos.remove({str(host / 'sentinel.txt')!r})\nreturn True"), err("exception"))


def test_create_file_outside_scratch(permissive, host):
    attack(permissive, host, f(f"open({str(host / 'pwned.txt')!r}, 'w').write('x')\nreturn True"), err("exception"))
    attack(permissive, host, f("open('/tmp/autoif-pwned.txt', 'w').write('x')\nreturn True"), err("exception"))
    assert not os.path.exists("/tmp/autoif-pwned.txt")


def test_rename_and_chmod_host_files(permissive, host):
    target = str(host / "sentinel.txt")
    attack(
        permissive, host, f(f"import os\nos.rename({target!r}, {target + '.moved'!r})\nreturn True"), err("exception")
    )
    attack(permissive, host, f(f"import os\nos.truncate({target!r}, 0)\nreturn True"), err("exception"))


def test_read_host_secret_files(permissive, host):
    attack(
        permissive, host, f(f"return {SECRET_VALUE!r} in open({str(host / 'secret.txt')!r}).read()"), err("exception")
    )
    attack(permissive, host, f("return len(open('/etc/passwd').read()) > 0"), err("exception"))
    # What the function may read: the Python installation (Landlock allowlist, not a blanket ban).
    attack(permissive, host, f("import json\nreturn len(open(json.__file__).read()) > 0"), T)


def test_scratch_is_writable_but_private_to_each_function(permissive, host):
    writer = f(
        "open('note.txt', 'w').write('from the first function')\nreturn open('note.txt').read().startswith('from')"
    )
    reader = f("import os\nreturn os.path.exists('note.txt')")
    assert permissive.check([writer, reader], ["hi"]) == [[T], [F]]


# ------------------------------------------------------------------------------ environment
def test_environment_is_not_inherited(permissive, host):
    attack(
        permissive,
        host,
        f(
            f"import os\nreturn {SECRET_NAME!r} in os.environ or "
            f"any({SECRET_VALUE!r} in v for v in os.environ.values())"
        ),
        F,
    )


def test_proc_self_environ(permissive, host):
    attack(permissive, host, f(f"return {SECRET_VALUE!r} in open('/proc/self/environ').read()"), err("exception"))


def test_proc_parent_environ_and_memory(permissive, host):
    attack(
        permissive,
        host,
        f(f"import os\nreturn {SECRET_VALUE!r} in open(f'/proc/{{os.getppid()}}/environ').read()"),
        err("exception"),
    )
    attack(
        permissive,
        host,
        f("import os\nreturn len(open(f'/proc/{os.getppid()}/mem', 'rb').read(1)) > 0"),
        err("exception"),
    )


# --------------------------------------------------------------------------------- network
def test_socket_connect_to_listening_loopback(permissive, host):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.3)
    port = server.getsockname()[1]
    try:
        attack(
            permissive,
            host,
            f(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nreturn True"),
            err("exception"),
        )
        with pytest.raises(socket.timeout):
            server.accept()  # no connection arrived
    finally:
        server.close()


# ------------------------------------------------------------------------------- processes
def test_subprocess_and_os_system(permissive, host):
    canary = str(host / "ran.txt")
    attack(
        permissive, host, f(f"import subprocess\nsubprocess.run(['touch', {canary!r}])\nreturn True"), err("exception")
    )
    # os.system cannot fork: it reports failure (-1) instead of running the command.
    attack(permissive, host, f(f"import os\nreturn os.system('touch {canary}') == 0"), F)


def test_fork_exec_and_fork_bomb(permissive, host):
    attack(
        permissive, host, f("import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nreturn True"), err("exception")
    )
    attack(
        permissive,
        host,
        f(f"import os\nos.execv('/usr/bin/touch', ['touch', {str(host / 'exec.txt')!r}])"),
        err("exception"),
    )
    attack(permissive, host, f("import os\nwhile True:\n    os.fork()"), err("exception"))


def test_threads_refused(permissive, host):
    attack(
        permissive,
        host,
        f("import threading\nt = threading.Thread(target=print)\nt.start()\nreturn True"),
        err("exception"),
    )


# ----------------------------------------------------------------------------- time limits
def test_infinite_loop_soft_timeout_keeps_worker(permissive, host):
    pids = permissive.worker_pids
    started = time.monotonic()
    attack(permissive, host, f("while True:\n    pass"), err("timeout"))
    assert time.monotonic() - started < 5
    assert permissive.worker_pids == pids  # interrupted in Python: no worker was killed


def test_cpu_burn_in_c_is_killed_and_batch_completed(permissive, host):
    # sum() over a range never returns to the interpreter, so the worker's timer cannot stop it:
    # the parent kills the worker; the checks before and after it in the same batch still get
    # their results, and a fresh worker takes over.
    burn = f("return sum(range(10 ** 14)) > 0")
    pids = permissive.worker_pids
    grid = permissive.check([NORMAL, burn, NORMAL, NORMAL], ["hi"])
    assert grid == [[T], [err("timeout")], [T], [T]]
    assert permissive.worker_pids != pids


def test_catastrophic_regex(permissive, host):
    attack(permissive, host, f("import re\nreturn re.match(r'(a+)+$', 'a' * 64 + 'b') is not None"), err("timeout"))


def test_sleep(permissive, host):
    attack(permissive, host, f("import time\ntime.sleep(30)\nreturn True"), err("timeout"))


def test_swallowing_the_timeout_does_not_help(permissive, host):
    attack(
        permissive,
        host,
        f("try:\n    while True:\n        pass\nexcept BaseException:\n    return True"),
        err("timeout"),
    )


def test_signal_handler_tampering(permissive, host):
    attack(
        permissive,
        host,
        f("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass"),
        err("timeout"),
    )
    attack(
        permissive,
        host,
        f("import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\nwhile True:\n    pass"),
        err("timeout"),
    )
    # A function that tampers and returns: the next function on the same worker has its timer
    # back (interrupted in Python, no worker killed).
    tamper = f(
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "signal.setitimer(signal.ITIMER_REAL, 0)\nreturn True"
    )
    pids = permissive.worker_pids
    assert permissive.check([tamper, f("while True:\n    pass")], ["hi"]) == [[T], [err("timeout")]]
    assert permissive.worker_pids == pids


def test_top_level_hang_costs_one_timeout(permissive, host):
    started = time.monotonic()
    attack(
        permissive,
        host,
        "while True:\n    pass\ndef evaluate(response):\n    return True",
        err("timeout"),
        responses=[str(i) for i in range(8)],
    )
    assert time.monotonic() - started < 8 * TIMEOUT_S


# ---------------------------------------------------------------------------------- memory
def test_memory_bomb(permissive, host):
    attack(permissive, host, f("blob = 'a' * (4 * 1024 ** 3)\nreturn True"), err("memory"))
    attack(permissive, host, f("chunks = []\nwhile True:\n    chunks.append(bytes(64 * 1024 ** 2))"), err("memory"))


# ---------------------------------------------------------------------------------- crashes
@pytest.mark.parametrize(
    "body",
    [
        "import ctypes\nctypes.string_at(0)",
        "import os\nos._exit(0)",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    ],
)
def test_crash_gives_crash_and_the_worker_lives_on(permissive, host, body):
    # Such a function runs in a checker process of its own (checker.py): only that one dies.
    pids = permissive.worker_pids
    attack(permissive, host, f(body), err("crash"))
    assert permissive.worker_pids == pids


def test_top_level_crash_is_the_outcome_of_every_check(permissive, host):
    pids = set(permissive.worker_pids)
    attack(
        permissive,
        host,
        "import ctypes\nctypes.string_at(0)\ndef evaluate(response):\n    return True",
        err("crash"),
        responses=[str(i) for i in range(6)],
    )
    assert set(permissive.worker_pids) == pids


def test_parent_and_other_processes_cannot_be_signalled(permissive, host):
    attack(
        permissive, host, f("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nreturn True"), err("exception")
    )
    attack(permissive, host, f("import os\nos.kill(-1, 0)\nreturn True"), err("exception"))


# ------------------------------------------------------------------------- exits and output
@pytest.mark.parametrize(
    "body",
    [
        "import sys\nsys.exit(0)",
        "raise SystemExit(1)",
        "raise KeyboardInterrupt",
        "raise BaseException('out')",
        "exit()",
    ],
)
def test_exits_are_contained(permissive, host, body):
    attack(permissive, host, f(body), err("exception"))


def test_huge_print(permissive, host):
    attack(
        permissive,
        host,
        f(
            "import sys\nblob = 'x' * (8 * 1024 ** 2)\nfor _ in range(4):\n    print(blob)\n"
            "    sys.stderr.write(blob)\nreturn True"
        ),
        T,
    )


def test_deep_recursion(permissive, host):
    attack(permissive, host, f("def down(n):\n    return down(n + 1)\nreturn down(0)"), err("exception"))
    attack(permissive, host, f("import json\nreturn json.loads('[' * 200000) is None"), err("exception"))


# ---------------------------------------------------------------- limits and the protocol
def test_raising_limits_is_refused(permissive, host):
    attack(
        permissive,
        host,
        f(
            "import resource\nhuge = resource.RLIM_INFINITY\n"
            "resource.setrlimit(resource.RLIMIT_AS, (huge, huge))\nreturn True"
        ),
        err("exception"),
    )


def test_writing_garbage_to_the_protocol_pipes(permissive, host):
    # A function that imports os runs in a checker process, which holds no pipe of the worker's
    # protocol, only its own outcome pipe: anything but one outcome byte there is a crash.
    pids = permissive.worker_pids
    body = (
        "import os, time\nfor fd in range(3, 4096):\n    try:\n"
        "        os.write(fd, b'DONE\\xff\\xff\\xff\\xffgarbage')\n"
        "    except OSError:\n        pass\ntime.sleep(30)\nreturn True"
    )
    attack(permissive, host, f(body), err("crash"))
    assert permissive.worker_pids == pids


def test_closing_the_protocol_pipes(permissive, host):
    # The checker process closes its own outcome pipe: its outcome cannot arrive, a crash.
    attack(permissive, host, f("import os\nos.closerange(3, 65536)\nreturn True"), err("crash"))


# ------------------------------------------------------------------ kernel mechanisms, probed
@pytest.mark.parametrize(
    "body",
    [
        "import socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\nexcept OSError as e:\n"
        "    return e.errno == errno.EPERM",
        "import socket\ntry:\n    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\nexcept OSError as e:\n"
        "    return e.errno == errno.EPERM",
        "import os\ntry:\n    os.fork()\nexcept OSError as e:\n    return e.errno == errno.EPERM",
        "try:\n    open('/tmp/probe', 'w')\nexcept OSError as e:\n    return e.errno == errno.EACCES",
        "try:\n    open('/proc/self/status')\nexcept OSError as e:\n    return e.errno == errno.EACCES",
        # Lowering a limit is always allowed by the kernel: only the seccomp filter refuses it
        # (EPERM, which Python reports as ValueError).
        "import resource\ntry:\n    resource.setrlimit(resource.RLIMIT_CPU, (1, 1))\nexcept ValueError:\n"
        "    return True\nreturn False",
        "import os\ntry:\n    os.kill(os.getppid(), 0)\nexcept OSError as e:\n    return e.errno == errno.EPERM",
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "return libc.ptrace(16, os.getppid(), 0, 0) == -1 and ctypes.get_errno() == errno.EPERM",
        "import resource\nreturn resource.getrlimit(resource.RLIMIT_AS)[1] == 512 * 1024 ** 2",
    ],
    ids=[
        "socket-inet",
        "socket-unix",
        "fork",
        "landlock-write",
        "landlock-proc",
        "setrlimit",
        "kill-parent",
        "ptrace",
        "rlimit-as",
    ],
)
def test_kernel_refusals_have_the_expected_errno(permissive, host, body):
    attack(permissive, host, "import errno\n" + f(body), T)


# ------------------------------------------------------------- Python layer: imports, state
@pytest.mark.parametrize(
    "source",
    [
        "import os\ndef evaluate(response):\n    return True",
        "import subprocess\ndef evaluate(response):\n    return True",
        "def evaluate(response):\n    import socket\n    return True",
        "def evaluate(response):\n    import ctypes\n    return True",
        "def evaluate(response):\n    return __import__('os').system('true') == 0",
        "import importlib\ndef evaluate(response):\n    return importlib.import_module('os') is not None",
        "def evaluate(response):\n    from . import sibling\n    return True",
        "import random\ndef evaluate(response):\n    return random._os.system('true') == 0",
    ],
)
def test_forbidden_imports(default, host, source):
    attack(default, host, source, err("forbidden_import"))


def test_subclasses_escape_to_os_system(default, host):
    canary = str(host / "escaped.txt")
    body = (
        "for cls in ().__class__.__base__.__subclasses__():\n"
        "    if cls.__name__ == '_wrap_close':\n"
        f"        return cls.__init__.__globals__['system']('touch {canary}') == 0\n"
        "return False"
    )
    attack(default, host, f(body), F)  # found os.system; fork is refused, so it returns -1


LEN_USER = "def evaluate(response):\n    return len(response) == 2"
RE_USER = "import re\ndef evaluate(response):\n    return re.search('h', response) is not None"
STRING_USER = "import string\ndef evaluate(response):\n    return response[0] in string.ascii_letters"
COUNTER_USER = (
    "import collections\ndef evaluate(response):\n    return collections.Counter(response).most_common(1)[0][0] == 'h'"
)
DECIMAL_USER = (
    "import decimal\ndef evaluate(response):\n    return len(str(decimal.Decimal(1) / decimal.Decimal(3))) == 30"
)


@pytest.mark.parametrize(
    "polluter, victim",
    [
        ("__builtins__['len'] = lambda x: 0\ndef evaluate(response):\n    return True", LEN_USER),
        (
            "def evaluate(response):\n    for cls in ().__class__.__base__.__subclasses__():\n"
            "        if cls.__name__ == 'catch_warnings':\n"
            "            cls.__init__.__globals__['__builtins__']['len'] = lambda x: 0\n    return True",
            LEN_USER,
        ),
        ("import re\nre.search = lambda *a, **k: None\ndef evaluate(response):\n    return True", RE_USER),
        (
            "import re\ndef evaluate(response):\n    re.compile.__globals__['search'] = lambda *a, **k: None\n"
            "    return True",
            RE_USER,
        ),
        ("import string\nstring.ascii_letters = ''\ndef evaluate(response):\n    return True", STRING_USER),
        (
            "import collections\ncollections.Counter.most_common = lambda self, n=None: [('z', 9)]\n"
            "def evaluate(response):\n    return True",
            COUNTER_USER,
        ),
        ("import decimal\ndecimal.getcontext().prec = 2\ndef evaluate(response):\n    return True", DECIMAL_USER),
    ],
    ids=["builtins-copy", "real-builtins", "re-search", "re-globals", "string-constant", "class-method", "decimal"],
)
def test_no_state_leaks_between_functions(default, host, polluter, victim):
    # Same batch, so the same worker runs the polluter first, then the victim.
    assert default.check([victim, polluter, victim], ["hi"]) == [[T], [T], [T]]
    attack(default, host, victim, T)


def test_enum_helpers_that_write_into_modules_get_the_full_check(default, host):
    # `Enum._convert_` writes into any module's namespace named by a string: here the real
    # `string`, whose ascii_letters becomes an enum member. Named in the static scan, it gets the
    # full check, so the next function (a new one, whose copy of `string` is made afterwards)
    # sees the real module as it was.
    polluter = (
        "import enum\ndef evaluate(response):\n"
        "    enum.Enum._convert_('Poison', 'string', lambda name: name == 'ascii_letters')\n    return True"
    )
    victim = "import string\ndef evaluate(response):\n    return 'h' in string.ascii_letters  # after _convert_"
    assert default.check([polluter, victim], ["hi"]) == [[T], [T]]
    attack(default, host, victim, T)


# `re.compile` builds a pattern, so the static scan lets a function that calls it run in the worker;
# the builtin `compile` (new code objects) under that name, reached any other way, does not.
BUILTIN_COMPILE = "compile('1', 'x', 'eval')"
COMPILE_ROUTES = {
    "the builtin": f(f"return {BUILTIN_COMPILE} is None"),
    "builtins imported as re": "import builtins as re\n" + f(f"return re.{BUILTIN_COMPILE} is None"),
    "re rebound": "import re, builtins\nre = builtins\n" + f(f"return re.{BUILTIN_COMPILE} is None"),
    "re rebound in another function": "import re, builtins\ndef g():\n    global re\n    re = builtins\n"
    + f(f"g()\nreturn re.{BUILTIN_COMPILE} is None"),
    "re rebound by a loop": "import re, builtins\n"
    + f(f"for re in [builtins]:\n    pass\nreturn re.{BUILTIN_COMPILE}"),
    "re rebound by a comprehension": "import builtins\n" + f(f"return [re.{BUILTIN_COMPILE} for re in [builtins]]"),
    "re an argument": "import builtins\n" + f(f"return (lambda re: re.{BUILTIN_COMPILE})(builtins)"),
    "re a default argument": "import builtins\ndef evaluate(response, re=builtins):\n"
    + f"    return re.{BUILTIN_COMPILE} is None\n",
    "a jump onto .compile": "import re, builtins\n" + f(f"return (builtins if response else re).{BUILTIN_COMPILE}"),
    "another object's compile": "import re\nclass A:\n    re = None\n" + f("return A.re.compile('a')"),
    "imported by name": "from re import compile\n" + f("return compile('a') is None"),
    "re bound by a star import": "import re\nfrom string import *\n" + f("return re.compile('a') is None"),
}


@pytest.mark.parametrize("route", sorted(COMPILE_ROUTES))
def test_compile_reached_other_than_as_re_compile_gets_the_full_check(route):
    assert needs_full_check(compile(COMPILE_ROUTES[route], "<evaluate>", "exec"))


@pytest.mark.parametrize(
    "source",
    [
        "import re\n" + f("return bool(re.compile('a+').search(response))"),
        f("import re\nreturn bool(re.compile('a+').search(response))"),
        "import re\nPATTERN = re.compile('a+')\n" + f("return bool(PATTERN.search(response))"),
    ],
)
def test_re_compile_alone_runs_in_the_worker(source):
    assert not needs_full_check(compile(source, "<evaluate>", "exec"))


# --------------------------------------------------------------------- forged outcomes
# A function must not change the outcome of any other check, nor its own later ones: every
# attacker below tries to make the innocent VICTIM (always False) pass, or to change its own
# later verdicts, through one route into the process that runs it. Each runs with the victim
# first, last, and in another grid of the same `check_many`, on 1 and 2 workers; afterwards the
# victim is checked again (an implant that outlives the attacker's batch).
VICTIM = "def evaluate(response):\n    return False"
FORGE_RESPONSES = ["r0", "r1", "r2"]
# Walk up from a frame; write ones into every shared-memory area a frame holds (the attack).
_FORGE_FRAMES = """
def _forge(frame):
    while frame is not None:
        for value in list(frame.f_locals.values()):
            try:
                if type(value).__name__ == 'mmap':
                    value[:] = b'\\x01' * len(value)
            except Exception:
                pass
        frame = frame.f_back
"""

# Replaces the code of the function objects the worker caches by one that passes; {compile} names the
# builtin `compile` as the victim reaches it.
_SWAP_CACHED_CODE = """
passing = {compile}('def evaluate(response):\\n    return True', '<evaluate>', 'exec')
for o in gc.get_objects():
    if type(o).__name__ == '_Function':
        try:
            o.code = passing
        except Exception:
            pass
return False
"""

FORGERS = {
    "frames-traceback": _FORGE_FRAMES
    + f(
        """
try:
    raise ValueError
except ValueError as e:
    _forge(e.__traceback__.tb_frame)
return False
"""
    ),
    "frames-generator": _FORGE_FRAMES
    + f(
        """
def probe():
    _forge(me.gi_frame.f_back)
    yield
me = probe()
next(me)
return False
"""
    ),
    # Reaches the worker's module through a class found among object's subclasses, and makes
    # every False after this one read as True.
    "subclasses": f(
        """
for cls in object.__subclasses__():
    if cls.__name__ == 'Worker':
        g = cls.run_call.__globals__
        real = g['_define_and_call']
        g['_define_and_call'] = lambda job: real(job) or True
return False
"""
    ),
    # The function objects the worker keeps for every function, found through gc: their code
    # replaced by one that passes.
    "gc-cached-functions": "import gc\n" + f(_SWAP_CACHED_CODE.format(compile="compile")),
    # The same, with the builtin `compile` reached as `re.compile` of a `re` that is `builtins`.
    "gc-cached-functions-rebound-re": "import gc\nimport builtins as re\n"
    + f(_SWAP_CACHED_CODE.format(compile="re.compile")),
    # A SIGALRM handler (the worker's timer keeps ticking) receives the running frame.
    "signal-handler": "import os, signal\n"
    + _FORGE_FRAMES
    + f(
        """
signal.signal(signal.SIGALRM, lambda signum, frame: _forge(frame))
os.kill(os.getpid(), signal.SIGALRM)
return False
"""
    ),
    "sys-modules": "import sys\n"
    + f(
        """
w = sys.modules['autoif.sandbox.worker']
real = w._define_and_call
w._define_and_call = lambda job: real(job) or True
return False
"""
    ),
    # The real builtins module (`import builtins` would give the function its own copy).
    "builtins": f(
        """
len.__self__.exec = lambda code, namespace=None: namespace.update(evaluate=lambda response: True)
return False
"""
    ),
    "ctypes": "import ctypes, sys\n"
    + f(
        """
frame = sys._getframe()
while frame is not None:
    for value in list(frame.f_locals.values()):
        try:
            if type(value).__name__ == 'mmap':
                ctypes.memset(ctypes.addressof(ctypes.c_char.from_buffer(value)), 1, len(value))
        except Exception:
            pass
    frame = frame.f_back
return False
"""
    ),
    "proc-self-mem": f(
        """
try:
    with open('/proc/self/mem', 'r+b') as mem:
        mem.write(b'\\x01')
except OSError:
    pass
return False
"""
    ),
    "raw-file-descriptors": "import os\n"
    + f(
        """
for fd in range(3, 64):
    try:
        os.pwrite(fd, b'\\x01' * 16384, 0)
    except OSError:
        pass
return False
"""
    ),
    # No introspection name in the code: `getattr` comes from evaluating a string annotation.
    "typing-eval-getattr": "import typing\n"
    + f(
        """
def probe(x: 'getattr'):
    pass
get = typing.get_type_hints(probe)['x']
u = '_' * 2
try:
    raise ValueError
except ValueError as e:
    frame = get(get(e, u + 'traceback' + u), 'tb' + '_frame')
while frame is not None:
    for value in list(get(frame, 'f' + '_locals').values()):
        if type(value).__name__ == 'mmap':
            value[:] = b'\\x01' * len(value)
    frame = get(frame, 'f' + '_back')
return False
"""
    ),
    # The same, run by a generator's `finally` when the garbage collector finalizes the previous
    # check's namespace (outside that check's call), which the allocations below bring about.
    "finalizer": "import typing\n"
    + "def forge():\n"
    + "".join(
        f"    {line}\n"
        for line in [
            "def probe(x: 'getattr'):",
            "    pass",
            "get = typing.get_type_hints(probe)['x']",
            "u = '_' * 2",
            "try:",
            "    raise ValueError",
            "except ValueError as e:",
            "    frame = get(get(e, u + 'traceback' + u), 'tb' + '_frame')",
            "while frame is not None:",
            "    for value in list(get(frame, 'f' + '_locals').values()):",
            "        if type(value).__name__ == 'mmap':",
            "            value[:] = b'\\x01' * len(value)",
            "    frame = get(frame, 'f' + '_back')",
        ]
    )
    + "def armed():\n    try:\n        yield\n    finally:\n        forge()\n"
    + "PENDING = armed()\nnext(PENDING)\n"
    + f("junk = [[] for _ in range(200000)]\nreturn False"),
    # No introspection name, no audited operation: a library helper that imports by name hands
    # out the real `os`, whose descriptors include the result area's.
    "library-import-os": "import nltk\n"
    + f(
        """
os = nltk.internals.import_from_stdlib('os')
for fd in range(3, 64):
    try:
        os.pwrite(fd, b'\\x01' * 16384, 0)
    except OSError:
        pass
return False
"""
    ),
}
# The routes that need more than the default allowlist run in the permissive sandboxes.
_DEFAULT_ROUTES = {
    "frames-traceback",
    "frames-generator",
    "subclasses",
    "builtins",
    "proc-self-mem",
    "typing-eval-getattr",
    "library-import-os",
    "finalizer",
}


@pytest.fixture(scope="module")
def default_1(host):
    with Sandbox(workers=1, timeout_s=TIMEOUT_S) as sb:
        yield sb


@pytest.fixture(scope="module")
def permissive_1(host):
    with Sandbox(workers=1, timeout_s=TIMEOUT_S, memory_mb=512, allowed_imports=POWERFUL) as sb:
        yield sb


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("route", sorted(FORGERS))
def test_no_function_forges_an_outcome(request, host, route, workers):
    kind = "default" if route in _DEFAULT_ROUTES else "permissive"
    sandbox = request.getfixturevalue(kind if workers == 2 else f"{kind}_1")
    attacker, rs = FORGERS[route], FORGE_RESPONSES
    victim_first = sandbox.check([VICTIM, attacker], rs)
    victim_last = sandbox.check([attacker, VICTIM], rs)
    other_grid = sandbox.check_many([([VICTIM], rs[:2]), ([attacker], rs[:1])])
    assert victim_first[0] == [F] * 3
    assert victim_last[1] == [F] * 3
    assert other_grid[0] == [[F, F]]
    assert sandbox.check([VICTIM], rs) == [[F] * 3]
    # Its own verdicts: each check alone decides its outcome, the same wherever it runs.
    own = victim_first[1] + victim_last[0] + other_grid[1][0]
    assert len(set(own)) == 1 and own[0] != T, own
