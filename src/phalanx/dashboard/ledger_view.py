"""The ledger as the dashboard shows it, and the proof bundles its browser verifier checks.

The dashboard reads a run's ``ledger.db`` row by row through :class:`phalanx.ledger.storage.Store`
(read-only), *without* :meth:`phalanx.ledger.Ledger.open`'s checks: a tampered ledger must still be
shown, and its proofs still exported, so that the verifier in the browser, not this server, finds
the tampering. The server is not trusted; what it serves is only material for the verifier.

A **bundle** (``phalanx.ledger/bundle/v1``, JSON) carries what the static verifier page needs to
check one entry with nothing but the user's trusted keys:

- ``receipt``: a C2SP tlog-proof (c2sp.org/tlog-proof@v1, as :class:`phalanx.ledger.Receipt`
  writes it): the entry's bytes, its index, the RFC 9162 inclusion path, and the latest stored
  checkpoint (signed and cosigned), which covers every entry before it;
- ``consistency``: for each other stored checkpoint, its signed note and the RFC 9162
  consistency proof between it and the receipt's checkpoint (older to newer), so the page can
  check that no stored checkpoint contradicts another (nobody rewrote history between them).

The proofs are computed from the stored *entry bytes* (leaf = SHA-256(0x00 || bytes)), not from
the stored leaf column: an edited entry then leads to a root that no signature covers.
"""

from __future__ import annotations

import base64
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phalanx.core.keys import node_id
from phalanx.core.merkle import MerkleTree, leaf_hash
from phalanx.ledger.entries import Entry, EntryError, decode_entry
from phalanx.ledger.note import NoteError, parse_note
from phalanx.ledger.receipt import Receipt
from phalanx.ledger.storage import Store, StorageError
from phalanx.ledger.trace import LedgerIndex, TraceError, trace

BUNDLE_FORMAT = "phalanx.ledger/bundle/v1"
#: Largest ledger the dashboard reads whole (entries are read once and cached per file version).
MAX_LEDGER_BYTES = 2 << 30
#: Most entries one page of the explorer holds.
MAX_PAGE = 500


