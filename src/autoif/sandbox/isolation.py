"""Kernel-enforced confinement of a sandbox worker: rlimits, capabilities, Landlock, seccomp.

Everything here runs inside the worker process, never in the parent (limits are per process and
the parent must keep its own). Each step returns what it achieved; a step the kernel does not
offer is reported as a warning, which the parent logs: nothing degrades silently.

- `set_limits`: RLIMIT_AS (memory), RLIMIT_FSIZE (largest file), RLIMIT_NOFILE, RLIMIT_CORE;
  `set_process_limit`, once the worker has forked its checker zygote (`checker.py`):
  RLIMIT_NPROC (0: no new processes or threads; the kernel exempts root from it, which is why
  seccomp below is the guard that always holds). Hard limits are lowered with the soft ones.
  The zygote and its checkers share every limit but RLIMIT_NPROC and the Landlock domain.
- `drop_capabilities`: a worker started as root gives up every capability (CAP_SYS_RESOURCE would
  let it raise hard limits, CAP_KILL signal any process, CAP_SYS_PTRACE read other processes).
- `apply_landlock`: file access is deny-by-default. Reading is allowed only under the Python
  installation, the import path, system libraries, the NLTK data directory and the scratch
  directory (so no /proc/<parent>/environ, no home directory, no project `.env`); writing only in
  the scratch directory and /dev/null. From Landlock ABI 4 TCP bind/connect are refused, from ABI
  6 signals to processes outside the sandbox and abstract unix sockets are refused.
- `apply_seccomp`: a BPF filter (written here, no libseccomp needed) refuses with EPERM: socket
  creation, every way of making a process or thread (fork, vfork, clone; clone3 gets ENOSYS),
  execve, signals to any process but the worker itself, ptrace and cross-process memory access,
  raising rlimits, io_uring, bpf, mounts, namespaces, keyrings, modules and other host-wide
  administration calls. A foreign syscall ABI (x32, i386 on x86_64) kills the process. The
  zygote's filter allows fork and leaves signals to each checker's own filter, which a checker
  stacks on it before running a function: no process creation, signals to itself only.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import struct
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------------- libc
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1


def _errno_text() -> str:
    err = ctypes.get_errno()
    return f"{os.strerror(err)} (errno {err})"


@dataclass
class IsolationReport:
    """What the worker got from the kernel; sent to the parent in the ready message."""

    rlimits: dict = field(default_factory=dict)
    capabilities_dropped: bool = False
    no_new_privs: bool = False
    landlock_abi: int = 0  # 0: not applied
    seccomp: bool = False
    warnings: list = field(default_factory=list)


# ------------------------------------------------------------------------------------- rlimits
def set_limits(memory_mb: int, report: IsolationReport, max_file_mb: int = 16, max_files: int = 64) -> None:
    """Every limit but RLIMIT_NPROC, which `set_process_limit` sets once the worker has forked its
    checker zygote (see `checker.py`)."""
    _set_rlimits(
        {
            "RLIMIT_AS": memory_mb * 1024 * 1024,
            "RLIMIT_FSIZE": max_file_mb * 1024 * 1024,
            "RLIMIT_NOFILE": max_files,
            "RLIMIT_CORE": 0,
        },
        report,
    )


def set_process_limit(report: IsolationReport) -> None:
    _set_rlimits({"RLIMIT_NPROC": 0}, report)


def _set_rlimits(limits: dict[str, int], report: IsolationReport) -> None:
    for name, value in limits.items():
        which = getattr(resource, name)
        try:
            resource.setrlimit(which, (value, value))
            report.rlimits[name] = value
        except (ValueError, OSError) as exc:
            report.warnings.append(f"{name} could not be set ({exc})")


# -------------------------------------------------------------------------------- capabilities
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities(report: IsolationReport) -> None:
    """Empty the effective, permitted and inheritable capability sets (a no-op for non-root)."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        report.warnings.append(f"capabilities could not be dropped: {_errno_text()}")
    else:
        report.capabilities_dropped = True


def set_parent_death_signal(signum: int) -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


def set_no_new_privs(report: IsolationReport) -> None:
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        report.warnings.append(f"PR_SET_NO_NEW_PRIVS failed: {_errno_text()}")
    else:
        report.no_new_privs = True


