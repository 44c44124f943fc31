"""The client's side of SecAgg / SecAgg+ as a state machine: one method per round, each taking
the server's last message and returning the client's next one (Bonawitz et al. 2017, Figure 4).

- ``advertise()`` (round 0): fresh X25519 key pairs ``c_u`` (share encryption) and ``s_u``
  (masks), a fresh self-mask seed ``b_u`` with its SHA-256 commitment, all signed with the
  identity key.
- ``share_keys(KeyDirectory)`` (round 1): verify every advertisement's identity signature and that
  all public keys are distinct; Shamir-share ``s_u^SK`` and ``b_u`` among the holders present,
  ``t`` of them; encrypt each holder's two shares with AES-GCM under a key agreed with its ``c``.
- ``masked_input(ShareBundle)`` (round 2): decrypt and keep the shares received (a ciphertext that
  fails authentication aborts, naming its sender); send
  ``y_u = x_u + PRG(b_u) + sum_{v in U_2, v > u} PRG(s_uv) - sum_{v in U_2, v < u} PRG(s_uv)``.
  The key-agreement secrets and ``b_u`` are then forgotten.
- ``consistency(SurvivorList)`` (round 3, active model only): check ``U_3 ⊆ U_2`` and sign ``U_3``.
- ``unmask(SurvivorSignatures | SurvivorList)`` (round 4): in the active model, require valid
  signatures on the very set it signed from at least ``t`` holders; then reveal, for each peer
  ``v`` whose shares it holds, the share of ``b_v`` if ``v`` is in ``U_3`` and the share of
  ``s_v^SK`` otherwise. Never both: the answer is given once, and a second request is refused
  (:class:`OutOfOrder`), since a server that asked twice with two survivor sets would learn both
  secrets of some peer and with them its input.

Every check that fails raises :class:`ProtocolAbort` naming the phase, this client, and the
culprit (a client id, or the server for inconsistent routing and survivor sets).
"""

from __future__ import annotations

import os

import numpy as np

from phalanx.privacy.secagg import shamir
from phalanx.privacy.secagg.config import SessionConfig
from phalanx.privacy.secagg.crypto import (
    MaskExpander,
    agree,
    open_sealed,
    pairwise_mask_key,
    public_bytes,
    seal,
    seed_commitment,
    self_mask_key,
    share_key,
    x25519_private,
)
from phalanx.privacy.secagg.encoding import as_ring_elements, pack_bits, reduce
from phalanx.privacy.secagg.errors import SERVER, OutOfOrder, ProtocolAbort, TooFewSurvivors
from phalanx.privacy.secagg.identity import Signer, Verifier, advertisement_message, survivors_message
from phalanx.privacy.secagg.messages import (
    AdvertiseKeys,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    ShareBundle,
    SurvivorList,
    SurvivorSignature,
    SurvivorSignatures,
    UnmaskingShares,
)


