"""Secure aggregation's building blocks: Shamir sharing, Z_2^k encoding, fixed point, messages."""

from __future__ import annotations

import ast
import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import phalanx.privacy
from phalanx.privacy.secagg import FixedPoint, harary_parameters, shamir
from phalanx.privacy.secagg.driver import SeededRandom
from phalanx.privacy.secagg.encoding import pack_bits, unpack_bits
from phalanx.privacy.secagg.graph import harary_neighbours
from phalanx.privacy.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MalformedMessage,
    MaskedInput,
    SurvivorSignatures,
    UnmaskingShares,
    decode,
    encode,
)

RAND = SeededRandom("tests")
SECRET = bytes(range(32))


# -- Shamir ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, t", [(2, 2), (5, 3), (10, 7), (40, 27)])
def test_any_t_shares_rebuild_the_secret(n, t):
    xs = list(range(1, n + 1))
    ys = shamir.share(SECRET, t, xs, RAND)
    rng = np.random.default_rng(n)
    for _ in range(5):
        pick = sorted(rng.choice(n, size=t, replace=False))
        chunks = shamir.reconstruct([xs[i] for i in pick], ys[pick], t)
        assert shamir.join_secret(chunks) == SECRET


def test_t_minus_1_shares_are_equally_likely_under_every_secret():
    # exhaustively, in GF(11) with t = 3: over all 11^2 choices of the two random coefficients,
    # the pair of shares at x = 1, 2 takes every value exactly once, whatever the secret; so two
    # shares say nothing about the secret (perfect secrecy)
    p, xs = 11, [1, 2]
    for secret in range(p):
        pairs = Counter()
        for a1, a2 in itertools.product(range(p), repeat=2):
            coefficients = np.array([[secret], [a1], [a2]], dtype=np.int64)
            pairs[tuple(shamir.evaluate(coefficients, xs, prime=p)[:, 0])] += 1
        assert len(pairs) == p * p and set(pairs.values()) == {1}


def test_t_minus_1_real_shares_are_consistent_with_any_secret():
    # in the real field: t - 1 shares of SECRET plus a suitable t-th share rebuild any chosen secret
    t, xs = 5, [3, 8, 9, 12, 20]
    ys = shamir.share(SECRET, t, xs, RAND)
    weights = shamir.lagrange_weights(xs, 0)
    for other in (bytes(32), bytes([255]) * 32, bytes(range(100, 132))):
        target = shamir.split_secret(other)
        partial = weights[:-1] @ ys[:-1] % shamir.PRIME
        last = (target - partial) * pow(int(weights[-1]), -1, shamir.PRIME) % shamir.PRIME
        forged = np.vstack([ys[:-1], last])
        assert shamir.join_secret(shamir.reconstruct(xs, forged, t)) == other


def test_lagrange_weights_match_the_definition():
    xs, at, p = [2, 5, 7, 11, 13], 0, shamir.PRIME
    expected = []
    for i, xi in enumerate(xs):
        num = den = 1
        for j, xj in enumerate(xs):
            if j != i:
                num, den = num * (at - xj) % p, den * (xi - xj) % p
        expected.append(num * pow(den, -1, p) % p)
    assert shamir.lagrange_weights(xs, at).tolist() == expected


def test_an_altered_redundant_share_is_detected():
    xs = list(range(1, 9))
    ys = shamir.share(SECRET, 5, xs, RAND)
    ys[6, 3] = (ys[6, 3] + 1) % shamir.PRIME
    with pytest.raises(shamir.InconsistentShares, match="1 of 8 shares are off"):
        shamir.reconstruct(xs, ys, 5)


def test_share_bytes_round_trip_and_refuse_non_field_values():
    ys = shamir.share(SECRET, 3, [1, 2, 3], RAND)
    data = shamir.encode_share(ys[1])
    assert len(data) == shamir.SHARE_BYTES == 36
    assert np.array_equal(shamir.decode_share(data), ys[1])
    with pytest.raises(ValueError, match="not an element"):
        shamir.decode_share(pack_bits(np.full(shamir.CHUNKS, shamir.PRIME, dtype=np.uint64), 19))


def test_sharing_refuses_bad_parameters():
    with pytest.raises(ValueError, match="threshold must be in 1..3"):
        shamir.share(SECRET, 4, [1, 2, 3], RAND)
    with pytest.raises(ValueError, match="distinct"):
        shamir.share(SECRET, 2, [1, 1, 3], RAND)
    with pytest.raises(ValueError, match="shares cannot rebuild"):
        shamir.reconstruct([1, 2], np.zeros((2, shamir.CHUNKS), dtype=np.int64), 3)