# ------------------------------------------------------------------------------------ landlock
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LL_EXECUTE, _LL_WRITE_FILE, _LL_READ_FILE, _LL_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_LL_TRUNCATE, _LL_IOCTL_DEV = 1 << 14, 1 << 15
_LL_ABI1_ALL = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_LL_REFER = 1 << 13
_LL_NET_BIND_TCP, _LL_NET_CONNECT_TCP = 1 << 0, 1 << 1
_LL_SCOPE_ABSTRACT_UNIX, _LL_SCOPE_SIGNAL = 1 << 0, 1 << 1
_LL_RULE_PATH_BENEATH = 1
_FILE_RIGHTS = _LL_EXECUTE | _LL_WRITE_FILE | _LL_READ_FILE | _LL_TRUNCATE | _LL_IOCTL_DEV


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is absent or disabled."""
    version = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(0, int(version))


def _handled_fs(abi: int) -> int:
    rights = _LL_ABI1_ALL
    if abi >= 2:
        rights |= _LL_REFER
    if abi >= 3:
        rights |= _LL_TRUNCATE
    if abi >= 5:
        rights |= _LL_IOCTL_DEV
    return rights


def apply_landlock(read_paths: list[str], write_paths: list[str], report: IsolationReport) -> None:
    """Deny every file access but reading `read_paths` and reading/writing `write_paths`
    (directories cover everything beneath them; files are allowed one by one)."""
    abi = landlock_abi()
    if abi == 0:
        report.warnings.append(
            "Landlock is not available in this kernel: file writes outside the scratch directory and "
            "reads of host files (including /proc/<parent>/environ) are NOT confined"
        )
        return
    handled = _handled_fs(abi)
    attr = struct.pack("<Q", handled)
    if abi >= 4:
        attr += struct.pack("<Q", _LL_NET_BIND_TCP | _LL_NET_CONNECT_TCP)
    if abi >= 6:
        attr += struct.pack("<Q", _LL_SCOPE_ABSTRACT_UNIX | _LL_SCOPE_SIGNAL)
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        report.warnings.append(f"landlock_create_ruleset failed: {_errno_text()}; files are NOT confined")
        return
    try:
        read = _LL_READ_FILE | _LL_READ_DIR
        rules = [(p, read) for p in read_paths] + [(p, handled) for p in write_paths]
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a path that does not exist needs no rule
            try:
                if not os.path.isdir(path):
                    rights &= _FILE_RIGHTS
                rule = ctypes.create_string_buffer(struct.pack("<Qi", rights & handled, fd), 12)
                if (
                    _libc.syscall(
                        _SYS_LANDLOCK_ADD_RULE,
                        ctypes.c_int(ruleset),
                        ctypes.c_int(_LL_RULE_PATH_BENEATH),
                        rule,
                        ctypes.c_uint32(0),
                    )
                    != 0
                ):
                    report.warnings.append(f"landlock rule for {path} failed: {_errno_text()}")
            finally:
                os.close(fd)
        if _libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            report.warnings.append(f"landlock_restrict_self failed: {_errno_text()}; files are NOT confined")
            return
        report.landlock_abi = abi
    finally:
        os.close(ruleset)
    if abi < 4:
        report.warnings.append(f"Landlock ABI {abi} < 4: TCP is refused by seccomp only")
    if abi < 6:
        report.warnings.append(f"Landlock ABI {abi} < 6: signals are confined by seccomp only")


# ------------------------------------------------------------------------------------- seccomp
# Syscall numbers from the kernel headers (asm/unistd_64.h, asm-generic/unistd.h).
# arch -> {"audit_arch": int, "x32_bit": int, "nr": {syscall name: number}}
_ARCHES: dict[str, dict[str, Any]] = {
    "x86_64": {
        "audit_arch": 0xC000003E,
        "x32_bit": 0x40000000,
        "nr": {
            "socket": 41,
            "socketpair": 53,
            "clone": 56,
            "fork": 57,
            "vfork": 58,
            "execve": 59,
            "execveat": 322,
            "clone3": 435,
            "kill": 62,
            "tkill": 200,
            "tgkill": 234,
            "rt_sigqueueinfo": 129,
            "rt_tgsigqueueinfo": 297,
            "pidfd_send_signal": 424,
            "pidfd_open": 434,
            "pidfd_getfd": 438,
            "ptrace": 101,
            "process_vm_readv": 310,
            "process_vm_writev": 311,
            "kcmp": 312,
            "process_madvise": 440,
            "setrlimit": 160,
            "prlimit64": 302,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "bpf": 321,
            "perf_event_open": 298,
            "userfaultfd": 323,
            "mount": 165,
            "umount2": 166,
            "pivot_root": 155,
            "chroot": 161,
            "unshare": 272,
            "setns": 308,
            "keyctl": 250,
            "add_key": 248,
            "request_key": 249,
            "init_module": 175,
            "finit_module": 313,
            "delete_module": 176,
            "kexec_load": 246,
            "kexec_file_load": 320,
            "reboot": 169,
            "swapon": 167,
            "swapoff": 168,
            "sethostname": 170,
            "setdomainname": 171,
            "settimeofday": 164,
            "clock_settime": 227,
            "clock_adjtime": 305,
            "adjtimex": 159,
            "acct": 163,
            "quotactl": 179,
            "syslog": 103,
            "name_to_handle_at": 303,
            "open_by_handle_at": 304,
            "open_tree": 428,
            "move_mount": 429,
            "fsopen": 430,
            "fsconfig": 431,
            "fsmount": 432,
            "fspick": 433,
            "mount_setattr": 442,
            "fanotify_init": 300,
            "lookup_dcookie": 212,
            "vhangup": 153,
            "migrate_pages": 256,
            "move_pages": 279,
            "personality": 135,
            "capset": 126,
            "iopl": 172,
            "ioperm": 173,
            "uselib": 134,
            "seccomp": 317,
        },
    },
    "aarch64": {
        "audit_arch": 0xC00000B7,
        "x32_bit": None,
        "nr": {
            "socket": 198,
            "socketpair": 199,
            "clone": 220,
            "execve": 221,
            "execveat": 281,
            "clone3": 435,
            "kill": 129,
            "tkill": 130,
            "tgkill": 131,
            "rt_sigqueueinfo": 138,
            "rt_tgsigqueueinfo": 240,
            "pidfd_send_signal": 424,
            "pidfd_open": 434,
            "pidfd_getfd": 438,
            "ptrace": 117,
            "process_vm_readv": 270,
            "process_vm_writev": 271,
            "kcmp": 272,
            "process_madvise": 440,
            "setrlimit": 164,
            "prlimit64": 261,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "bpf": 280,
            "perf_event_open": 241,
            "userfaultfd": 282,
            "mount": 40,
            "umount2": 39,
            "pivot_root": 41,
            "chroot": 51,
            "unshare": 97,
            "setns": 268,
            "keyctl": 219,
            "add_key": 217,
            "request_key": 218,
            "init_module": 105,
            "finit_module": 273,
            "delete_module": 106,
            "kexec_load": 104,
            "kexec_file_load": 294,
            "reboot": 142,
            "swapon": 224,
            "swapoff": 225,
            "sethostname": 161,
            "setdomainname": 162,
            "settimeofday": 170,
            "clock_settime": 112,
            "clock_adjtime": 266,
            "adjtimex": 171,
            "acct": 89,
            "quotactl": 60,
            "syslog": 116,
            "name_to_handle_at": 264,
            "open_by_handle_at": 265,
            "open_tree": 428,
            "move_mount": 429,
            "fsopen": 430,
            "fsconfig": 431,
            "fsmount": 432,
            "fspick": 433,
            "mount_setattr": 442,
            "fanotify_init": 262,
            "lookup_dcookie": 18,
            "vhangup": 58,
            "migrate_pages": 238,
            "move_pages": 239,
            "personality": 92,
            "capset": 91,
            "seccomp": 277,
        },
    },
}

# Refused outright with EPERM (`PROCESS_CREATION` not for the checker zygote, see `checker.py`).
PROCESS_CREATION = ("clone", "fork", "vfork")
DENIED = (
    "socket",
    "socketpair",  # no network, no unix sockets to host daemons
    "clone",
    "fork",
    "vfork",
    "execve",
    "execveat",  # no processes, no threads
    "tkill",
    "pidfd_send_signal",
    "pidfd_open",
    "pidfd_getfd",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "process_madvise",
    "setrlimit",
    "capset",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",  # io_uring would bypass this filter
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "keyctl",
    "add_key",
    "request_key",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "sethostname",
    "setdomainname",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "acct",
    "quotactl",
    "syslog",
    "name_to_handle_at",
    "open_by_handle_at",
    "fanotify_init",
    "lookup_dcookie",
    "vhangup",
    "migrate_pages",
    "move_pages",
    "personality",
    "iopl",
    "ioperm",
    "uselib",
)
# glibc falls back from clone3 to clone only on ENOSYS; clone is then refused as well.
ENOSYS_DENIED = ("clone3",)
# Allowed only when the first argument (the target process) is the worker itself.
SELF_ONLY = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")

_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x06
_RET_KILL_PROCESS, _RET_ALLOW, _RET_ERRNO = 0x80000000, 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38


def _assemble(program: list) -> bytes:
    """Resolve label jumps: instructions are (code, jt, jf, k) with jt/jf label names or 0;
    a str entry is a label for the instruction that follows."""
    labels: dict[str, int] = {}
    body: list[tuple] = []
    for item in program:
        if isinstance(item, str):
            labels[item] = len(body)
        else:
            body.append(item)
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(body):
        jumps = []
        for target in (jt, jf):
            offset = labels[target] - i - 1 if isinstance(target, str) else target
            if not 0 <= offset <= 255:
                raise ValueError(f"seccomp jump out of range: {offset}")
            jumps.append(offset)
        out += struct.pack("<HBBI", code, jumps[0], jumps[1], k & 0xFFFFFFFF)
    return bytes(out)


def build_filter(arch: str, self_pid: int, allow_fork: bool = False) -> bytes:
    """The BPF program (struct sock_filter[]) for `arch`, allowing self-signals to `self_pid`
    and, with `allow_fork`, fork/vfork/clone (for the checker zygote only)."""
    table = _ARCHES[arch]
    nr = table["nr"]
    prog: list = [
        (_BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (_BPF_JEQ_K, "arch_ok", 0, table["audit_arch"]),
        (_BPF_RET_K, 0, 0, _RET_KILL_PROCESS),
        "arch_ok",
        (_BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if table["x32_bit"]:
        prog.append((_BPF_JGE_K, "deny", 0, table["x32_bit"]))
    for name in DENIED:
        if allow_fork and name in PROCESS_CREATION:
            continue
        if name in nr:
            prog.append((_BPF_JEQ_K, "deny", 0, nr[name]))
    for name in ENOSYS_DENIED:
        prog.append((_BPF_JEQ_K, "enosys", 0, nr[name]))
    # The zygote's filter leaves signals to each checker's own filter, which allows only the
    # checker itself (filters stack: a zygote-only target would leave a checker none).
    for name in () if allow_fork else SELF_ONLY:
        prog.append((_BPF_JEQ_K, "self_only", 0, nr[name]))
    prog += [
        (_BPF_JEQ_K, "prlimit", 0, nr["prlimit64"]),
        (_BPF_RET_K, 0, 0, _RET_ALLOW),
        "self_only",
        (_BPF_LD_W_ABS, 0, 0, 16),  # args[0], low 32 bits (pid_t)
        (_BPF_JEQ_K, "allow", "deny", self_pid),
        "prlimit",  # prlimit64(pid, resource, new_limit, old_limit): reading only
        (_BPF_LD_W_ABS, 0, 0, 16 + 8 * 2),
        (_BPF_JEQ_K, 0, "deny", 0),
        (_BPF_LD_W_ABS, 0, 0, 16 + 8 * 2 + 4),
        (_BPF_JEQ_K, "allow", "deny", 0),
        "allow",
        (_BPF_RET_K, 0, 0, _RET_ALLOW),
        "deny",
        (_BPF_RET_K, 0, 0, _RET_ERRNO | _EPERM),
        "enosys",
        (_BPF_RET_K, 0, 0, _RET_ERRNO | _ENOSYS),
    ]
    return _assemble(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def apply_seccomp(report: IsolationReport, allow_fork: bool = False) -> None:
    arch = platform.machine()
    if arch not in _ARCHES:
        report.warnings.append(
            f"no seccomp filter for architecture {arch}: processes, sockets and "
            "signals are confined by Landlock and rlimits only"
        )
        return
    if not report.no_new_privs:
        report.warnings.append("seccomp needs no_new_privs, which failed: not applied")
        return
    program = build_filter(arch, os.getpid(), allow_fork)
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    # seccomp(2) with TSYNC covers every thread of the worker; prctl only the calling one.
    rc = _libc.syscall(
        _ARCHES[arch]["nr"]["seccomp"],
        ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
        ctypes.c_uint(SECCOMP_FILTER_FLAG_TSYNC),
        ctypes.byref(prog),
    )
    if rc != 0:
        rc = _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0)
    if rc != 0:
        report.warnings.append(
            f"seccomp filter could not be installed: {_errno_text()}; processes, "
            "sockets and signals are NOT confined by seccomp"
        )
        return
    report.seccomp = True
