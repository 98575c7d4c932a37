"""Checker processes: a check that may not run in the worker process runs in a process of its own.

A function whose code could reach shared state (introspection, attribute writes, private
library attributes; `guard.needs_full_check`), or whose call in the worker reached for a module
outside the plain ones or an audited operation (`guard.NeedsIsolation`), has every check run
in a *checker*: a process forked, for that one check, from the worker's *zygote*. The zygote is
forked from the worker at start-up, after the allowed modules are imported and before any
function runs, and never runs a function itself; it holds neither the worker's protocol pipes
nor its result area. A checker therefore holds nothing but its own call: whatever the function
does there (frames, `gc`, `ctypes`, signal handlers, `sys.modules`, raw file descriptors), it
can change no other check's outcome and none of its own later ones, since the process ends
with the check and the next one starts from the zygote's unchanged state.

Channels (pipes made before the fork; the worker's end in `Zygote`):
- request, worker -> zygote: one frame (`protocol.frame`) per check, `marshal`led
  `(source, response)`; `response` None asks for the function's definition only.
- outcome, checker -> worker: the checker's outcome code, one byte. Checkers write nothing else;
  any other byte count is a `crash` of that check (a function can close or flood this pipe).
- status, zygote -> worker: one byte once the checker has exited, so that everything in the
  outcome pipe came from that checker, and nothing of it can be read as the next one's.

Each checker confines itself further before it runs the function: a second seccomp filter,
with its own pid as the only signal target and no process creation (filters stack: the
zygote's, which allows fork, and the checker's both apply), and a parent-death signal. The
zygote exits when the worker closes the request pipe or dies.
"""

from __future__ import annotations

import marshal
import os
import signal
from collections.abc import Callable

from . import isolation
from .protocol import CODE, frame, read_frame, write_all

_CRASH = CODE["crash"]
_PR_SET_PDEATHSIG = 1


class ZygoteGone(Exception):
    """The zygote exited: the worker cannot run isolated checks any more."""


class Zygote:
    """The worker's handle on its zygote."""

    def __init__(self, request_fd: int, outcome_fd: int, status_fd: int, pid: int) -> None:
        self.request_fd = request_fd
        self.outcome_fd = outcome_fd
        self.status_fd = status_fd
        self.pid = pid

    @classmethod
    def start(cls, run_check: Callable[[str, str | None], int], close_in_zygote: Callable[[], None]) -> Zygote:
        """Fork the zygote. `run_check(source, response)` runs one check in a checker and returns
        its outcome code; `close_in_zygote` drops what the zygote must not hold (the worker's
        pipes and result area)."""
        request_r, request_w = os.pipe()
        outcome_r, outcome_w = os.pipe()
        status_r, status_w = os.pipe()
        worker_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                for fd in (request_w, outcome_r, status_r):
                    os.close(fd)
                close_in_zygote()
                _die_with(worker_pid)
                report = isolation.IsolationReport(no_new_privs=True)
                isolation.apply_seccomp(report, allow_fork=True)
                _serve(run_check, request_r, outcome_w, status_w)
            finally:
                os._exit(0)
        for fd in (request_r, outcome_w, status_w):
            os.close(fd)
        os.set_blocking(outcome_r, False)
        return cls(request_w, outcome_r, status_r, pid)

    def run(self, source: str, response: str | None) -> int:
        """One check (or, for `response` None, the definition) in a fresh checker."""
        write_all(self.request_fd, frame(marshal.dumps((source, response))))
        if not os.read(self.status_fd, 1):
            raise ZygoteGone("the sandbox's checker zygote exited")
        data = b""
        while True:
            try:
                chunk = os.read(self.outcome_fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return data[0] if len(data) == 1 else _CRASH


def _die_with(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (the parent may already be gone)."""
    isolation.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(0)


def _serve(run_check: Callable[[str, str | None], int], request_fd: int, outcome_fd: int, status_fd: int) -> None:
    zygote_pid = os.getpid()
    while True:
        message = read_frame(request_fd)
        if message is None:
            return
        pid = os.fork()
        if pid == 0:  # the checker
            try:
                os.close(request_fd)
                os.close(status_fd)
                _die_with(zygote_pid)
                isolation.apply_seccomp(isolation.IsolationReport(no_new_privs=True))
                source, response = marshal.loads(message)
                os.write(outcome_fd, bytes((run_check(source, response),)))
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        write_all(status_fd, b"\0")
