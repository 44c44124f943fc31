"""Plug-ins looked up by name, with their hyper-parameters validated from their own signature.

Every extensible family in Phalanx (datasets, partitioners, models, topologies, aggregators,
update attacks, data attacks) is a :class:`Registry`. A plug-in is a function or a class. Its
*hyper-parameters*, the values a scenario file may set, are its **keyword-only** parameters
(those after ``*``). Everything before the ``*`` is supplied at run time by the engine (the
labels to partition, the number of nodes, a random generator, ...).

The keyword-only parameters, with their annotations (``Annotated[float, Field(gt=0)]`` for bounds)
and defaults, become a pydantic model. A scenario's ``{name: ..., **params}`` is validated
against it before anything runs, so a bad value is reported with the field, the value and what
is allowed, rather than failing deep inside a round.

Users add their own plug-ins without editing the package::

    from phalanx.aggregate import AGGREGATORS

    @AGGREGATORS.register("my_rule")
    class MyRule: ...

and name the module under ``plugins:`` in the scenario file, or expose it through the
``phalanx.plugins`` entry-point group.

This pattern follows Opacus's accountant registry (see shared/STYLE.md); the idea of deriving a
validator from a signature is pydantic's ``create_model``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import pydantic

T = TypeVar("T", bound=Callable[..., Any])


class PluginError(ValueError):
    """A plug-in name or a plug-in's hyper-parameters are not acceptable."""


class UnknownPluginError(PluginError):
    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(known) or '(none)'}")


class Registry(Generic[T]):
    """A named family of plug-ins: ``register`` to add, ``build`` to validate and construct."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._models: dict[str, type[pydantic.BaseModel]] = {}

    def register(self, name: str, obj: T | None = None) -> Any:
        """Register ``obj`` under ``name``; usable as ``@REG.register("name")``."""

        def add(target: T) -> T:
            if name in self._entries and self._entries[name] is not target:
                raise PluginError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = target
            self._models.pop(name, None)
            return target

        return add(obj) if obj is not None else add

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownPluginError(self.kind, name, self.names()) from None

    def params_model(self, name: str) -> type[pydantic.BaseModel]:
        """The pydantic model of ``name``'s hyper-parameters (its keyword-only parameters)."""
        if name not in self._models:
            self._models[name] = _params_model(f"{self.kind}:{name}", self.get(name))
        return self._models[name]

    def validate(self, name: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``params`` against ``name``'s signature; return them with defaults filled in.

        Raises ``pydantic.ValidationError`` naming each bad field."""
        return self.params_model(name).model_validate(dict(params)).model_dump()

    def build(self, name: str, /, *args: Any, **params: Any) -> Any:
        """Validate ``params`` and call the plug-in with the run-time ``args``."""
        return self.get(name)(*args, **self.validate(name, params))

    def describe(self, name: str) -> str:
        """First paragraph of the plug-in's docstring, for ``--help`` and the docs."""
        doc = inspect.getdoc(self.get(name)) or ""
        return doc.split("\n\n")[0].replace("\n", " ")


def _params_model(title: str, target: Callable[..., Any]) -> type[pydantic.BaseModel]:
    func = target.__init__ if inspect.isclass(target) else target
    sig = inspect.signature(func, eval_str=True)
    fields: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        annotation = Any if p.annotation is inspect.Parameter.empty else p.annotation
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (annotation, default)
    config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return pydantic.create_model(title.replace(":", "_"), __config__=config, **fields)
