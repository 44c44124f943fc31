"""The server's side of SecAgg / SecAgg+: collect each round's messages, route them, and in the
end rebuild the missing masks and output the sum (Bonawitz et al. 2017, Figure 4).

Each ``collect_*`` method takes the messages that arrived in a round (in any order) and returns
the replies, by recipient. The clients whose message arrived and passed the checks form the
round's survivor set: ``U_1`` (advertised), ``U_2`` (shared keys), ``U_3`` (sent a masked input),
``U_4`` (signed ``U_3``; active model only) and ``U_5`` (revealed shares). A message that fails a
check is refused and recorded in :attr:`Server.rejected` with the client and the reason; that
client is treated as dropped. When a round leaves fewer than ``t`` share holders for some client
whose secret will be needed, the server aborts with :class:`TooFewSurvivors`.

**Output.** ``z = sum_{u in U_3} y_u - sum_{u in U_3} PRG(b_u)
- sum_{u in U_2 \\ U_3} sum_{v in U_3 ∩ N(u)} m_vu``, ``m_vu = +-PRG(s_uv)`` the mask that ``v``
added for the dropout ``u``; ``b_u`` is rebuilt from the seed shares of ``U_3``'s members and
``s_u^SK`` from the key shares of the dropouts.
For every client the server receives shares of one secret or the other, never both (each holder
reveals only one kind per owner, and a response that reveals the wrong kind is refused).

**Checks on rebuilt secrets.** A rebuilt ``s_u^SK`` must match the advertised ``s_u^PK``; a
rebuilt ``b_u`` must match the SHA-256 commitment signed in ``u``'s advertisement (an addition to
the paper, at 32 bytes per client, so that a lying holder is always detected). When more than
``t`` shares are at hand and they disagree, the server names the holder whose share, left out,
makes the rest rebuild the committed secret.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from phalanx.privacy.secagg import messages as msg
from phalanx.privacy.secagg import shamir
from phalanx.privacy.secagg.config import SessionConfig
from phalanx.privacy.secagg.crypto import (
    MaskExpander,
    agree,
    pairwise_mask_key,
    public_bytes,
    seed_commitment,
    self_mask_key,
    x25519_private,
)
from phalanx.privacy.secagg.encoding import reduce, unpack_bits, vector_dtype
from phalanx.privacy.secagg.errors import OutOfOrder, ProtocolAbort, TooFewSurvivors
from phalanx.privacy.secagg.identity import Verifier, advertisement_message, survivors_message


@dataclass(frozen=True)
class Rejection:
    """A client message the server refused: the client is treated as dropped from then on."""

    phase: str
    client: int
    reason: str


class Server:
    """The server of one session; ``verify`` checks identity signatures by client id."""

    def __init__(self, config: SessionConfig, verify: Verifier):
        self.config, self._verify = config, verify
        self.rejected: list[Rejection] = []
        self._next = "advertise"

    # -- helpers -------------------------------------------------------------------------------
    def _expect(self, step: str) -> None:
        if self._next != step:
            raise OutOfOrder(f"the server was asked to run '{step}' but its next step is '{self._next}'")

    def _admit(self, phase: str, messages: Iterable, allowed: set[int], check) -> dict[int, object]:
        """The messages from allowed senders that pass ``check`` (a reason string, or None), by sender;
        a sender heard twice is refused altogether."""
        accepted, seen = {}, set()
        for m in messages:
            sender = m.sender
            if sender in seen:
                accepted.pop(sender, None)
                self.rejected.append(Rejection(phase, sender, "sent two messages in one round"))
                continue
            seen.add(sender)
            reason = "is not in the previous round's survivor set" if sender not in allowed else check(m)
            if reason:
                self.rejected.append(Rejection(phase, sender, reason))
            else:
                accepted[sender] = m
        return accepted

    def _require(self, phase: str, owners: Iterable[int], alive: set[int]) -> None:
        """Every owner whose secret may be needed keeps at least ``t`` live share holders."""
        for owner in owners:
            have = len(alive.intersection(self.config.holders(owner)))
            if have < self.config.t:
                detail = "" if self.config.degree is None else f"(share holders of client {owner})"
                raise TooFewSurvivors(phase, have, self.config.t, detail)

    # -- round 0 -------------------------------------------------------------------------------
    def collect_advertisements(self, adverts: Iterable[msg.AdvertiseKeys]) -> dict[int, msg.KeyDirectory]:
        phase, cfg = "advertise", self.config
        self._expect(phase)

        def check(a: msg.AdvertiseKeys):
            message = advertisement_message(cfg.digest, a.sender, a.cipher_pk, a.mask_pk, a.commitment)
            if not self._verify(a.sender, message, a.signature):
                return "invalid identity signature on its advertisement (forged, altered or replayed)"
            return None

        accepted = self._admit(phase, adverts, set(cfg.clients), check)
        owners: dict[bytes, list[int]] = defaultdict(list)
        for a in accepted.values():
            for key in {a.cipher_pk, a.mask_pk}:
                owners[key].append(a.sender)
        for key, who in owners.items():
            if len(who) > 1:
                for u in who:
                    if accepted.pop(u, None) is not None:
                        self.rejected.append(Rejection(phase, u, f"advertises a public key that clients "
                                                       f"{sorted(who)} all advertise (a replayed key)"))
        self.adverts = accepted
        self.u1 = set(accepted)
        self._require(phase, self.u1, self.u1)
        self._next = "share_keys"
        return {u: msg.KeyDirectory(u, tuple(accepted[v] for v in cfg.holders(u) if v in accepted))
                for u in sorted(self.u1)}

    # -- round 1 -------------------------------------------------------------------------------
    def collect_shares(self, messages: Iterable[msg.EncryptedShares]) -> dict[int, msg.ShareBundle]:
        phase, cfg = "share_keys", self.config
        self._expect(phase)

        def check(m: msg.EncryptedShares):
            want = sorted(v for v in cfg.holders(m.sender) if v in self.u1 and v != m.sender)
            got = sorted(v for v, _ in m.ciphertexts)
            return None if got == want else f"addressed shares to {got} instead of its holders {want}"

        accepted = self._admit(phase, messages, self.u1, check)
        self.u2 = set(accepted)
        self._require(phase, self.u2, self.u2)
        inbox: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
        for sender in sorted(accepted):
            for recipient, ciphertext in accepted[sender].ciphertexts:
                if recipient in self.u2:
                    inbox[recipient].append((sender, ciphertext))
        self._next = "masked_input"
        return {v: msg.ShareBundle(v, tuple(inbox[v])) for v in sorted(self.u2)}

    # -- round 2 -------------------------------------------------------------------------------
    def collect_masked(self, messages: Iterable[msg.MaskedInput]) -> dict[int, msg.SurvivorList]:
        phase, cfg = "masked_input", self.config
        self._expect(phase)
        vectors: dict[int, np.ndarray] = {}

        def check(m: msg.MaskedInput):
            try:
                vectors[m.sender] = unpack_bits(m.vector, cfg.bits, cfg.dim)
            except ValueError as e:
                return f"malformed masked input: {e}"
            return None

        accepted = self._admit(phase, messages, self.u2, check)
        self.u3 = set(accepted)
        self._masked = {u: vectors[u] for u in accepted}
        self._owners = sorted(u for u in self.u2 if u in self.u3 or self.u3.intersection(cfg.neighbours[u]))
        self._require(phase, self._owners, self.u3)
        self._survivors = tuple(sorted(self.u3))
        self._next = "consistency" if cfg.active else "unmasking"
        return {u: msg.SurvivorList(u, self._survivors) for u in self._survivors}

    # -- round 3 (active model) ----------------------------------------------------------------
    def collect_signatures(self, messages: Iterable[msg.SurvivorSignature]
                           ) -> dict[int, msg.SurvivorSignatures]:
        phase, cfg = "consistency", self.config
        self._expect(phase)
        signed = survivors_message(cfg.digest, self._survivors)

        def check(m: msg.SurvivorSignature):
            return None if self._verify(m.sender, signed, m.signature) else "invalid signature on U_3"

        accepted = self._admit(phase, messages, self.u3, check)
        self.u4 = set(accepted)
        self._require(phase, self._owners, self.u4)
        signatures = tuple((u, accepted[u].signature) for u in sorted(accepted))
        self._next = "unmasking"
        return {u: msg.SurvivorSignatures(u, self._survivors, signatures) for u in sorted(self.u4)}

    # -- round 4 -------------------------------------------------------------------------------
    def collect_unmasking(self, messages: Iterable[msg.UnmaskingShares]) -> np.ndarray:
        """The sum over ``Z_{2^k}`` of the inputs of ``U_3`` (:attr:`survivors`)."""
        phase, cfg = "unmasking", self.config
        self._expect(phase)
        decoded: dict[int, dict[str, dict[int, np.ndarray]]] = {}

        def check(m: msg.UnmaskingShares):
            held = self.u2.intersection(cfg.neighbours[m.sender]) | {m.sender}   # the graph is symmetric
            want_seed, want_key = sorted(held & self.u3), sorted(held - self.u3)
            got_seed, got_key = [v for v, _ in m.seed_shares], [v for v, _ in m.key_shares]
            if got_seed != want_seed or got_key != want_key:
                return (f"revealed seed shares of {got_seed} and key shares of {got_key}; expected seed "
                        f"shares of {want_seed} and key shares of {want_key}")
            try:
                decoded[m.sender] = {kind: dict(zip(owners, shamir.decode_shares([s for _, s in pairs])))
                                     for kind, owners, pairs in (("seed", got_seed, m.seed_shares),
                                                                 ("key", got_key, m.key_shares))}
            except ValueError as e:
                return f"malformed share: {e}"
            return None

        accepted = self._admit(phase, messages, self.u4 if cfg.active else self.u3, check)
        self.u5 = set(accepted)
        self._require(phase, self._owners, self.u5)
        shares = {u: decoded[u] for u in accepted}
        seeds = self._rebuild("seed", sorted(self.u3), shares, self._seed_ok)
        keys = self._rebuild("key", [u for u in self._owners if u not in self.u3],
                             shares, self._key_ok)

        total = np.zeros(cfg.dim, dtype=vector_dtype(cfg.bits))
        for u in self._survivors:
            np.add(total, self._masked[u], out=total)
        expander = MaskExpander(cfg.dim, cfg.bits)
        for u, seed in seeds.items():
            expander.add(total, self_mask_key(seed, cfg.digest, u), -1)
        for u, key in keys.items():
            private = x25519_private(key)
            for v in sorted(self.u3.intersection(cfg.neighbours[u])):
                shared = agree(private, self.adverts[v].mask_pk)
                # v added +PRG(s_uv) if u > v, else -PRG(s_uv); take the same term away
                expander.add(total, pairwise_mask_key(shared, cfg.digest, v, u), -1 if u > v else 1)
        self._masked = {}
        self._next = "done"
        return reduce(total, cfg.bits)

    @property
    def survivors(self) -> tuple[int, ...]:
        """``U_3``: the clients whose inputs are in the sum."""
        return self._survivors

    def _seed_ok(self, owner: int, secret: bytes) -> bool:
        return seed_commitment(secret, self.config.digest, owner) == self.adverts[owner].commitment

    def _key_ok(self, owner: int, secret: bytes) -> bool:
        return public_bytes(x25519_private(secret)) == self.adverts[owner].mask_pk

    def _rebuild(self, kind: str, owners: list[int], shares, valid) -> dict[int, bytes]:
        """Each owner's ``kind`` secret from the live holders' shares, checked by ``valid``; owners
        with the same holders are rebuilt in one vectorised interpolation."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for owner in owners:
            groups[tuple(w for w in self.config.holders(owner) if w in shares)].append(owner)
        out = {}
        for holders, group in groups.items():
            xs = [w + 1 for w in holders]
            ys = np.stack([np.stack([shares[w][kind][o] for o in group]) for w in holders])  # (m, g, chunks)
            try:
                chunks = shamir.reconstruct(xs, ys, self.config.t)
            except shamir.InconsistentShares:
                chunks = None    # some owner's shares disagree: take the owners one by one
            for i, owner in enumerate(group):
                secret = _joined(chunks[i]) if chunks is not None else _attempt(xs, ys[:, i], self.config.t)
                if secret is None or not valid(owner, secret):
                    self._blame(kind, owner, holders, ys[:, i], valid)
                out[owner] = secret
        return out

    def _blame(self, kind: str, owner: int, holders: tuple[int, ...], ys: np.ndarray, valid) -> None:
        """Abort, naming the holder whose share, left out, lets the others rebuild the valid secret."""
        t, m = self.config.t, len(holders)
        what = "self-mask seed" if kind == "seed" else "mask key"
        for i in range(m) if m > t else ():
            keep = [j for j in range(m) if j != i]
            secret = _attempt([holders[j] + 1 for j in keep], ys[keep], t)
            if secret is not None and valid(owner, secret):
                raise ProtocolAbort("unmasking", f"client {holders[i]}'s share of client {owner}'s {what} "
                                    "is false (the other shares rebuild the committed secret)",
                                    culprit=holders[i], party="server")
        try:
            consistent = m > t and shamir.reconstruct([w + 1 for w in holders], ys, t) is not None
        except shamir.InconsistentShares:
            consistent = False
        if consistent:
            raise ProtocolAbort("unmasking", f"the {m} consistent shares of client {owner}'s {what} "
                                "rebuild a secret other than the one it committed to: it dealt false shares",
                                culprit=owner, party="server")
        raise ProtocolAbort("unmasking", f"the {m} shares of client {owner}'s {what} do not rebuild the "
                            f"committed secret, and no single holder's share explains it (with {m} shares "
                            f"and threshold {t}, a liar can be named only from {t + 1} shares on)",
                            party="server")


def _joined(chunks: np.ndarray) -> bytes | None:
    """The 32-byte secret of rebuilt chunks, or None if they cannot be one."""
    try:
        return shamir.join_secret(chunks)
    except shamir.InconsistentShares:
        return None


def _attempt(xs: list[int], ys: np.ndarray, t: int) -> bytes | None:
    """The secret rebuilt from one owner's shares, or None if the shares are inconsistent."""
    try:
        return _joined(shamir.reconstruct(xs, ys, t))
    except shamir.InconsistentShares:
        return None
