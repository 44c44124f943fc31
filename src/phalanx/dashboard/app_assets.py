"""The dashboard's static files (``static/``): the page, its script and style, the verifier."""

from __future__ import annotations

from importlib import resources


def static_bytes(name: str) -> bytes:
    if name not in ("index.html", "app.js", "app.css", "verifier.html"):
        raise KeyError(name)
    return resources.files("phalanx.dashboard").joinpath("static").joinpath(name).read_bytes()


def static_text(name: str) -> str:
    return static_bytes(name).decode("utf-8")
