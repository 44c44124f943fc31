"""Signed, optionally encrypted envelopes: every message between nodes, and every reply.

Each message carries one signature over one canonical encoding of everything that says what it
is (deterministic CBOR, :mod:`phalanx.core.encoding`)::

    header = {v, from, key, xk, to, ep, proto, fork, next, ts, nonce, re, body, enc, epk}
    sig    = Ed25519(sender, "phalanx.net/envelope/v1\\n" || CBOR(header))
    wire   = u32 length || CBOR({h: header, sig}) || body

- ``from``/``to``: sender and recipient node IDs (SHA-256 of the key a node registered with);
  ``key``: the sender's current Ed25519 key (it may have rotated since it registered);
  ``xk``: the sender's X25519 key, so the recipient can encrypt its reply;
- ``ep``: the endpoint the message is meant for (a reply's is ``re:<endpoint>``, and its ``re``
  is the request's nonce, so a reply cannot be passed off as another one);
- ``proto``, ``fork``, ``next``: the protocol version and the fork ID, EIP-2124's (FORK_HASH,
  FORK_NEXT) pair (:mod:`phalanx.governance.versions`);
- ``ts`` (milliseconds), ``nonce`` (16 random bytes): a message is accepted only within the
  timestamp window, and its nonce is remembered as long as its timestamp could still pass
  (:class:`NonceWindow`), so a replay is refused either way;
- ``body``: SHA-256 of the body as sent (the ciphertext when encrypted), so the signature covers
  the body without re-encoding it.

**Encryption** (``enc: x25519-chacha20poly1305``), after the ECIES / HPKE base-mode pattern
(RFC 9180, section 5.1, with the primitives named here rather than HPKE's labels): the sender
draws an ephemeral X25519 key ``epk``; ``k = HKDF-SHA256(X25519(e, xk_to), salt = epk || xk_to,
info = "phalanx.net/envelope-key/v1")``; the body is sealed with ChaCha20-Poly1305 (RFC 8439)
under ``k`` with a zero nonce (the key is fresh per message) and the associated data
``from || to || ep || nonce``. Only the recipient can read it; the signature says who wrote it.

**Refusals** raise :class:`EnvelopeError` with the HTTP status the server answers with and one
line naming what failed: 400 malformed, 401 forged / stale / unknown sender, 403 revoked or
quarantined, 409 replayed, 413 oversized, 421 misdirected (another node or endpoint). Checks run
cheapest first: size, parse, recipient and endpoint, timestamp, sender, signature, nonce, body.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from phalanx.core.encoding import EncodingError, decode, encode
from phalanx.core.keys import KeyFormatError, SignatureError, SigningKey, VerifyKey, node_id

ENVELOPE_VERSION = 1
DOMAIN = b"phalanx.net/envelope/v1\n"
KEY_INFO = b"phalanx.net/envelope-key/v1"
ENC_NONE = "none"
ENC_CHACHA = "x25519-chacha20poly1305"
MAX_HEADER = 4096
NONCE_SIZE = 16
_FIELDS = {"v", "from", "key", "xk", "to", "ep", "proto", "fork", "next", "ts", "nonce", "re", "body",
           "enc", "epk"}


class EnvelopeError(Exception):
    """A message refused; ``status`` is the HTTP status, ``sender`` the claimed sender (if any)."""

    def __init__(self, status: int, reason: str, sender: bytes | None = None):
        super().__init__(reason)
        self.status, self.reason, self.sender = status, reason, sender


@dataclass(frozen=True)
class Identity:
    """What a node signs and decrypts with: its node ID, current Ed25519 key and X25519 key."""

    node: bytes
    key: SigningKey
    xkey: X25519PrivateKey

    @property
    def xk(self) -> bytes:
        return self.xkey.public_key().public_bytes_raw()


@dataclass(frozen=True)
class Fork:
    """The protocol version and the fork ID (EIP-2124's FORK_HASH and FORK_NEXT) a message names."""

    proto: int
    hash: bytes
    next: int = 0


@dataclass(frozen=True)
class Opened:
    """A verified message: its header fields, the sender's key, and the plaintext body."""

    header: dict
    body: bytes

    @property
    def sender(self) -> bytes:
        return self.header["from"]

    @property
    def nonce(self) -> bytes:
        return self.header["nonce"]

    @property
    def fork(self) -> Fork:
        h = self.header
        return Fork(h["proto"], h["fork"], h["next"])


def now_ms() -> int:
    return int(time.time() * 1000)


def _aad(sender: bytes, to: bytes, endpoint: str, nonce: bytes) -> bytes:
    return sender + to + endpoint.encode() + nonce


def _key(shared: bytes, epk: bytes, xk_to: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + xk_to, info=KEY_INFO).derive(shared)


def encrypt(body: bytes, xk_to: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """(ephemeral public key, ciphertext) of ``body`` for the holder of X25519 key ``xk_to``."""
    eph = X25519PrivateKey.generate()
    epk = eph.public_key().public_bytes_raw()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(xk_to))
    return epk, ChaCha20Poly1305(_key(shared, epk, xk_to)).encrypt(bytes(12), body, aad)


def decrypt(ciphertext: bytes, epk: bytes, me: X25519PrivateKey, aad: bytes) -> bytes:
    xk = me.public_key().public_bytes_raw()
    try:
        shared = me.exchange(X25519PublicKey.from_public_bytes(epk))
        return ChaCha20Poly1305(_key(shared, epk, xk)).decrypt(bytes(12), ciphertext, aad)
    except (InvalidTag, ValueError):
        raise EnvelopeError(401, "the body does not decrypt under this node's key (forged or corrupted)") from None


def seal(me: Identity, to: bytes, endpoint: str, body: bytes, fork: Fork, *, xk_to: bytes | None = None,
         reply_to: bytes = b"", timestamp: int | None = None, nonce: bytes | None = None) -> bytes:
    """The wire bytes of ``body`` from ``me`` to node ``to`` at ``endpoint``; encrypted when the
    recipient's X25519 key ``xk_to`` is given."""
    nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
    enc, epk = ENC_NONE, b""
    if xk_to is not None:
        epk, body = encrypt(body, xk_to, _aad(me.node, to, endpoint, nonce))
        enc = ENC_CHACHA
    header = {"v": ENVELOPE_VERSION, "from": me.node, "key": me.key.public.raw, "xk": me.xk, "to": bytes(to),
              "ep": endpoint, "proto": fork.proto, "fork": fork.hash, "next": fork.next,
              "ts": now_ms() if timestamp is None else timestamp, "nonce": nonce, "re": reply_to,
              "body": hashlib.sha256(body).digest(), "enc": enc, "epk": epk}
    signed = encode({"h": header, "sig": me.key.sign(DOMAIN + encode(header))})
    return struct.pack(">I", len(signed)) + signed + body


def parse(data: bytes) -> tuple[dict, bytes, bytes]:
    """(header, signature, body) of wire bytes, checked for form only; raises 400."""
    if len(data) < 4:
        raise EnvelopeError(400, "malformed envelope: shorter than its length prefix")
    (n,) = struct.unpack(">I", data[:4])
    if n > MAX_HEADER or n + 4 > len(data):
        raise EnvelopeError(400, f"malformed envelope: header length {n} does not fit")
    try:
        outer = decode(data[4:4 + n], max_size=MAX_HEADER)
    except EncodingError as e:
        raise EnvelopeError(400, f"malformed envelope header: {e}") from None
    if not isinstance(outer, dict) or set(outer) != {"h", "sig"} or not isinstance(outer["h"], dict):
        raise EnvelopeError(400, "malformed envelope: expected {h, sig}")
    header, sig = outer["h"], outer["sig"]
    _check_header(header)
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise EnvelopeError(400, "malformed envelope: sig is not 64 bytes")
    return header, sig, data[4 + n:]


def _check_header(h: dict) -> None:
    missing, extra = sorted(_FIELDS - set(h)), sorted(set(h) - _FIELDS)
    if missing or extra:
        raise EnvelopeError(400, f"malformed envelope header: missing {missing}, unknown {extra}")
    if h["v"] != ENVELOPE_VERSION or isinstance(h["v"], bool):
        raise EnvelopeError(400, f"envelope version {h['v']!r} is not {ENVELOPE_VERSION}")
    sizes = {"from": 32, "key": 32, "xk": 32, "to": 32, "fork": 4, "nonce": NONCE_SIZE, "body": 32}
    for name, size in sizes.items():
        if not isinstance(h[name], bytes) or len(h[name]) != size:
            raise EnvelopeError(400, f"malformed envelope header: {name} is not {size} bytes")
    for name in ("proto", "next", "ts"):
        if not isinstance(h[name], int) or isinstance(h[name], bool) or h[name] < 0:
            raise EnvelopeError(400, f"malformed envelope header: {name} is not a non-negative integer")
    if not isinstance(h["ep"], str) or not 0 < len(h["ep"]) <= 64:
        raise EnvelopeError(400, "malformed envelope header: ep is not an endpoint name")
    if not isinstance(h["re"], bytes) or len(h["re"]) not in (0, NONCE_SIZE):
        raise EnvelopeError(400, "malformed envelope header: re is not empty or a nonce")
    if h["enc"] not in (ENC_NONE, ENC_CHACHA):
        raise EnvelopeError(400, f"malformed envelope header: unknown encryption {str(h['enc'])[:40]!r}")
    if not isinstance(h["epk"], bytes) or len(h["epk"]) != (32 if h["enc"] == ENC_CHACHA else 0):
        raise EnvelopeError(400, "malformed envelope header: epk does not match enc")


class NonceWindow:
    """Nonces seen per sender, each kept until its timestamp falls out of the accepted window.

    A message is accepted only if ``|ts - now| <= window``; so a nonce need be remembered only
    until ``ts + window``, after which a replay fails the timestamp check instead. The memory is
    bounded by ``capacity`` (a sender flooding past it is refused, 429, never forgotten early).
    """

    def __init__(self, window_ms: int, capacity: int = 1_000_000, clock: Callable[[], int] = now_ms):
        self.window_ms, self.capacity, self.clock = window_ms, capacity, clock
        self._seen: set[tuple[bytes, bytes]] = set()
        self._expiry: deque[tuple[int, bytes, bytes]] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, sender: bytes, nonce: bytes, ts: int) -> None:
        """Record the nonce; raise 409 if it was seen (a replay) or 429 when full."""
        with self._lock:
            now = self.clock()
            while self._expiry and self._expiry[0][0] < now - self.window_ms:
                _, s, n = self._expiry.popleft()
                self._seen.discard((s, n))
            if (sender, nonce) in self._seen:
                raise EnvelopeError(409, f"replayed message: nonce {nonce.hex()} was already accepted", sender)
            if len(self._seen) >= self.capacity:
                raise EnvelopeError(429, "too many messages in the timestamp window", sender)
            self._seen.add((sender, nonce))
            self._expiry.append((max(ts, now), sender, nonce))


