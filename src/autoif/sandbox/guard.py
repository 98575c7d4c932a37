"""Python-level isolation between the functions the worker process runs, and between the checks
of one function. The kernel mechanisms in `isolation.py` confine the host; checker processes
(`checker.py`) carry every function that this module cannot vouch for.

What makes every check start from the state the function's source defines (the worker runs the
cached code object's top level into a fresh namespace for each check, see `worker.py`):
- `FunctionEnv.namespace()` gives each execution of the top level a new module namespace, so
  module-level names, default arguments, closures, classes and the function objects themselves
  (`evaluate`, its `__code__`) are as after a fresh definition.
- `defines_only` finds, statically, the functions whose top level only imports, defines plain
  functions and binds literals, and whose functions rebind no global: nothing such a namespace
  holds can change (a function that runs in the worker reaches neither the function objects
  nor the namespace nor the module copies), so running the top level again would give the same
  namespace, and the worker keeps the first one.
- A function's `random` copy is reseeded with `RANDOM_SEED` after every check, and the
  per-module settings below are reset after every check of a function that imported the module.

Which functions run in the worker process, and what keeps them from the others' outcomes:
- `needs_full_check` (static): introspection (dunder attributes beyond the usual protocol
  methods, frames, getattr/setattr/vars/eval/exec/compile, attrgetter, string.Formatter's
  field hooks...), attribute writes, private attributes (`re._cache`), class patterns (whose
  keyword attribute names are constants) and dunder names inside strings send every check of a
  function to a checker process.
- `install_audit_hook` (at run time): during a call in the worker every audited operation but
  opening a file by name, executing the function's own top level, loading a module, `id()` and
  non-frame attribute audits is refused with `NeedsIsolation`; so is an import that library code
  makes of a module outside the plain ones (`guard_library_imports`) and the function's own
  import of an allowed but not plain module (`FunctionEnv.module_copy`). The worker then runs
  the check in a checker process: a string evaluated by `typing`, a `namedtuple`, `io` work
  there as they would alone.
- Own globals and own builtins: each function is executed in its own globals dict whose
  `__builtins__` is a private copy of the builtins dict, with `__import__` replaced by the
  function's importer. `__builtins__["len"] = ...` or `len = ...` touch only that function.
- Own modules: the importer admits only modules in the allowlist (a dotted prefix admits its
  submodules; `__future__` and `_strptime`, which CPython's C code imports through the
  caller's importer, are always admitted) and returns per-function shallow copies of them,
  created once per `FunctionEnv`, with submodules copied lazily on first attribute access.
  `re.search = f` or `string.ascii_letters = ""` change the function's copy only; `random`
  gets its own `Random` instance, so `random.seed` stays private. A submodule outside the
  allowlist reached as an attribute (`nltk.os`) is a forbidden import. Any forbidden import
  attempt marks the call `forbidden_import`, even when the function catches the ImportError.
- Per-module global state that the allowed modules keep (the decimal context, csv limits and
  dialects, the calendar's first weekday, `nltk.data.path`) is reset after every check of a
  function that imported the module.

Known gaps of this layer (documented in docs/sandbox.md), which concern only functions that
pass the static scan: in-place mutation of public mutable data a library shares
(`keyword.kwlist.append`) is not undone; a library API that hands out an interpreter object
(a real module, a frame) with no audited operation and no import on the way would reach past
it (none is known in the default allowlist; `importlib.import_module` called by library code
is not guarded); a generator finalized by the garbage collector during a later check runs its
`finally` there (it can compute, so cost that check time, but reaches nothing more).
"""

from __future__ import annotations

import ast
import builtins
import dis
import inspect
import re
import sys
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: the worker imports `random` through its import policy
    import random

