"""Typed ledger entries: one canonical encoding each, signed by their submitter.

An entry is a CBOR map (:mod:`phalanx.core.encoding`, deterministic and strictly decoded)::

    {"v": 1, "type": "update_commitment", "key": <32-byte Ed25519 public key>,
     "seq": <the submitter's counter>, "body": {...fields of the type...}, "sig": <64 bytes>}

- The **leaf** of the log is ``leaf_hash(encoding)`` (RFC 9162), so the signature, the key and
  every field are under the tree.
- The **signature** is the submitter's Ed25519 signature over a domain-separated message::

      "phalanx.ledger/entry/v1\\n" || origin || "\\n" || encode({v, type, key, seq, body})

  The origin (the log's name, as in its checkpoints) binds an entry to one log, so it cannot be
  replayed into another; ``seq`` strictly increases per key, so it cannot be replayed into the
  same one (the log refuses a seq it has seen, and the audit checks the order).
- The **submitter** is named by its key; its node ID is SHA-256 of the key
  (:func:`phalanx.core.keys.node_id`). Which keys may submit what (registered, not revoked, not
  rotated away) is the audit's business (:mod:`phalanx.ledger.audit`).

Each type is a frozen pydantic model with strict field types, so a malformed entry fails with an
error naming the field. Decoding is exact: a body that validates only after coercion (an int
where a float belongs) is refused, so every entry has one encoding.

References to earlier entries are their log indices (``Index``); hashes are 32 bytes (``Hash``):
model weights and updates live outside the log, addressed by SHA-256 (:mod:`.blobs`), and an
update is logged as a *hiding* commitment SHA-256(salt || bytes) (:mod:`phalanx.core.commitment`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Union

import pydantic
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from phalanx.core.encoding import EncodingError, decode, encode, encode_validated
from phalanx.core.keys import KeyFormatError, SignatureError, SigningKey, VerifyKey, node_id
from phalanx.core.merkle import leaf_hash

ENTRY_VERSION = 1
ENTRY_DOMAIN = b"phalanx.ledger/entry/v1\n"
ROTATION_DOMAIN = b"phalanx.ledger/key-rotation/v1\n"
ENVELOPE_DOMAIN = b"phalanx.ledger/update-envelope/v1\n"
MAX_ENTRY_SIZE = 256 * 1024


class EntryError(ValueError):
    """An entry that is malformed, of an unknown type, or whose signature does not verify."""


# ---------------------------------------------------------------------------- field types

def _no_control(value: str) -> str:
    if any(ord(c) < 0x20 and c != "\n" or ord(c) == 0x7F for c in value):
        raise ValueError("control characters are not allowed")
    return value


Hash = Annotated[bytes, Field(min_length=32, max_length=32, description="a SHA-256 digest")]
PublicKey = Annotated[bytes, Field(min_length=32, max_length=32, description="a raw Ed25519 public key")]
Signature = Annotated[bytes, Field(min_length=64, max_length=64)]
Index = Annotated[int, Field(ge=0, lt=1 << 63, description="the log index of an earlier entry")]
Round = Annotated[int, Field(ge=0, lt=1 << 63)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:/+-]+$")]
Text = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_no_control)]
Note = Annotated[str, Field(max_length=4096), AfterValidator(_no_control)]
ParamKey = Annotated[str, Field(min_length=1, max_length=23, pattern=r"^[A-Za-z0-9_.-]+$")]
def _exact_float(value: Any) -> Any:
    if type(value) is int:  # strict pydantic would turn 1 into 1.0: two encodings for one value
        raise ValueError("expected a float (write 1.0, not 1)")
    return value


#: A float that must arrive as a float, so that decoding never coerces.
Float = Annotated[float, BeforeValidator(_exact_float)]
Scalar = Union[bool, int, float, str, None]
Params = Annotated[dict[ParamKey, Scalar], Field(max_length=64)]
NonNegative = Annotated[Float, Field(ge=0)]
Probability = Annotated[Float, Field(ge=0, le=1)]
Refs = Annotated[list[Index], Field(max_length=4096)]


def _unique(items: list, what: str) -> None:
    if len(set(items)) != len(items):
        raise ValueError(f"{what} lists an entry twice")


class Body(BaseModel):
    """Fields of one entry type. ``TYPE`` is the name written in the entry."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)
    TYPE: ClassVar[str]


