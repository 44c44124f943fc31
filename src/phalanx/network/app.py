"""The node's HTTP API (FastAPI, served by uvicorn): every route, and nothing of what they do.

::

    POST /v1/<endpoint>    an envelope (:mod:`.envelope`) for one of ENDPOINTS; the reply is an
                           envelope for re:<endpoint>, encrypted if the request was
    POST /add-checkpoint   C2SP tlog-witness: cosign a checkpoint of a log this node witnesses
                           (plain text, as the spec has it: checkpoints are public by design)
    GET  /v1/status        JSON: node, round, peers, versions, fork ID, log size
    GET  /metrics          Prometheus text format: rounds, messages, refusals by status

The app only carries bytes: the body is read up to the node's limit (413 past it, before the
rest is read), the envelope is opened and checked, and the plaintext goes to the
:class:`NodeService` the engine implements. Every refusal is answered with its status and one
line of text, and handed to :meth:`NodeService.refused` to be logged as evidence; a handler that
fails in an unexpected way answers 500 and the node keeps serving.
"""

from __future__ import annotations

import logging
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from phalanx.ledger.witness import WitnessError
from phalanx.network.envelope import ENC_CHACHA, MAX_HEADER, EnvelopeError, Fork, Identity, Opened, open_envelope, seal

ENDPOINTS = frozenset({"handshake", "update", "model", "checkpoint", "submit", "proposals", "seq", "catchup",
                       "blob", "peers", "committee", "promise"})
log = logging.getLogger("phalanx.node")


class NodeService(Protocol):
    """What the app needs from a node (the engine's :class:`~phalanx.engine.node.runtime.Node`)."""

    max_body: int
    window_ms: int

    def identity(self) -> Identity: ...

    def fork(self) -> Fork: ...

    def sender_key(self, node: bytes) -> bytes | None:
        """The current key of a node allowed to send; ``None`` if unknown; raises 403 if barred."""

    def nonces(self): ...

    def handle(self, endpoint: str, message: Opened) -> bytes:
        """The reply body; raise :class:`EnvelopeError` to refuse."""

    def refused(self, endpoint: str, status: int, reason: str, sender: bytes | None) -> None: ...

    def add_checkpoint(self, body: bytes) -> bytes: ...

    def status(self) -> dict: ...

    def metrics(self) -> str: ...


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise EnvelopeError(413, f"content-length {declared[:20]} is more than the {limit} bytes allowed")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise EnvelopeError(413, f"body is more than the {limit} bytes allowed")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(service: NodeService) -> FastAPI:
    app = FastAPI(title="phalanx node", docs_url=None, redoc_url=None, openapi_url=None)

    def process(endpoint: str, data: bytes) -> bytes:
        me = service.identity()
        opened = open_envelope(data, me, endpoint, service.sender_key, nonces=service.nonces(),
                               max_body=service.max_body, first_contact=endpoint == "handshake",
                               window_ms=service.window_ms)
        reply = service.handle(endpoint, opened)
        xk = opened.header["xk"] if opened.header["enc"] == ENC_CHACHA else None
        return seal(me, opened.sender, "re:" + endpoint, reply, service.fork(), xk_to=xk, reply_to=opened.nonce)

    @app.post("/v1/{endpoint}")
    async def envelope(endpoint: str, request: Request) -> Response:
        sender = None
        try:
            if endpoint not in ENDPOINTS:
                raise EnvelopeError(404, f"no endpoint {endpoint[:40]!r}")
            data = await _read(request, service.max_body + MAX_HEADER + 4)
            reply = await run_in_threadpool(process, endpoint, data)
            return Response(reply, media_type="application/x-phalanx-envelope")
        except EnvelopeError as e:
            sender = e.sender
            await run_in_threadpool(service.refused, endpoint, e.status, e.reason, sender)
            return PlainTextResponse(e.reason + "\n", status_code=e.status)
        except Exception as e:  # a bug must not take the node down: answer 500, log it, keep serving
            log.exception("internal error on /v1/%s", endpoint)
            return PlainTextResponse(f"internal error: {type(e).__name__}\n", status_code=500)

    @app.post("/add-checkpoint")
    async def add_checkpoint(request: Request) -> Response:
        try:
            data = await _read(request, 1 << 20)
            lines = await run_in_threadpool(service.add_checkpoint, data)
            return PlainTextResponse(lines.decode(), status_code=200)
        except EnvelopeError as e:
            return PlainTextResponse(e.reason + "\n", status_code=e.status)
        except WitnessError as e:
            if e.status == 409 and e.latest_size is not None:  # tlog-witness: the size it has, alone
                return Response(f"{e.latest_size}\n", status_code=409, media_type="text/x.tlog.size")
            return PlainTextResponse(f"{e}\n", status_code=e.status)

    @app.get("/v1/status")
    async def status() -> JSONResponse:
        return JSONResponse(await run_in_threadpool(service.status))

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(await run_in_threadpool(service.metrics))

    return app
