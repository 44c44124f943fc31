"""Canonical CBOR, Ed25519 keys and hiding commitments (phalanx.core)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.commitment import (
    CommitmentError,
    count_commitment,
    hiding_commitment,
    new_salt,
    open_commitment,
)
from phalanx.core.encoding import EncodingError, decode, encode
from phalanx.core.keys import KeyFormatError, SignatureError, SigningKey, VerifyKey, node_id

# ---------------------------------------------------------------- canonical CBOR


def test_encoding_is_rfc8949_deterministic():
    # keys in bytewise order of their encodings (shorter first), shortest ints and floats
    assert encode({"bb": 1, "a": 2}).hex() == "a2616102626262" + "01"
    assert encode(1.5).hex() == "f93e00"  # half precision holds 1.5 exactly
    assert encode(1.1).hex() == "fb3ff199999999999a"
    assert encode(23).hex() == "17" and encode(24).hex() == "1818"
    assert encode([b"\x01", None, True]).hex() == "8341" + "01" + "f6f5"


@pytest.mark.parametrize("hex_,what", [
    ("1817", "not in canonical"),            # 23 in two bytes
    ("a2616201616101", "not in canonical"),  # keys out of order
    ("a2616101616102", "not valid CBOR"),    # duplicate key
    ("5f41614162ff", "not valid CBOR"),      # indefinite-length bytes
    ("fa3fc00000", "not in canonical"),      # 1.5 as a single-precision float
    ("0102", "1 trailing bytes"),
    ("c11a514b67b0", "datetime has no canonical encoding"),  # tag 1
    ("f7", "has no canonical encoding"),     # undefined
    ("f97e00", "not a finite number"),       # NaN
    ("5bffffffffffffff00", "not valid CBOR"),  # a length far beyond the input
    ("", "empty input"),
    ("a1010203", "map key 1 is not text"),
])
def test_strict_decoder_refuses(hex_, what):
    with pytest.raises(EncodingError, match=what):
        decode(bytes.fromhex(hex_))


def test_encoder_refuses_what_has_no_canonical_form():
    with pytest.raises(EncodingError, match="x: nan is not a finite number"):
        encode({"x": float("nan")})
    with pytest.raises(EncodingError, match="map key 1 is not text"):
        encode({1: 2})
    with pytest.raises(EncodingError, match="longer than 23 bytes"):
        encode({"k" * 24: 1})
    with pytest.raises(EncodingError, match=r"a\[0\]: set"):
        encode({"a": [set()]})
    with pytest.raises(EncodingError, match="outside"):
        encode(2**64)
    with pytest.raises(EncodingError, match="nested deeper"):
        nested: list = [0]
        for _ in range(20):
            nested = [nested]
        encode(nested)


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip(value):
    data = encode(value)
    assert encode(decode(data)) == data


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_decoder_on_arbitrary_bytes_returns_only_canonical_values_or_refuses(data):
    try:
        value = decode(data)
    except EncodingError:
        return
    assert encode(value) == data


# ---------------------------------------------------------------- keys


def test_node_id_is_sha256_of_the_raw_public_key_and_signatures_verify():
    key = SigningKey.derive("secret", "node", 3)
    assert key.node_id == hashlib.sha256(key.public.raw).digest() == node_id(key.public.raw)
    assert SigningKey.derive("secret", "node", 3).seed == key.seed  # deterministic
    assert SigningKey.derive("secret", "node", 4).seed != key.seed
    sig = key.sign(b"message")
    assert sig == key.sign(b"message")  # Ed25519 is deterministic
    key.public.verify(sig, b"message")
    with pytest.raises(SignatureError, match="bad signature"):
        key.public.verify(sig, b"messagE")
    with pytest.raises(SignatureError, match="64 bytes"):
        key.public.verify(sig[:-1], b"message")
    with pytest.raises(KeyFormatError, match="32 bytes"):
        VerifyKey(b"\x00" * 31)


def test_rfc8032_test_vector_1():
    # RFC 8032 section 7.1, TEST 1 (empty message)
    key = SigningKey(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    assert key.public.raw.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert key.sign(b"").hex().startswith("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac")


# ---------------------------------------------------------------- commitments


def test_hiding_commitment_binds_and_hides():
    salt = new_salt()
    c = hiding_commitment(salt, b"update bytes")
    assert c == hashlib.sha256(salt + b"update bytes").digest()
    open_commitment(c, salt, b"update bytes")
    with pytest.raises(CommitmentError):
        open_commitment(c, salt, b"update bytez")
    with pytest.raises(CommitmentError):
        open_commitment(c, new_salt(), b"update bytes")
    assert hiding_commitment(new_salt(), b"update bytes") != c  # a guess cannot be tested without the salt
    assert count_commitment(salt, 600) == hiding_commitment(salt, (600).to_bytes(8, "big"))
    with pytest.raises(CommitmentError, match="32 bytes"):
        hiding_commitment(b"short", b"x")


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats() | st.text(max_size=30) | st.binary(max_size=8)
    | st.sampled_from([set(), 1j]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=26) | st.integers(), inner, max_size=3),
    max_leaves=40))
def test_the_fast_check_agrees_with_the_one_that_explains(value):
    from phalanx.core.encoding import _check, _ok

    try:
        _check(value, "", 0)
        explained = True
    except EncodingError:
        explained = False
    assert _ok(value) == explained