DEFAULT_ALLOWED_IMPORTS: tuple[str, ...] = (
    # text processing
    "re",
    "string",
    "unicodedata",
    "textwrap",
    "difflib",
    "html",
    "csv",
    "json",
    "keyword",
    "base64",
    # numbers
    "math",
    "cmath",
    "statistics",
    "decimal",
    "fractions",
    "numbers",
    "random",
    # data structures and functional helpers
    "collections",
    "itertools",
    "functools",
    "operator",
    "heapq",
    "bisect",
    "copy",
    "array",
    "dataclasses",
    "enum",
    "typing",
    "abc",
    # dates, hashing, in-memory text streams
    "datetime",
    "calendar",
    "hashlib",
    "io",
    # checker-friendly packages autoif ships (NLTK with offline punkt_tab data)
    "nltk",
    "langdetect",
)
# Default modules a function may use in the worker process (`io` can reach file descriptors).
PLAIN_MODULES = frozenset(DEFAULT_ALLOWED_IMPORTS) - {"io"}
# Admitted whatever the allowlist: `__future__` (compiler directives) and `_strptime`, which
# CPython's C code imports through the caller's `__import__` (`datetime.strptime`, `time.strptime`).
ALWAYS_ADMITTED = frozenset({"__future__", "_strptime"})
# Default modules through which a function that never names `open` can still create files.
FILE_WRITING_MODULES = frozenset({"nltk"})  # nltk.download
# Every check starts with the function's `random` copy in this state: random draws are part of
# the function's definition, the same in every worker and every run.
RANDOM_SEED = 0


class ForbiddenImport(ImportError):
    """An import outside the sandbox allowlist."""


class NeedsIsolation(BaseException):
    """A call in the worker process reached for something only a checker process of its own may
    have (a module outside the plain ones, a frame, `gc`, compiled code...): the worker abandons
    the call and runs the check again in a forked checker process (a BaseException, so that
    `except Exception` in the function does not swallow it; `CallState.isolate` stays set even
    if it is swallowed)."""


class CallState:
    """The call in progress: its number, whether one is running, and flags the importer, the
    audit hook and the timer set."""

    __slots__ = ("seq", "armed", "forbidden", "timed_out", "isolate", "trusted")

    def __init__(self) -> None:
        self.seq = 0
        self.armed = False
        # Set only while the worker's own code makes an audited operation, with the garbage
        # collector off (so that no finalizer of a function's object runs then): see
        # `install_audit_hook`.
        self.trusted = False
        self.forbidden = False
        self.timed_out = False
        self.isolate = False


