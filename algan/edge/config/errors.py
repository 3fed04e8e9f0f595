"""Config errors as ONE line: ``file:line: field.path: what is wrong; how to fix`` (pydantic errors mapped back to
the YAML line, unknown keys with a close match, secrets never echoed)."""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ValidationError

from algan.edge.config.edge import EdgeConfig
from algan.edge.logs import redact

#: Keys whose values are never echoed in error messages (a password given as a number, say).
SECRET_KEY_RE = re.compile(r"password|passwd|secret|token", re.IGNORECASE)

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` with control characters (newlines from odd YAML keys or values) escaped: an error stays one line."""
    return _CONTROL_RE.sub(lambda m: {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(m[0], f"\\x{ord(m[0]):02x}"), text)


def _unwrap(tp: Any) -> list[Any]:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for a in typing.get_args(tp) for t in _unwrap(a) if t is not type(None)]
    return [tp]


def _field_info(loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, Any]:
    """Walk ``EdgeConfig`` along a pydantic error location; return (model owning the last key, its FieldInfo)."""
    current: list[Any] = [EdgeConfig]
    owner: type[BaseModel] | None = None
    info = None
    for part in loc:
        nxt: list[Any] = []
        for tp in current:
            if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str) and part in tp.model_fields:
                owner, info = tp, tp.model_fields[part]
                nxt.extend(_unwrap(info.annotation))
            elif typing.get_origin(tp) in (list, tuple) and isinstance(part, int):
                nxt.extend(_unwrap(typing.get_args(tp)[0]))
        if not nxt:
            # the location ends in a key that does not exist (extra_forbidden): report the owner model
            owner = next((t for t in current if isinstance(t, type) and issubclass(t, BaseModel)), owner)
            return owner, None
        current = nxt
    return owner, info


def yaml_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == str(part)), None)
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    owner, info = _field_info(loc)
    desc = info.description if info is not None else None
    if kind == "extra_forbidden":
        names = list(owner.model_fields) if owner is not None else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key {loc[-1]!r}; {hint}remove it or fix its spelling (allowed here: {', '.join(names)})"
    if kind == "missing" and loc and isinstance(loc[-1], int):
        return f"item {loc[-1]} is missing; expected {desc}" if desc else f"item {loc[-1]} is missing"
    if kind == "missing":
        return f"required setting is missing; add it ({desc})" if desc else "required setting is missing; add it"
    msg = err["msg"].removeprefix("Value error, ")
    if kind in ("value_error", "assertion_error"):
        return msg
    got = err.get("input")
    secret = any(isinstance(p, str) and SECRET_KEY_RE.search(p) for p in loc)
    got_text = f" (got {got!r})" if not isinstance(got, dict | list) and not secret else ""
    return f"{msg}{got_text}; expected {desc}" if desc else f"{msg}{got_text}"


def format_validation_error(exc: ValidationError, path: Path, root: yaml.Node | None) -> str:
    """Every schema error at once: one error gives one line ``config error: file:line: field.path: what is wrong; how
    to fix``; several give a first line ``config error: file: N errors`` and then one indented line each
    (``file:line: field.path: ...``), so that one run of ``check-config`` shows everything to fix. Unknown keys come
    first: a typo usually also makes a required key "missing"."""
    errors = exc.errors()
    ordered = [e for e in errors if e["type"] == "extra_forbidden"] + [e for e in errors
                                                                        if e["type"] != "extra_forbidden"]

    def one(err) -> str:  # noqa: ANN001
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        line = yaml_line(root, loc)
        pos = f"{path}:{line}" if line else str(path)
        return one_line(redact(f"{pos}: {where}: {_describe(err)}"))

    if len(ordered) == 1:
        return f"config error: {one(ordered[0])}"
    return "\n".join([f"config error: {path}: {len(ordered)} errors", *(f"  {one(e)}" for e in ordered)])
