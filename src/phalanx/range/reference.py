"""The scenario reference in Markdown, generated from the schema and the plug-in registries.

``phalanx schema`` prints it; the README's reference section is this output, so the two cannot
drift apart (a test checks that the README holds the current text).
"""

from __future__ import annotations

import json
import typing
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from phalanx.range.scenario import Plugin, Scenario, plugin_slots


_SYMBOLS = ((Ge, ">=", "ge"), (Gt, ">", "gt"), (Le, "<=", "le"), (Lt, "<", "lt"))


def _bounds(info: FieldInfo) -> str:
    """The numeric bounds of a field, including those inside ``Annotated[...] | None``."""
    metadata = list(info.metadata)
    for arg in typing.get_args(info.annotation):
        for m in getattr(arg, "__metadata__", ()):
            metadata += list(m.metadata) if isinstance(m, FieldInfo) else [m]
    parts = []
    for m in metadata:
        for cls, symbol, attr in _SYMBOLS:
            if isinstance(m, cls):
                parts.append(f"{symbol} {getattr(m, attr)}")
    return ", ".join(parts)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation)).replace("NoneType", "null")
    if origin is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if isinstance(annotation, type):
        if issubclass(annotation, Plugin):
            return "plug-in"
        return annotation.__name__.replace("NoneType", "null")
    return str(annotation)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.default
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json") if not isinstance(value, Plugin) else value.as_dict()
    return f"`{json.dumps(value)}`"


def _rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = info.annotation
        sub = _submodel(ann)
        if sub is not None and not issubclass(sub, Plugin):
            tag = "list" if typing.get_origin(ann) is list else "section"
            rows.append(f"| `{path}` | {tag} | | | {info.description or ''} |")
            rows.extend(_rows(sub, f"{path}[]." if tag == "list" else f"{path}."))
            continue
        rows.append(f"| `{path}` | {_type_name(ann)} | {_default(info)} | {_bounds(info)} | "
                    f"{info.description or ''} |")
    return rows


def _submodel(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    for c in candidates:
        if typing.get_origin(c) is typing.Annotated:
            c = typing.get_args(c)[0]
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def _plugin_rows() -> list[str]:
    rows = []
    for path, registry in plugin_slots():
        for name in registry:
            model = registry.params_model(name)
            params = []
            for pname, info in model.model_fields.items():
                bounds = _bounds(info)
                default = "required" if info.is_required() else json.dumps(info.default)
                params.append(f"`{pname}`={default}" + (f" ({bounds})" if bounds else ""))
            rows.append(f"| `{path}` | `{name}` | {', '.join(params) or '-'} | {registry.describe(name)} |")
    return rows


def scenario_reference() -> str:
    lines = [
        "### Scenario fields",
        "",
        "| field | type | default | bounds | meaning |",
        "|---|---|---|---|---|",
        *_rows(Scenario),
        "",
        "A study file adds `study` (its name), `study_description`, and `runs`: a list of partial",
        "scenarios, each merged over the top-level fields. Plug-ins are written `{name: NAME, PARAM:",
        "VALUE, ...}` or just `NAME`.",
        "",
        "### Plug-ins and their hyper-parameters",
        "",
        "| field | name | hyper-parameters | what it is |",
        "|---|---|---|---|",
        *_plugin_rows(),
    ]
    return "\n".join(lines) + "\n"