TYPES: dict[str, type[Body]] = {}


def entry_type(name: str):
    """Register a body class under the entry type ``name``."""

    def register(cls: type[Body]) -> type[Body]:
        if name in TYPES:
            raise ValueError(f"entry type {name!r} is already registered")
        cls.TYPE = name
        TYPES[name] = cls
        return cls

    return register


# ---------------------------------------------------------------------------- the types

class Admission(BaseModel):
    model_config = Body.model_config
    kind: Name = Field(description="how admission was earned: invite, proof_of_work, stake, operator, ...")
    evidence: Annotated[bytes, Field(max_length=65536)] = Field(
        b"", description="the evidence itself (an invite signature, a work nonce, ...)")


@entry_type("node_registration")
class NodeRegistration(Body):
    """A node joins: its key (the entry's own key, which signs it), software and admission."""

    software: Name = Field(description="software version the node runs")
    admission: Admission
    roles: Annotated[list[Literal["trainer", "aggregator", "validator", "witness"]],
                     Field(min_length=1, max_length=4)] = ["trainer"]

    @model_validator(mode="after")
    def _roles_unique(self):
        if len(set(self.roles)) != len(self.roles):
            raise ValueError("roles lists a role twice")
        return self


@entry_type("dataset_commitment")
class DatasetCommitment(Body):
    """A node commits to its dataset: a (salted) Merkle root over its samples, and their count,
    either in the clear (``samples``) or hidden with the label histogram under a salt (``stats``,
    :mod:`phalanx.data.commitment`), since a public count defeats a hidden claimed count."""

    name: Name
    root: Hash
    samples: Annotated[int, Field(ge=0, lt=1 << 63)] | None = Field(None, description="the sample count, if public")
    stats: Hash | None = Field(None, description="hiding commitment to the sample count and label histogram")
    description: Note = ""

    @model_validator(mode="after")
    def _count_given(self):
        if self.samples is None and self.stats is None:
            raise ValueError("give the sample count (samples) or a commitment to it (stats)")
        return self


@entry_type("update_commitment")
class UpdateCommitment(Body):
    """A node commits to its update for a round before anyone aggregates it."""

    round: Round
    base_model: Hash = Field(description="SHA-256 of the model the update was computed from")
    update: Hash = Field(description="hiding commitment SHA-256(salt || update bytes)")
    dataset: Hash = Field(description="root of the node's dataset commitment")
    protocol: Name = Field(description="protocol version")
    samples: Hash = Field(description="hiding commitment to the claimed sample count")
    weight: NonNegative | None = Field(None, description="the weight actually used, when known")


class AggregateInput(BaseModel):
    model_config = Body.model_config
    entry: Index = Field(description="the update commitment that was used")
    weight: NonNegative


class Rejection(BaseModel):
    model_config = Body.model_config
    entry: Index = Field(description="the update commitment that was rejected")
    reason: Text


@entry_type("aggregate_record")
class AggregateRecord(Body):
    """What an aggregator did in a round: inputs, rejections, rule, result."""

    round: Round
    rule: Name
    params: Params = {}
    inputs: Annotated[list[AggregateInput], Field(max_length=100_000)]
    rejected: Annotated[list[Rejection], Field(max_length=100_000)] = []
    result: Hash = Field(description="SHA-256 of the resulting model (the released one under central DP)")
    pre_noise: Hash | None = Field(None, description="central DP: SHA-256 of the aggregate before noise")
    released: Hash | None = Field(None, description="central DP: SHA-256 of the released (noised) aggregate")

    @model_validator(mode="after")
    def _consistent(self):
        used = [i.entry for i in self.inputs]
        dropped = [r.entry for r in self.rejected]
        _unique(used, "inputs")
        _unique(dropped, "rejected")
        both = sorted(set(used) & set(dropped))
        if both:
            raise ValueError(f"entries {both} are both used and rejected")
        if (self.pre_noise is None) != (self.released is None):
            raise ValueError("pre_noise and released come together (central DP) or not at all")
        return self