class LedgerViewError(ValueError):
    """A ledger the dashboard cannot read, or a request it cannot answer; one line."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _short(h: bytes) -> str:
    return h.hex()[:16]


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


@dataclass
class LedgerData:
    """One read of a ledger file: rows, decoded entries (or why not), checkpoints, the index."""

    path: Path
    origin: str
    data: list[bytes]
    entries: list[Entry | None]
    errors: dict[int, str]
    checkpoints: list[tuple[int, int, bytes]]
    index: LedgerIndex
    tree: MerkleTree
    labels: dict[bytes, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ entries

    def label(self, nid: bytes) -> str:
        return self.index.label(nid)

    def describe(self, i: int) -> dict[str, Any]:
        """One entry as the explorer lists it (every string in it is shown as text, never as markup)."""
        entry = self.entries[i]
        if entry is None:
            return {"index": i, "type": "unreadable", "node": None, "seq": None, "round": None,
                    "summary": self.errors.get(i, "unreadable"), "leaf": leaf_hash(self.data[i]).hex()}
        body = entry.body
        nid = self.index.keys.get(entry.key, node_id(entry.key))
        return {"index": i, "type": entry.type, "node": self.label(nid), "node_id": nid.hex(),
                "seq": entry.seq, "round": getattr(body, "round", None), "summary": summarize(self, entry),
                "leaf": leaf_hash(self.data[i]).hex()}

    def page(self, start: int, limit: int, kind: str | None = None) -> dict[str, Any]:
        if start < 0 or limit < 1:
            raise LedgerViewError("start must be 0 or more and limit 1 or more")
        limit = min(limit, MAX_PAGE)
        picked = [i for i in range(len(self.data)) if kind is None or self._type(i) == kind]
        rows = [self.describe(i) for i in picked[start:start + limit]]
        types: dict[str, int] = defaultdict(int)
        for i in range(len(self.data)):
            types[self._type(i)] += 1
        return {"size": len(self.data), "total": len(picked), "start": start, "entries": rows,
                "types": dict(sorted(types.items()))}

    def _type(self, i: int) -> str:
        e = self.entries[i]
        return e.type if e is not None else "unreadable"

    def entry(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self.data):
            raise LedgerViewError(f"no entry {i}: the ledger has {len(self.data)}")
        out = self.describe(i)
        e = self.entries[i]
        if e is not None:
            out["body"] = _jsonable(e.body.model_dump())
            out["key"] = e.key.hex()
        out["bytes"] = len(self.data[i])
        return out

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_list(self) -> list[dict[str, Any]]:
        out = []
        for cid, size, note in self.checkpoints:
            item: dict[str, Any] = {"id": cid, "size": size, "note": note.decode("utf-8", "replace")}
            try:
                parsed = parse_note(note)
                lines = parsed.text.split("\n")
                item["root"] = lines[2] if len(lines) > 2 else None
                item["signatures"] = [{"name": s.name, "key_id": s.key_id.hex(),
                                       "kind": "log" if s.name == self.origin else "cosignature",
                                       "timestamp": int.from_bytes(s.signature[:8], "big")
                                       if len(s.signature) == 72 else None}
                                      for s in parsed.signatures]
            except NoteError as e:
                item["error"] = str(e)
                item["signatures"] = []
            out.append(item)
        return out

    # ------------------------------------------------------------------ proofs

    def bundle(self, i: int) -> dict[str, Any]:
        """Entry ``i`` with its inclusion proof to a stored checkpoint, and consistency proofs."""
        if not 0 <= i < len(self.data):
            raise LedgerViewError(f"no entry {i}: the ledger has {len(self.data)}")
        covering = [c for c in self.checkpoints if c[1] > i]
        if not covering:
            raise LedgerViewError(f"entry {i} is not covered by a stored checkpoint yet")
        cid, size, note = covering[-1]
        size = min(size, self.tree.size)
        receipt = Receipt(index=i, proof=tuple(self.tree.inclusion_proof(i, size)), checkpoint=note,
                          extra=self.data[i])
        consistency = []
        for oid, osize, onote in self.checkpoints:
            if oid == cid or osize == 0:
                continue
            lo, hi = sorted((min(osize, self.tree.size), size))
            proof = self.tree.consistency_proof(lo, hi) if 0 < lo < hi else []
            consistency.append({"checkpoint": onote.decode("utf-8", "replace"), "size": osize,
                                "proof": [b64(h) for h in proof]})
        return {"format": BUNDLE_FORMAT, "origin": self.origin, "index": i, "receipt": receipt.format(),
                "checkpoint_id": cid, "consistency": consistency}

    # ------------------------------------------------------------------ provenance

    def trace(self, model_hex: str, rounds: int = 50) -> dict[str, Any]:
        try:
            model = bytes.fromhex(model_hex)
        except ValueError:
            raise LedgerViewError("model: expected the model's SHA-256 in hex") from None
        if len(model) != 32:
            raise LedgerViewError("model: expected 64 hex digits (a SHA-256)")
        try:
            t = trace(self.index, model)
        except TraceError as e:
            raise LedgerViewError(str(e)) from None
        idx = self.index
        records = []
        for record in t.records:
            if len(records) >= rounds * 64:
                break
            body = record.body

            def who(entry: int) -> str:
                c = idx.commitments.get(entry)
                return idx.label(c.node) if c is not None else f"entry {entry}"

            records.append({"index": record.index, "round": body.round, "rule": body.rule,
                            "by": idx.label(record.node), "result": body.result.hex(),
                            "inputs": [{"entry": x.entry, "node": who(x.entry), "weight": x.weight}
                                       for x in body.inputs],
                            "rejected": [{"entry": x.entry, "node": who(x.entry), "reason": x.reason}
                                         for x in body.rejected]})
        rounds_all, grid = t.matrix()
        return {"model": model.hex(), "records": records, "rounds": t.rounds,
                "matrix": {"rounds": rounds_all, "nodes": [idx.label(n) for n in idx.trainers], "grid": grid},
                "reverted": [{**r, "model": r["model"].hex()} for r in idx.reverted()]}

    def models(self) -> list[dict[str, Any]]:
        """The models the log's aggregate records produced, newest first (what a trace starts from)."""
        seen, out = set(), []
        for record in reversed(self.index.records):
            h = record.body.result
            if h in seen:
                continue
            seen.add(h)
            out.append({"model": h.hex(), "round": record.body.round, "by": self.label(record.node),
                        "index": record.index})
            if len(out) >= 200:
                break
        return out

    # ------------------------------------------------------------------ a node's history

    def node_history(self, label: str) -> dict[str, Any]:
        """Everything the log says about the node labelled ``label`` (``node3``, ``server``, ...)."""
        nid = next((n for n, lab in self.index.labels.items() if lab == label), None)
        if nid is None:
            return {"found": False}
        out: dict[str, Any] = {"found": True, "node_id": nid.hex(), "registration": None, "dataset": None,
                               "updates": [], "rejections": [], "quarantine": [], "reputation": [],
                               "equivocations": [], "privacy": []}
        mine = {i for i, c in self.index.commitments.items() if c.node == nid}
        for i, e in enumerate(self.entries):
            if e is None:
                continue
            body = e.body
            owner = self.index.keys.get(e.key, node_id(e.key))
            if owner == nid and e.type == "node_registration":
                out["registration"] = {"index": i, "software": body.software, "admission": body.admission.kind,
                                       "roles": list(body.roles)}
            elif owner == nid and e.type == "dataset_commitment":
                out["dataset"] = {"index": i, "name": body.name, "root": body.root.hex(),
                                  "description": body.description}
            elif i in mine:
                out["updates"].append({"index": i, "round": body.round, "base": _short(body.base_model)})
            elif e.type == "aggregate_record":
                for x in body.rejected:
                    if x.entry in mine:
                        out["rejections"].append({"index": i, "round": body.round, "entry": x.entry,
                                                  "reason": x.reason, "by": self.label(owner)})
            elif e.type in ("quarantine", "reputation", "privacy_budget") and getattr(body, "node", None) == nid:
                key = {"quarantine": "quarantine", "reputation": "reputation", "privacy_budget": "privacy"}[e.type]
                item = {"index": i, "round": body.round, "by": self.label(owner)}
                if e.type == "quarantine":
                    item.update(action=body.action, reason=body.reason, evidence=list(body.evidence))
                elif e.type == "reputation":
                    item.update(score=body.score, reason=body.reason)
                else:
                    item.update(epsilon=body.total_epsilon)
                out[key].append(item)
            elif e.type == "update_equivocation" and body.node == nid:
                out["equivocations"].append({"index": i, "round": body.round, "by": self.label(owner)})
        out["updates"] = out["updates"][-500:]
        return out