# ------------------------------------------------------------------------------- static scan
_BENIGN_DUNDERS = frozenset(
    [
        "__init__",
        "__new__",
        "__name__",
        "__doc__",
        "__module__",
        "__qualname__",
        "__annotations__",
        "__slots__",
        "__classcell__",
        "__post_init__",
        "__len__",
        "__str__",
        "__repr__",
        "__format__",
        "__hash__",
        "__bool__",
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__iter__",
        "__next__",
        "__reversed__",
        "__contains__",
        "__getitem__",
        "__setitem__",
        "__delitem__",
        "__call__",
        "__enter__",
        "__exit__",
        "__add__",
        "__radd__",
        "__sub__",
        "__mul__",
        "__truediv__",
        "__floordiv__",
        "__mod__",
        "__neg__",
        "__abs__",
        "__main__",
    ]
)
_INTROSPECTION_NAMES = frozenset(
    [
        "getattr",
        "setattr",
        "delattr",
        "vars",
        "globals",
        "locals",
        "eval",
        "exec",
        "compile",
        "breakpoint",
        "attrgetter",
        "methodcaller",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "tb_frame",
        "tb_next",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "cr_code",
        "ag_frame",
        "ag_code",
        "co_consts",
        "mro",
        "get_field",
        # string.Formatter subclasses receive the objects a format string's fields name
        "Formatter",
        "format_field",
        "get_value",
        "cell_contents",
        # ABC registration changes isinstance() for every function of the process
        "register",
        "exit",
        "quit",
        # enum helpers that write into a module's namespace, named by a string or a class's
        # __module__ (`Enum._convert_('X', 'builtins', ...)` rebinds builtins)
        "_convert_",
        "global_enum",
    ]
)
# Library calls that change, in place, a function object they are given (its attributes, its
# annotations): a namespace whose code names one is not kept across checks (`defines_only`).
_FUNCTION_WRITERS = frozenset(
    [
        "update_wrapper",  # functools: __name__, __doc__, __dict__, __wrapped__...
        "wraps",
        "abstractmethod",  # abc: __isabstractmethod__
        "abstractclassmethod",
        "abstractstaticmethod",
        "final",  # typing: __final__
        "no_type_check",  # typing: __no_type_check__
        "no_type_check_decorator",
        "__annotations__",  # a dict, changeable in place
    ]
)
_ATTRIBUTE_WRITES = frozenset(dis.opmap[name] for name in ("STORE_ATTR", "DELETE_ATTR"))
# Opcodes whose argument is an attribute or module member name (private ones, `re._cache`,
# are shared state of the library) and the class-pattern match, whose keyword attribute names
# are constants (`case object(__self__=x)`), not names.
_ATTRIBUTE_NAMES = frozenset({"LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "DELETE_ATTR", "IMPORT_FROM", "IMPORT_NAME"})
_DUNDER_IN_TEXT = re.compile(r"__\w+__")
_MATCH_CLASS = dis.opmap["MATCH_CLASS"]
_GLOBAL_WRITES = frozenset(dis.opmap[name] for name in ("STORE_GLOBAL", "DELETE_GLOBAL"))


# Attribute names that are introspection as builtins but harmless as one module's attribute:
# `re.compile` builds a pattern, not code. Such a name passes the scan only as that attribute of
# the module loaded by its name (global, or local but not an argument), right after the load (no
# jump lands between them), and only where every binding of that name in the code is
# `import <module>` (not `import builtins as re`, `re = ...`, `for re in ...`).
_MODULE_ATTRIBUTES = {"compile": "re"}
_NAME_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FAST", "LOAD_FAST_CHECK"})
_ATTRIBUTE_LOADS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_IMPORT_STAR = dis.opmap["IMPORT_STAR"]
_NAME_BINDINGS = frozenset(
    dis.opmap[name]
    for name in (
        "STORE_NAME",
        "STORE_GLOBAL",
        "STORE_FAST",
        "STORE_DEREF",
        "DELETE_NAME",
        "DELETE_GLOBAL",
        "DELETE_FAST",
        "DELETE_DEREF",
    )
)


def _code_objects(code: types.CodeType):
    """The code object and every one nested in it (functions, classes, comprehensions)."""
    stack = [code]
    while stack:
        co = stack.pop()
        yield co
        stack.extend(c for c in co.co_consts if isinstance(c, types.CodeType))


def _bound_only_by_import(code: types.CodeType, module: str) -> bool:
    """Whether every binding of the name `module` in the code (nested code included) is `import module`
    (a star import could bind any name)."""
    for co in _code_objects(code):
        previous = None
        for ins in dis.get_instructions(co):
            if ins.opcode == _IMPORT_STAR:
                return False
            if ins.opcode in _NAME_BINDINGS and ins.argval == module:
                imported = previous is not None and previous.opname == "IMPORT_NAME" and previous.argval == module
                if not imported or ins.is_jump_target:
                    return False
            previous = ins
    return True


def _arguments(co: types.CodeType) -> tuple[str, ...]:
    """The names of the code's parameters (bound by the caller, not by its code)."""
    count = co.co_argcount + co.co_kwonlyargcount
    count += bool(co.co_flags & inspect.CO_VARARGS) + bool(co.co_flags & inspect.CO_VARKEYWORDS)
    return co.co_varnames[:count]


def _module_attribute_only(code: types.CodeType, co: types.CodeType, name: str) -> bool:
    """Whether every use of `name` in `co` is the attribute of its module in `_MODULE_ATTRIBUTES`
    (`re.compile`), where `code`, the whole function, binds that module's name by importing it only."""
    module = _MODULE_ATTRIBUTES.get(name)
    if module is None or module in _arguments(co) or not _bound_only_by_import(code, module):
        return False
    previous = None
    for ins in dis.get_instructions(co):
        if ins.opcode in dis.hasname and ins.argval == name:
            after_module = previous is not None and previous.opname in _NAME_LOADS and previous.argval == module
            if ins.opname not in _ATTRIBUTE_LOADS or not after_module or ins.is_jump_target:
                return False
        previous = ins
    return True


def needs_full_check(code: types.CodeType) -> bool:
    """True when the code uses introspection, assigns attributes, names a private attribute,
    matches class patterns or holds a dunder name in a string, i.e. could reach shared
    interpreter or library state: then every check of it runs in a checker process of its own
    (see `worker.py`), never in the worker. `re.compile` is not introspection (`_MODULE_ATTRIBUTES`)."""
    for co in _code_objects(code):
        for name in co.co_names:
            if name in _INTROSPECTION_NAMES and not _module_attribute_only(code, co, name):
                return True
            if name.startswith("__") and name.endswith("__") and name not in _BENIGN_DUNDERS:
                return True
        if not _ATTRIBUTE_WRITES.isdisjoint(co.co_code[0::2]):
            return True
        for const in co.co_consts:
            if isinstance(const, str) and any(m not in _BENIGN_DUNDERS for m in _DUNDER_IN_TEXT.findall(const)):
                return True
        if _MATCH_CLASS in co.co_code[0::2]:
            return True
        private = {n for n in co.co_names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))}
        if private and any(
            ins.opname in _ATTRIBUTE_NAMES and any(part in private for part in str(ins.argval).split("."))
            for ins in dis.get_instructions(co)
        ):
            return True
    return False