@entry_type("update_equivocation")
class UpdateEquivocation(Body):
    """Evidence, logged by a receiver, that a node sent it an update other than the one it committed.

    Every message carries the sender's signed envelope (:func:`envelope_message`) over the hiding
    commitment of what it holds, under the salt the sender gave its receivers. An envelope over
    another commitment than the sender's logged one for the same round is two signed statements
    that cannot both be true: anyone can re-check it from the log alone (:mod:`.evidence`).
    """

    round: Round
    node: Hash = Field(description="the sender's node ID")
    commitment: Index = Field(description="the sender's update commitment of the round")
    received: Hash = Field(description="hiding commitment to the update received, under the sender's salt")
    envelope: Signature = Field(description="the sender's signature over the envelope of what it sent")


@entry_type("quarantine")
class Quarantine(Body):
    """A node is quarantined (or released), with the entries that are the evidence."""

    node: Hash = Field(description="node ID")
    round: Round
    action: Literal["quarantine", "release"]
    reason: Text
    evidence: Refs = []


@entry_type("reputation")
class Reputation(Body):
    """A reputation score for a node after a round, with its evidence."""

    node: Hash
    round: Round
    score: Float
    reason: Note = ""
    evidence: Refs = []


@entry_type("privacy_budget")
class PrivacyBudget(Body):
    """Privacy budget spent in a round, and the running total, per node or for the whole run."""

    round: Round
    node: Hash | None = Field(None, description="node ID, or None for central DP on the aggregate")
    mechanism: Name
    accountant: Name
    epsilon: NonNegative
    delta: Probability
    total_epsilon: NonNegative
    total_delta: Probability


@entry_type("governance_proposal")
class GovernanceProposal(Body):
    action: Name = Field(description="what would change: min_version, quarantine, rollback, set_param, ...")
    params: Params = {}
    title: Text
    deadline: Round = Field(description="the last round in which votes count")


@entry_type("governance_vote")
class GovernanceVote(Body):
    proposal: Index
    choice: Literal["yes", "no", "abstain"]


@entry_type("governance_activation")
class GovernanceActivation(Body):
    """A proposal takes effect, citing the votes that carried it."""

    proposal: Index
    votes: Refs
    round: Round = Field(description="the round from which it applies")

    @model_validator(mode="after")
    def _votes_unique(self):
        _unique(self.votes, "votes")
        return self


@entry_type("software_release")
class SoftwareRelease(Body):
    name: Name
    version: Name
    artifact: Hash = Field(description="SHA-256 of the released artifact")
    notes: Note = ""


@entry_type("key_rotation")
class KeyRotation(Body):
    """The entry's key (the old one) hands over to ``new_key``; ``proof`` is the new key's
    signature over the rotation message, so no one rotates to a key they do not hold."""

    new_key: PublicKey
    proof: Signature


@entry_type("key_revocation")
class KeyRevocation(Body):
    """A node's key stops being valid from this entry on (signed by the node or by governance)."""

    node: Hash
    reason: Text


@entry_type("rollback")
class Rollback(Body):
    """A governance-approved return to a prior model; the engine resumes from it."""

    activation: Index = Field(description="the governance activation that approved it")
    round: Round = Field(description="the round whose model is restored")
    model: Hash = Field(description="SHA-256 of the restored model")
    checkpoint: Annotated[int, Field(ge=1, lt=1 << 63)] = Field(
        description="size of the checkpoint that covered that model's aggregate record")
    reason: Text


@entry_type("round_certificate")
class RoundCertificate(Body):
    """Committee mode: q validators signed the round's value (:mod:`phalanx.engine.committee`).

    ``value`` is SHA-256 over the round, the batch and the aggregate; each vote is its validator's
    signature over the committee's canonical vote statement (round, view, value), so the
    certificate is re-checked from the log and the validators' registered keys alone.
    """

    round: Round
    view: Round
    batch: Annotated[list[Hash], Field(max_length=100_000)] = Field(description="the update commitments, in order")
    aggregate: Hash = Field(description="SHA-256 of the recomputed aggregate")
    value: Hash
    signers: Annotated[list[Hash], Field(min_length=1, max_length=1024)] = Field(description="the voters' node IDs")
    votes: Annotated[list[Signature], Field(min_length=1, max_length=1024)]

    @model_validator(mode="after")
    def _one_vote_each(self):
        _unique(self.signers, "signers")
        if len(self.signers) != len(self.votes):
            raise ValueError(f"{len(self.signers)} signers but {len(self.votes)} votes")
        return self