#: ``keys(node_id) -> current raw Ed25519 key`` of a known sender; ``None`` if unknown; may raise
#: :class:`EnvelopeError` (403) for a revoked or quarantined node.
KeyLookup = Callable[[bytes], "bytes | None"]


def open_envelope(data: bytes, me: Identity, endpoint: str, keys: KeyLookup, *, nonces: NonceWindow | None,
                  max_body: int, first_contact: bool = False, reply_to: bytes | None = None,
                  expect_sender: bytes | None = None, clock: Callable[[], int] = now_ms,
                  window_ms: int = 60_000) -> Opened:
    """Verify wire bytes meant for ``me`` at ``endpoint`` and return the plaintext.

    ``first_contact`` lets an unknown sender in if its key is the one its node ID names (the
    handshake, where it registers). A reply is checked against the request's nonce
    ``reply_to`` and its expected sender, and needs no nonce window (the request nonce is fresh).
    """
    if len(data) > max_body + MAX_HEADER + 4:
        raise EnvelopeError(413, f"{len(data)} bytes is more than the {max_body} allowed")
    header, sig, body = parse(data)
    sender = header["from"]
    if header["to"] != me.node:
        raise EnvelopeError(421, f"misdirected: meant for node {header['to'].hex()[:16]}..., this is "
                                 f"{me.node.hex()[:16]}...", sender)
    if header["ep"] != endpoint:
        raise EnvelopeError(421, f"misdirected: meant for endpoint {header['ep']!r}, not {endpoint!r}", sender)
    if reply_to is not None:
        if header["re"] != reply_to:
            raise EnvelopeError(401, "reply to another request (re does not match the request's nonce)", sender)
        if expect_sender is not None and sender != expect_sender:
            raise EnvelopeError(401, f"reply from node {sender.hex()[:16]}..., not the node asked", sender)
    skew = header["ts"] - clock()
    if abs(skew) > window_ms:
        raise EnvelopeError(401, f"timestamp {abs(skew) / 1000:.1f} s {'ahead of' if skew > 0 else 'behind'} "
                                 f"this node's clock, outside the {window_ms / 1000:g} s window", sender)
    known = keys(sender)
    if known is None:
        if not (first_contact and node_id(header["key"]) == sender):
            raise EnvelopeError(401, f"unknown sender {sender.hex()[:16]}...", sender)
        known = header["key"]
    if header["key"] != known:
        raise EnvelopeError(401, f"key {header['key'].hex()[:16]}... is not node {sender.hex()[:16]}...'s "
                                 "current key (rotated away, or forged)", sender)
    try:
        VerifyKey(known).verify(sig, DOMAIN + encode(header))
    except (SignatureError, KeyFormatError):
        raise EnvelopeError(401, f"forged: the signature does not verify under node {sender.hex()[:16]}...'s "
                                 "key", sender) from None
    if len(body) > max_body:
        raise EnvelopeError(413, f"body of {len(body)} bytes is more than the {max_body} allowed", sender)
    if hashlib.sha256(body).digest() != header["body"]:
        raise EnvelopeError(401, "forged: the body does not match the signed body hash", sender)
    if nonces is not None:
        nonces.remember(sender, header["nonce"], header["ts"])
    if header["enc"] == ENC_CHACHA:
        body = decrypt(body, header["epk"], me.xkey, _aad(sender, me.node, endpoint, header["nonce"]))
    return Opened(header, body)
