"""A deployed node: its round driver, and the handlers its HTTP API calls.

One :class:`Node` per process (``phalanx node start DIR``). The API (:mod:`phalanx.network.app`)
opens every envelope and hands the plaintext to :meth:`Node.handle`; the round driver runs in
its own thread. No other process is needed for a round to complete: every node keeps its own
round clock, and a round ends for a node when every live peer's message has arrived or its
timeout has passed, whichever comes first.

**Gossip round r** (every node, :meth:`Node._gossip_round`)::

    governance: activate what passed (min version, quarantine, rollback); halt if too old
    train from the current model -> x_r; commit: an update commitment in its own log
      (base model hash, SHA-256(salt || x_r), dataset root, hidden claimed count)
    send x_r to every live registered peer (or, with node.yaml's sampling, to the peers of its
      view: Basalt, Brahms or push-pull, phalanx.network.view; a peer that sends this node its
      update without being in the view gets this node's back), with the salt and the same
      commitment signed for the peer's log (a malicious node first waits for honest messages
      and crafts its own)
    collect peers' round-r messages until all live peers (of the view) sent or the timeout passed
      (each checked on arrival: signature, round, the commitment opens, shape; then its
      commitment is logged at once; non-finite rows are kept but rejected, as in the simulation)
    aggregate: the defense chain over its own row and the received rows, relative to its
      model (phalanx.engine.pipeline, the simulation's own step), declared f per the task
    log: its aggregate record (inputs, rejections, rule, result);
      checkpoint, cosigned by its peers as witnesses (in the background)

**Star round r** (:meth:`Node._star_client_round`, :meth:`Node._star_server_round`): nodes
send updates to the server, which aggregates, logs, checkpoints and sends each node the new
model with its aggregate record, an inclusion proof and a consistency proof; each node checks
them, and gossips the server's checkpoint to the other nodes, so a server that shows two nodes
two different trees (a split view) is caught by the pair of signed checkpoints.

**Restart.** A node reopens its log (SQLite survives ``kill -9``), restores its last model from
its kept blobs, and if its peers are ahead it catches up: it asks a peer for a freshly signed
checkpoint of that peer's log and a consistency proof from the size it last witnessed (its
witness state survives too), checks the peer's latest aggregate record by inclusion proof, then
the model by its hash, and logs a ``catchup`` record naming where its model came from.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import phalanx
from phalanx.attacks import AttackView
from phalanx.core.commitment import count_commitment, new_salt
from phalanx.core.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from phalanx.core.seeding import generator
from phalanx.data.commitment import commit_dataset
from phalanx.defenses import cap_claims
from phalanx.engine.node.log import NodeLog
from phalanx.engine.node.task import Task
from phalanx.engine.pipeline import aggregate_relative, declared_f
from phalanx.engine.provenance.private import tensor_commitment, tensor_hash, tensor_view
from phalanx.privacy.counts import noised_count
from phalanx.governance import ForkError, ForkSchedule, Governance, Minimum
from phalanx.ledger import (
    Admission,
    AggregateInput,
    AggregateRecord,
    Checkpoint,
    DatasetCommitment,
    EntryError,
    GovernanceActivation,
    NodeRegistration,
    Policy,
    Quarantine,
    RejectedEntry,
    Rejection,
    UpdateCommitment,
    decode_entry,
    open_checkpoint,
    sign_checkpoint,
    sign_entry,
)
from phalanx.core.encoding import EncodingError, decode
from phalanx.ledger.equivocation import EvidenceError, same_size_equivocation, verify_equivocation
from phalanx.ledger.note import SIG_ED25519, Verifier
from phalanx.ledger.witness import FileWitnessState, Witness, WitnessError
from phalanx.network import admission as admission_rules
from phalanx.network.client import PeerError, PeerRefused, PeerUnreachable, RemoteWitness, Transport
from phalanx.network.config import Genesis, NodeConfig, NodeKeys
from phalanx.network.envelope import EnvelopeError, Fork, Identity, NonceWindow, Opened
from phalanx.network.messages import make, read
from phalanx.network.peers import AllPeers, Peer, PeerTable, open_record, sign_record
from phalanx.network.view import SampledPeers

PROTOCOL_NAME = {"gossip": "phalanx-net-gossip/1", "star": "phalanx-net-star/1",
                 "committee": "phalanx-net-committee/1"}
SUBMITTABLE = {"governance_proposal", "governance_vote", "key_rotation", "key_revocation"}
log = logging.getLogger("phalanx.node")


class Halt(Exception):
    """The node stops: ``str()`` says why (e.g. its software is below the minimum: upgrade)."""


@dataclass
class Received:
    """A peer's message for a round, checked on arrival."""

    sender: bytes
    model: torch.Tensor
    entry: Any  # the signed update commitment for this log
    finite: bool
    count: int
    released: float = 0.0  # its noised count (weighting noised; phalanx.privacy.counts)
    index: int = -1  # where this log holds the commitment (logged on arrival)