def names_used(code: types.CodeType) -> frozenset[str]:
    """Every global and attribute name the code (nested code included) refers to."""
    return frozenset(name for co in _code_objects(code) for name in co.co_names)


def defines_only(tree: ast.Module, code: types.CodeType) -> bool:
    """True when running the top level again could only rebuild the namespace a first run built:
    the top level imports, defines functions without decorators whose defaults are literals or
    names, binds names to literals (numbers, strings, tuples of them) and holds docstrings, no
    function rebinds or deletes a global, and the code names no library call that changes a
    function object in place (`functools.wraps`...). Then the namespace holds only module
    copies, library objects, immutable literals and function objects; for a function that runs
    in the worker process (not `needs_full_check`), which can reach neither a function's
    attributes nor its namespace nor its module copies, a call cannot change any of them, so the
    worker keeps the namespace for every check."""
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.Pass)):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            if _literal(stmt.value):
                continue
            return False
        if isinstance(stmt, ast.FunctionDef) and not stmt.decorator_list and _plain_signature(stmt):
            continue
        return False
    return _FUNCTION_WRITERS.isdisjoint(names_used(code)) and all(
        _GLOBAL_WRITES.isdisjoint(co.co_code[0::2]) for co in _code_objects(code)
    )


def _literal(node: ast.expr) -> bool:
    """An immutable value written out: a constant, a signed number, a tuple of literals."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant)
    return isinstance(node, ast.Tuple) and all(_literal(e) for e in node.elts)


def _reference(node: ast.expr | None) -> bool:
    """A literal, or a name or dotted name (evaluated once, to what the top level bound)."""
    if node is None or _literal(node) or isinstance(node, ast.Name):
        return True
    return isinstance(node, ast.Attribute) and _reference(node.value)


def _annotation(node: ast.expr | None) -> bool:
    """A type written with names, subscripts and `|` (`List[str]`, `int | None`): no object a
    call could change ends up in `__annotations__`."""
    if _reference(node):
        return True
    if isinstance(node, ast.Subscript):
        return _annotation(node.value) and _annotation(node.slice)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _annotation(node.left) and _annotation(node.right)
    return isinstance(node, ast.Tuple) and all(_annotation(e) for e in node.elts)


def _plain_signature(fn: ast.FunctionDef) -> bool:
    a = fn.args
    params = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
    return (
        all(_reference(d) for d in [*a.defaults, *a.kw_defaults])
        and all(p is None or _annotation(p.annotation) for p in params)
        and _annotation(fn.returns)
    )


# ------------------------------------------------------------------------------ import policy
class ImportPolicy:
    """The allowlist and the pristine builtins every function's copy starts from."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed_roots = frozenset(allowed) | ALWAYS_ADMITTED
        self._verdicts: dict[str, bool] = {}
        self.real_import = builtins.__import__
        self.builtins_template = dict(builtins.__dict__)

    def allowed(self, name: str) -> bool:
        verdict = self._verdicts.get(name)
        if verdict is None:
            parts = name.split(".")
            verdict = any(".".join(parts[:i]) in self.allowed_roots for i in range(1, len(parts) + 1))
            self._verdicts[name] = verdict
        return verdict


FUNCTION_MODULE_PREFIX = "__sandbox_function_"


