"""Lying clients and a lying server: every lie is refused, or aborts the protocol with an error
naming the culprit where it can be known; an honest client never reveals both secrets of a peer,
and the consistency check is what stops an active server from making it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from phalanx.privacy.secagg import (
    SERVER,
    OutOfOrder,
    ProtocolAbort,
    SessionConfig,
    TooFewSurvivors,
    secure_sum,
    shamir,
)
from phalanx.privacy.secagg.crypto import (
    MaskExpander,
    agree,
    pairwise_mask_key,
    self_mask_key,
    x25519_private,
)
from phalanx.privacy.secagg.driver import identity_key, make_parties
from phalanx.privacy.secagg.encoding import unpack_bits
from phalanx.privacy.secagg.identity import advertisement_message
from phalanx.privacy.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    ShareBundle,
    SurvivorList,
    SurvivorSignatures,
    UnmaskingShares,
)

N, D = 10, 16
X = np.random.default_rng(11).integers(0, 2**32, size=(N, D), dtype=np.uint64)


def plain_sum(rows):
    return X[list(rows)].sum(0) % np.uint64(2**32)


def replacing(direction, phase, party, change):
    """An intercept that rewrites one message with ``change(message)``."""
    def intercept(d, p, who, message):
        return change(message) if (d, p, who) == (direction, phase, party) else message
    return intercept


# -- advertisements ------------------------------------------------------------------------------
@pytest.mark.parametrize("lie", ["unsigned", "altered_after_signing", "signed_by_another"])
def test_server_refuses_a_forged_advertisement(lie):
    def forge(a: AdvertiseKeys):
        if lie == "unsigned":
            return replace(a, signature=bytes(64))
        if lie == "altered_after_signing":
            return replace(a, mask_pk=bytes(reversed(a.mask_pk)))
        return replace(a, signature=identity_key(7, 1).sign(b"anything"))

    result = secure_sum(X, seed=1, intercept=replacing("up", "advertise", 3, forge))
    assert [(r.phase, r.client) for r in result.rejected] == [("advertise", 3)]
    assert "invalid identity signature" in result.rejected[0].reason
    assert 3 not in result.survivors and np.array_equal(result.sum, plain_sum(result.survivors))


def test_an_advertisement_replayed_from_another_session_is_refused():
    captured = {}

    def keep(d, p, who, message):
        if (d, p, who) == ("up", "advertise", 2):
            captured["advert"] = message
        return message

    secure_sum(X, seed=1, session_id=b"round-1", intercept=keep)   # same identities, other session
    result = secure_sum(X, seed=1, session_id=b"round-2",
                        intercept=replacing("up", "advertise", 2, lambda a: captured["advert"]))
    assert [(r.phase, r.client) for r in result.rejected] == [("advertise", 2)]
    assert np.array_equal(result.sum, plain_sum(result.survivors))


def test_a_client_aborts_when_the_server_forwards_a_forged_advertisement():
    def forge(directory: KeyDirectory):
        adverts = tuple(replace(a, mask_pk=bytes(32 * [9])) if a.sender == 5 else a
                        for a in directory.adverts)
        return replace(directory, adverts=adverts)

    with pytest.raises(ProtocolAbort, match="advertisement of client 5 has no valid identity signature") as e:
        secure_sum(X, seed=1, intercept=replacing("down", "advertise", 0, forge))
    assert (e.value.phase, e.value.party, e.value.culprit) == ("share_keys", 0, 5)


def test_a_replayed_public_key_is_refused_for_both_clients():
    # client 4 re-advertises client 1's keys, validly signed with its own identity
    keys = {}

    def copy_keys(d, p, who, message):
        if d == "up" and p == "advertise" and who == 1:
            keys["a"] = message
        if d == "up" and p == "advertise" and who == 4:
            stolen = keys["a"]
            signed = advertisement_message(result_digest[0], 4, stolen.cipher_pk, stolen.mask_pk,
                                           message.commitment)
            return replace(message, cipher_pk=stolen.cipher_pk, mask_pk=stolen.mask_pk,
                           signature=identity_key(4, 1).sign(signed))
        return message

    config = SessionConfig(session_id=b"keys", clients=tuple(range(N)), dim=D)
    result_digest = [config.digest]
    result = secure_sum(X, seed=1, session_id=b"keys", intercept=copy_keys)
    assert sorted(r.client for r in result.rejected) == [1, 4]
    assert all("replayed key" in r.reason for r in result.rejected)
    assert np.array_equal(result.sum, plain_sum(result.survivors))


# -- shares ---------------------------------------------------------------------------------------
def test_a_tampered_share_ciphertext_aborts_naming_its_sender():
    def tamper(bundle: ShareBundle):
        flipped = tuple((s, bytes([c[0] ^ 1]) + c[1:]) if s == 3 else (s, c) for s, c in bundle.ciphertexts)
        return replace(bundle, ciphertexts=flipped)

    with pytest.raises(ProtocolAbort, match="share ciphertext from client 3 fails authentication") as e:
        secure_sum(X, seed=1, intercept=replacing("down", "share_keys", 0, tamper))
    assert (e.value.phase, e.value.party, e.value.culprit) == ("masked_input", 0, 3)


def _lie_about(kind: str, owner: int):
    def lie(message: UnmaskingShares):
        field = "seed_shares" if kind == "seed" else "key_shares"
        shares = tuple((o, shamir.encode_share((shamir.decode_share(s) + 1) % shamir.PRIME))
                       if o == owner else (o, s)
                       for o, s in getattr(message, field))
        return replace(message, **{field: shares})
    return lie


@pytest.mark.parametrize("kind, owner", [("seed", 6), ("key", 8)])
def test_a_holder_that_lies_about_a_share_is_named(kind, owner):
    with pytest.raises(ProtocolAbort, match=f"client 2's share of client {owner}'s") as e:
        secure_sum(X, seed=1, dropouts={"masked_input": {8}},
                   intercept=replacing("up", "unmasking", 2, _lie_about(kind, owner)))
    assert (e.value.phase, e.value.party, e.value.culprit) == ("unmasking", "server", 2)


def test_a_lie_among_exactly_t_shares_is_still_detected():
    # n = 10, t = 7, three drop at unmasking: the 7 shares left fit any polynomial, but the
    # rebuilt seed fails its commitment, so the sum is never output wrong
    with pytest.raises(ProtocolAbort, match="a liar can be named only from 8 shares on") as e:
        secure_sum(X, seed=1, dropouts={"unmasking": {0, 1, 9}},
                   intercept=replacing("up", "unmasking", 2, _lie_about("seed", 5)))
    assert e.value.culprit is None


def test_a_response_that_reveals_both_secrets_of_a_peer_is_refused():
    def reveal_both(message: UnmaskingShares):   # a client colluding with the server
        extra = tuple((o, s) for o, s in message.seed_shares if o == 4)
        return replace(message, key_shares=message.key_shares + extra)

    result = secure_sum(X, seed=1, intercept=replacing("up", "unmasking", 2, reveal_both))
    assert [(r.phase, r.client) for r in result.rejected] == [("unmasking", 2)]
    assert np.array_equal(result.sum, plain_sum(range(N)))   # 9 honest responses are enough


def test_the_server_gets_one_secret_per_client_never_both():
    revealed = {"seed": set(), "key": set()}

    def record(d, p, who, message):
        if isinstance(message, UnmaskingShares):
            revealed["seed"].update(o for o, _ in message.seed_shares)
            revealed["key"].update(o for o, _ in message.key_shares)
        return message

    result = secure_sum(X, seed=1, dropouts={"masked_input": {3, 6}}, intercept=record)
    assert revealed["seed"] == set(result.survivors) and revealed["key"] == {3, 6}


# -- the survivor set: an honest client answers once; the active model checks signatures ----------
def _masked_round(config, x, dropped=()):
    """Run rounds 0-2 honestly; return the parties and what a (lying) server has seen."""
    clients, server = make_parties(config, x, seed=3)
    directories = server.collect_advertisements([c.advertise() for c in clients.values()])
    bundles = server.collect_shares([clients[u].share_keys(directories[u]) for u in directories])
    masked = {u: clients[u].masked_input(bundles[u]) for u in bundles if u not in dropped}
    return clients, server, masked


def test_an_honest_client_refuses_a_second_unmasking_request():
    x = X[:6]
    config = SessionConfig(session_id=b"twice", clients=tuple(range(6)), dim=D,
                           adversary="honest_but_curious")
    clients, _, _ = _masked_round(config, x)
    first = clients[0].unmask(SurvivorList(0, (0, 1, 2, 3, 4, 5)))
    assert {o for o, _ in first.seed_shares} == set(range(6)) and first.key_shares == ()
    with pytest.raises(OutOfOrder, match="refuses a second unmasking request"):
        clients[0].unmask(SurvivorList(0, (0, 1, 2, 3, 4)))   # now "client 5 dropped": its key share


def _unmask(secrets, config, server, masked, owner):
    """What a server holding both secrets of ``owner`` learns: its input, unmasked."""
    y = unpack_bits(masked[owner].vector, config.bits, config.dim)
    expander = MaskExpander(config.dim, config.bits)
    expander.add(y, self_mask_key(secrets["seed"], config.digest, owner), -1)
    private = x25519_private(secrets["key"])
    for v in config.neighbours[owner]:
        shared = agree(private, server.adverts[v].mask_pk)
        expander.add(y, pairwise_mask_key(shared, config.digest, owner, v), -1 if v > owner else 1)
    return y


def test_without_the_consistency_check_a_lying_server_learns_an_input():
    # honest-but-curious model with t = 3 of 6: a server that deviates tells clients 0-2 that
    # client 5 survived (they reveal b_5's shares) and clients 3-5 that it dropped (they reveal
    # s_5's shares): it rebuilds both and reads x_5. This is what the active model prevents.
    x = X[:6]
    config = SessionConfig(session_id=b"split", clients=tuple(range(6)), dim=D, threshold=3,
                           adversary="honest_but_curious")
    clients, server, masked = _masked_round(config, x)
    everyone, without_5 = (0, 1, 2, 3, 4, 5), (0, 1, 2, 3, 4)
    got = {"seed": [], "key": []}
    for u in range(6):
        response = clients[u].unmask(SurvivorList(u, everyone if u < 3 else without_5))
        got["seed"] += [(u, s) for o, s in response.seed_shares if o == 5]
        got["key"] += [(u, s) for o, s in response.key_shares if o == 5]
    secrets = {kind: shamir.join_secret(shamir.reconstruct([u + 1 for u, _ in pairs],
                                                           shamir.decode_shares([s for _, s in pairs]), 3))
               for kind, pairs in got.items()}
    assert np.array_equal(_unmask(secrets, config, server, masked, 5), x[5])


def test_the_active_model_stops_the_split_survivor_set_attack():
    # same lie, active model (t = 4 of 6): clients 2-4 are told client 5 dropped and sign that
    # set, clients 0, 1 and 5 sign the full set; neither set gets t signatures, and a client shown
    # signatures on a set it did not sign aborts, blaming the server
    x = X[:6]
    config = SessionConfig(session_id=b"split", clients=tuple(range(6)), dim=D)
    assert config.t == 4 and config.active
    clients, _, _ = _masked_round(config, x)
    everyone, without_5 = (0, 1, 2, 3, 4, 5), (0, 1, 2, 3, 4)
    told = {u: without_5 if u in (2, 3, 4) else everyone for u in range(6)}
    signatures = {u: clients[u].consistency(SurvivorList(u, told[u])).signature for u in range(6)}
    on_everyone = tuple((u, signatures[u]) for u in (0, 1, 5))
    on_without_5 = tuple((u, signatures[u]) for u in (2, 3, 4))
    with pytest.raises(TooFewSurvivors, match="only 3 clients remain"):
        clients[2].unmask(SurvivorSignatures(2, without_5, on_without_5))
    with pytest.raises(ProtocolAbort, match="does not cover the survivor set this client signed") as e:
        clients[3].unmask(SurvivorSignatures(3, without_5, on_without_5 + on_everyone[:2]))
    assert e.value.culprit == SERVER
    with pytest.raises(ProtocolAbort, match="different from the one this client signed"):
        clients[4].unmask(SurvivorSignatures(4, everyone, on_everyone + on_without_5))


def test_a_survivor_set_with_a_client_that_never_shared_is_refused():
    x = X[:6]
    config = SessionConfig(session_id=b"u2", clients=tuple(range(6)), dim=D)
    clients, server = make_parties(config, x, seed=3)
    directories = server.collect_advertisements([c.advertise() for c in clients.values()])
    bundles = server.collect_shares([clients[u].share_keys(directories[u]) for u in range(5)])   # 5 is gone
    clients[0].masked_input(bundles[0])
    with pytest.raises(ProtocolAbort, match=r"lists clients \[5\] that never sent client 0") as e:
        clients[0].consistency(SurvivorList(0, (0, 1, 2, 3, 4, 5)))
    assert e.value.culprit == SERVER


def test_steps_out_of_order_are_refused():
    config = SessionConfig(session_id=b"order", clients=(0, 1, 2), dim=D)
    clients, _ = make_parties(config, X[:3], seed=3)
    with pytest.raises(OutOfOrder, match="asked to run 'masked_input' but its next step is 'advertise'"):
        clients[0].masked_input(ShareBundle(0, ()))


def test_configuration_refuses_unsafe_thresholds():
    with pytest.raises(ValueError, match=r"active model needs threshold > 6/2"):
        SessionConfig(session_id=b"t", clients=tuple(range(6)), dim=4, threshold=3)
    assert SessionConfig(session_id=b"t", clients=tuple(range(6)), dim=4, threshold=3,
                         adversary="honest_but_curious").t == 3
    with pytest.raises(ValueError, match="at least 2 clients"):
        SessionConfig(session_id=b"t", clients=(0,), dim=4)
    with pytest.raises(ValueError, match="even degree"):
        SessionConfig(session_id=b"t", clients=tuple(range(6)), dim=4, degree=3)