# -- Z_2^k vectors and fixed point -------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 7, 8, 13, 26, 32, 33, 64])
def test_pack_bits_round_trips_and_costs_k_bits_per_element(bits):
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 2**bits, size=101, dtype=np.uint64, endpoint=False) if bits < 64 \
        else rng.integers(0, 2**63, size=101, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    data = pack_bits(values, bits)
    assert len(data) == (101 * bits + 7) // 8
    assert np.array_equal(unpack_bits(data, bits, 101).astype(np.uint64), values)
    with pytest.raises(ValueError, match="takes"):
        unpack_bits(data + b"\0", bits, 101)


def test_fixed_point_for_256_clients_in_32_bits():
    codec = FixedPoint.for_sum(256, clip=1.0, bits=32)
    assert codec.frac_bits == 22 and codec.input_bits == 24 and codec.max_clients >= 256
    # the worst case, every input at +clip or every input at -clip, sums without wrapping
    for sign in (1.0, -1.0):
        total = codec.encode(np.full((256, 3), sign * 5.0)).astype(np.uint64).sum(0) % 2**32
        assert np.array_equal(codec.decode(total), np.full(3, sign * 256.0))
    with pytest.raises(ValueError, match="could wrap"):
        codec.check_clients(codec.max_clients + 1)


def test_fixed_point_round_trips_within_half_a_step():
    codec = FixedPoint(bits=20, frac_bits=8, clip=4.0)
    x = np.array([-4.0, -1.2345, 0.0, 0.001, 3.999])
    assert np.abs(codec.decode(codec.encode(x)) - x).max() <= 2.0 ** -9
    with pytest.raises(ValueError, match="non-finite"):
        codec.encode(np.array([np.nan]))
    with pytest.raises(ValueError, match="does not fit"):
        FixedPoint(bits=8, frac_bits=8, clip=1.0)


# -- SecAgg+ graph ------------------------------------------------------------------------------
def test_harary_graph_is_regular_symmetric_and_follows_the_digest():
    clients = tuple(range(20))
    graph = harary_neighbours(clients, 6, b"a" * 32)
    assert all(len(v) == 6 and u not in v for u, v in graph.items())
    assert all(u in graph[v] for u, vs in graph.items() for v in vs)
    assert graph != harary_neighbours(clients, 6, b"b" * 32)
    assert graph == harary_neighbours(clients, 6, b"a" * 32)


def test_harary_parameters_grow_like_log_n():
    degrees = [harary_parameters(n)[0] for n in (256, 1024, 10_000)]
    assert degrees == sorted(degrees) and degrees[-1] < 100
    k, t = harary_parameters(1024)
    assert 2 * t > k + 1   # active model: more than half of each neighbourhood


# -- messages -----------------------------------------------------------------------------------
DIGEST = bytes(range(32))
ADVERT = AdvertiseKeys(3, b"c" * 32, b"s" * 32, b"h" * 32, b"g" * 64)
MESSAGES = [
    ADVERT,
    KeyDirectory(5, (ADVERT, AdvertiseKeys(4, b"C" * 32, b"S" * 32, b"H" * 32, b"G" * 64))),
    MaskedInput(2, b"\x01\x02\x03"),
    SurvivorSignatures(1, (1, 2, 7), ((1, b"x" * 64), (7, b"y" * 64))),
    UnmaskingShares(2, ((1, b"a" * 36),), ((4, b"b" * 36), (9, b"c" * 36))),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_messages_round_trip_through_bytes(message):
    data = encode(message, DIGEST)
    assert decode(data, DIGEST) == message


def test_decode_refuses_other_sessions_truncation_and_trailing_bytes():
    data = encode(ADVERT, DIGEST)
    with pytest.raises(MalformedMessage, match="another session"):
        decode(data, bytes(32))
    with pytest.raises(MalformedMessage, match="truncated"):
        decode(data[:-1], DIGEST)
    with pytest.raises(MalformedMessage, match="trailing"):
        decode(data + b"\0", DIGEST)
    with pytest.raises(MalformedMessage, match="unknown message type"):
        decode(data[:5] + b"\x63" + data[6:], DIGEST)


def test_privacy_imports_only_core_of_phalanx():
    # the package rule of shared/ARCHITECTURE.md: privacy may import only core
    root = Path(phalanx.privacy.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name.startswith("phalanx"):
                    assert name.startswith(("phalanx.privacy", "phalanx.core")), f"{path.name} imports {name}"
