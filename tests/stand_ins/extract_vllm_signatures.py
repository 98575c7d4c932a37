"""Write `vllm_signatures.json`: the signatures of the vLLM names autoif calls, read from a vLLM wheel.

The stand-in `vllm` package (tests/stand_ins/vllm) is checked against this file by
tests/test_vllm_stand_in.py, so it cannot drift from the version autoif pins. The file is generated,
not the wheel kept: the wheel is 320 MB and tests run offline. To move the pin:

    pip download vllm==X --no-deps -d /tmp/vllm-wheel
    python tests/stand_ins/extract_vllm_signatures.py /tmp/vllm-wheel/vllm-X-*.whl

Only the sources are read (with `ast`, from the zip): nothing of vLLM is imported or installed.
"""

from __future__ import annotations

import ast
import json
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).with_name("vllm_signatures.json")

# (file in the wheel, class, what to read): "init"/"generate" = that method's parameters,
# "fields" = the class body's annotated attributes (dataclass / msgspec.Struct fields).
WANTED = [
    ("vllm/entrypoints/llm.py", "LLM", "__init__"),
    ("vllm/entrypoints/llm.py", "LLM", "generate"),
    ("vllm/entrypoints/llm.py", "LLM", "get_tokenizer"),
    ("vllm/sampling_params.py", "SamplingParams", "fields"),
    ("vllm/outputs.py", "RequestOutput", "__init__"),
    ("vllm/outputs.py", "CompletionOutput", "fields"),
    ("vllm/engine/arg_utils.py", "EngineArgs", "fields"),  # what LLM(**kwargs) accepts beyond its own
]


def _default(node: ast.expr | None) -> str | None:
    return None if node is None else ast.unparse(node)


def method_params(fn: ast.FunctionDef) -> list[dict]:
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    params = [{"name": p.arg, "kind": "positional", "default": _default(d)} for p, d in zip(positional, defaults)][
        1:
    ]  # not self
    params += [{"name": p.arg, "kind": "keyword", "default": _default(d)} for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    if a.vararg:
        params.append({"name": a.vararg.arg, "kind": "var_positional", "default": None})
    if a.kwarg:
        params.append({"name": a.kwarg.arg, "kind": "var_keyword", "default": None})
    return params


def class_fields(cls: ast.ClassDef) -> list[dict]:
    return [
        {"name": s.target.id, "kind": "field", "default": _default(s.value)}
        for s in cls.body
        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and not s.target.id.startswith("_")
    ]


def extract(wheel: Path) -> dict:
    out: dict = {"version": wheel.name.split("-")[1], "source": wheel.name}
    with zipfile.ZipFile(wheel) as z:
        for file, cls_name, what in WANTED:
            tree = ast.parse(z.read(file).decode())
            cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
            if what == "fields":
                params = class_fields(cls)
            else:
                fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == what)
                params = method_params(fn)
            out[f"{cls_name}.{what}"] = params
    return out


if __name__ == "__main__":
    OUT.write_text(json.dumps(extract(Path(sys.argv[1])), indent=1) + "\n")
    print(f"wrote {OUT}")
