"""One live run per output directory: `OUT/.lock`, held with `flock` for as long as a run lasts.

The kernel releases the lock when its holder's process ends, however it ends, so a lock left by a
run killed with SIGKILL is simply taken by the next run (which resumes): no PID is ever guessed
alive or dead. The holder's PID is written into the file only to name it to a run that is refused.
The file itself stays: removing it would let a run that opened it just before lock a file no
longer at that path while a third run locks a new one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from .errors import AutoifError

LOCK_FILE = ".lock"


def output_dir(path: Path, option: str = "-o") -> Path:
    """`path` as an output directory, created if missing; a usage error when it cannot be one
    (`option`: the command-line option that named it)."""
    if path.exists() and not path.is_dir():
        raise AutoifError(f"output directory {path} is a file; choose a directory with {option}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AutoifError(f"cannot create output directory {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise AutoifError(f"output directory {path} is not writable; choose another with {option}")
    return path


class RunLock:
    """`with RunLock(out):` holds `out` for this process, or raises AutoifError naming the holder."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        output_dir(self.out)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AutoifError(
                f"{self.out} is in use by another autoif run (pid {holder}, lock {self.path}); "
                "wait for it to end, or choose another -o"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no PID of a finished run left to mislead a reader
            os.close(self._fd)  # closing the last descriptor releases the lock
            self._fd = None