class FunctionEnv:
    """One function's builtins, importer and module copies, and the namespaces its top level runs in.

    Each `namespace()` is the dict of a new module registered in `sys.modules` under the
    function's own name, so that library code which looks a class's module up (dataclasses and
    typing resolving string annotations) finds the namespace being defined; `release()`
    unregisters it."""

    __slots__ = ("policy", "state", "name", "builtins", "copies", "imports", "touched", "isolated", "random")

    def __init__(self, policy: ImportPolicy, state: CallState, key: int, isolated: bool) -> None:
        self.policy = policy
        self.state = state
        self.name = f"{FUNCTION_MODULE_PREFIX}{key}__"
        self.copies: dict[str, types.ModuleType] = {}
        self.imports: dict[tuple, object] = {}
        self.touched: set[str] = set()
        # In a checker process of its own: every allowed module may be imported. In the worker:
        # only the plain ones (a module that can reach file descriptors or the interpreter,
        # `io` or one a permissive allowlist adds, sends the check to a checker process).
        self.isolated = isolated
        self.random: random.Random | None = None  # the `random` copy's own generator, once imported
        self.builtins = dict(policy.builtins_template)
        self.builtins["__import__"] = self.import_

    def namespace(self) -> dict:
        """A fresh namespace for one execution of the function's top level."""
        module = types.ModuleType(self.name)
        namespace = module.__dict__
        namespace["__builtins__"] = self.builtins
        sys.modules[self.name] = module
        return namespace

    def release(self) -> None:
        sys.modules.pop(self.name, None)

    def forbid(self, name: str):
        self.state.forbidden = True
        return ForbiddenImport(f"import of {name!r} is not allowed in the sandbox")

    def import_(self, name, globals=None, locals=None, fromlist=(), level=0):
        if fromlist is None:
            fromlist = ()
        elif fromlist.__class__ is not tuple:
            fromlist = tuple(fromlist)
        key = (name, fromlist, level)
        hit = self.imports.get(key)
        if hit is not None:
            return hit
        if level or not isinstance(name, str) or not self.policy.allowed(name):
            raise self.forbid(name if isinstance(name, str) else repr(name))
        module = self.policy.real_import(name, None, None, fromlist, 0)
        result = self.module_copy(module)
        self.imports[key] = result
        return result

    def module_copy(self, real, registered_as: str | None = None):
        """This function's copy of module `real` (created once). A module is admitted by its own
        name, or by the dotted name it is registered under (`os.path` is `posixpath`)."""
        if not isinstance(real, types.ModuleType):
            return real
        name = real.__name__
        copy = self.copies.get(name)
        if copy is not None:
            return copy
        if not self.policy.allowed(name) and not (
            registered_as and self.policy.allowed(registered_as) and sys.modules.get(registered_as) is real
        ):
            raise self.forbid(name)
        root = name.partition(".")[0]
        if root not in PLAIN_MODULES and not self.isolated:
            self.state.isolate = True
            raise NeedsIsolation(f"import {name}")
        copy = types.ModuleType(name)
        namespace = copy.__dict__
        for key, value in real.__dict__.items():
            if not isinstance(value, types.ModuleType):
                namespace[key] = value
        namespace["__getattr__"] = self._lazy_attribute(real, copy)
        if name == "random" and hasattr(real, "_inst"):
            own = self.random = real.Random(RANDOM_SEED)
            for key, value in list(namespace.items()):
                if getattr(value, "__self__", None) is real._inst:
                    namespace[key] = getattr(own, key)
        self.copies[name] = copy
        self.touched.add(root)
        return copy

    def _lazy_attribute(self, real, copy) -> Callable:
        def __getattr__(attr):
            value = getattr(real, attr)
            if isinstance(value, types.ModuleType):
                value = self.module_copy(value, f"{real.__name__}.{attr}")
                copy.__dict__[attr] = value
            return value

        return __getattr__


# ------------------------------------------------------------------------ module state resets
def _reset_decimal(saved):
    import decimal

    decimal.setcontext(saved["context"].copy())
    for attr, value in saved["default"].items():
        setattr(decimal.DefaultContext, attr, value)


def _save_decimal():
    import decimal

    d = decimal.DefaultContext
    return {
        "context": decimal.getcontext().copy(),
        "default": {a: getattr(d, a) for a in ("prec", "rounding", "Emin", "Emax", "capitals", "clamp")},
    }


