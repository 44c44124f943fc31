"""Committee mode in a deployed node: the round of :mod:`phalanx.engine.committee` over the network.

The protocol core (:class:`~phalanx.engine.committee.Validator`, PBFT's normal case and view
change, Castro and Liskov, OSDI 1999, sections 4.2 to 4.4) is pure; this module is its transport
and clock in a node daemon, and does for real processes what
:class:`phalanx.engine.committee_round.CommitteeRound` does in the simulator. The validators
are the genesis members with the role ``validator``, in genesis order (their index is the
statements' signer index, their identity keys sign them); n of them, q = floor(2n/3) + 1.
Statements are signed for the committee's origin, ``<network>/committee``
(:func:`~phalanx.engine.committee.ledger.committee_origin`). **Round r**, on every node::

    train from the certified model; the update is x_r - model (a delta, as in the star); commit
    send it to every validator (the ``update`` endpoint: each logs the commitment on arrival)
    ask the round's sequencer (view 0) for a signed inclusion promise (``promise``), keep it,
    and hand it to every validator (``committee``), so that no validator depends on the sequencer
    validators: one Validator per open round, fed by the ``committee`` endpoint; the sequencer
      proposes the batch (the commitments it holds, in node-ID order) once the updates are in;
      each validator recomputes the aggregate with the simulation's Recomputer (CPU, one
      thread, batch order, the round's seed) and echoes, votes; q votes are the certificate;
      a proposal is relayed once (so an equivocating sequencer's pair reaches every validator);
      no certificate within the round timeout: timeout() (view change, next sequencer)
    certified: log the certificate (certificate_entry) and any evidence (evidence_entry); the
      aggregate becomes the model (model + certified delta), logged as the round's aggregate
      record; checkpoint the log with its peers as witnesses and show the cosigned note to the
      other validators, whose :class:`~phalanx.engine.committee.CheckpointGate` accepts it only
      with q signatures (the log's and q - 1 validators' cosignatures) and keeps any
      conflicting pair as evidence (``evidence/checkpoint_equivocation-*.txt``)
    non-validators: wait for a validator to hand them the certificate and the aggregate; they
      check it (check_certificate_entry, and the aggregate's digest) before taking it
    promises whose deadline passed with every round certified and the update in none: a
      missed promise, logged as evidence; the promiser is rotated out of the sequencer schedule

No process but the validators' is needed for a round to certify, and any f of them may crash.

Byzantine behaviours for tests (``committee_fault`` in ``node.yaml``, honoured on validators):
``censor``, the simulation's name (:class:`phalanx.network.topology.Committee`): as view-0
sequencer, drop one update it promised; ``equivocate``: as view-0 sequencer, sign a second
proposal (another batch) for half the validators, and a second checkpoint of its log (another
tree at the same size) for some of its witnesses; ``wrong_hash``, the simulation's behaviour of
that name: every digest it proposes, echoes or votes on is wrong, so none of its statements counts
toward a quorum (it still takes the certified model, to keep serving).
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import TYPE_CHECKING

import torch

from phalanx.core.keys import VerifyKey
from phalanx.core.merkle import MerkleTree
from phalanx.core.seeding import generator
from phalanx.engine.committee import (
    Certificate,
    CheckpointGate,
    Promise,
    PromiseBook,
    Proposal,
    Recomputer,
    Signed,
    StatementError,
    Validator,
    digest,
    promise,
    quorum,
    sequencer,
    sign,
    verify,
)
from phalanx.engine.committee.ledger import certificate_entry, check_certificate_entry, committee_origin, evidence_entry
from phalanx.engine.pipeline import declared_f
from phalanx.engine.provenance.private import tensor_view
from phalanx.ledger import AggregateInput, AggregateRecord, Checkpoint, Policy, sign_checkpoint
from phalanx.ledger.policy import Group
from phalanx.network.client import PeerError, RemoteWitness
from phalanx.network.envelope import EnvelopeError, Opened
from phalanx.network.messages import make, read

if TYPE_CHECKING:
    from phalanx.engine.node.runtime import Node

KEEP_ROUNDS = 3  # validators of past rounds kept to answer laggards' view changes


class CommitteeDriver:
    """A node's part in committee mode (see the module docstring); the node calls :meth:`round`,
    and its API hands :meth:`on_committee`, :meth:`on_promise` and :meth:`received` what arrives."""

    def __init__(self, node: Node):
        self.node = node
        g = node.genesis
        self.members = [m for m in g.members if "validator" in m.roles]
        self.nodes = [bytes.fromhex(m.node) for m in self.members]
        self.keys = [VerifyKey(bytes.fromhex(m.key)) for m in self.members]
        self.index = self.nodes.index(node.me) if node.me in self.nodes else None
        self.n, self.q = len(self.members), quorum(len(self.members))
        self.origin = committee_origin(node.origin)
        self.delay = int((g.task.get("topology") or {}).get("merge_delay", 1))
        self.fault = node.config.committee_fault if self.index is not None else "none"
        self.lock = threading.RLock()
        self.eligible = list(range(self.n))
        self.book = PromiseBook(self.keys, self.origin)
        self.open: dict[int, Validator] = {}
        self.revealed: dict[int, dict[bytes, torch.Tensor]] = {}
        self.pending: dict[int, list[Signed]] = {}
        self.relayed: set[tuple[int, int, bytes]] = set()
        self.delivered: dict[int, tuple[Certificate, torch.Tensor]] = {}
        self.logged: set[tuple[str, int | None, int]] = set()
        self.rotated_out: list[int] = []
        self.certified_rounds = 0
        self.own: tuple[int, bytes, int] = (0, b"", -1)  # (round, commitment, index in this log)
        self.ready: set[int] = set()  # rounds whose updates are in: the sequencer may propose
        self.censored_rounds: set[int] = set()
        self.equivocated: set[int] = set()
        self.gates = {g.origin(bytes.fromhex(m.node)): CheckpointGate(self._policy(m), stall_after=3)
                      for m in self.members if m.node != node.me.hex() and self.n > 1}

    def _policy(self, m) -> Policy:
        """Validator ``m``'s checkpoints are final with q signatures: its log's and q - 1 of the
        other validators' cosignatures (two forks, each so signed, share an honest witness)."""
        g = self.node.genesis
        others = {g.witness_name(bytes.fromhex(o.node)): g.witness_verifier(o) for o in self.members if o is not m}
        group = Group("validators", max(1, self.q - 1), tuple(others))
        return Policy([g.log_verifier(m)], others, {group.name: group}, group.name)

    def name(self, index: int) -> str:
        return self.members[index].name

    def status(self) -> dict:
        with self.lock:
            nxt = self.node.round + 1
            return {"validator": self.index, "validators": self.n, "quorum": self.q,
                    "sequencer": self.name(sequencer(nxt, 0, self.eligible)),
                    "eligible": [self.name(i) for i in self.eligible],
                    "rotated_out": [self.name(i) for i in self.rotated_out],
                    "certified_rounds": self.certified_rounds, "evidence": len(self.logged)}

    # ================================================================== the round

    def round(self, r: int) -> dict:
        node = self.node
        t0 = time.time()
        base = node.model
        update, body, salt, count_salt = node._star_update(r, base)
        (_, own_index), = node.log.submit([body])
        with self.lock:
            eligible = list(self.eligible)
            self.revealed.setdefault(r, {})[body.update] = update
            self.own = (r, body.update, own_index)
            if self.index is not None:
                self.open[r] = Validator(self.index, node.keys.identity, self.keys, self.origin, r,
                                         self._recompute(r), eligible)
                for old in [k for k in self.open if k <= r - KEEP_ROUNDS]:
                    del self.open[old]
            pending = self.pending.pop(r, [])
        self._feed(pending)
        validators = self._validator_peers()
        sent = sum(node.pool.map(lambda p: node._send_update(p, r, update, body, salt, count_salt), validators))
        self._ask_promise(r, sequencer(r, 0, eligible), body.update)
        if self.index is not None:
            got = node._wait(r, {p.node for p in node._peers()}, t0 + node.timeout, close=False)
            cert, aggregate = self._certify(r)
            received = len(got)
        else:
            cert, aggregate = self._await_delivery(r, t0 + node.timeout * (len(eligible) + 2))
            received = int(cert is not None)
        info = {"sent": sent, "received": received, "rows": 0, "rejected_rows": 0, "censored": int(r in self.censored_rounds)}
        if cert is None:
            node._event("availability", f"round {r}: no certificate; keeps its model")
            return {**info, "aggregated": False, "availability": 0.0, "certified": False}
        self._adopt(r, cert, aggregate, base)
        return {**info, "aggregated": True, "availability": 1.0, "certified": True, "rows": len(cert.batch),
                "view": cert.view, "sequencer": self.name(cert.proposal.signer),
                "evidence": len(self.logged), "rotated_out": [self.name(i) for i in self.rotated_out]}

    def _validator_peers(self):
        table = self.node.table
        return [p for n in self.nodes if n != self.node.me and (p := table.get(n)) is not None and p.handshaken]

    def _f(self, k: int) -> int:
        t = self.node.task
        return int(declared_f(torch.tensor([k]), t.declared_f, t.declared_share)[0])

    def _recompute(self, r: int):
        """The simulation's Recomputer over the rows revealed to this node, f declared for the
        batch's size, the generator seeded as the simulation seeds the round's aggregation."""
        rows = self.revealed.setdefault(r, {})
        seed = int(generator(self.node.task.seed, "round", r, "aggregate").initial_seed())
        by_size: dict[int, Recomputer] = {}

        def recompute(batch):
            rc = by_size.setdefault(len(batch), Recomputer(rows, self.node.task.chain, self._f(len(batch)), seed))
            try:
                return rc(batch)
            except (ValueError, RuntimeError):  # the chain refuses this many rows: nothing to sign
                return None

        recompute.results = lambda batch: by_size[len(batch)].results[tuple(batch)]
        if self.fault != "wrong_hash":
            return recompute

        def wrong(batch):  # a Byzantine validator: the right rows, a wrong digest signed
            right = recompute(batch)
            return None if right is None else hashlib.sha256(b"wrong" + right).digest()

        wrong.results = recompute.results
        return wrong

    def _batch(self, r: int) -> list[bytes]:
        """The commitments this node holds for round ``r`` (finite rows), in node-ID order."""
        node = self.node
        mine = [(node.me, self.own[1])] if self.own[0] == r else []
        theirs = [(s, g.entry.body.update) for s, g in node.inbox.get(r, {}).items() if g.finite]
        return [h for _, h in sorted(mine + theirs)]

    def _certify(self, r: int) -> tuple[Certificate | None, torch.Tensor | None]:
        node = self.node
        v = self.open[r]
        self.ready.add(r)
        self._try_propose(r)
        deadline = time.time() + node.timeout
        with node.cond:
            while not node.stopping.is_set() and v.certificate is None:
                if time.time() > deadline:
                    if v.view >= len(v.eligible):
                        break  # every sequencer had its view: the round is unavailable
                    with self.lock:
                        out = v.timeout()
                    node._event("view_change", f"round {r}: no certificate in view {v.view - 1}; "
                                               f"view {v.view}, sequencer {self.name(v.sequencer_of(v.view))}")
                    self._broadcast(r, out)
                    self._try_propose(r)
                    deadline = time.time() + node.timeout
                node.cond.wait(0.1)
        cert = v.certificate
        if cert is None:
            return None, None
        # certified by q others' votes: this node may not have recomputed it yet (a row late)
        until = time.time() + node.timeout
        with node.cond:
            while (digest_ := v.recompute(cert.batch)) is None and time.time() < until and not node.stopping.is_set():
                node.cond.wait(0.1)
        if digest_ != cert.aggregate:
            missing = [h.hex()[:12] for h in cert.batch if h not in self.revealed.get(r, {})]
            node._event("availability", f"round {r}: certified, but this node cannot recompute the aggregate "
                                        f"(missing rows: {missing or 'none'}; digest {'none' if digest_ is None else 'differs'})")
            return None, None
        return cert, v.recompute.results(cert.batch)

    def _try_propose(self, r: int) -> None:
        with self.lock:
            v = self.open.get(r)
            if v is None or r not in self.ready or not v.is_sequencer or v.view in v.proposed or v.certificate is not None:
                return
            batch = self._batch(r)
            view = v.view
            if self.fault == "censor" and view == 0:
                victim = next((h for h in batch if h != self.own[1]), None)
                if victim is not None:  # promised (or about to be), and dropped
                    batch = [h for h in batch if h != victim]
                    self.censored_rounds.add(r)
            out = v.propose(batch)
            second = None
            if self.fault == "equivocate" and view == 0 and out and len(batch) > 1:
                other = batch[:-1]
                aggregate = v.recompute(other)
                if aggregate is not None:
                    second = sign(Proposal(r, 0, tuple(other), aggregate), self.node.keys.identity, self.index,
                                  self.origin)
                    self.equivocated.add(r)
        if out:
            self.node._event("proposal", f"round {r} view {view}: proposed {len(batch)} updates")
        if second is None:
            self._broadcast(r, out)
            return
        peers = self._validator_peers()
        half = max(1, len(peers) // 2)
        self._broadcast(r, out, to=peers[:half])
        self._broadcast(r, [second], to=peers[half:])

    def _await_delivery(self, r: int, until: float) -> tuple[Certificate | None, torch.Tensor | None]:
        node = self.node
        with node.cond:
            while not node.stopping.is_set() and r not in self.delivered and time.time() < until:
                node.cond.wait(0.25)
        got = self.delivered.get(r)
        return (None, None) if got is None else got

    def _adopt(self, r: int, cert: Certificate, aggregate: torch.Tensor, base: torch.Tensor) -> None:
        """Log the certificate, new evidence and the round's aggregate record; take the model."""
        node = self.node
        self.book.certified(cert)
        with self.lock:
            found = [e for v in self.open.values() for e in v.evidence] + self.book.missed()
            fresh = []
            for e in found:
                if (e.kind, e.culprit, e.round) not in self.logged:
                    self.logged.add((e.kind, e.culprit, e.round))
                    fresh.append(e)
            out = [e for e in fresh if e.kind == "missed_promise" and e.culprit in self.eligible]
            for e in out:
                if len(self.eligible) > 1:
                    self.eligible.remove(e.culprit)
                    self.rotated_out.append(e.culprit)
            self.certified_rounds += 1
            for old in [k for k in self.revealed if k < r]:
                del self.revealed[old]
            self.ready = {k for k in self.ready if k >= r}
        for e in out:
            node._event("rotated_out", f"validator {self.name(e.culprit)} missed its inclusion promise of "
                                       f"round {e.round}: rotated out of the sequencer schedule")
        node.log.submit([certificate_entry(cert, self.keys)] + [evidence_entry(e, self.keys) for e in fresh])
        for e in fresh:
            culprit = "the committee" if e.culprit is None else self.name(e.culprit)
            node._event("evidence", f"{e.kind} by {culprit} in round {e.round}: logged")
        model = (base + aggregate.to(base.dtype)).contiguous()
        result = node.log.keep(model)
        node.public_models.add(result)
        index_of = {}
        if self.own[0] == r:
            index_of[self.own[1]] = self.own[2]
        for g in node.inbox.get(r, {}).values():
            index_of[g.entry.body.update] = g.index
        inputs = [AggregateInput(entry=index_of[h], weight=1.0) for h in cert.batch if h in index_of]
        params = {"topology": "committee", "view": cert.view, "f": self._f(len(cert.batch)), "rows": len(cert.batch),
                  "sequencer": self.name(cert.proposal.signer), "device": "cpu", "threads": 1,
                  **node._chain_params()}
        node.log.submit([AggregateRecord(round=r, rule=node._rule(), params=params, inputs=inputs, result=result)])
        node.log.flush()
        node.model = model
        if self.index is not None:
            self._deliver_to_others(r, cert, aggregate)
            node.background.submit(self._checkpoint, r)

    # ================================================================== talking

    def _broadcast(self, r: int, statements: list[Signed], to=None, notes: list[bytes] = ()) -> None:
        if not statements and not notes:
            return
        body = make("committee", round=r, statements=[s.encode() for s in statements], notes=list(notes),
                    aggregate=b"")
        for p in self._validator_peers() if to is None else to:
            self.node.pool.submit(self._send, p, body)

    def _send(self, peer, body: bytes) -> None:
        try:
            self.node._call(peer, "committee", body, timeout=10.0)
        except PeerError as e:
            self.node._event("refused", f"{peer.name} refused a committee message: {e}")

    def _deliver_to_others(self, r: int, cert: Certificate, aggregate: torch.Tensor) -> None:
        """Hand the certificate and the aggregate to the nodes that are not validators."""
        others = [p for p in self.node.table.all() if p.handshaken and p.node not in self.nodes]
        if not others:
            return
        body = make("committee", round=r, statements=[s.encode() for s in (cert.proposal, *cert.votes)], notes=[],
                    aggregate=tensor_view(aggregate.to(torch.float32).contiguous()).tobytes())
        for p in others:
            self.node.pool.submit(self._send, p, body)

    def _ask_promise(self, r: int, seq: int, update: bytes) -> None:
        """The sequencer's inclusion promise for this node's update, kept and shown to every validator."""
        node = self.node
        try:
            if seq == self.index:
                signed = self._sign_promise(r, update)
            else:
                peer = node.table.get(self.nodes[seq])
                data = node._call(peer, "promise", make("promise", round=r, update=update), timeout=10.0) \
                    if peer is not None else None
                if data is None:
                    return
                signed = Signed.decode(read("promise_reply", data, 1 << 16)["statement"])
            st = signed.statement
            if not isinstance(st, Promise) or st.update != update or st.round != r or signed.signer != seq:
                raise StatementError("the reply is not the sequencer's promise for this update")
            self.book.hold(signed)
        except (PeerError, StatementError, EnvelopeError) as e:
            node._event("refused", f"round {r}: no inclusion promise from {self.name(seq)}: {e}")
            return
        self._broadcast(r, [signed])

    def _sign_promise(self, r: int, update: bytes) -> Signed:
        return promise(self.node.keys.identity, self.index, self.origin, r, update, self.delay)

    # ================================================================== the API's side

    def received(self, r: int, got) -> None:
        """An update arrived (logged, in the node's inbox): reveal its row, and echo a proposal
        that was waiting for it."""
        if not got.finite:
            return
        with self.lock:
            self.revealed.setdefault(r, {})[got.entry.body.update] = got.model
            v = self.open.get(r)
            waiting = v.proposals.get(v.view) if v is not None and v.echoed is None else None
        if waiting is not None:
            self._feed([waiting])
        with self.node.cond:
            self.node.cond.notify_all()

    def on_promise(self, m: Opened) -> bytes:
        msg = read("promise", m.body, 1024)
        r = msg["round"]
        with self.lock:
            seq = sequencer(r, 0, self.eligible)
            if self.index != seq:
                raise EnvelopeError(421, f"misdirected: the sequencer of round {r} is {self.name(seq)}", m.sender)
            if msg["update"] not in self.revealed.get(r, {}):
                raise EnvelopeError(404, f"no valid round-{r} update with that commitment reached this sequencer",
                                    m.sender)
            signed = self._sign_promise(r, msg["update"])
        return make("promise_reply", statement=signed.encode())

    def on_committee(self, m: Opened) -> bytes:
        msg = read("committee", m.body, self.node.max_body)
        try:
            statements = [Signed.decode(s) for s in msg["statements"]]
        except StatementError as e:
            raise EnvelopeError(400, f"committee: {e}", m.sender) from None
        if msg["aggregate"]:
            why = self._take_delivery(msg["round"], statements, msg["aggregate"])
            if why:
                raise EnvelopeError(422, f"committee: {why}", m.sender)
            return make("ok_reply", ok=True, why="")
        if self.index is None:
            raise EnvelopeError(421, "misdirected: this node is not a validator", m.sender)
        for note in msg["notes"]:
            self._offer(note)
        promises = [s for s in statements if isinstance(s.statement, Promise)]
        for p in promises:
            try:
                self.book.hold(p)
            except StatementError as e:
                raise EnvelopeError(400, f"committee: {e}", m.sender) from None
        self._feed([s for s in statements if not isinstance(s.statement, Promise)])
        return make("ok_reply", ok=True, why="")

    def _feed(self, statements: list[Signed]) -> None:
        """Hand statements to their round's validator (buffer those of rounds not open yet);
        broadcast what it answers, relay a proposal once, propose if this node's turn came."""
        out: dict[int, list[Signed]] = {}
        relay: dict[int, list[Signed]] = {}
        rounds = set()
        with self.lock:
            for s in statements:
                r = s.statement.round
                v = self.open.get(r)
                if v is None:
                    if self.node.round < r <= self.node.round + 3 and len(self.pending.get(r, [])) < 10_000:
                        self.pending.setdefault(r, []).append(s)
                    continue
                out.setdefault(r, []).extend(v.receive(s))
                rounds.add(r)
                st = s.statement
                if isinstance(st, Proposal) and (r, st.view, st.value) not in self.relayed and relayable(v, s):
                    self.relayed.add((r, st.view, st.value))
                    relay.setdefault(r, []).append(s)
        for r in rounds:
            self._broadcast(r, out.get(r, []) + relay.get(r, []))
            self._try_propose(r)
        with self.node.cond:
            self.node.cond.notify_all()

    def _take_delivery(self, r: int, statements: list[Signed], data: bytes) -> str | None:
        """A non-validator takes a certified aggregate only if q validators' votes sign it."""
        if self.index is not None or not statements:
            return "only a node that is not a validator takes certified aggregates from validators"
        cert = Certificate(statements[0], tuple(statements[1:]))
        try:
            cert.verify(self.keys, self.origin)
            check_certificate_entry(certificate_entry(cert, self.keys), self.keys, self.origin)
        except (StatementError, ValueError) as e:
            return f"the certificate does not hold: {e}"
        if cert.round != r or len(data) != 4 * self.node.task.dim:
            return f"not round {r}'s certificate, or not {self.node.task.dim} float32 values"
        aggregate = torch.frombuffer(bytearray(data), dtype=torch.float32)
        if digest(aggregate) != cert.aggregate:
            return "the aggregate does not hash to the certified digest"
        with self.node.cond:
            self.delivered.setdefault(r, (cert, aggregate))
            self.node.cond.notify_all()
        return None

    # ================================================================== checkpoints

    def _offer(self, note: bytes) -> None:
        """Another validator's cosigned checkpoint: final only with q signatures; a fork is kept."""
        from phalanx.ledger.note import parse_note

        try:
            origin = parse_note(note).text.split("\n", 1)[0]
        except Exception:  # not a note: nothing to judge
            return
        gate = self.gates.get(origin)
        if gate is None:
            return
        with self.lock:
            before = len(gate.evidence)
            gate.offer(note, now=self.node.round)
            fresh = gate.evidence[before:]
        for pair in fresh:
            self.node._evidence("checkpoint_equivocation", pair.to_json())

    def _witnesses(self) -> list[RemoteWitness]:
        node, g = self.node, self.node.genesis
        out = []
        for m in self.members:
            peer = node.table.get(bytes.fromhex(m.node))
            if m.node != node.me.hex() and peer is not None and peer.up:
                out.append(RemoteWitness(g.witness_name(bytes.fromhex(m.node)), g.witness_verifier(m).vkey, peer.url,
                                         node.transport.http))
        return out

    def _checkpoint(self, r: int) -> None:
        """Checkpoint this node's log, cosigned by the validators; show the note to them."""
        node = self.node
        try:
            if r in self.equivocated:
                notes = self._fork_checkpoint()
            else:
                published = node.log.checkpoint(node._witnesses())
                notes = [published.signed.format()]
        except Exception as e:  # witnesses are other parties; the log stays as it is
            node._event("checkpoint", f"checkpoint failed: {type(e).__name__}: {e}")
            return
        self._broadcast(r, [], notes=notes)

    def _fork_checkpoint(self) -> list[bytes]:
        """Tests only (``equivocate``): two signed trees of one size, the true one for some
        witnesses and a forged one (its last leaf replaced) for the others."""
        node = self.node
        signer = node.keys.log_signer(node.origin)
        with node.log.lock:
            leaves = [leaf for _, leaf in node.log.ledger.store.leaves()]
        true, fork = MerkleTree(), MerkleTree()
        true.append_leaf_hashes(leaves)
        fork.append_leaf_hashes(leaves[:-1] + [bytes(32)])
        witnesses = self._witnesses()
        half = max(1, len(witnesses) // 2)
        notes = []
        for tree, group in ((fork, witnesses[:half]), (true, witnesses[half:])):
            note = sign_checkpoint(Checkpoint(node.origin, tree.size, tree.root()), signer)
            for w in group:
                try:
                    note = note.with_signatures(self._cosign(w, tree, note))
                except Exception as e:  # an honest witness refuses a fork of what it cosigned
                    node._event("checkpoint", f"witness {w.name} refused: {e}")
            notes.append(note.format())
        return notes

    @staticmethod
    def _cosign(w: RemoteWitness, tree: MerkleTree, note):
        from phalanx.ledger.witness import Conflict

        data = note.format()
        try:
            return w.add_checkpoint(0, [], data)
        except Conflict as e:
            if e.latest_size is None or e.latest_size > tree.size:
                raise
            old = e.latest_size
            return w.add_checkpoint(old, tree.consistency_proof(old, tree.size) if 0 < old < tree.size else [], data)


def relayable(v: Validator, s: Signed) -> bool:
    """Whether a proposal is passed on to the other validators: only one that its view's sequencer
    really signed for this round, so that a forged or misattributed proposal from any peer is
    never amplified to the whole committee (the validator refuses it anyway)."""
    if not isinstance(s.statement, Proposal) or s.statement.round != v.round:
        return False
    try:
        verify(s, v.keys, v.origin)
    except StatementError:
        return False
    return v.sequencer_of(s.statement.view) == s.signer
