"""Signed, encrypted envelopes and message bodies: every refusal names what failed, with its status."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.encoding import decode, encode
from phalanx.core.keys import SigningKey
from phalanx.network.envelope import (
    ENC_CHACHA,
    EnvelopeError,
    Fork,
    Identity,
    NonceWindow,
    open_envelope,
    seal,
)
from phalanx.network.messages import make, read
from phalanx.network.peers import open_record, sign_record

FORK = Fork(1, b"\x01\x02\x03\x04", 0)
NOW = 1_700_000_000_000


def ident(label: str) -> Identity:
    key = SigningKey.derive(b"test", label)
    return Identity(key.node_id, key, X25519PrivateKey.generate())


A, B, C = ident("a"), ident("b"), ident("c")


def keys_of(*known: Identity):
    table = {i.node: i.key.public.raw for i in known}
    return table.get


def open_b(data: bytes, endpoint: str = "update", *, nonces=None, keys=None, clock=lambda: NOW, **kw):
    return open_envelope(data, B, endpoint, keys or keys_of(A), nonces=nonces, max_body=1 << 16, clock=clock, **kw)


def status_of(fn) -> tuple[int, str]:
    with pytest.raises(EnvelopeError) as e:
        fn()
    return e.value.status, e.value.reason


def test_round_trip_plain_and_encrypted():
    body = b"the model bytes"
    plain = seal(A, B.node, "update", body, FORK, timestamp=NOW)
    assert open_b(plain).body == body
    assert body in plain  # off: readable on the wire
    sealed = seal(A, B.node, "update", body, FORK, xk_to=B.xk, timestamp=NOW)
    opened = open_b(sealed)
    assert opened.body == body and opened.header["enc"] == ENC_CHACHA and opened.sender == A.node
    assert body not in sealed  # on: only the recipient reads it
    assert opened.fork == FORK


def test_encrypted_body_for_another_node_does_not_open():
    data = seal(A, B.node, "update", b"secret", FORK, xk_to=C.xk, timestamp=NOW)  # sealed to C's key
    status, reason = status_of(lambda: open_b(data))
    assert status == 401 and "decrypt" in reason


def test_forged_signature_refused():
    data = bytearray(seal(A, B.node, "update", b"x", FORK, timestamp=NOW))
    (n,) = struct.unpack(">I", data[:4])
    outer = decode(bytes(data[4:4 + n]))
    outer["sig"] = bytes(64)
    forged = encode(outer)
    status, reason = status_of(lambda: open_b(struct.pack(">I", len(forged)) + forged + b"x"))
    assert status == 401 and reason.startswith("forged")


def test_body_swapped_after_signing_refused():
    data = seal(A, B.node, "update", b"honest", FORK, timestamp=NOW)
    status, reason = status_of(lambda: open_b(data[:-6] + b"poison"))
    assert status == 401 and "body hash" in reason


def test_a_sender_claiming_another_nodes_id_is_forged():
    # C signs with its own key but claims to be A: the key is not A's current key
    header_lie = seal(Identity(A.node, C.key, C.xkey), B.node, "update", b"x", FORK, timestamp=NOW)
    status, reason = status_of(lambda: open_b(header_lie))
    assert status == 401 and "current key" in reason


def test_misdirected_to_another_node_or_endpoint():
    to_c = seal(A, C.node, "update", b"x", FORK, timestamp=NOW)
    status, reason = status_of(lambda: open_b(to_c))
    assert status == 421 and "meant for node" in reason
    to_submit = seal(A, B.node, "submit", b"x", FORK, timestamp=NOW)
    status, reason = status_of(lambda: open_b(to_submit, "update"))
    assert status == 421 and "endpoint 'submit'" in reason


def test_replay_refused_within_window_and_stale_after():
    window = NonceWindow(60_000, clock=lambda: NOW)
    data = seal(A, B.node, "update", b"x", FORK, timestamp=NOW)
    open_b(data, nonces=window)
    status, reason = status_of(lambda: open_b(data, nonces=window))
    assert status == 409 and "replayed" in reason
    later = NOW + 61_000  # the nonce may be forgotten: the timestamp check refuses instead
    status, reason = status_of(lambda: open_b(data, nonces=NonceWindow(60_000, clock=lambda: later),
                                              clock=lambda: later))
    assert status == 401 and "outside the 60 s window" in reason


def test_nonce_window_forgets_only_after_the_window():
    t = [NOW]
    window = NonceWindow(1000, clock=lambda: t[0])
    window.remember(A.node, b"n" * 16, NOW)
    t[0] = NOW + 999
    with pytest.raises(EnvelopeError):
        window.remember(A.node, b"n" * 16, NOW)
    t[0] = NOW + 2001
    window.remember(A.node, b"m" * 16, t[0])
    assert len(window) == 1  # the old one expired, the new one is kept


def test_unknown_sender_refused_unless_first_contact_with_its_own_key():
    data = seal(C, B.node, "handshake", b"hi", FORK, timestamp=NOW)
    status, reason = status_of(lambda: open_b(data, "handshake"))
    assert status == 401 and "unknown sender" in reason
    assert open_b(data, "handshake", first_contact=True).body == b"hi"


def test_oversized_refused_before_parsing():
    status, _ = status_of(lambda: open_b(b"\0" * (1 << 17)))
    assert status == 413


def test_reply_must_name_the_request():
    reply = seal(B, A.node, "re:update", b"ok", FORK, reply_to=b"r" * 16, timestamp=NOW)
    opened = open_envelope(reply, A, "re:update", keys_of(B), nonces=None, max_body=1024, reply_to=b"r" * 16,
                           expect_sender=B.node, clock=lambda: NOW)
    assert opened.body == b"ok"
    with pytest.raises(EnvelopeError, match="reply to another request"):
        open_envelope(reply, A, "re:update", keys_of(B), nonces=None, max_body=1024, reply_to=b"s" * 16,
                      clock=lambda: NOW)


@pytest.mark.parametrize("data", [b"", b"\0\0", b"\0\0\0\x05abc", b"\xff\xff\xff\xff" + b"x" * 10,
                                  struct.pack(">I", 3) + encode([1]) + b"x"])
def test_malformed_refused_with_400(data):
    status, reason = status_of(lambda: open_b(data))
    assert status == 400 and "malformed" in reason


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_is_refused_never_crashes(data):
    with pytest.raises(EnvelopeError) as e:
        open_b(data)
    assert e.value.status in (400, 401, 413, 421)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=4, max_value=300), st.integers(min_value=0, max_value=255))
def test_any_flipped_byte_is_refused(position, value):
    data = bytearray(seal(A, B.node, "update", b"a body of some length", FORK, timestamp=NOW))
    position %= len(data)
    if data[position] == value:
        value ^= 1
    data[position] = value
    with pytest.raises(EnvelopeError):
        open_b(bytes(data))


def test_bodies_are_read_against_their_schema():
    ok = make("update_reply", ok=True, seq=3, why="")
    assert read("update_reply", ok, 1024) == {"ok": True, "seq": 3, "why": ""}
    with pytest.raises(EnvelopeError, match="missing \\['why'\\]"):
        read("update_reply", encode({"ok": True, "seq": 3}), 1024)
    with pytest.raises(EnvelopeError, match="seq is not a int"):
        read("update_reply", encode({"ok": True, "seq": -1, "why": ""}), 1024)
    with pytest.raises(EnvelopeError, match="not a map"):
        read("update_reply", encode([1, 2]), 1024)
    with pytest.raises(EnvelopeError, match="malformed update_reply body"):
        read("update_reply", b"\xff\x00", 1024)


def test_peer_records_are_signed_by_the_node_they_name():
    raw = sign_record(A.key, A.node, A.xk, "http://127.0.0.1:9", "0.1.0", ["trainer"])
    assert open_record(raw, None)["url"] == "http://127.0.0.1:9"
    assert open_record(raw, C.key.public.raw) is None  # not the key this node knows for A
    lie = sign_record(C.key, A.node, C.xk, "http://127.0.0.1:10", "0.1.0", ["trainer"])
    assert open_record(lie, None) is None  # C cannot speak for A's node ID
    assert open_record(b"\x00garbage", None) is None