def _save_csv():
    import csv

    return {"limit": csv.field_size_limit(), "dialects": set(csv.list_dialects())}


def _reset_csv(saved):
    import csv

    csv.field_size_limit(saved["limit"])
    for name in set(csv.list_dialects()) - saved["dialects"]:
        csv.unregister_dialect(name)


def _save_calendar():
    import calendar

    return calendar.firstweekday()


def _reset_calendar(saved):
    import calendar

    calendar.setfirstweekday(saved)


def _save_nltk():
    import nltk.data

    return list(nltk.data.path)


def _reset_nltk(saved):
    import nltk.data

    nltk.data.path[:] = saved


# module root -> (save, reset): process-wide settings an allowed module keeps outside its dict.
MODULE_STATE = {
    "decimal": (_save_decimal, _reset_decimal),
    "csv": (_save_csv, _reset_csv),
    "calendar": (_save_calendar, _reset_calendar),
    "nltk": (_save_nltk, _reset_nltk),
}


class ModuleStateResets:
    def __init__(self) -> None:
        self.saved = {root: save() for root, (save, _) in MODULE_STATE.items() if root in sys.modules}

    def after(self, env: FunctionEnv) -> None:
        for root in env.touched:
            if root in self.saved:
                MODULE_STATE[root][1](self.saved[root])


# ------------------------------------------------------------------------------- audit hook
# Events a call in the worker process may raise: opening a file by name (Landlock decides
# which), executing a function's own top level (the worker compiles every source with this
# file name; new code objects need `compile` or `code.__new__`, which are refused), loading a
# module (the function's importer admits only allowed ones), `id()`, reading an attribute that
# the interpreter audits unless it hands out a frame.
_FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"})
SOURCE_FILENAME = "<evaluate>"


def install_audit_hook(state: CallState) -> None:
    """Refuse, in the worker process, every audited operation but the few above:
    frames (`sys._getframe`, a traceback's, generator's or coroutine's frame), `gc` object
    listings, `compile`/`exec`/`eval` of new code, `ctypes`, `mmap`, tracing, `open(fd)`,
    `marshal`, `pickle`, function and code object surgery, and everything of `os`, `socket`,
    `subprocess`... The call is abandoned (`NeedsIsolation`) and its check runs in a checker
    process of its own, where the function may do all that and reach nothing but its own call.
    The hook refuses outside calls too (a function's object finalized when the worker drops it,
    or by the garbage collector, runs its code there), except while `state.trusted` is set
    around the worker's own audited operations (parsing, compiling, `marshal`, emptying the
    scratch directory), when the garbage collector is off. An audit hook cannot be removed from
    Python; this one keeps everything it uses in its closure, so that no later rebinding of a
    global or builtin changes it."""
    isolate_exc, is_str, get_attribute, path_types = NeedsIsolation, isinstance, getattr, (str, bytes)
    frames, filename = _FRAME_ATTRIBUTES, SOURCE_FILENAME
    benign = frozenset({"import", "builtins.id"})

    def hook(event, args):
        if (
            state.trusted
            or event in benign
            or (event == "open" and is_str(args[0], path_types))
            or (event == "exec" and get_attribute(args[0], "co_filename", None) == filename)
            or (event == "object.__getattr__" and args[1] not in frames)
        ):
            return
        state.isolate = True
        raise isolate_exc(event)

    sys.addaudithook(hook)


def guard_library_imports(state: CallState) -> None:
    """In the worker process (outside `state.trusted`), an import that library code makes (through the real
    `builtins.__import__`; a function's own imports go through its importer) of a module outside
    the plain ones and those always admitted is refused like an audited operation: the check
    runs in a checker process. Without it, a library helper that imports by name
    (`nltk.internals.import_from_stdlib('os')`) would hand a function the real `os`, `sys` or
    `ctypes` module of the worker, with no audit event on the way."""
    real_import, admitted = builtins.__import__, PLAIN_MODULES | ALWAYS_ADMITTED
    isolate_exc = NeedsIsolation

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if not state.trusted:
            package = ((globals or {}).get("__package__") or "") if level else name
            if package.partition(".")[0] not in admitted:
                state.isolate = True
                raise isolate_exc(f"import {name}")
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded_import
