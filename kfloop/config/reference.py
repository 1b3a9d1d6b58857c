"""The config reference: every key of ``kfloop.yaml`` rendered as Markdown from the config models.

Walks :class:`~kfloop.config.Config` and its sections (nested models, lists and maps of them, the variants
of a section picked by ``type``) and writes one table per section: key, type with its constraints, default
and description. A model used in several places (S3 secret references, resources) is rendered once under
all its paths. ``kfloop config reference`` prints it; ``--write README.md`` replaces the README's
``config-reference`` block (see :mod:`kfloop.docs`), and a test fails when it differs from :func:`render_reference`.
"""

from __future__ import annotations

import enum
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

#: The one command that regenerates the README block.
REGENERATE = "kfloop config reference --write README.md"

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./:@-]*$")
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")  # `<x` outside code would start an HTML tag
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


@dataclass
class _Entry:
    """One rendered section: a model class and every key path it appears at."""

    model: type[BaseModel]
    paths: list[str]
    variant: str | None = None


def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    """``Annotated[X, ...]`` → ``(X, constraints)``; anything else unchanged."""
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *extras = typing.get_args(annotation)
        meta: list[Any] = []
        for extra in extras:
            meta.extend(extra.metadata if isinstance(extra, FieldInfo) else [extra])
        return inner, meta
    return annotation, []


