"""The dashboard's web app (FastAPI): one page, its script and style, a JSON API, the verifier.

Everything is served by the app itself (no CDN, no font or script from elsewhere), so the page
works offline. Every response carries a strict Content-Security-Policy: scripts only from this
origin (no inline script, no ``eval``, no inline event handlers), no plugins, no frames, no
form posts, and the page talks only to its own origin. Untrusted text (node names, software
versions, rejection reasons, run names) reaches the page only inside JSON and is put into the
document with ``textContent``, never as markup: escaping is the DOM's, everywhere.

The API (all GET, all JSON; errors are ``{"error": "<one line>"}`` with 400 or 404)::

    /api/overview                       what the folder is, its runs, the version token
    /api/version                        the version token alone (the page polls it; --live)
    /api/runs/{run}/metrics?start=N     rows of metrics.jsonl from line N
    /api/runs/{run}/network             nodes (role, reputation) and edges
    /api/runs/{run}/nodes/{node}        one node's history (summary + ledger)
    /api/runs/{run}/ledger?start&limit&type   a page of entries
    /api/runs/{run}/ledger/entries/{i}  one entry, decoded
    /api/runs/{run}/ledger/checkpoints  checkpoints with their signature lines
    /api/runs/{run}/ledger/models       models a trace can start from
    /api/runs/{run}/ledger/trace/{hex}  the provenance of one model
    /api/runs/{run}/ledger/bundle/{i}   the proof bundle the verifier checks
    /api/grid                           grid.json's heat maps

A deployed network's status snapshot (``status.json`` in the folder) appears as one more run
(see :mod:`.network` for the seam a ``phalanx up`` network will use).

``/verifier.html`` is the static verifier, byte for byte the file whose SHA-256 the README
publishes (served with its own CSP: only its own inline script, by hash).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from phalanx.dashboard.app_assets import static_bytes
from phalanx.dashboard.ledger_view import LedgerViewError, load
from phalanx.dashboard.network import run_network
from phalanx.dashboard.source import STATUS_FILE, Source, SourceError, clean
from phalanx.dashboard.verifier import verifier_csp, verifier_html

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
STATIC = ("index.html", "app.js", "app.css")
TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}


def static_file(name: str) -> bytes:
    return static_bytes(name)


def _headers(csp: str = CSP) -> dict[str, str]:
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Frame-Options": "DENY"}


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _int(value: str, what: str, lo: int = 0, hi: int = 1 << 62) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ApiError(f"{what}: expected a whole number, got {str(value)[:40]!r}") from None
    if not lo <= n <= hi:
        raise ApiError(f"{what}: {n} is out of range")
    return n


def create_app(folder: str | Path, *, live: bool = False) -> FastAPI:
    """The app serving ``folder`` (a study, grid or run output folder; raises :class:`SourceError`)."""
    source = Source(folder)
    app = FastAPI(title="Phalanx dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.source = source

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError):
        return JSONResponse({"error": str(e)}, status_code=e.status, headers=_headers())

    @app.exception_handler(SourceError)
    async def _source_error(_: Request, e: SourceError):
        return JSONResponse({"error": str(e)}, status_code=404 if str(e).startswith("no run") else 400,
                            headers=_headers())

    @app.exception_handler(LedgerViewError)
    async def _ledger_error(_: Request, e: LedgerViewError):
        return JSONResponse({"error": str(e)}, status_code=404 if str(e).startswith("no ") else 400,
                            headers=_headers())

    @app.exception_handler(404)
    async def _not_found(_: Request, e: Exception):
        return JSONResponse({"error": "no such page"}, status_code=404, headers=_headers())

    def ok(value: Any) -> JSONResponse:
        return JSONResponse(clean(value), headers=_headers())

    def page(name: str) -> Response:
        return Response(static_file(name), media_type=TYPES[name.rsplit(".", 1)[1]], headers=_headers())

    @app.get("/")
    def index() -> Response:
        return page("index.html")

    @app.get("/app.js")
    def script() -> Response:
        return page("app.js")

    @app.get("/app.css")
    def style() -> Response:
        return page("app.css")

    @app.get("/verifier.html")
    def verifier() -> Response:
        return Response(verifier_html(), media_type=TYPES["html"], headers=_headers(verifier_csp()))

    @app.get("/api/version")
    def version() -> JSONResponse:
        return ok({"version": source.version(), "live": live})

    @app.get("/api/overview")
    def overview() -> JSONResponse:
        summary = source.summary() or {}
        runs = []
        for r in source.runs():
            s = r.summary
            runs.append({"id": r.id, "name": r.name, "topology": s.get("topology"), "defense": s.get("defense"),
                         "description": s.get("description"), "final": s.get("final"),
                         "malicious": len(s.get("malicious") or []) if isinstance(s.get("malicious"), list) else 0,
                         "ledger": r.ledger is not None, "events": (s.get("events") or [])[:200]})
        grid = source.grid()
        return ok({"kind": source.kind, "study": summary.get("study") or (grid or {}).get("grid")
                   or source.root.name, "description": summary.get("description") or (grid or {}).get("description"),
                   "runs": runs, "grid": grid is not None, "network": source._has(STATUS_FILE),
                   "live": live, "version": source.version()})

    @app.get("/api/runs/{run}/metrics")
    def metrics(run: str, start: str = "0") -> JSONResponse:
        tail = source.metrics(_int(run, "run"), _int(start, "start"))
        return ok({"rows": tail.rows, "next": tail.next, "skipped": tail.skipped})

    def _ledger(run: str):
        r = source.run(_int(run, "run"))
        if r.ledger is None:
            raise ApiError(f"run {r.name!r} has no ledger.db", 404)
        return r, load(r.ledger)

    def _roles(r) -> dict[str, list[str]]:
        if r.ledger is None:
            return {}
        try:
            view = load(r.ledger)
        except LedgerViewError:
            return {}
        return {k.hex(): list(v) for k, v in view.index.roles.items()}

    @app.get("/api/runs/{run}/network")
    def network(run: str) -> JSONResponse:
        r = source.run(_int(run, "run"))
        try:
            return ok(run_network(r.summary, _roles(r)))
        except ValueError as e:
            raise ApiError(str(e)) from None

    @app.get("/api/runs/{run}/nodes/{node}")
    def node(run: str, node: str) -> JSONResponse:
        r = source.run(_int(run, "run"))
        try:
            net = run_network(r.summary, _roles(r))
        except ValueError as e:
            raise ApiError(str(e)) from None
        n = _int(node, "node", 0, len(net["nodes"]) - 1 if net["nodes"] else -1)
        info = net["nodes"][n]
        s = r.summary
        events = [e for e in s.get("events") or [] if isinstance(e, dict) and
                  (e.get("target") == n or isinstance(e.get("target"), list) and n in e["target"])][:200]
        out = {"node": info, "decisions": net["decisions"].get(str(n), []), "events": events,
               "partition": None, "ledger": None}
        part = s.get("partition") if isinstance(s.get("partition"), dict) else {}
        hist = part.get("label_histogram")
        if isinstance(hist, list) and n < len(hist):
            out["partition"] = {"classes": part.get("classes"), "histogram": hist[n]}
        if r.ledger is not None:
            try:
                out["ledger"] = load(r.ledger).node_history(info["name"])
            except LedgerViewError as e:
                out["ledger"] = {"found": False, "error": str(e)}
        return ok(out)

    @app.get("/api/runs/{run}/ledger")
    def ledger(run: str, start: str = "0", limit: str = "100", type: str | None = None) -> JSONResponse:
        _, view = _ledger(run)
        return ok(view.page(_int(start, "start"), _int(limit, "limit", 1, 10_000), type or None))

    @app.get("/api/runs/{run}/ledger/entries/{index}")
    def entry(run: str, index: str) -> JSONResponse:
        _, view = _ledger(run)
        return ok(view.entry(_int(index, "index")))

    @app.get("/api/runs/{run}/ledger/checkpoints")
    def checkpoints(run: str) -> JSONResponse:
        r, view = _ledger(run)
        return ok({"origin": view.origin, "size": len(view.data), "checkpoints": view.checkpoint_list()})

    @app.get("/api/runs/{run}/ledger/models")
    def models(run: str) -> JSONResponse:
        _, view = _ledger(run)
        return ok({"models": view.models()})

    @app.get("/api/runs/{run}/ledger/trace/{model}")
    def provenance(run: str, model: str) -> JSONResponse:
        _, view = _ledger(run)
        return ok(view.trace(model))

    @app.get("/api/runs/{run}/ledger/bundle/{index}")
    def bundle(run: str, index: str) -> JSONResponse:
        _, view = _ledger(run)
        return ok(view.bundle(_int(index, "index")))

    @app.get("/api/grid")
    def grid() -> JSONResponse:
        g = source.grid()
        if g is None:
            raise ApiError("this folder has no grid.json", 404)
        return ok(grid_maps(g))

    return app


def grid_maps(g: dict[str, Any]) -> dict[str, Any]:
    """Per topology, a defenses x attacks table of mean final accuracy (and attack success)."""
    summary = g.get("summary") if isinstance(g.get("summary"), dict) else {}
    maps = []
    for topo in summary.get("topologies") or []:
        if not isinstance(topo, dict):
            continue
        attacks: list[str] = []
        rows = []
        for d in topo.get("defenses") or []:
            if not isinstance(d, dict) or not isinstance(d.get("attacks"), dict):
                continue
            for a in d["attacks"]:
                if a not in attacks:
                    attacks.append(str(a))
            worst = d.get("worst") if isinstance(d.get("worst"), dict) else {}
            rows.append({"defense": str(d.get("label")), "worst": worst.get("accuracy"),
                         "worst_attack": worst.get("attack"),
                         "cells": {str(a): (v.get("accuracy") if isinstance(v, dict) else None)
                                   for a, v in d["attacks"].items()}})
        maps.append({"topology": str(topo.get("label")), "attacks": attacks, "rows": rows})
    return {"grid": g.get("grid"), "description": g.get("description"), "maps": maps}


def static_digest(name: str) -> str:
    return hashlib.sha256(static_file(name)).hexdigest()


__all__ = ["CSP", "create_app", "grid_maps", "static_file"]