class Node:
    """A node's state, handlers and round driver (see the module docstring)."""

    def __init__(self, folder: Path, config: NodeConfig, keys: NodeKeys, genesis: Genesis, task: Task,
                 software: str = phalanx.__version__):
        self.folder, self.config, self.keys, self.genesis, self.task = Path(folder), config, keys, genesis, task
        self.me = keys.node
        self.genesis_digest = genesis.digest()  # the genesis file is fixed for the node's life
        self._released: float | None = None  # weighting noised: the count this node released (kept on disk)
        self.member = genesis.member(self.me)
        self.name = config.name
        self.software = config.software or software
        self.protocol = genesis.protocol
        self.mode = genesis.mode
        self.is_server = self.member is not None and "aggregator" in self.member.roles
        server = genesis.server()
        self.server = bytes.fromhex(server.node) if server is not None else None
        self.max_body = int(config.max_body_mb * (1 << 20))
        self.window_ms = int(config.window_s * 1000)
        self._nonces = NonceWindow(self.window_ms)
        self.origin = genesis.origin(self.me)
        self.rounds = genesis.rounds
        self.timeout = genesis.round_timeout_s
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.counters: Counter[str] = Counter()
        self.events: list[dict] = []
        self.halted: str | None = None
        self.stopping = threading.Event()  # close() was called
        self.driver_done = threading.Event()  # the round driver has returned (done, halted or failed)
        self.round = 0
        self.closed = 0  # the last round whose messages were taken for aggregation
        self.witness_sizes: dict[bytes, int] = {}  # star server: the size each node last accepted
        self.inbox: dict[int, dict[bytes, Received]] = {}
        self.models: dict[int, Opened] = {}  # star client: the server's model message per round
        self.server_notes: dict[int, bytes] = {}  # star client: the server's checkpoint per size
        self.server_last: tuple[int, bytes] | None = None  # star client: the last (size, root) accepted
        self.evidence_found: list[dict] = []
        self.public_models: set[bytes] = set()
        self.sampler = self._sampler()
        self.table = PeerTable(self.me)
        self._replies: dict[int, tuple[set[bytes], Any]] = {}  # round -> (peers sent to, send to one more)
        self._replies_lock = threading.Lock()
        self._rejected_total = 0
        self._build_log()
        self._build_peers()
        self.transport = Transport(self.identity, self.fork, encryption=config.encryption, max_body=self.max_body,
                                   timeout=max(30.0, 2 * self.timeout), window_ms=self.window_ms)
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="send")
        self.background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self.metrics_file = self.folder / "metrics.jsonl"
        self.t_start = time.time()
        self.committee = None
        if self.mode == "committee":  # its round and handlers: phalanx.engine.node.committee
            from phalanx.engine.node.committee import CommitteeDriver

            self.committee = CommitteeDriver(self)

    # ================================================================== set-up

    def _sampler(self):
        """Every live peer, or a view drawn by the sampler ``node.yaml`` names (gossip only)."""
        spec = self.config.sampling
        if spec is None or self.mode != "gossip":
            return AllPeers()
        return SampledPeers(spec.name, spec.view, self.me + self.keys.identity.public.raw)

    def identity(self) -> Identity:
        return Identity(self.me, self.keys.identity, self.keys.xkey)

    def _schedule(self) -> ForkSchedule:
        return ForkSchedule(self.genesis_digest, self.gov.upgrades())

    def fork(self) -> Fork:
        h, nxt = self._schedule().fork_id(self.round)
        return Fork(self.protocol, h, nxt)

    def _members(self):
        return [m for m in self.genesis.members if m.node != self.me.hex()]

    def _build_log(self) -> None:
        g, keys = self.genesis, self.keys
        me = self.member
        log_key = g.log_verifier(me) if me is not None else Verifier(self.origin, SIG_ED25519, keys.log.public.raw)
        if log_key.public_key != keys.log.public.raw:
            raise Halt(f"{self.name}: this node's log key is not the one the genesis names for node "
                       f"{self.me.hex()[:16]}...")
        witnesses = {g.witness_name(bytes.fromhex(m.node)): g.witness_verifier(m)
                     for m in self._members() if "witness" in m.roles}
        policy = Policy.byzantine([log_key], witnesses)
        self.log, created = NodeLog.open_or_create(self.config.ledger, self.folder, keys.log_signer(self.origin),
                                                   policy, keys.identity, self._genesis_entries,
                                                   keep_updates=self.config.keep_updates)
        self.witness = Witness(keys.witness_signer(g.witness_name(self.me)),
                               {g.origin(bytes.fromhex(m.node)): [g.log_verifier(m)] for m in self._members()},
                               state=FileWitnessState(self.folder / "witness.json"))
        if created and self.task.shards is not None:
            o = self._dataset_opening
            self.log.opening(o.root, o.salt, {"dataset": self.name})
            self.log.opening(o.stats, o.stats_salt, {"count": o.count, "histogram": list(o.histogram)})
        self.gov = Governance(g.validators(), Minimum(1, g.software, g.protocol))
        self.model = self.task.initial.clone()
        for index, entry in self.log.entries():
            self.gov.observe(index, entry, self._signer_node(entry))
            if entry.type == "aggregate_record" and entry.node_id == keys.identity.node_id:
                self.public_models.add(entry.body.result)
        last = self.log.last_record(keys.identity.node_id)
        if last is not None and last[1].rule != "initial":
            index, record = last
            self.round = record.round
            self.model = self.log.model(record.result)
        self.gov.round = self.round
        if not created:
            self._event("restart", f"reopened its log ({self.log.size} entries) at round {self.round}")

    def _signer_node(self, entry) -> bytes | None:
        return self.log.ledger.state.node_of(entry.key)

    def _registration(self) -> NodeRegistration:
        roles = list(self.member.roles) if self.member is not None else ["witness"]
        return NodeRegistration(software=f"phalanx-{self.software}", admission=self._admission(), roles=roles)

    def _admission(self) -> Admission:
        """How this node earned its place: the genesis, or the evidence the network's policy asks for."""
        if self.member is not None:
            return Admission(kind="genesis")
        if not hasattr(self, "_admission_cache"):
            policy = self.genesis.admission
            if self.config.admission_evidence:
                try:
                    fields = decode(bytes.fromhex(self.config.admission_evidence))
                    self._admission_cache = Admission(kind=fields["kind"], evidence=fields["evidence"])
                except (EncodingError, KeyError, TypeError, ValueError) as e:
                    raise Halt(f"{self.name}: admission_evidence is not {{kind, evidence}} in CBOR hex ({e})") from None
            elif policy.name == "proof_of_work":
                self._admission_cache = admission_rules.proof_of_work(self.genesis.network,
                                                                      self.keys.identity.public.raw, policy.bits)
            else:
                self._admission_cache = Admission(kind=policy.name)
        return self._admission_cache

    def _dataset(self) -> DatasetCommitment | None:
        task = self.task
        if task.shards is None:
            return None
        if not hasattr(self, "_dataset_body"):
            rows = task.shards.index[0, :task.samples]
            salt, stats_salt = new_salt(), new_salt()
            opening = commit_dataset(task.shards.x[rows], task.shards.y[rows], task.num_classes, salt, stats_salt)
            self._dataset_opening = opening
            self._dataset_body = DatasetCommitment(name=self.name, root=opening.root, stats=opening.stats)
        return self._dataset_body

    def _genesis_entries(self) -> list:
        items: list = [self._registration()]
        dataset = self._dataset()
        if dataset is not None:
            items.append(dataset)
        d = self.task.dim
        self._initial_hash = tensor_hash(self.task.initial)
        items.append(AggregateRecord(round=0, rule="initial", inputs=[], result=self._initial_hash,
                                     params={"topology": "node", "mode": self.mode, "dtype": "float32", "d": d,
                                             "model": self.task.model_name, "nodes": len(self.genesis.members)}))
        return items

    def _build_peers(self) -> None:
        for line in self.config.peers:
            url, node, xk = line.split("#")
            self.table.add(Peer(node=bytes.fromhex(node), url=url, xk=bytes.fromhex(xk)))
        for m in self._members():
            node = bytes.fromhex(m.node)
            current = self.log.current_key(node)
            peer = Peer(node=node, url=m.url, xk=bytes.fromhex(m.xk), key=current or bytes.fromhex(m.key),
                        name=m.name, roles=tuple(m.roles), registered=self.log.registered(node))
            self.table.add(peer)
        if self.log.ledger.size and self.task.shards is not None:
            # the dataset commitment this log holds for this node: what its updates must name
            for _, entry in self.log.entries():
                if entry.type == "dataset_commitment" and entry.node_id == self.keys.identity.node_id:
                    self._dataset_root = entry.body.root
                    self._dataset_body = entry.body
        if not hasattr(self, "_dataset_root"):
            body = self._dataset()
            self._dataset_root = body.root if body is not None else b"\0" * 32

    # ================================================================== the API's side

    def nonces(self) -> NonceWindow:
        return self._nonces

    def sender_key(self, node: bytes) -> bytes | None:
        if self.log.revoked(node):
            raise EnvelopeError(403, f"node {node.hex()[:16]}...'s key was revoked", node)
        evicted = self.gov.evicted.get(node)
        if evicted is not None and self.round + 1 >= evicted:
            raise EnvelopeError(403, f"node {node.hex()[:16]}... was evicted from round {evicted}", node)
        return self.log.current_key(node)

    def refused(self, endpoint: str, status: int, reason: str, sender: bytes | None) -> None:
        self.counters[f"refused_{status}"] += 1
        peer = self.table.get(sender) if sender is not None else None
        if peer is not None and status in (400, 422):  # malformed or false: an invalid message
            self.sampler.invalid(peer)
        line = {"time": round(time.time(), 3), "endpoint": endpoint, "status": status, "reason": reason,
                "sender": sender.hex() if sender else None}
        with self.lock:
            with (self.folder / "evidence.jsonl").open("a") as f:
                f.write(json.dumps(line) + "\n")

    def handle(self, endpoint: str, message: Opened) -> bytes:
        self.counters[f"in_{endpoint}"] += 1
        self.table.seen(message.sender)
        handler = getattr(self, f"_on_{endpoint}")
        return handler(message)

    def add_checkpoint(self, body: bytes) -> bytes:
        self.counters["in_add_checkpoint"] += 1
        return self.witness.add_checkpoint_request(body)

    # -- handshake -------------------------------------------------------------------------
    def hello(self, peer: Peer | None) -> dict:
        entries = []
        if peer is not None:
            reg = [self._registration()]
            if self.task.shards is not None:
                reg.append(self._dataset())
            origin = self.genesis.origin(peer.node)
            entries = [sign_entry(b, self.keys.identity, i, origin).encoding for i, b in enumerate(reg)]
        return {"network": self.genesis.network, "genesis": self.genesis_digest, "software": self.software,
                "proto": self.protocol, "url": self.config.advertised, "roles": list(self._registration().roles),
                "round": self.round, "log": self.keys.log.public.raw.hex(), "witness": self.keys.witness.public.raw.hex(),
                "entries": entries, "seq": 0, "mode": self.mode}

    def _check_hello(self, hello: dict, fork: Fork | None, who: str) -> None:
        if hello["network"] != self.genesis.network or hello["genesis"] != self.genesis_digest:
            raise EnvelopeError(403, f"{who} is on network {hello['network'][:40]!r} with another genesis")
        why = self.gov.refuse_version(hello["software"], hello["proto"], self.round + 1)
        if why is not None:
            raise EnvelopeError(426, f"{who}: {why}")
        if fork is not None:
            try:
                self._schedule().check(self.round, fork.hash, fork.next)
            except ForkError as e:
                raise EnvelopeError(426, f"{who}: {e}") from None

    def _on_handshake(self, m: Opened) -> bytes:
        hello = read("hello", m.body, self.max_body)
        sender = m.sender
        self._check_hello(hello, m.fork, f"node {sender.hex()[:16]}...")
        member = self.genesis.member(sender)
        if not self.log.registered(sender):
            self._register(sender, hello, member is not None)
        peer = self.table.add(Peer(node=sender, url=hello["url"], xk=m.header["xk"], name=member.name if member else ""))
        peer.key, peer.xk, peer.software, peer.roles = m.header["key"], m.header["xk"], hello["software"], tuple(hello["roles"])
        peer.registered, peer.up, peer.last_seen = True, True, time.time()
        reply = self.hello(None)
        reply["seq"] = self.log.next_seq(m.header["key"])
        return make("hello", **reply)

    def _register(self, sender: bytes, hello: dict, founder: bool) -> None:
        try:
            entries = [decode_entry(e) for e in hello["entries"][:2]]
        except EntryError as e:
            raise EnvelopeError(400, f"registration: {e}") from None
        if not entries or entries[0].type != "node_registration" or entries[0].node_id != sender:
            raise EnvelopeError(400, "registration: the first entry must be the sender's node_registration")
        if len(entries) > 1 and entries[1].type != "dataset_commitment":
            raise EnvelopeError(400, "registration: the second entry must be a dataset_commitment")
        try:
            admission_rules.check(self.genesis.admission, entries[0].body.admission, network=self.genesis.network,
                                  key=entries[0].key, founder=founder, members=self.log.current_key,
                                  validators=set(self.genesis.validators()), approved=self.gov.admitted)
        except admission_rules.AdmissionError as e:
            raise EnvelopeError(403, str(e), sender) from None
        try:
            self.log.append(entries)
        except RejectedEntry as e:
            raise EnvelopeError(400, f"registration refused by the log: {e}", sender) from None
        self._event("registered", f"registered node {sender.hex()[:16]}... in its log")

    # -- updates ---------------------------------------------------------------------------
    def _on_update(self, m: Opened) -> bytes:
        msg = read("update", m.body, self.max_body)
        sender, r = m.sender, msg["round"]
        peer = self.table.get(sender)
        if peer is not None and r <= self.round + 1000:  # where the sender is, even if refused below
            peer.round = max(peer.round, r)
        barred = self.gov.barred(sender, max(r, self.round))
        if barred is not None:
            raise EnvelopeError(403, barred, sender)
        if self.mode == "star" and not self.is_server:
            raise EnvelopeError(421, "misdirected: in a star, updates go to the server", sender)
        if self.committee is not None and self.committee.index is None:
            raise EnvelopeError(421, "misdirected: in a committee, updates go to the validators", sender)
        with self.lock:
            if r <= max(self.round, self.closed):
                self._answer(r, sender)  # it may still be waiting for this node's round-r update
                raise EnvelopeError(409, f"round {r} is closed here (this node is at round {self.round})", sender)
            if r > self.round + 2:
                raise EnvelopeError(409, f"round {r} is too far ahead (this node is at round {self.round})", sender)
            if sender in self.inbox.get(r, {}):
                raise EnvelopeError(409, f"a second update for round {r} (the first one stands)", sender)
        received = self._check_update(msg, sender, m.header["key"])
        with self.cond:
            if r <= max(self.round, self.closed):
                raise EnvelopeError(409, f"round {r} closed while the update was checked", sender)
            if sender in self.inbox.get(r, {}):
                raise EnvelopeError(409, f"a second update for round {r} (the first one stands)", sender)
            # logged on arrival, so the sender's sequence numbers here stay in the order it used
            # them (a vote it signs next cannot overtake this commitment)
            try:
                (received.index,) = self.log.append([received.entry])
            except RejectedEntry as e:
                raise EnvelopeError(409, f"update commitment: seq {received.entry.seq} refused by the log: {e}",
                                    sender) from None
            self.inbox.setdefault(r, {})[sender] = received
            self.cond.notify_all()
        if self.committee is not None:
            self.committee.received(r, received)
        if peer is not None:
            self.sampler.heard(peer)
            self.sampler.delivered(peer)
        self._answer(r, sender)
        return make("update_reply", ok=True, seq=received.entry.seq + 1, why="")

    def _answer(self, r: int, sender: bytes) -> None:
        """A sampled view is not symmetric: a peer that sent this node its round-r update without
        being in this node's view still waits for this node's, so it gets it (once)."""
        if isinstance(self.sampler, AllPeers):
            return
        with self._replies_lock:
            kit = self._replies.get(r)
            if kit is None or sender in kit[0]:
                return
            kit[0].add(sender)
        peer = self.table.get(sender)
        if peer is not None and peer.handshaken:
            self.pool.submit(kit[1], peer)

    def _check_update(self, msg: dict, sender: bytes, key: bytes) -> Received:
        d = self.task.dim
        if len(msg["model"]) != 4 * d:
            raise EnvelopeError(422, f"model of {len(msg['model'])} bytes is not {d} float32 values", sender)
        try:
            entry = decode_entry(msg["entry"])
            entry.verify(self.origin)
        except EntryError as e:
            raise EnvelopeError(400, f"update commitment: {e}", sender) from None
        body = entry.body
        if entry.type != "update_commitment" or entry.key != key:
            raise EnvelopeError(400, "update commitment: not an update_commitment signed by the sender", sender)
        if body.round != msg["round"] or body.base_model != msg["base"]:
            raise EnvelopeError(400, "update commitment: its round or base model is not the message's", sender)
        model = torch.frombuffer(bytearray(msg["model"]), dtype=torch.float32)
        commitment = tensor_commitment(msg["salt"], model)
        if commitment != body.update:
            raise EnvelopeError(400, "update commitment: it does not open to the model sent with this salt", sender)
        if count_commitment(msg["count_salt"], msg["count"]) != body.samples:
            raise EnvelopeError(400, "update commitment: the claimed count does not open", sender)
        if entry.seq < self.log.next_seq(key):
            raise EnvelopeError(409, f"update commitment: seq {entry.seq} was already used here", sender)
        self.log.commit(msg["salt"], model, commitment)
        self.log.opening(body.samples, msg["count_salt"], {"count": msg["count"]})
        return Received(sender, model, entry, bool(torch.isfinite(model).all()), msg["count"], msg["released"])

    # -- star: the server's model ----------------------------------------------------------
    def _on_model(self, m: Opened) -> bytes:
        if self.mode != "star" or self.is_server or m.sender != self.server:
            raise EnvelopeError(421, "misdirected: only a star's server sends models, to its nodes", m.sender)
        msg = read("model", m.body, self.max_body)
        with self.cond:
            if msg["round"] > self.round:
                self.models[msg["round"]] = m
                self.cond.notify_all()
        return make("ok_reply", ok=True, why="")

    def _on_checkpoint(self, m: Opened) -> bytes:
        """Another node's copy of the server's checkpoint: compare it with ours."""
        msg = read("checkpoint", m.body, 1 << 20)
        why = self._compare_server_note(msg["note"], m.sender)
        return make("ok_reply", ok=why is None, why=why or "")

    # -- committee: statements, certified aggregates, inclusion promises --------------------
    def _on_committee(self, m: Opened) -> bytes:
        if self.committee is None:
            raise EnvelopeError(421, f"misdirected: this network runs in {self.mode} mode", m.sender)
        return self.committee.on_committee(m)

    def _on_promise(self, m: Opened) -> bytes:
        if self.committee is None:
            raise EnvelopeError(421, f"misdirected: this network runs in {self.mode} mode", m.sender)
        return self.committee.on_promise(m)

    # -- governance and keys ---------------------------------------------------------------
    def _on_submit(self, m: Opened) -> bytes:
        msg = read("submit", m.body, 1 << 20)
        try:
            entry = decode_entry(msg["entry"])
        except EntryError as e:
            raise EnvelopeError(400, f"submit: {e}", m.sender) from None
        if entry.type not in SUBMITTABLE:
            raise EnvelopeError(403, f"submit: {entry.type} entries are not accepted from peers", m.sender)
        signer = self.log.ledger.state.node_of(entry.key)
        if signer != m.sender:
            raise EnvelopeError(403, "submit: the entry is not signed by the sending node", m.sender)
        if entry.type == "governance_vote" and m.sender not in self.gov.validators:
            raise EnvelopeError(403, "submit: only validators vote", m.sender)
        if entry.type == "key_revocation" and entry.body.node != m.sender:
            raise EnvelopeError(403, "submit: a node revokes only its own key (others, by an evict proposal)", m.sender)
        try:
            (index,) = self.log.append([entry])
        except RejectedEntry as e:
            raise EnvelopeError(400, f"submit: {e}", m.sender) from None
        self.gov.observe(index, entry, signer)
        if entry.type == "key_rotation":
            peer = self.table.get(m.sender)
            if peer is not None:
                peer.key = entry.body.new_key
        self._event("submitted", f"logged a {entry.type} from node {m.sender.hex()[:16]}... (entry {index})")
        return make("submit_reply", index=index)

    def _on_proposals(self, m: Opened) -> bytes:
        read("empty", m.body, 1024)
        items = [{"index": p.index, "action": p.action, "params": p.params, "deadline": p.deadline,
                  "activated": p.activated is not None} for p in self.gov.proposals.values()]
        return make("proposals_reply", items=items)

    def _on_seq(self, m: Opened) -> bytes:
        read("empty", m.body, 1024)
        return make("seq_reply", seq=self.log.next_seq(m.header["key"]))

    # -- catching up -----------------------------------------------------------------------
    def _on_catchup(self, m: Opened) -> bytes:
        msg = read("catchup", m.body, 1024)
        with self.log.lock:
            ledger = self.log.ledger
            size = ledger.size
            last = self.log.last_record(self.keys.identity.node_id)
            if last is None:
                raise EnvelopeError(404, "no aggregate record yet", m.sender)
            index, record = last
            note = sign_checkpoint(Checkpoint(self.origin, size, ledger.root()), self.keys.log_signer(self.origin))
            old = msg["old"]
            consistency = ledger.consistency_proof(old, size) if 0 < old < size else []
            proof = ledger.inclusion_proof(index, size)
            data = ledger.store.row(index).data
        return make("catchup_reply", round=record.round, note=note.format(), index=index, record=data,
                    proof=proof, consistency=consistency)

    def _on_blob(self, m: Opened) -> bytes:
        msg = read("blob", m.body, 1024)
        if msg["hash"] not in self.public_models:
            raise EnvelopeError(404, "no such model in this node's log", m.sender)
        data = self.log.blob(msg["hash"])
        if data is None:
            raise EnvelopeError(404, "that model was not kept", m.sender)
        return make("blob_reply", data=data)

    def _on_peers(self, m: Opened) -> bytes:
        msg = read("peers", m.body, 1 << 20)
        self._learn_peers(msg["records"][:1000], pushed_by=m.sender)
        return make("peers", records=self._my_records())

    def _my_records(self) -> list[bytes]:
        """This node's signed record, and those of its view's peers (Basalt's pull; none with AllPeers)."""
        mine = sign_record(self.keys.identity, self.me, self.keys.xk, self.config.advertised, self.software,
                           list(self._registration().roles))
        if isinstance(self.sampler, AllPeers):
            return [mine]
        return [mine] + [p.record for p in self.sampler.sample(self.table, self.round) if p.record][:64]

    def _learn_peers(self, records: list[bytes], pushed_by: bytes | None = None) -> None:
        """Add the peers these records name (signed by the key their node ID names) and tell the sampler."""
        for raw in records:
            fields = open_record(raw, None)
            if fields is None or fields["node"] == self.me:
                continue
            peer = self.table.get(fields["node"])
            if peer is None:
                peer = self.table.add(Peer(node=fields["node"], url=fields["url"], xk=fields["xk"],
                                           key=fields["key"], software=fields["software"]))
            peer.record = peer.record or raw
            if fields["node"] == pushed_by:
                self.sampler.heard(peer)

    # -- status and metrics ----------------------------------------------------------------
    def status(self) -> dict:
        h, nxt = self._schedule().fork_id(self.round)
        last = self._last_metrics
        return {
            "name": self.name, "node": self.me.hex(), "url": self.config.advertised, "mode": self.mode,
            "role": "server" if self.is_server else "node", "roles": list(self._registration().roles),
            "round": self.round, "rounds": self.rounds,
            "done": bool(self.rounds and self.round >= self.rounds), "halted": self.halted,
            "software": self.software, "protocol": self.protocol, "fork": {"hash": h.hex(), "next": nxt},
            "malicious": self.task.attack is not None,
            "log": {"origin": self.origin, "size": self.log.size, "checkpoints": self.log.ledger.checkpoint_count},
            "peers": [{"name": p.name, "node": p.node.hex(), "up": p.up, "registered": p.registered,
                       "refusal": p.refusal} for p in self.table.all()],
            "view": self.sampler.describe(self.table),
            "accuracy": last.get("accuracy"), "evidence": self.evidence_found[-20:],
            "refused": {k.removeprefix("refused_"): v for k, v in self.counters.items() if k.startswith("refused_")},
            "pid": __import__("os").getpid(),
            **({"committee": self.committee.status()} if self.committee is not None else {}),
        }

    _last_metrics: dict = {}

    def metrics(self) -> str:
        lines = ["# TYPE phalanx_round gauge", f"phalanx_round {self.round}",
                 "# TYPE phalanx_log_entries gauge", f"phalanx_log_entries {self.log.size}",
                 "# TYPE phalanx_messages_total counter"]
        for k, v in sorted(self.counters.items()):
            if k.startswith("in_"):
                lines.append(f'phalanx_messages_total{{endpoint="{k[3:]}"}} {v}')
        lines.append("# TYPE phalanx_refused_total counter")
        for k, v in sorted(self.counters.items()):
            if k.startswith("refused_"):
                lines.append(f'phalanx_refused_total{{status="{k[8:]}"}} {v}')
        if self._last_metrics.get("accuracy") is not None:
            lines += ["# TYPE phalanx_accuracy gauge", f"phalanx_accuracy {self._last_metrics['accuracy']}"]
        return "\n".join(lines) + "\n"

    def _event(self, kind: str, text: str) -> None:
        event = {"round": self.round, "kind": kind, "text": text, "time": round(time.time(), 3)}
        self.events = self.events[-999:] + [event]
        log.info("%s: %s", self.name, text)
        with self.lock, (self.folder / "events.jsonl").open("a") as f:
            f.write(json.dumps(event) + "\n")

    # ================================================================== talking to peers

    def _call(self, peer: Peer, endpoint: str, body: bytes, timeout: float | None = None) -> bytes | None:
        try:
            reply = self.transport.call(peer, endpoint, body, timeout=timeout)
            self.table.seen(peer.node)
            return reply
        except PeerUnreachable:
            self.table.down(peer.node)
            return None

    def handshake(self, peer: Peer) -> None:
        try:
            data = self._call(peer, "handshake", make("hello", **self.hello(peer)), timeout=10.0)
        except PeerRefused as e:
            peer.refusal, peer.refusal_status = e.reason.strip(), e.status
            if e.status == 426:
                self._event("refused", f"{peer.name or peer.node.hex()[:16]} refused this node: {peer.refusal}")
            return
        if data is None:
            return
        try:
            hello = read("hello", data, 1 << 20)
            self._check_hello(hello, None, f"peer {peer.name}")  # it checked the fork IDs on its side
        except EnvelopeError as e:
            peer.refusal, peer.refusal_status = e.reason, 0
            return
        peer.seq = max(peer.seq or 0, hello["seq"])
        peer.handshaken, peer.software, peer.refusal, peer.refusal_status = True, hello["software"], "", 0

    def handshakes(self) -> None:
        """Handshake every peer not yet handshaken (or seen down); halt if every peer that answered
        refused this node's version."""
        todo = [p for p in self.table.all() if not p.handshaken or not p.up]
        list(self.pool.map(self.handshake, todo))
        answered = [p for p in self.table.all() if p.handshaken or p.refusal_status]
        too_old = [p for p in answered if p.refusal_status == 426]
        if answered and len(too_old) == len(answered):
            raise Halt(f"every peer refused this node ({len(too_old)}): {too_old[0].refusal}")

    def _peers(self) -> list[Peer]:
        return [p for p in self.sampler.sample(self.table, self.round) if p.handshaken
                and self.gov.barred(p.node, self.round + 1) is None]

    # ================================================================== the round driver

    def run(self) -> None:
        """The driver thread: handshakes, catch-up, then rounds until done, halted or stopped."""
        try:
            self._run()
        except Halt as e:
            self.halted = str(e)
            self._event("halt", str(e))
        except Exception as e:  # the driver died: say so in the status, keep serving the log
            self.halted = f"round driver failed: {type(e).__name__}: {e}"
            log.exception("%s: round driver failed", self.name)
        finally:
            self.driver_done.set()

    def _run(self) -> None:
        # the round clock starts once every known peer is handshaken both ways (or after three
        # timeouts): nodes started a few seconds apart then begin round 1 together
        deadline = time.time() + self.timeout * 3
        while not self.stopping.is_set():
            self.handshakes()
            if all(p.handshaken and p.registered for p in self.table.all()) or time.time() > deadline:
                break
            time.sleep(0.2)
        self._exchange_peers()
        if not self.is_server:
            self._catch_up()
        while not self.stopping.is_set() and (not self.rounds or self.round < self.rounds):
            r = self.round + 1
            if any(not p.handshaken for p in self.table.all()):
                self.handshakes()  # a peer that was down, or joined since
            if self.mode == "gossip" and self._lagging(r):
                before = self.round
                self._catch_up()  # most peers are rounds ahead: take their model, then go on with them
                if self.round > before:
                    continue
            if self.task.shards is None and not self.is_server:
                time.sleep(0.5)  # a member with no data and no role in the rounds: it serves and witnesses
                continue
            self._governance(r)
            t0 = time.time()
            if self.mode == "gossip":
                info = self._gossip_round(r)
            elif self.committee is not None:
                info = self.committee.round(r)
            elif self.is_server:
                info = self._star_server_round(r)
            else:
                info = self._star_client_round(r)
            if info is None:
                continue
            self._finish_round(r, info, t0)
        self._event("done", f"finished {self.round} rounds; serving until stopped")

    def _lagging(self, r: int) -> bool:
        """Whether most live peers sent updates for rounds at least two past ``r`` (this node fell
        behind, e.g. starved of CPU: it would never be waited for again)."""
        live = [p for p in self.table.all() if p.registered and p.up and p.handshaken]
        return bool(live) and 2 * sum(p.round >= r + 2 for p in live) > len(live)

    def _finish_round(self, r: int, info: dict, t0: float) -> None:
        acc = loss = None
        if self.task.shards is not None or self.is_server:
            acc, loss = self.task.evaluate(self.model)
        with self.cond:
            self.round = r
            self.gov.round = r
            for old in [k for k in self.inbox if k <= r]:
                del self.inbox[old]
            for old in [k for k in self.models if k <= r]:
                del self.models[old]
            self.cond.notify_all()
        now = time.time()
        record = {"round": r, "node": self.name, "accuracy": acc, "loss": loss, **info,
                  "wall_time_s": round(now - t0, 4), "elapsed_s": round(now - self.t_start, 3),
                  "time": round(now, 3), "model": tensor_hash(self.model).hex(),
                  "peers_up": sum(p.up for p in self.table.all())}
        self._last_metrics = record
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.task.shards is not None and r % 5 == 0:
            self.background.submit(self._exchange_peers)

    def _exchange_peers(self) -> None:
        records = self._my_records()
        for peer in [p for p in self.table.all() if p.handshaken and p.up][:4]:
            try:
                data = self._call(peer, "peers", make("peers", records=records), timeout=5.0)
            except PeerError:
                continue
            if data is None:
                continue
            self._learn_peers(read("peers", data, 1 << 20)["records"][:1000])

    # -- governance at the start of a round ------------------------------------------------
    def _governance(self, r: int) -> None:
        self.gov.round = r - 1
        for d in self.gov.ready():
            at = max(d.at, r)
            (entry, index), = self.log.submit([GovernanceActivation(proposal=d.proposal, votes=list(d.votes), round=at)])
            self.gov.observe(index, entry, self.me)
            self._event("governance", f"{d.action} {json.dumps(d.params, sort_keys=True)} passed "
                                      f"({d.yes_weight:g} of {d.total_weight:g}), in force from round {at}")
            if d.action in ("quarantine", "release", "evict") and d.node is not None and self.log.registered(d.node):
                body = Quarantine(node=d.node, round=at, action="release" if d.action == "release" else "quarantine",
                                  reason=f"{d.action} by proposal entry {d.proposal}",
                                  evidence=[e for e in d.evidence if e < index])
                self.log.submit([body])
        why = self.gov.halts(self.software, self.protocol, r)
        if why is not None:
            raise Halt(why)
        rollback = self.gov.rollback_at(r)
        if rollback is not None:
            self._roll_back(r, *rollback)

    def _roll_back(self, r: int, to_round: int, activation: int) -> None:
        chosen = None
        for index, entry in self.log.entries():
            if (entry.type == "aggregate_record" and entry.node_id == self.keys.identity.node_id
                    and entry.body.round <= to_round):
                chosen = entry.body
        if chosen is None:
            self._event("rollback", f"no model of round {to_round} in the log; rollback skipped")
            return
        self.model = self.log.model(chosen.result)
        self._event("rollback", f"restored its model of round {chosen.round} ({chosen.result.hex()[:16]}...) "
                                f"by activation entry {activation}")

    # -- gossip ----------------------------------------------------------------------------
    def _commit(self, r: int, base: torch.Tensor, model: torch.Tensor) -> tuple[UpdateCommitment, bytes, bytes]:
        salt, count_salt = new_salt(), new_salt()
        count = self.task.samples
        body = UpdateCommitment(round=r, base_model=tensor_hash(base), update=self.log.commit(salt, model),
                                dataset=self._dataset_root, protocol=PROTOCOL_NAME[self.mode],
                                samples=count_commitment(count_salt, count))
        self.log.opening(body.samples, count_salt, {"count": count})
        return body, salt, count_salt

    def _send_update(self, peer: Peer, r: int, model: torch.Tensor, body: UpdateCommitment, salt: bytes,
                     count_salt: bytes) -> bool:
        for _ in range(3):
            seq = peer.seq or 0
            entry = sign_entry(body, self.keys.identity, seq, self.genesis.origin(peer.node))
            msg = make("update", round=r, model=tensor_view(model).tobytes(), base=body.base_model, salt=salt,
                       count=self.task.samples, count_salt=count_salt, released=self.released_count(),
                       entry=entry.encoding)
            try:
                data = self._call(peer, "update", msg)
            except PeerRefused as e:
                if e.status == 409 and "seq" in e.reason:  # this node's key signed other entries there
                    peer.seq = max(seq + 1, self._ask_seq(peer))  # (a vote, a rotation)
                    continue
                self._event("refused", f"{peer.name} refused the round-{r} update: {e.reason.strip()}")
                return False
            if data is None:
                return False
            peer.seq = max(seq + 1, read("update_reply", data, 1024)["seq"])
            return True
        return False

    def released_count(self) -> float:
        """Weighting noised: this node's count with Gaussian noise, drawn once from the operating
        system's randomness and kept in ``released_count.json``, so that a restart sends the same
        value rather than a second release (phalanx.privacy.counts); 0.0 for other weightings."""
        if self.task.weighting != "noised":
            return 0.0
        path = self.folder / "released_count.json"
        with self.lock:
            if self._released is None and path.exists():
                self._released = float(json.loads(path.read_text())["released"])
            if self._released is None:
                g = torch.Generator().manual_seed(secrets.randbits(63))
                value = noised_count(self.task.samples, self.task.count_noise, g)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"released": value, "noise": self.task.count_noise}))
                tmp.replace(path)
                self._released = value
            return self._released

    def _ask_seq(self, peer: Peer) -> int:
        """This node's next sequence number in ``peer``'s log, as the peer says (0 if it does not)."""
        try:
            asked = self._call(peer, "seq", make("empty"), timeout=5.0)
            return read("seq_reply", asked, 1024)["seq"] if asked else 0
        except (PeerError, EnvelopeError):
            return 0

    def _wait(self, r: int, expected: set[bytes], until: float, enough: int | None = None,
              close: bool = True) -> dict[bytes, Received]:
        """Round ``r``'s messages once every live peer of ``expected`` sent (or ``enough`` did, or
        ``until`` passed); ``close``: refuse later ones, so an acknowledged update is always used."""
        with self.cond:
            while not self.stopping.is_set():
                got = self.inbox.get(r, {})
                # a peer that was not in the previous round with this node (it lags) is not waited for
                live = {n for n in expected if (p := self.table.get(n)) is not None and p.up and p.round >= r - 1}
                if set(got) >= live or (enough is not None and len(got) >= enough):
                    break
                left = until - time.time()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.25))
            if close:
                self.closed = max(self.closed, r)
            return dict(self.inbox.get(r, {}))

    def _gossip_round(self, r: int) -> dict:
        t0 = time.time()
        base = self.model
        trained = self.task.train(base, r, self._seed_index())
        own_body, salt, count_salt = self._commit(r, base, trained)
        peers = self._peers()
        expected = {p.node for p in peers}
        deadline = t0 + self.timeout
        messages = {p.node: trained for p in peers}
        if self.task.attack is not None and peers:
            messages, own_model = self._craft(r, base, trained, peers, deadline)
            own_body, salt, count_salt = self._commit(r, base, own_model)
            trained_sent = own_model
        else:
            trained_sent = trained
        (own_entry, own_index), = self.log.submit([own_body])
        self._open_replies(r, peers, lambda p: self._send_update(p, r, trained_sent, own_body, salt, count_salt))
        bodies = {}
        for p in peers:
            if messages[p.node] is trained_sent:
                bodies[p.node] = (own_body, salt, count_salt)
            else:
                bodies[p.node] = self._commit(r, base, messages[p.node])
        t_send = time.time()
        sent = list(self.pool.map(lambda p: self._send_update(p, r, messages[p.node], *bodies[p.node]), peers))
        expected = self._exchanging(r, peers, sent, expected)
        t_wait = time.time()
        got = self._wait(r, expected, deadline)
        t_agg = time.time()
        new, record_info = self._aggregate(r, base, trained, got, own_index)
        self.model = new
        return {"sent": sum(sent), "received": len(got), **record_info,
                "train_commit_s": round(t_send - t0, 4), "send_s": round(t_wait - t_send, 4),
                "wait_s": round(t_agg - t_wait, 4), "aggregate_log_s": round(time.time() - t_agg, 4)}

    def _exchanging(self, r: int, peers: list[Peer], sent: list[bool], expected: set[bytes]) -> set[bytes]:
        """Whom round r waits for. Every live peer sends to every other (AllPeers): ``expected``. A
        sampled view: the view's peers that took this node's update, since each answers it (from
        its view or :meth:`_answer`), even one that sent this node nothing before (so the lag filter
        of :meth:`_wait`, for peers that stopped sending, is not applied to it this round)."""
        if isinstance(self.sampler, AllPeers):
            return expected
        for p, ok in zip(peers, sent):
            if ok:
                p.round = max(p.round, r - 1)
        return {p.node for p, ok in zip(peers, sent) if ok}

    def _open_replies(self, r: int, peers: list[Peer], send) -> None:
        """Round r's update goes to ``peers``; from now on also to whoever sends this node theirs."""
        if isinstance(self.sampler, AllPeers):
            return
        with self._replies_lock:
            self._replies = {k: v for k, v in self._replies.items() if k >= r - 1}
            self._replies[r] = ({p.node for p in peers}, send)
        with self.lock:
            early = list(self.inbox.get(r, {}))
        for sender in early:
            self._answer(r, sender)

    def _seed_index(self) -> int:
        return self.member.shard if self.member is not None else 0

    def _craft(self, r: int, base: torch.Tensor, trained: torch.Tensor, peers: list[Peer], deadline: float):
        """A malicious node: wait for honest messages, then craft per receiver with its attack."""
        attack_deadline = time.time() + 0.5 * max(0.0, deadline - time.time())
        enough = max(1, len(peers) - (self.task.colluders - 1))
        got = self._wait(r, {p.node for p in peers}, attack_deadline, enough=enough, close=False)
        honest = [g.model - base for g in got.values() if g.finite]
        own = (trained - base)[None].expand(self.task.colluders, -1)
        view = AttackView(round=r, own_updates=own.clone(), receivers=torch.arange(len(peers)),
                          generator=generator(self.task.seed, "node", self._seed_index(), "round", r, "attack"),
                          honest_updates=torch.stack(honest) if honest else None,
                          defense=self.task.chain if self.task.attack.knowledge == "defense" else None,
                          declared_f=int(declared_f(torch.tensor([len(peers)]), self.task.declared_f,
                                                    self.task.declared_share)[0]),
                          n_rows=len(peers) + 1, own_counts=torch.full((self.task.colluders,), self.task.samples))
        try:
            crafted = self.task.attack.craft(view)
        except ValueError as e:
            self._event("attack", f"attack failed ({e}); sends its honest model")
            return {p.node: trained for p in peers}, trained
        crafted = crafted.to(torch.float32)
        out = {}
        for i, p in enumerate(peers):
            col = i if crafted.shape[1] > 1 else 0
            out[p.node] = (base + crafted[0, col]).contiguous()
        first = out[peers[0].node]
        return out, first

    def _aggregate(self, r: int, base: torch.Tensor, trained: torch.Tensor, got: dict[bytes, Received],
                   own_index: int) -> tuple[torch.Tensor, dict]:
        task, chain = self.task, self.task.chain
        index_of = self._append_commitments(r, got)
        senders = sorted(index_of)
        usable = [s for s in senders if got[s].finite]
        rejected = [Rejection(entry=index_of[s], reason="non-finite") for s in senders if not got[s].finite]
        self._rejected_total += len(rejected)
        k = 1 + len(usable)
        msgs = torch.stack([trained, *[got[s].model for s in usable]])[None]  # a fresh tensor: no clone
        mask = torch.ones(1, k, dtype=torch.bool)
        f = declared_f(torch.tensor([k - 1]), task.declared_f, task.declared_share)
        ok = chain.admissible(torch.tensor([k]), f)
        ref = base[None] if chain.needs_root else trained[None]
        g = generator(task.seed, "node", self._seed_index(), "round", r, "aggregate")
        if chain.stateful and not hasattr(self, "_previous"):
            self._previous = torch.zeros(1, task.dim)
        new, got_rows, sel = aggregate_relative(chain, msgs, mask, ref, trained[None], f, ok, None,
                                                getattr(self, "_previous", None), g)
        if chain.stateful and got_rows is not None:
            self._previous = got_rows
        new = new[0].contiguous()
        result = self.log.keep(new)
        self.public_models.add(result)
        params = {"topology": "node", "f": int(f[0]), "seed": int(g.initial_seed()), "device": "cpu",
                  "threads": torch.get_num_threads(), "k": k,
                  "ref": "before" if chain.needs_root else "trained", **self._chain_params()}
        if not bool(ok[0]):
            params["refused"] = chain.failing(k, int(f[0])) or "refused"
            self._event("availability", f"round {r}: {params['refused']}; keeps its model")
        inputs = [AggregateInput(entry=own_index, weight=1.0)] + [AggregateInput(entry=index_of[s], weight=1.0)
                                                                  for s in usable]
        record = AggregateRecord(round=r, rule=self._rule(), params=params, inputs=inputs, rejected=rejected,
                                 result=result)
        self.log.submit([record])
        self.log.flush()
        self.background.submit(self._checkpoint)
        return new, {"aggregated": bool(ok[0]), "rows": k, "rejected_rows": len(rejected),
                     "availability": 1.0 if bool(ok[0]) and k > 1 else 0.0}

    @staticmethod
    def _append_commitments(r: int, got: dict[bytes, Received]) -> dict[bytes, int]:
        """Where this log holds the peers' round-``r`` commitments (each logged on arrival)."""
        return {s: got[s].index for s in sorted(got)}

    def _rule(self) -> str:
        return "+".join(name for name, _ in self.task.chain_spec)

    def _chain_params(self) -> dict:
        out = {}
        for i, (_, params) in enumerate(self.task.chain_spec):
            for key, v in sorted(params.items()):
                if key != "f":
                    out[f"{i}.{key}"] = v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v)
        return out

    def _witnesses(self) -> list[RemoteWitness]:
        out = []
        for m in self._members():
            peer = self.table.get(bytes.fromhex(m.node))
            if "witness" in m.roles and peer is not None and peer.up:
                out.append(RemoteWitness(self.genesis.witness_name(bytes.fromhex(m.node)),
                                         self.genesis.witness_verifier(m).vkey, peer.url, self.transport.http))
        return out

    def _checkpoint(self) -> None:
        try:
            published = self.log.checkpoint(self._witnesses())
        except Exception as e:  # witnesses are other parties; the log stays as it is
            self._event("checkpoint", f"checkpoint failed: {type(e).__name__}: {e}")
            return
        if not published.final:
            self.counters["checkpoint_not_final"] += 1

    # -- catching up after a restart -------------------------------------------------------
    def _catch_up(self) -> None:
        ahead = []
        for p in self.table.all():
            if not p.handshaken:
                continue
            try:
                data = self._call(p, "handshake", make("hello", **self.hello(p)), timeout=10.0)
            except PeerRefused:
                continue
            if data is not None:
                ahead.append((read("hello", data, 1 << 20)["round"], p))
        ahead.sort(key=lambda x: -x[0])
        if not ahead or ahead[0][0] <= self.round:
            return
        for their_round, peer in ahead:
            try:
                if self._catch_up_from(peer):
                    return
            except (PeerError, EnvelopeError, WitnessError, ValueError) as e:
                self._event("catchup", f"could not catch up from {peer.name}: {e}")

    def _catch_up_from(self, peer: Peer) -> bool:
        origin = self.genesis.origin(peer.node)
        old = self.witness.latest_size(origin)
        data = self._call(peer, "catchup", make("catchup", old=old), timeout=30.0)
        if data is None:
            return False
        msg = read("catchup_reply", data, 1 << 20)
        member = self.genesis.member(peer.node)
        signed = open_checkpoint(msg["note"], [self.genesis.log_verifier(member)])
        size = signed.checkpoint.size
        # the consistency proof from what this node witnessed before it went down; the witness
        # checks it, and records the new size if it holds (an inconsistent log is refused here)
        self.witness.add_checkpoint(old, msg["consistency"], msg["note"])
        verify_inclusion(leaf_hash(msg["record"]), msg["index"], size, msg["proof"], signed.checkpoint.root)
        entry = decode_entry(msg["record"])
        entry.verify(origin)
        if entry.type != "aggregate_record" or entry.body.round != msg["round"] or entry.key != peer.key:
            raise ValueError("the catch-up record is not the peer's aggregate record of its round")
        blob = read("blob_reply", self._call(peer, "blob", make("blob", hash=entry.body.result)) or b"", self.max_body)
        model = torch.frombuffer(bytearray(blob["data"]), dtype=torch.float32)
        if tensor_hash(model) != entry.body.result or model.numel() != self.task.dim:
            raise ValueError("the peer's model does not hash to its aggregate record's result")
        result = self.log.keep(model)
        self.public_models.add(result)
        record = AggregateRecord(round=entry.body.round, rule="catchup", inputs=[], result=result,
                                 params={"from": peer.node.hex(), "size": size, "index": msg["index"],
                                         "old": old, "topology": "node"})
        self.log.submit([record])
        with self.cond:
            self.model, self.round = model.clone(), entry.body.round
            self.gov.round = self.round
        self._event("catchup", f"caught up to round {self.round} from {peer.name}: its log at size {size} "
                               f"is consistent with size {old} witnessed before")
        return True

    # -- star ------------------------------------------------------------------------------
    def _server_peer(self) -> Peer | None:
        return self.table.get(self.server) if self.server is not None else None

    def _star_update(self, r: int, base: torch.Tensor) -> tuple[torch.Tensor, UpdateCommitment, bytes, bytes]:
        """What a star or committee node sends in round ``r``: its model after local training minus
        ``base`` (crafted first if it attacks), and its commitment (body, salt, count salt)."""
        trained = self.task.train(base, r, self._seed_index())
        update = (trained - base).contiguous()
        if self.task.attack is not None:
            update = self._craft_star(r, base, update)
        return (update, *self._commit(r, base, update))

    def _star_client_round(self, r: int) -> dict | None:
        t0 = time.time()
        server = self._server_peer()
        update, body, salt, count_salt = self._star_update(r, self.model)
        self.log.submit([body])
        sent = server is not None and server.handshaken and self._send_update(server, r, update, body, salt, count_salt)
        with self.cond:
            while not self.stopping.is_set() and r not in self.models:
                if time.time() > t0 + 2 * self.timeout:
                    break
                self.cond.wait(0.25)
            message = self.models.get(r)
        if message is None:
            self._event("availability", f"round {r}: no model from the server within {2 * self.timeout:g} s")
            return {"sent": int(bool(sent)), "received": 0, "aggregated": False, "availability": 0.0,
                    "rows": 0, "rejected_rows": 0}
        self._accept_model(r, message)
        return {"sent": int(bool(sent)), "received": 1, "aggregated": True, "availability": 1.0,
                "rows": 1, "rejected_rows": 0}

    def _craft_star(self, r: int, base: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        own = update[None].expand(self.task.colluders, -1).clone()
        view = AttackView(round=r, own_updates=own, receivers=torch.tensor([-1]),
                          generator=generator(self.task.seed, "node", self._seed_index(), "round", r, "attack"),
                          honest_updates=None, n_rows=len(self.genesis.members) - 1,
                          own_counts=torch.full((self.task.colluders,), self.task.samples))
        try:
            return self.task.attack.craft(view)[0, 0].to(torch.float32).contiguous()
        except (ValueError, TypeError) as e:
            self._event("attack", f"attack failed in a star without honest updates ({e}); sends its own")
            return update

    def _accept_model(self, r: int, message: Opened) -> None:
        """Check the server's model against its signed record, the record against the signed
        checkpoint, the checkpoint against the last one accepted; adopt it, or keep evidence."""
        msg = read("model", message.body, self.max_body)
        verifier = self.genesis.log_verifier(self.genesis.member(self.server))
        model = torch.frombuffer(bytearray(msg["model"]), dtype=torch.float32)
        try:
            cp = open_checkpoint(msg["note"], [verifier]).checkpoint
            verify_inclusion(leaf_hash(msg["record"]), msg["index"], cp.size, msg["proof"], cp.root)
            entry = decode_entry(msg["record"])
            entry.verify(self.genesis.origin(self.server))
            if entry.type != "aggregate_record" or entry.body.round != r:
                raise ValueError("the record is not the server's aggregate record of this round")
            if tensor_hash(model) != entry.body.result or model.numel() != self.task.dim:
                raise ValueError("the model sent is not the one the server's signed record names")
            last = self.server_last
            if last is not None and msg["old"] == last[0] and last[0] < cp.size:
                verify_consistency(last[0], cp.size, msg["consistency"], last[1], cp.root)
            elif last is not None and last[0] > cp.size:
                raise ValueError(f"the server's tree shrank from {last[0]} to {cp.size}")
        except Exception as e:  # a proof or an entry that does not hold: the server lied or erred
            self._evidence("bad_model", f"round {r}: {type(e).__name__}: {e}")
            return
        self.server_last = (cp.size, cp.root)
        self.server_notes[cp.size] = bytes(msg["note"])
        self.model = model.clone()
        self.background.submit(self._gossip_note, bytes(msg["note"]))

    def _gossip_note(self, note: bytes) -> None:
        """Show the other nodes the server's checkpoint; each compares it with its own."""
        for p in [p for p in self.table.all() if p.handshaken and p.up and p.node != self.server]:
            try:
                self._call(p, "checkpoint", make("checkpoint", note=note), timeout=5.0)
            except PeerError:
                continue

    def _compare_server_note(self, note: bytes, sender: bytes) -> str | None:
        if self.server is None or self.is_server:
            return None
        verifier = self.genesis.log_verifier(self.genesis.member(self.server))
        try:
            cp = open_checkpoint(note, [verifier]).checkpoint
        except Exception as e:  # not the server's signature: nothing to compare
            return f"not a checkpoint of the server's log: {e}"
        mine = self.server_notes.get(cp.size)
        if mine is None or open_checkpoint(mine, [verifier]).checkpoint.root == cp.root:
            return None
        evidence = same_size_equivocation(mine, bytes(note))
        try:
            verify_equivocation(evidence, [verifier])
        except EvidenceError:
            return None
        self._evidence("split_view", evidence.to_json())
        return f"split view: the server signed two roots at size {cp.size}"

    def _evidence(self, kind: str, detail: str) -> None:
        n = len(self.evidence_found)
        (self.folder / "evidence").mkdir(exist_ok=True)
        path = self.folder / "evidence" / f"{kind}-{n}.txt"
        path.write_text(detail + "\n")
        self.evidence_found.append({"kind": kind, "round": self.round + 1, "file": str(path.name)})
        self._event("evidence", f"{kind}: {detail.splitlines()[0][:200]}")

    def _star_server_round(self, r: int) -> dict:
        t0 = time.time()
        nodes = [p for p in self._peers() if "trainer" in p.roles]
        got = self._wait(r, {p.node for p in nodes}, t0 + self.timeout)
        index_of = self._append_commitments(r, got)
        senders = sorted(index_of)
        usable = [s for s in senders if got[s].finite]
        rejected = [Rejection(entry=index_of[s], reason="non-finite") for s in senders if not got[s].finite]
        chain = self.task.chain
        params = {"topology": "star", **self._chain_params()}
        inputs = []
        ok = False
        if usable:
            rows = torch.stack([got[s].model for s in usable])[None]
            weights = None
            if chain.accepts_weights and self.task.weighting == "noised":  # never the exact counts: they go on the log
                released = torch.tensor([got[s].released for s in usable], dtype=torch.float64)
                weights = cap_claims(released, self.task.weight_cap)[0].float()[None]
            f = declared_f(torch.tensor([len(usable)]), self.task.declared_f, self.task.declared_share)
            ok = bool(chain.admissible(torch.tensor([len(usable)]), f)[0])
            params.update({"f": int(f[0]), "rows": len(usable)})
            if ok:
                from phalanx.aggregate import Context

                g = generator(self.task.seed, "server", "round", r, "aggregate")
                out = chain.aggregate(rows, torch.ones(1, len(usable), dtype=torch.bool), weights,
                                      Context(f=f, generator=g))
                self.model = (self.model + out[0]).contiguous()
                w = weights[0].tolist() if weights is not None else [1.0] * len(usable)
                inputs = [AggregateInput(entry=index_of[s], weight=float(x)) for s, x in zip(usable, w)]
            else:
                params["refused"] = chain.failing(len(usable), int(f[0])) or "refused"
        result = self.log.keep(self.model)
        self.public_models.add(result)
        (_, record_index), = self.log.submit([AggregateRecord(round=r, rule=self._rule(), params=params,
                                                              inputs=inputs, rejected=rejected, result=result)])
        self._checkpoint()
        self._broadcast(r, record_index, [self.table.get(s) for s in sorted({p.node for p in nodes})])
        return {"received": len(got), "aggregated": ok, "rows": len(usable), "rejected_rows": len(rejected),
                "availability": 1.0 if ok else 0.0, "sent": len(nodes)}

    def _broadcast(self, r: int, index: int, nodes: list[Peer]) -> None:
        """Send every node the new model, its record, an inclusion proof in a freshly signed
        checkpoint, and a consistency proof from the size that node last accepted."""
        with self.log.lock:
            tree = self.log.ledger.tree
            record = self.log.ledger.store.row(index).data
            honest = (self.model, record, tree, self._signed_head(tree))
        views = {p.node: honest for p in nodes}
        if self.config.server_behaviour == "split_view" and len(nodes) > 1:
            views.update(dict.fromkeys([p.node for p in nodes[len(nodes) // 2:]], self._split_view(r, index)))

        def send(p: Peer) -> None:
            model, rec, t, note = views[p.node]
            old = self.witness_sizes.get(p.node, 0)
            msg = make("model", round=r, model=tensor_view(model).tobytes(), record=rec, index=index, note=note,
                       proof=t.inclusion_proof(index, t.size), old=old,
                       consistency=t.consistency_proof(old, t.size) if 0 < old < t.size else [])
            try:
                if self._call(p, "model", msg) is not None:
                    self.witness_sizes[p.node] = t.size
            except PeerError as e:
                self._event("refused", f"{p.name} refused the round-{r} model: {e}")

        list(self.pool.map(send, nodes))

    def _signed_head(self, tree: MerkleTree) -> bytes:
        return sign_checkpoint(Checkpoint(self.origin, tree.size, tree.root()), self.keys.log_signer(self.origin)).format()

    def _split_view(self, r: int, index: int) -> tuple:
        """Tests only: a lying server's second view, another model in a tree of its own, with
        proofs that hold within it (only comparing checkpoints with other nodes shows the lie)."""
        other = (self.model + 0.01).contiguous()
        body = AggregateRecord(round=r, rule=self._rule(), params={"topology": "star"}, inputs=[],
                               result=tensor_hash(other))
        seq = self.log.next_seq(self.keys.identity.public.raw) - 1
        entry = sign_entry(body, self.keys.identity, seq, self.origin)
        with self.log.lock:
            leaves = [leaf for _, leaf in self.log.ledger.store.leaves()]
        leaves[index] = entry.leaf_hash
        tree = MerkleTree()
        tree.append_leaf_hashes(leaves)
        return other, entry.encoding, tree, self._signed_head(tree)

    # ================================================================== shutting down

    def close(self) -> None:
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.background.shutdown(wait=True, cancel_futures=True)
        self.transport.close()
        self.log.close()