@entry_type("committee_evidence")
class CommitteeEvidence(Body):
    """Committee mode: signed statements that cannot all be honest (double signing, an equivocating
    or censoring sequencer, conflicting certificates), each in the committee's canonical encoding."""

    kind: Literal["double_sign", "equivocating_proposal", "wrong_aggregate", "missed_promise",
                  "conflicting_certificates"]
    round: Round
    node: Hash | None = Field(None, description="the culprit's node ID (None: the committee, beyond f faults)")
    statements: Annotated[list[Annotated[bytes, Field(max_length=65536)]], Field(min_length=1, max_length=4096)]


# ---------------------------------------------------------------------------- signed entries

def _signed_message(origin: str, unsigned: bytes) -> bytes:
    return ENTRY_DOMAIN + origin.encode() + b"\n" + unsigned


def envelope_message(origin: str, round_: int, receiver: bytes, update: bytes) -> bytes:
    """What a sender signs with each update it sends: the log, the round, the receiving node's ID
    and the hiding commitment to the bytes sent (see :class:`UpdateEquivocation`)."""
    return ENVELOPE_DOMAIN + origin.encode() + b"\n" + encode({"round": round_, "receiver": bytes(receiver),
                                                               "update": bytes(update)})


def rotation_message(origin: str, old_key: bytes, new_key: bytes) -> bytes:
    """What the new key signs in a :class:`KeyRotation`."""
    return ROTATION_DOMAIN + origin.encode() + b"\n" + bytes(old_key) + bytes(new_key)


@dataclass(frozen=True)
class Entry:
    """A signed entry. Build with :func:`sign_entry`; read with :func:`decode_entry`."""

    body: Body
    key: bytes
    seq: int
    signature: bytes
    encoding: bytes = field(repr=False)
    unsigned: bytes = field(repr=False, compare=False, default=b"")  # encode({v, type, key, seq, body})

    @property
    def type(self) -> str:
        return self.body.TYPE

    @property
    def node_id(self) -> bytes:
        return node_id(self.key)

    @property
    def leaf_hash(self) -> bytes:
        return leaf_hash(self.encoding)

    def signed_message(self, origin: str) -> bytes:
        unsigned = self.unsigned or encode({"v": ENTRY_VERSION, "type": self.type, "key": self.key,
                                            "seq": self.seq, "body": self.body.model_dump()})
        return _signed_message(origin, unsigned)

    def verify(self, origin: str) -> None:
        """Check the submitter's signature (for the log named ``origin``); raise :class:`EntryError`."""
        try:
            VerifyKey(self.key).verify(self.signature, self.signed_message(origin))
        except (SignatureError, KeyFormatError) as e:
            raise EntryError(f"{self.type} from {self.key.hex()[:16]}... seq {self.seq}: {e}") from None
        if isinstance(self.body, KeyRotation):
            try:
                VerifyKey(self.body.new_key).verify(self.body.proof,
                                                    rotation_message(origin, self.key, self.body.new_key))
            except (SignatureError, KeyFormatError) as e:
                raise EntryError(f"key_rotation from {self.key.hex()[:16]}...: the new key's proof "
                                 f"does not verify ({e})") from None


def sign_entry(body: Body, key: SigningKey, seq: int, origin: str) -> Entry:
    """Sign ``body`` as submitter ``key`` with sequence number ``seq``, for the log ``origin``."""
    if not isinstance(body, Body) or type(body).TYPE not in TYPES:
        raise EntryError(f"not an entry body: {type(body).__name__}")
    if not 0 <= seq < 1 << 63:
        raise EntryError(f"seq {seq} is not in [0, 2**63)")
    fields = {"v": ENTRY_VERSION, "type": body.TYPE, "key": key.public.raw, "seq": seq, "body": body.model_dump()}
    unsigned = encode(fields)
    signature = key.sign(_signed_message(origin, unsigned))
    encoding = encode({**fields, "sig": signature})
    return Entry(body=body, key=key.public.raw, seq=seq, signature=signature, encoding=encoding, unsigned=unsigned)


def rotate_key(old: SigningKey, new: SigningKey, seq: int, origin: str) -> Entry:
    """A :class:`KeyRotation` entry from ``old`` to ``new``, with the new key's proof."""
    proof = new.sign(rotation_message(origin, old.public.raw, new.public.raw))
    return sign_entry(KeyRotation(new_key=new.public.raw, proof=proof), old, seq, origin)


