"""What the parent and a worker exchange, and nothing else (both sides import this module).

Channels (none of them is the worker's stdin/stdout/stderr, which point at /dev/null):
- request pipe, parent -> worker: frames of a 4-byte little-endian length and a `marshal` body.
  The first frame is the worker's configuration; every later one a batch
  `(evict_fids, new_functions, responses, segments)` where `new_functions` is `[(fid, source)]`,
  `segments` is `[(fid, first_response, count)]` into `responses`.
- reply pipe, worker -> parent: one JSON frame (length-prefixed) when the worker is ready, then
  exactly `DONE` + a 4-byte count per batch. The parent never unpickles or unmarshals anything a
  worker sends: a worker may be running hostile code.
- result area, a shared memory file (memfd) mapped by both: one byte per check of the current
  batch, in batch order. The worker writes RUNNING (or DEFINING, while it compiles and executes
  a function's top level) before a check and the outcome code after it, so when a worker dies or
  is killed the parent knows which checks finished, which one was running, and which never ran.
"""

from __future__ import annotations

import os
import struct

# Result codes in the shared area. 1 and 2 are the values; 3.. the errors in ERRORS order.
PENDING, TRUE, FALSE = 0, 1, 2
ERRORS = ("compile", "no_evaluate", "forbidden_import", "timeout", "memory", "exception", "not_bool", "crash")
CODE = {name: 3 + i for i, name in enumerate(ERRORS)}
RUNNING, DEFINING = 253, 254
FINAL_CODES = range(1, 3 + len(ERRORS))

DONE = b"DONE"
DONE_FRAME = struct.Struct("<4sI")
LENGTH = struct.Struct("<I")

# Checks in one batch at most (the size of the result area).
MAX_BATCH_CHECKS = 16384


def write_all(fd: int, data: bytes) -> None:
    """Blocking write of all of `data` (the worker's side; the parent writes non-blocking)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_exact(fd: int, n: int) -> bytes | None:
    """Read exactly n bytes; None on end of file."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            return None
        got += k
    return bytes(buf)


def frame(body: bytes) -> bytes:
    return LENGTH.pack(len(body)) + body


def read_frame(fd: int) -> bytes | None:
    head = read_exact(fd, LENGTH.size)
    if head is None:
        return None
    return read_exact(fd, LENGTH.unpack(head)[0])
