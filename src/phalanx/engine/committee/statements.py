"""The committee's signed statements, their one canonical encoding, and its quorum arithmetic.

Every statement is a small frozen record; what a validator signs is the domain-separated
canonical CBOR (:mod:`phalanx.core.encoding`) of its fields::

    "phalanx.committee/v1\\n" || origin || "\\n" || CBOR({"kind": ..., fields...})

so a signature binds the kind, the committee (``origin``, the log's name) and every field, and
cannot be replayed into another committee or read as another kind. A :class:`Signed` statement
carries the signer's index in the validator list; :func:`verify` checks it against that list.

Quorum: with n validators, q = floor(2n / 3) + 1 and f = n - q. Two quorums share at least
2q - n >= f + 1 validators, so at least one honest one, whatever f of them do (Castro and
Liskov, "Practical Byzantine Fault Tolerance", OSDI 1999, section 4: 3f + 1 replicas,
quorums of 2f + 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from phalanx.core.encoding import EncodingError, decode, encode
from phalanx.core.keys import SignatureError, SigningKey, VerifyKey

DOMAIN = b"phalanx.committee/v1\n"
MAX_STATEMENT = 1 << 20


class StatementError(ValueError):
    """A statement that is malformed, of an unknown kind, or whose signature does not verify."""


def quorum(n: int) -> int:
    """q = floor(2n / 3) + 1 signatures make a certificate."""
    if n < 1:
        raise ValueError(f"a committee needs at least one validator (got {n})")
    return 2 * n // 3 + 1


def tolerated(n: int) -> int:
    """f = n - q: crashed plus Byzantine validators the committee survives."""
    return n - quorum(n)


def sequencer(round_: int, view: int, eligible: Sequence[int]) -> int:
    """Round-robin by round and view over the eligible validators (those not rotated out)."""
    if not eligible:
        raise ValueError("no eligible sequencer: every validator was rotated out")
    return eligible[(round_ + view) % len(eligible)]


def value_of(round_: int, batch: Sequence[bytes], aggregate: bytes) -> bytes:
    """What validators vote on: SHA-256 over the round, the batch (in its order) and the aggregate."""
    return hashlib.sha256(encode({"round": round_, "batch": [bytes(b) for b in batch],
                                  "aggregate": bytes(aggregate)})).digest()


KINDS: dict[str, type] = {}


def _kind(name: str):
    def register(cls):
        cls.KIND = name
        KINDS[name] = cls
        return cls
    return register


@dataclass(frozen=True)
class Statement:
    KIND: ClassVar[str]

    def fields(self) -> dict:
        out = {"kind": self.KIND}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = [x.to_cbor() if isinstance(x, Signed) else x for x in v] if isinstance(v, tuple) else (
                v.to_cbor() if isinstance(v, Signed) else v)
        return out

    def message(self, origin: str) -> bytes:
        return DOMAIN + origin.encode() + b"\n" + encode(self.fields())


@_kind("promise")
@dataclass(frozen=True)
class Promise(Statement):
    """The sequencer received a valid update and will have it certified by round ``deadline``
    (the maximum merge delay, after Certificate Transparency's signed certificate timestamps,
    RFC 6962 section 3)."""

    round: int
    update: bytes
    deadline: int


@_kind("proposal")
@dataclass(frozen=True)
class Proposal(Statement):
    """The sequencer of (round, view) proposes a batch, in order, and the aggregate's hash; in a view
    above 0 it carries q view changes that justify it."""

    round: int
    view: int
    batch: tuple[bytes, ...]
    aggregate: bytes
    justification: tuple["Signed", ...] = ()

    @property
    def value(self) -> bytes:
        return value_of(self.round, self.batch, self.aggregate)


@_kind("echo")
@dataclass(frozen=True)
class Echo(Statement):
    """PBFT's prepare: the signer recomputed the aggregate and got this value."""

    round: int
    view: int
    value: bytes


@_kind("vote")
@dataclass(frozen=True)
class Vote(Statement):
    """PBFT's commit: the signer saw q echoes for this value and signs it for the certificate."""

    round: int
    view: int
    value: bytes


@_kind("view_change")
@dataclass(frozen=True)
class ViewChange(Statement):
    """The signer leaves for ``view``; ``prepared`` is its highest prepared proof: the proposal it
    echoed and q echoes for its value (empty when it has none)."""

    round: int
    view: int
    prepared: tuple["Signed", ...] = ()


@dataclass(frozen=True)
class Signed:
    """A statement, the index of its signer in the validator list, and the signature."""

    statement: Statement
    signer: int
    signature: bytes

    def to_cbor(self) -> dict:
        return {"s": self.statement.fields(), "i": self.signer, "sig": self.signature}

    def encode(self) -> bytes:
        return encode(self.to_cbor())

    @classmethod
    def decode(cls, data: bytes) -> Signed:
        try:
            return _from_cbor(decode(bytes(data), max_size=MAX_STATEMENT))
        except EncodingError as e:
            raise StatementError(f"statement encoding: {e}") from None


def _from_cbor(value) -> Signed:
    if not isinstance(value, dict) or set(value) != {"s", "i", "sig"}:
        raise StatementError("signed statement: expected the keys s, i, sig")
    body = value["s"]
    if not isinstance(body, dict) or body.get("kind") not in KINDS:
        raise StatementError(f"statement: unknown kind {body.get('kind') if isinstance(body, dict) else body!r}")
    cls = KINDS[body["kind"]]
    names = {f.name for f in fields(cls)}
    if set(body) - {"kind"} != names:
        raise StatementError(f"{body['kind']}: expected the fields {', '.join(sorted(names))}")
    args = {k: tuple(_from_cbor(x) if isinstance(x, dict) else bytes(x) for x in v) if isinstance(v, list) else v
            for k, v in body.items() if k != "kind"}
    try:
        statement = cls(**args)
    except TypeError as e:
        raise StatementError(f"{body['kind']}: {e}") from None
    _check_types(statement)
    if not isinstance(value["i"], int) or isinstance(value["i"], bool) or not isinstance(value["sig"], bytes):
        raise StatementError("signed statement: signer must be an integer and sig bytes")
    return Signed(statement, value["i"], value["sig"])


def _check_types(s: Statement) -> None:
    for name, v in asdict(s).items():
        if name in ("round", "view", "deadline"):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 63:
                raise StatementError(f"{s.KIND}.{name}: not an integer in [0, 2**63)")
        elif name in ("update", "aggregate", "value"):
            if not isinstance(v, bytes) or len(v) != 32:
                raise StatementError(f"{s.KIND}.{name}: not a 32-byte hash")


def sign(statement: Statement, key: SigningKey, signer: int, origin: str) -> Signed:
    return Signed(statement, signer, key.sign(statement.message(origin)))


def verify(signed: Signed, keys: Sequence[VerifyKey], origin: str) -> None:
    """Raise :class:`StatementError` unless ``signed`` is validator ``signer``'s signature."""
    if not 0 <= signed.signer < len(keys):
        raise StatementError(f"{signed.statement.KIND}: signer {signed.signer} is not a validator (0..{len(keys) - 1})")
    try:
        keys[signed.signer].verify(signed.signature, signed.statement.message(origin))
    except SignatureError as e:
        raise StatementError(f"{signed.statement.KIND} from validator {signed.signer}: {e}") from None


def is_valid(signed: Signed, keys: Sequence[VerifyKey], origin: str) -> bool:
    try:
        verify(signed, keys, origin)
    except StatementError:
        return False
    return True