class Client:
    """One client of one session. ``value``: its input, ``dim`` integers in ``[0, 2^bits)``
    (encode reals with :class:`~phalanx.privacy.secagg.encoding.FixedPoint` first)."""

    def __init__(self, config: SessionConfig, client_id: int, value, *, sign: Signer, verify: Verifier,
                 randbytes=os.urandom):
        if client_id not in config.neighbours:
            raise ValueError(f"client {client_id} is not invited to this session")
        x = as_ring_elements(value, config.bits)
        if x.shape != (config.dim,):
            raise ValueError(f"client {client_id}'s input has shape {x.shape}, "
                             f"the session needs ({config.dim},)")
        self.config, self.id, self._x = config, client_id, x
        self._sign, self._verify, self._rand = sign, verify, randbytes
        self.holders = frozenset(config.holders(client_id))
        self._next = "advertise"
        self._held: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # owner -> (key share, seed share)

    # -- helpers -------------------------------------------------------------------------------
    def _expect(self, step: str) -> None:
        if self._next != step:
            raise OutOfOrder(f"client {self.id} was asked to run '{step}' but its next step is "
                             f"'{self._next}'; it refuses")

    def _abort(self, phase: str, reason: str, culprit) -> ProtocolAbort:
        self._next = "aborted"
        return ProtocolAbort(phase, reason, culprit=culprit, party=self.id)

    def _short(self, phase: str, present: int) -> TooFewSurvivors:
        self._next = "aborted"
        return TooFewSurvivors(phase, present, self.config.t, f"(seen by client {self.id})")

    def _check_recipient(self, phase: str, recipient: int) -> None:
        if recipient != self.id:
            raise self._abort(phase, f"received a message addressed to client {recipient}", SERVER)

    def _agree(self, phase: str, private, peer: int, public: bytes) -> bytes:
        try:
            return agree(private, public)
        except ValueError:
            raise self._abort(phase, f"client {peer}'s X25519 public key is invalid", peer) from None

    # -- round 0 -------------------------------------------------------------------------------
    def advertise(self) -> AdvertiseKeys:
        self._expect("advertise")
        digest = self.config.digest
        self._c_sk, self._s_sk = x25519_private(self._rand(32)), x25519_private(self._rand(32))
        self._seed = self._rand(32)
        c_pk, s_pk = public_bytes(self._c_sk), public_bytes(self._s_sk)
        commitment = seed_commitment(self._seed, digest, self.id)
        signature = self._sign(advertisement_message(digest, self.id, c_pk, s_pk, commitment))
        self._advert = AdvertiseKeys(self.id, c_pk, s_pk, commitment, signature)
        self._next = "share_keys"
        return self._advert

    # -- round 1 -------------------------------------------------------------------------------
    def share_keys(self, directory: KeyDirectory) -> EncryptedShares:
        phase, cfg = "share_keys", self.config
        self._expect(phase)
        self._check_recipient(phase, directory.recipient)
        adverts: dict[int, AdvertiseKeys] = {}
        for a in directory.adverts:
            if a.sender not in self.holders:
                raise self._abort(phase, f"the key directory lists client {a.sender}, who is not a "
                                  f"share holder of client {self.id}", SERVER)
            if a.sender in adverts:
                raise self._abort(phase, f"the key directory lists client {a.sender} twice", SERVER)
            message = advertisement_message(cfg.digest, a.sender, a.cipher_pk, a.mask_pk, a.commitment)
            if not self._verify(a.sender, message, a.signature):
                raise self._abort(phase, f"the advertisement of client {a.sender} has no valid identity "
                                  "signature (forged, altered, or replayed from another session)", a.sender)
            adverts[a.sender] = a
        if adverts.get(self.id) != self._advert:
            raise self._abort(phase, "the key directory does not carry this client's own advertisement "
                              "unchanged", SERVER)
        owner_of: dict[bytes, int] = {}
        for v in sorted(adverts):
            for key in (adverts[v].cipher_pk, adverts[v].mask_pk):
                if key in owner_of:
                    raise self._abort(phase, f"client {v} advertises a public key already advertised by "
                                      f"client {owner_of[key]} (a replayed key)", v)
                owner_of[key] = v
        if len(adverts) < cfg.t:
            raise self._short(phase, len(adverts))
        self._u1 = adverts
        holders = sorted(adverts)
        xs = [v + 1 for v in holders]
        key_shares = shamir.share(self._s_sk.private_bytes_raw(), cfg.t, xs, self._rand)
        seed_shares = shamir.share(self._seed, cfg.t, xs, self._rand)
        ciphertexts, self._c_shared = [], {}
        encoded_keys, encoded_seeds = shamir.encode_shares(key_shares), shamir.encode_shares(seed_shares)
        for v, ks, ss, ek, es in zip(holders, key_shares, seed_shares, encoded_keys, encoded_seeds):
            if v == self.id:
                self._held[v] = (ks, ss)
                continue
            payload = ek + es
            self._c_shared[v] = self._agree(phase, self._c_sk, v, adverts[v].cipher_pk)
            key = share_key(self._c_shared[v], cfg.digest, self.id, v)
            ciphertexts.append((v, seal(key, cfg.digest, self.id, v, payload)))
        self._next = "masked_input"
        return EncryptedShares(self.id, tuple(ciphertexts))

    # -- round 2 -------------------------------------------------------------------------------
    def masked_input(self, bundle: ShareBundle) -> MaskedInput:
        phase, cfg = "masked_input", self.config
        self._expect(phase)
        self._check_recipient(phase, bundle.recipient)
        senders = [s for s, _ in bundle.ciphertexts]
        if len(set(senders)) != len(senders) or any(s == self.id or s not in self._u1 for s in senders):
            raise self._abort(phase, "the share bundle repeats a sender or names one absent from the "
                              "key directory", SERVER)
        u2 = frozenset(senders) | {self.id}
        if len(u2) < cfg.t:
            raise self._short(phase, len(u2))
        for s, ciphertext in bundle.ciphertexts:
            key = share_key(self._c_shared[s], cfg.digest, s, self.id)
            plain = open_sealed(key, cfg.digest, s, self.id, ciphertext)
            if plain is None or len(plain) != 2 * shamir.SHARE_BYTES:
                raise self._abort(phase, f"the share ciphertext from client {s} fails authentication "
                                  f"(altered by client {s}, or by the server in transit)", s)
            try:
                self._held[s] = (shamir.decode_share(plain[:shamir.SHARE_BYTES]),
                                 shamir.decode_share(plain[shamir.SHARE_BYTES:]))
            except ValueError as e:
                raise self._abort(phase, f"client {s} sent a malformed share: {e}", s) from None
        y = self._x.copy()
        expander = MaskExpander(cfg.dim, cfg.bits)
        expander.add(y, self_mask_key(self._seed, cfg.digest, self.id))
        for v in sorted(u2 - {self.id}):
            shared = self._agree(phase, self._s_sk, v, self._u1[v].mask_pk)
            expander.add(y, pairwise_mask_key(shared, cfg.digest, self.id, v), 1 if v > self.id else -1)
        reduce(y, cfg.bits)
        self._u2 = u2
        self._c_sk = self._s_sk = self._seed = self._c_shared = None   # only the shares are needed now
        self._next = "consistency" if cfg.active else "unmasking"
        return MaskedInput(self.id, pack_bits(y, cfg.bits))

    def _survivors(self, phase: str, survivors) -> tuple[int, ...]:
        u3 = tuple(survivors)
        if list(u3) != sorted(set(u3)):
            raise self._abort(phase, "the survivor set is not a sorted list of distinct ids", SERVER)
        mine = set(u3) & self.holders
        if not mine <= self._u2:
            raise self._abort(phase, f"the survivor set lists clients {sorted(mine - self._u2)} that never "
                              f"sent client {self.id} their shares", SERVER)
        if len(mine) < self.config.t:
            raise self._short(phase, len(mine))
        return u3

    # -- round 3 (active model) ----------------------------------------------------------------
    def consistency(self, shown: SurvivorList) -> SurvivorSignature:
        phase = "consistency"
        self._expect(phase)
        self._check_recipient(phase, shown.recipient)
        self._u3 = self._survivors(phase, shown.survivors)
        signature = self._sign(survivors_message(self.config.digest, self._u3))
        self._next = "unmasking"
        return SurvivorSignature(self.id, signature)

    # -- round 4 -------------------------------------------------------------------------------
    def unmask(self, message: SurvivorSignatures | SurvivorList) -> UnmaskingShares:
        phase, cfg = "unmasking", self.config
        if self._next == "done":
            raise OutOfOrder(f"client {self.id} already revealed its shares in this session; it refuses "
                             "a second unmasking request (answering two survivor sets would reveal both "
                             "secrets of some peer)")
        self._expect(phase)
        self._check_recipient(phase, message.recipient)
        if cfg.active:
            u3 = self._check_signatures(phase, message)
        else:
            if not isinstance(message, SurvivorList):
                raise self._abort(phase, f"expected a SurvivorList, got {type(message).__name__}", SERVER)
            u3 = self._survivors(phase, message.survivors)
        alive = frozenset(u3)
        owners = sorted(self._held)
        seed_owners = [o for o in owners if o in alive]
        key_owners = [o for o in owners if o not in alive]
        seed_shares = tuple(zip(seed_owners, shamir.encode_shares(
            np.array([self._held[o][1] for o in seed_owners]).reshape(-1, shamir.CHUNKS))))
        key_shares = tuple(zip(key_owners, shamir.encode_shares(
            np.array([self._held[o][0] for o in key_owners]).reshape(-1, shamir.CHUNKS))))
        self._held = {}
        self._next = "done"
        return UnmaskingShares(self.id, seed_shares, key_shares)

    def _check_signatures(self, phase: str, message) -> tuple[int, ...]:
        if not isinstance(message, SurvivorSignatures):
            raise self._abort(phase, "the active model requires the signed survivor set (consistency "
                              f"check), got {type(message).__name__}", SERVER)
        if tuple(message.survivors) != self._u3:
            raise self._abort(phase, "the server shows a survivor set different from the one this client "
                              "signed", SERVER)
        signed = survivors_message(self.config.digest, self._u3)
        signers = [v for v, _ in message.signatures]
        if len(set(signers)) != len(signers) or not set(signers) <= set(self._u3):
            raise self._abort(phase, "the signatures repeat a signer or come from outside the survivor set",
                              SERVER)
        for v, signature in message.signatures:
            if not self._verify(v, signed, signature):
                raise self._abort(phase, f"client {v}'s signature does not cover the survivor set this "
                                  "client signed: the server showed different clients different sets", SERVER)
        count = len(set(signers) & self.holders)
        if count < self.config.t:
            raise self._short(phase, count)
        return self._u3