def _pydantic_message(e: pydantic.ValidationError, prefix: str) -> str:
    err = e.errors(include_url=False)[0]
    err["msg"] = err["msg"].removeprefix("Value error, ")
    where = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
    value = err.get("input")
    shown = repr(value) if not isinstance(value, (dict, list, bytes)) else type(value).__name__
    if isinstance(value, bytes):
        shown = f"{len(value)} bytes"
    return f"{where}: {err['msg'].lower()} (got {shown[:80]})"


def make_body(type_name: str, fields: dict[str, Any]) -> Body:
    """Validate ``fields`` as the body of entry type ``type_name``; errors name the field."""
    cls = TYPES.get(type_name)
    if cls is None:
        raise EntryError(f"type: unknown entry type {type_name!r}; known: {', '.join(sorted(TYPES))}")
    try:
        return cls.model_validate(fields)
    except pydantic.ValidationError as e:
        raise EntryError(f"{type_name}: {_pydantic_message(e, 'body')}") from None


_HEADER = {"v", "type", "key", "seq", "body", "sig"}
#: In the canonical map the keys come in the order v, key, seq, sig, body, type (shorter first,
#: then bytewise); the "sig" pair is 0x63 "sig" 0x58 0x40 and 64 bytes.
_SIG_PAIR = b"\x63sig\x58\x40"


def _unsigned_part(data: bytes, seq: int) -> bytes:
    """The encoding of the entry without its signature, cut from the canonical bytes: a 5-entry
    map header, then everything but the "sig" pair (which sits right after v, key and seq)."""
    start = 1 + 3 + (4 + 2 + 32) + 4 + len(encode_validated(seq))
    end = start + len(_SIG_PAIR) + 64
    if data[:1] != b"\xa6" or data[start:start + len(_SIG_PAIR)] != _SIG_PAIR:
        raise EntryError("entry: the signature is not where the canonical layout puts it")
    return b"\xa5" + data[1:start] + data[end:]


def decode_entry(data: bytes) -> Entry:
    """Parse an entry's canonical encoding, exactly; raise :class:`EntryError` naming what is wrong.

    The signature is *not* checked here (it needs the log's origin): call :meth:`Entry.verify`.
    """
    data = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        value = decode(data, max_size=MAX_ENTRY_SIZE)
    except EncodingError as e:
        raise EntryError(f"entry encoding: {e}") from None
    if not isinstance(value, dict):
        raise EntryError(f"entry: expected a map, got {type(value).__name__}")
    missing, extra = sorted(_HEADER - value.keys()), sorted(value.keys() - _HEADER)
    if missing or extra:
        raise EntryError(f"entry: {'missing ' + ', '.join(missing) if missing else ''}"
                         f"{'; ' if missing and extra else ''}{'unknown ' + ', '.join(extra) if extra else ''}")
    if value["v"] != ENTRY_VERSION or isinstance(value["v"], bool):
        raise EntryError(f"v: unsupported entry version {value['v']!r} (this reads {ENTRY_VERSION})")
    if not isinstance(value["type"], str):
        raise EntryError("type: not text")
    key, seq, sig, body = value["key"], value["seq"], value["sig"], value["body"]
    if not isinstance(key, bytes) or len(key) != 32:
        raise EntryError("key: not a 32-byte Ed25519 public key")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 1 << 63:
        raise EntryError(f"seq: not an integer in [0, 2**63) (got {seq!r})")
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise EntryError("sig: not a 64-byte Ed25519 signature")
    if not isinstance(body, dict):
        raise EntryError(f"body: expected a map, got {type(body).__name__}")
    model = make_body(value["type"], body)
    dumped = model.model_dump()
    # exact: the model took every field as given (floats arrive as floats, see Float), so the only
    # difference left to find is a default the encoding omitted
    if dumped != body:
        changed = next((k for k, v in dumped.items() if k not in body or v != body[k]), "?")
        raise EntryError(f"{value['type']}: body.{changed}: not in canonical form (a default omitted)")
    return Entry(body=model, key=key, seq=seq, signature=sig, encoding=data, unsigned=_unsigned_part(data, seq))