def _union_args(annotation: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _variant(model: type[BaseModel]) -> str | None:
    """``type: <value>`` of a section that is one variant of a union picked by ``type``."""
    info = model.model_fields.get("type")
    if info is None or typing.get_origin(info.annotation) is not typing.Literal:
        return None
    return str(typing.get_args(info.annotation)[0])


def _submodels(annotation: Any, path: str) -> list[tuple[type[BaseModel], str, str | None]]:
    """The sections under one field: ``(model, key path, variant)`` in declaration order."""
    tp, _ = _strip(annotation)
    args = _union_args(tp)
    if args is not None:
        members = [a for a in args if a is not type(None)]
        found = [sub for a in members for sub in _submodels(a, path)]
        if sum(_is_model(_strip(a)[0]) for a in members) > 1:  # variants picked by `type`
            return [(m, p, _variant(m)) for m, p, _ in found]
        return found
    if _is_model(tp):
        return [(tp, path, None)]
    origin = typing.get_origin(tp)
    if origin is tuple:  # tuple[X, ...] or a fixed tuple of one type: its items share one section
        return [sub for a in typing.get_args(tp) if a is not Ellipsis for sub in _submodels(a, f"{path}[]")][:1]
    if origin is dict:
        return _submodels(typing.get_args(tp)[1], f"{path}.<key>")
    return []


def _collect(root: type[BaseModel]) -> list[_Entry]:
    """Every section reachable from ``root``, depth first in declaration order, each model once."""
    entries: dict[type[BaseModel], _Entry] = {}

    def visit(model: type[BaseModel], path: str, variant: str | None) -> None:
        if model in entries:
            entries[model].paths.append(path)
            return
        entries[model] = _Entry(model, [path], variant)
        for name, info in model.model_fields.items():
            for sub, sub_path, sub_variant in _submodels(info.annotation, f"{path}.{name}" if path else name):
                visit(sub, sub_path, sub_variant)

    visit(root, "", None)
    return list(entries.values())


# --- rendering cells -----------------------------------------------------------------------------------
def _code(text: str) -> str:
    return f"`{text}`"


def _flow(value: Any) -> str:
    """A value as YAML flow syntax, the way one would write it in ``kfloop.yaml``."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        plain = _PLAIN.match(value) and value.lower() not in ("true", "false", "null", "yes", "no", "on", "off")
        return value if plain else json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


def _choices(values: tuple[Any, ...]) -> str:
    return "one of " + ", ".join(_code(str(v.value if isinstance(v, enum.Enum) else v)) for v in values)


def _constraint(meta: Any, collection: bool) -> str | None:
    """One constraint (pydantic's metadata objects: ``Ge``, ``MinLen``, a pattern …) in words."""
    pattern = getattr(meta, "pattern", None)
    if pattern is not None:
        return f"pattern {_code(pattern)}"
    for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        if getattr(meta, attr, None) is not None:
            return f"{sign} {getattr(meta, attr)}"
    unit = "item" if collection else "character"
    for attr, word in (("min_length", "at least"), ("max_length", "at most")):
        n = getattr(meta, attr, None)
        if n is not None:
            return f"{word} {n} {unit}{'s' * (n > 1)}"
    return None


def _type(annotation: Any, path: str, constraints: tuple[Any, ...] | list[Any] = ()) -> str:
    """How a field's type reads in the reference, with its constraints."""
    tp, meta = _strip(annotation)
    meta = [*constraints, *meta]
    args = _union_args(tp)
    if args is not None:
        members = [a for a in args if a is not type(None)]
        models = [m for a in members if _is_model(m := _strip(a)[0])]
        if len(models) > 1:
            text = f"section {_code(path)}, by `type`: " + " or ".join(_code(str(_variant(m))) for m in models)
        elif len(members) == 1:  # Optional: the constraints are the member's
            text = _type(members[0], path, meta)
        else:
            text = " or ".join(_type(a, path) for a in members)
        return f"{text} or null" if len(members) < len(args) else text
    origin = typing.get_origin(tp)
    collection = origin in (tuple, dict)
    if collection and any(getattr(m, "min_length", None) == 1 for m in meta):
        meta = [m for m in meta if getattr(m, "min_length", None) != 1]
        prefix = "non-empty "
    else:
        prefix = ""
    if origin is typing.Literal:
        text = _choices(typing.get_args(tp))
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        text = _choices(tuple(tp))
    elif _is_model(tp):
        text = f"section {_code(path)}"
    elif origin is tuple:
        items = typing.get_args(tp)
        if len(items) == 2 and items[1] is Ellipsis:
            text = f"{prefix}list of {_type(items[0], path + '[]')}"
        else:
            text = "[" + ", ".join(_type(a, path) for a in items) + "]"
    elif origin is dict:
        key, value = typing.get_args(tp)
        text = f"{prefix}map of {_type(key, path)} → {_type(value, path + '.<key>')}"
    else:
        text = _SCALARS.get(tp, getattr(tp, "__name__", str(tp)))
    extra = [c for c in (_constraint(m, collection) for m in meta) if c]
    return f"{text} ({', '.join(extra)})" if extra else text


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        try:
            fresh = type(value)()
        except ValidationError:  # a section with required keys: show the value in full
            fresh = None
        if fresh == value:
            variant = _variant(type(value))
            return _code(f"{{type: {variant}}}" if variant else "{}")
    return _code(_flow(value))


def _doc(model: type[BaseModel]) -> str:
    """The model docstring's first paragraph, reST literals turned into Markdown ones."""
    text = (model.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in text.splitlines()).replace("``", "`")


def _cell(text: str) -> str:
    """Safe in a table cell: pipes escaped, and ``<`` outside code spans escaped (else it starts HTML)."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(p if i % 2 else _TAG_START.sub("&lt;", p) for i, p in enumerate(parts))


def missing_descriptions(root: type[BaseModel] | None = None) -> list[str]:
    """Key paths of fields without a description (the reference needs one for every key)."""
    out = []
    for entry in _collect(root or _config()):
        for name, info in entry.model.model_fields.items():
            if not info.description:
                out.append(f"{entry.paths[0]}.{name}" if entry.paths[0] else name)
    return out


def _config() -> type[BaseModel]:
    from kfloop.config import Config

    return Config


def render_reference(root: type[BaseModel] | None = None, *, level: int = 3) -> str:
    """The reference as Markdown: one heading per section (``level`` deep) and a table of its keys."""
    lines = [f"<!-- generated from kfloop/config/ by `{REGENERATE}`: edit the models, not this block -->", ""]
    for entry in _collect(root or _config()):
        title = ", ".join(_code(p) for p in entry.paths) if entry.paths[0] else "Top level"
        if entry.variant:
            title += f" with {_code('type: ' + entry.variant)}"
        lines += [f"{'#' * level} {title}", ""]
        doc = _doc(entry.model)
        if doc:
            lines += [_cell(doc), ""]
        if not entry.model.model_fields:
            lines += ["No keys.", ""]
            continue
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for name, info in entry.model.model_fields.items():
            path = f"{entry.paths[0]}.{name}" if entry.paths[0] else name
            cells = [_code(name), _type(info.annotation, path, info.metadata), _default(info), info.description or ""]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_reference(path: Path) -> bool:
    """Regenerate the config-reference block in ``path``; True when the file changed."""
    from kfloop.docs import write_blocks

    return write_blocks(path, ("config-reference",))


__all__ = [
    "REGENERATE",
    "missing_descriptions",
    "render_reference",
    "write_reference",
]
