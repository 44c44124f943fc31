"""The bodies nodes exchange inside envelopes: canonical CBOR maps, each read against a schema.

Every body is a map of known fields with exact types (:func:`read`): a missing field, an unknown
one or a wrong type is refused with one line naming the field (HTTP 400), before any handler
looks at it. Model weights travel as raw little-endian float32 bytes inside the map.

=============  ===============================================================================
endpoint       body (request -> reply)
=============  ===============================================================================
handshake      hello + ``entries`` (its registration and dataset commitment, signed for the
               recipient's log) -> hello + ``seq`` (the sender's next sequence number there)
update         ``round, model, base, salt, count, count_salt, released, entry`` (an update
               commitment signed for the recipient's log; ``released``: the sender's noised count
               for weighting noised, 0 otherwise) -> ``ok, seq, why``
model          (star) ``round, model, record, index, note, proof, old, consistency`` -> ``ok``
checkpoint     (star) another node's copy of the server's checkpoint ``note`` -> ``ok, why``
submit         ``entry`` (e.g. a governance proposal or vote for the recipient's log) -> ``index``
proposals      {} -> ``items``: every proposal in the recipient's log (index, action, params, deadline)
seq            {} -> ``seq``
catchup        ``old`` (the size of the recipient's log the sender last witnessed) -> ``round,
               note, index, record, proof, consistency``
blob           ``hash`` -> ``data`` (a model the recipient's log names)
peers          ``records`` (signed self-descriptions) -> ``records``
committee      (committee) ``round, statements, notes, aggregate``: signed committee statements
               (:mod:`phalanx.engine.committee.statements`), cosigned checkpoints of validators'
               logs, and (to a node that is not a validator) the certified aggregate -> ``ok``
promise        (committee) ``round, update`` (a commitment the sequencer received) -> ``statement``:
               its signed inclusion promise
=============  ===============================================================================
"""

from __future__ import annotations

from typing import Any

from phalanx.core.encoding import EncodingError, decode, encode
from phalanx.network.envelope import EnvelopeError

#: field type tags: b32 (32 bytes), bytes, int (>= 0), str, bool, list[bytes], list[dict], dict, float
SCHEMAS: dict[str, dict[str, str]] = {
    "hello": {"network": "str", "genesis": "b32", "software": "str", "proto": "int", "url": "str",
              "roles": "list[str]", "round": "int", "log": "str", "witness": "str",
              "entries": "list[bytes]", "seq": "int", "mode": "str"},
    "update": {"round": "int", "model": "bytes", "base": "b32", "salt": "b32", "count": "int",
               "count_salt": "b32", "released": "float", "entry": "bytes"},
    "update_reply": {"ok": "bool", "seq": "int", "why": "str"},
    "model": {"round": "int", "model": "bytes", "record": "bytes", "index": "int", "note": "bytes",
              "proof": "list[bytes]", "old": "int", "consistency": "list[bytes]"},
    "ok_reply": {"ok": "bool", "why": "str"},
    "checkpoint": {"note": "bytes"},
    "submit": {"entry": "bytes"},
    "submit_reply": {"index": "int"},
    "empty": {},
    "seq_reply": {"seq": "int"},
    "proposals_reply": {"items": "list[dict]"},
    "catchup": {"old": "int"},
    "catchup_reply": {"round": "int", "note": "bytes", "index": "int", "record": "bytes",
                      "proof": "list[bytes]", "consistency": "list[bytes]"},
    "blob": {"hash": "b32"},
    "blob_reply": {"data": "bytes"},
    "peers": {"records": "list[bytes]"},
    "committee": {"round": "int", "statements": "list[bytes]", "notes": "list[bytes]", "aggregate": "bytes"},
    "promise": {"round": "int", "update": "b32"},
    "promise_reply": {"statement": "bytes"},
}


def _ok(value: Any, tag: str) -> bool:
    if tag == "b32":
        return isinstance(value, bytes) and len(value) == 32
    if tag == "bytes":
        return isinstance(value, bytes)
    if tag == "int":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if tag == "str":
        return isinstance(value, str) and len(value) <= 4096
    if tag == "bool":
        return isinstance(value, bool)
    if tag == "float":
        return isinstance(value, float)
    if tag == "dict":
        return isinstance(value, dict)
    if tag.startswith("list["):
        inner = tag[5:-1]
        return isinstance(value, list) and len(value) <= 100_000 and all(_ok(v, inner) for v in value)
    raise ValueError(f"unknown field type {tag}")


def make(kind: str, **fields: Any) -> bytes:
    """Encode a body of ``kind``; the fields must match its schema exactly."""
    schema = SCHEMAS[kind]
    if set(fields) != set(schema):
        raise ValueError(f"{kind}: fields {sorted(fields)} are not {sorted(schema)}")
    for name, tag in schema.items():
        if not _ok(fields[name], tag):
            raise ValueError(f"{kind}.{name}: not a {tag}")
    return encode(fields)


def read(kind: str, data: bytes, max_size: int) -> dict[str, Any]:
    """Decode and check a body of ``kind``; raise :class:`EnvelopeError` (400) naming the field."""
    try:
        value = decode(data, max_size=max_size) if data else None
    except EncodingError as e:
        raise EnvelopeError(400, f"malformed {kind} body: {e}") from None
    schema = SCHEMAS[kind]
    if not isinstance(value, dict):
        raise EnvelopeError(400, f"malformed {kind} body: not a map")
    missing, extra = sorted(set(schema) - set(value)), sorted(set(value) - set(schema))
    if missing or extra:
        raise EnvelopeError(400, f"malformed {kind} body: missing {missing}, unknown {extra}")
    for name, tag in schema.items():
        if not _ok(value[name], tag):
            raise EnvelopeError(400, f"malformed {kind} body: {name} is not a {tag}")
    return value
