"""Admission at the door: the evidence a joining node shows, checked against the network's policy.

The policies are the Sybil issue's (:mod:`phalanx.defenses.admission`, which prices them for the
range); here they are enforced on a real registration (:class:`~phalanx.ledger.NodeRegistration`,
its ``admission`` field), in the handshake, before the node's entries go into a log:

- ``genesis``: a founding member, named in the genesis (any policy);
- ``open``: anyone;
- ``proof_of_work``: the evidence is an 8-byte nonce solving the hashcash puzzle
  (:func:`phalanx.defenses.admission.verify`) over ``SHA-256("phalanx.net/admission/v1" ||
  network || key)``, so work done for one key or network is worth nothing for another;
- ``stake``: the evidence is ``{amount, validator, sig}`` (canonical CBOR): a validator's
  signature over ``("stake", network, key, amount)`` attesting that the stake is locked, and
  ``amount`` is at least the policy's;
- ``vouching``: the evidence is a list of ``{node, sig}``, each a member's signature over
  ``("vouch", network, key)``; the policy's number of distinct members must vouch;
- ``approval``: a passed governance proposal ``admit`` names the node (:mod:`phalanx.governance`).

:func:`check` raises :class:`AdmissionError` (HTTP 403) with one line naming what failed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from phalanx.core.encoding import EncodingError, decode, encode
from phalanx.core.keys import SignatureError, SigningKey, VerifyKey, node_id
from phalanx.defenses.admission import solve, verify
from phalanx.ledger import Admission
from phalanx.network.config import AdmissionSpec

DOMAIN = b"phalanx.net/admission/v1"


class AdmissionError(ValueError):
    status = 403


def challenge(network: str, key: bytes) -> bytes:
    return hashlib.sha256(DOMAIN + network.encode() + b"\n" + bytes(key)).digest()


def _statement(kind: str, network: str, key: bytes, amount: float | None = None) -> bytes:
    fields = {"kind": kind, "network": network, "key": bytes(key)}
    if amount is not None:
        fields["amount"] = float(amount)
    return DOMAIN + encode(fields)


def proof_of_work(network: str, key: bytes, bits: int) -> Admission:
    nonce, _ = solve(challenge(network, key), bits)
    return Admission(kind="proof_of_work", evidence=nonce.to_bytes(8, "big"))


def stake_receipt(network: str, key: bytes, amount: float, validator: SigningKey) -> Admission:
    sig = validator.sign(_statement("stake", network, key, amount))
    return Admission(kind="stake", evidence=encode({"amount": float(amount), "validator": validator.public.raw,
                                                    "sig": sig}))


def vouch(network: str, key: bytes, member: SigningKey) -> dict:
    return {"node": member.node_id, "key": member.public.raw, "sig": member.sign(_statement("vouch", network, key))}


def vouches(items: list[dict]) -> Admission:
    return Admission(kind="vouching", evidence=encode(items))


def check(policy: AdmissionSpec, admission: Admission, *, network: str, key: bytes, founder: bool,
          members: Callable[[bytes], bytes | None], validators: set[bytes], approved: set[bytes]) -> None:
    """Raise :class:`AdmissionError` unless ``admission`` lets the holder of ``key`` join.

    ``members(node)`` is a member's current key (or ``None``); ``validators`` their node IDs;
    ``approved`` the nodes a passed ``admit`` proposal names.
    """
    if founder:
        return
    kind = policy.name
    if kind == "open":
        return
    if admission.kind != kind:
        raise AdmissionError(f"admission: this network admits by {kind}, not by {admission.kind}")
    ev = admission.evidence
    if kind == "proof_of_work":
        if len(ev) != 8 or not verify(challenge(network, key), int.from_bytes(ev, "big"), policy.bits):
            raise AdmissionError(f"admission: the proof of work does not solve the {policy.bits}-bit puzzle for this key")
    elif kind == "stake":
        _check_stake(policy, ev, network, key, validators)
    elif kind == "vouching":
        _check_vouches(policy, ev, network, key, members)
    elif kind == "approval" and node_id(key) not in approved:
        raise AdmissionError("admission: no passed admit proposal names this node")


def _evidence(ev: bytes):
    try:
        return decode(ev)
    except EncodingError as e:
        raise AdmissionError(f"admission: malformed evidence ({e})") from None


def _check_stake(policy, ev, network, key, validators) -> None:
    obj = _evidence(ev)
    if not isinstance(obj, dict) or set(obj) != {"amount", "validator", "sig"}:
        raise AdmissionError("admission: stake evidence is not {amount, validator, sig}")
    amount, vkey, sig = obj["amount"], obj["validator"], obj["sig"]
    if not isinstance(amount, float) or amount < policy.stake:
        raise AdmissionError(f"admission: stake {amount!r} is below the {policy.stake:g} required")
    if not isinstance(vkey, bytes) or node_id(vkey) not in validators:
        raise AdmissionError("admission: the stake receipt is not signed by a validator")
    try:
        VerifyKey(vkey).verify(sig, _statement("stake", network, key, amount))
    except (SignatureError, ValueError):
        raise AdmissionError("admission: the stake receipt's signature does not verify") from None


def _check_vouches(policy, ev, network, key, members) -> None:
    items = _evidence(ev)
    if not isinstance(items, list):
        raise AdmissionError("admission: vouching evidence is not a list")
    good: set[bytes] = set()
    for item in items[:1000]:
        if not isinstance(item, dict) or set(item) != {"node", "key", "sig"}:
            raise AdmissionError("admission: a vouch is not {node, key, sig}")
        if members(item["node"]) != item["key"]:
            continue  # not a member, or not its current key
        try:
            VerifyKey(item["key"]).verify(item["sig"], _statement("vouch", network, key))
        except (SignatureError, ValueError):
            raise AdmissionError(f"admission: the vouch of node {item['node'].hex()[:16]}... does not verify") from None
        good.add(item["node"])
    if len(good) < policy.vouches:
        raise AdmissionError(f"admission: {len(good)} member(s) vouched, {policy.vouches} needed")