def summarize(view: LedgerData, entry: Entry) -> str:
    """One line about an entry, from its own fields (untrusted text is kept as it is: the page
    shows it as text)."""
    b = entry.body
    t = entry.type
    if t == "node_registration":
        return f"joins as {', '.join(b.roles)}, software {b.software}, admission {b.admission.kind}"
    if t == "dataset_commitment":
        return f"dataset {b.name}: root {_short(b.root)}" + (f" ({b.description})" if b.description else "")
    if t == "update_commitment":
        return f"update for round {b.round} on model {_short(b.base_model)}"
    if t == "aggregate_record":
        rejected = "; ".join(f"{x.entry}: {x.reason}" for x in b.rejected[:5])
        return (f"{b.rule} of {len(b.inputs)} updates -> model {_short(b.result)}"
                + (f"; rejected {len(b.rejected)} ({rejected})" if b.rejected else ""))
    if t == "quarantine":
        return f"{b.action} {view.label(b.node)} from round {b.round}: {b.reason}"
    if t == "reputation":
        return f"{view.label(b.node)} scores {b.score:.3f}" + (f": {b.reason}" if b.reason else "")
    if t == "privacy_budget":
        return f"{b.mechanism}: epsilon {b.total_epsilon:.3g} spent in total"
    if t == "update_equivocation":
        return f"{view.label(b.node)} sent two different updates in round {b.round}"
    if t == "rollback":
        return f"rollback to round {b.round}'s model {_short(b.model)}: {b.reason}"
    if t == "governance_proposal":
        return f"proposal {b.action}: {b.title}"
    if t == "governance_vote":
        return f"vote {b.choice} on proposal {b.proposal}"
    if t == "software_release":
        return f"release {b.name} {b.version}"
    return t.replace("_", " ")


_CACHE: dict[str, tuple[tuple, LedgerData]] = {}


def _stamp(path: Path) -> tuple:
    st = path.stat()
    wal = path.with_name(path.name + "-wal")
    return (st.st_size, st.st_mtime_ns, wal.stat().st_mtime_ns if wal.exists() else None)


def load(path: Path) -> LedgerData:
    """Read a ledger file (cached until it changes), tolerating damage: bad rows are listed."""
    try:
        stamp = _stamp(path)
    except OSError as e:
        raise LedgerViewError(f"{path.name}: cannot read ({e.strerror or e})") from None
    if stamp[0] > MAX_LEDGER_BYTES:
        raise LedgerViewError(f"{path.name}: {stamp[0]} bytes is more than the {MAX_LEDGER_BYTES} this reads")
    key = os.path.realpath(path)
    cached = _CACHE.get(key)
    if cached and cached[0] == stamp:
        return cached[1]
    try:
        store = Store(path, readonly=True)
    except StorageError as e:
        raise LedgerViewError(str(e)) from None
    try:
        meta = store.read_meta()
        origin = meta.get("origin", b"").decode("utf-8", "replace")
        data, entries, errors = [], [], {}
        for row in store.rows():
            if row.idx != len(data):
                raise LedgerViewError(f"{path.name}: entry rows are not numbered 0..n-1 (row {row.idx})")
            data.append(row.data)
            try:
                entries.append(decode_entry(row.data))
            except EntryError as e:
                entries.append(None)
                errors[row.idx] = str(e)
        checkpoints = store.checkpoint_rows()
    except StorageError as e:
        raise LedgerViewError(str(e)) from None
    finally:
        store.close()
    tree = MerkleTree()
    tree.extend(data)
    index = LedgerIndex.build((i, e) for i, e in enumerate(entries) if e is not None)
    view = LedgerData(path, origin, data, entries, errors, checkpoints, index, tree)
    _CACHE[key] = (stamp, view)
    if len(_CACHE) > 16:
        _CACHE.pop(next(iter(_CACHE)))
    return view


def bundle_file(ledger: str | Path, index: int) -> dict[str, Any]:
    """``phalanx ledger bundle``: the bundle of entry ``index`` of the ledger file ``ledger``."""
    path = Path(ledger)
    if not path.is_file():
        raise LedgerViewError(f"{ledger}: no such ledger file")
    return load(path).bundle(index)


__all__ = ["BUNDLE_FORMAT", "LedgerData", "LedgerViewError", "bundle_file", "load", "summarize"]
