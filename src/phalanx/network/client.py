"""Talking to a peer: seal a request, post it over HTTP (httpx), open and check the reply.

A request goes to ``POST <peer url>/v1/<endpoint>`` as one envelope (:mod:`.envelope`); the
reply is an envelope from that peer, for ``re:<endpoint>``, naming the request's nonce. A refusal
comes back as an HTTP status with one line of text, raised as :class:`PeerRefused`; a peer that
cannot be reached raises :class:`PeerUnreachable`. Whether a message is encrypted follows the
node's ``encryption`` setting: ``on`` always, ``off`` never, ``auto`` whenever the peer's address
is not loopback.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx

from phalanx.network.config import is_loopback
from phalanx.network.envelope import NONCE_SIZE, EnvelopeError, Fork, Identity, open_envelope, seal
from phalanx.network.peers import Peer

CONTENT_TYPE = "application/x-phalanx-envelope"


class PeerError(Exception):
    pass


class PeerRefused(PeerError):
    def __init__(self, status: int, reason: str):
        super().__init__(f"{status}: {reason}")
        self.status, self.reason = status, reason


class PeerUnreachable(PeerError):
    pass


def should_encrypt(setting: str, url: str) -> bool:
    return setting == "on" or (setting == "auto" and not is_loopback(url))


class Transport:
    """Sends sealed requests to peers and checks their replies; shared by a node's threads."""

    def __init__(self, identity: Callable[[], Identity], fork: Callable[[], Fork], *, encryption: str = "auto",
                 max_body: int = 64 << 20, timeout: float = 30.0, window_ms: int = 60_000):
        self.identity, self.fork, self.encryption = identity, fork, encryption
        self.max_body, self.window_ms = max_body, window_ms
        self.http = httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0),
                                 limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))

    def close(self) -> None:
        self.http.close()

    def call(self, peer: Peer, endpoint: str, body: bytes, *, timeout: float | None = None) -> bytes:
        """The reply body of ``endpoint`` at ``peer``; raises :class:`PeerError`."""
        me = self.identity()
        nonce = os.urandom(NONCE_SIZE)
        encrypt = should_encrypt(self.encryption, peer.url) and peer.xk is not None
        data = seal(me, peer.node, endpoint, body, self.fork(), xk_to=peer.xk if encrypt else None, nonce=nonce)
        try:
            r = self.http.post(f"{peer.url}/v1/{endpoint}", content=data, headers={"content-type": CONTENT_TYPE},
                               timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as e:
            raise PeerUnreachable(f"{peer.url}: {type(e).__name__}: {e}") from None
        if r.status_code != 200:
            raise PeerRefused(r.status_code, r.text[:500])
        try:
            opened = open_envelope(r.content, me, "re:" + endpoint,
                                   lambda n: peer.key if n == peer.node else None,
                                   nonces=None, max_body=self.max_body, first_contact=peer.key is None,
                                   reply_to=nonce, expect_sender=peer.node, window_ms=self.window_ms)
        except EnvelopeError as e:
            raise PeerRefused(502, f"bad reply from {peer.url}: {e.reason}") from None
        if peer.key is None:
            peer.key = opened.header["key"]
        if peer.xk is None:
            peer.xk = opened.header["xk"]
        return opened.body


class RemoteWitness:
    """A peer's witness, asked over C2SP tlog-witness ``POST /add-checkpoint`` (a
    :class:`~phalanx.ledger.log.Cosigner` for :meth:`phalanx.ledger.Ledger.checkpoint`)."""

    def __init__(self, name: str, vkey: str, url: str, http: httpx.Client, timeout: float = 10.0):
        self.name, self._vkey, self.url, self.http, self.timeout = name, vkey, url, http, timeout

    @property
    def vkey(self) -> str:
        return self._vkey

    def add_checkpoint(self, old_size: int, proof, note: bytes):
        from phalanx.ledger.note import NoteError, parse_signature_lines
        from phalanx.ledger.witness import Conflict, WitnessError, format_add_checkpoint

        try:
            r = self.http.post(f"{self.url}/add-checkpoint", content=format_add_checkpoint(old_size, proof, note),
                               timeout=self.timeout)
        except httpx.HTTPError as e:
            raise WitnessError(f"witness {self.name} at {self.url} unreachable: {type(e).__name__}") from None
        if r.status_code == 409 and r.headers.get("content-type", "").startswith("text/x.tlog.size"):
            text = r.text.strip()
            raise Conflict(f"witness {self.name} has size {text[:20]}",
                           latest_size=int(text) if text.isdigit() else None)
        if r.status_code != 200:
            raise WitnessError(f"witness {self.name} refused ({r.status_code}): {r.text.strip()[:200]}")
        try:
            return parse_signature_lines(r.text)
        except NoteError as e:
            raise WitnessError(f"witness {self.name}: unreadable cosignature: {e}") from None
