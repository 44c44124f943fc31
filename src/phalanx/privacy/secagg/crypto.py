"""The cryptographic building blocks, each from the ``cryptography`` package, with domain
separation: every derived key names its purpose, the session digest and the parties.

- **Key agreement**: X25519 (RFC 7748). A client has two key pairs per session, as in Bonawitz
  et al. 2017 (Figure 4, round 0): ``c`` for encrypting shares, ``s`` for pairwise masks.
- **Key derivation**: HKDF-SHA256 (RFC 5869) from the raw X25519 output, with
  ``info = "phalanx/secagg/v1/<purpose>" || session digest || party ids``. Pairwise mask keys
  take the two ids in increasing order (both ends derive the same key); share-encryption keys
  take ``sender || recipient``, so each direction has its own key, used for exactly one message.
- **Authenticated encryption** of the Shamir shares sent through the server: AES-256-GCM with the
  session digest and both ids as associated data. A key encrypts one message only, so the
  all-zero nonce is never reused.
- **PRG**: the AES-256-CTR keystream from counter zero (:class:`MaskExpander`), read as
  little-endian ``uint32`` (``k <= 32``) or ``uint64`` words: one stream per pair, expanded in
  C by OpenSSL and added with numpy, with no Python loop over elements. Self-masks are expanded
  from the client's own seed ``b_u`` through HKDF with purpose ``self-mask``, never from a
  pairwise secret.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from phalanx.privacy.secagg.encoding import vector_dtype

DOMAIN = b"phalanx/secagg/v1/"
KEY_BYTES = 32
_ZERO_NONCE = bytes(12)
_ZERO_COUNTER = bytes(16)


def x25519_private(seed: bytes) -> X25519PrivateKey:
    """An X25519 private key from 32 random bytes (the caller's randomness source)."""
    return X25519PrivateKey.from_private_bytes(seed)


def public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


def agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """The raw X25519 shared secret; raises ``ValueError`` for a malformed or low-order key."""
    return private.exchange(X25519PublicKey.from_public_bytes(peer_public))


def derive(secret: bytes, purpose: str, digest: bytes, *ids: int) -> bytes:
    """A 32-byte key for ``purpose`` in session ``digest`` between ``ids``, by HKDF-SHA256."""
    info = DOMAIN + purpose.encode() + b"/" + digest + struct.pack(f">{len(ids)}I", *ids)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


def pairwise_mask_key(shared: bytes, digest: bytes, u: int, v: int) -> bytes:
    return derive(shared, "pairwise-mask", digest, min(u, v), max(u, v))


def self_mask_key(seed: bytes, digest: bytes, u: int) -> bytes:
    return derive(seed, "self-mask", digest, u)


def share_key(shared: bytes, digest: bytes, sender: int, recipient: int) -> bytes:
    return derive(shared, "share-encryption", digest, sender, recipient)


def _share_aad(digest: bytes, sender: int, recipient: int) -> bytes:
    return DOMAIN + b"shares/" + digest + struct.pack(">II", sender, recipient)


def seal(key: bytes, digest: bytes, sender: int, recipient: int, plaintext: bytes) -> bytes:
    """AES-256-GCM under a single-use key; the ids and the session are authenticated."""
    return AESGCM(key).encrypt(_ZERO_NONCE, plaintext, _share_aad(digest, sender, recipient))


def open_sealed(key: bytes, digest: bytes, sender: int, recipient: int, ciphertext: bytes) -> bytes | None:
    """The plaintext of :func:`seal`, or ``None`` if authentication fails."""
    try:
        return AESGCM(key).decrypt(_ZERO_NONCE, ciphertext, _share_aad(digest, sender, recipient))
    except InvalidTag:
        return None


def seed_commitment(seed: bytes, digest: bytes, u: int) -> bytes:
    """SHA-256 commitment to the self-mask seed (hiding: the seed is 256 uniform bits)."""
    return hashlib.sha256(DOMAIN + b"seed-commitment/" + digest + struct.pack(">I", u) + seed).digest()


class MaskExpander:
    """Expands 32-byte keys into mask vectors of ``dim`` elements of ``Z_{2^bits}``.

    One AES-256-CTR keystream per key, written into a reused buffer and added to (or subtracted
    from) an accumulator in place; additions wrap modulo the word size, which ``2^bits`` divides.
    """

    def __init__(self, dim: int, bits: int):
        self.dtype = vector_dtype(bits)
        self.dim = dim
        self._zeros = bytes(dim * self.dtype.itemsize)
        self._buffer = bytearray(len(self._zeros) + 15)
        self._view = np.frombuffer(self._buffer, dtype=self.dtype, count=dim)

    def stream(self, key: bytes) -> np.ndarray:
        """The mask for ``key`` (a view into the shared buffer: valid until the next call)."""
        encryptor = Cipher(algorithms.AES(key), modes.CTR(_ZERO_COUNTER)).encryptor()
        encryptor.update_into(self._zeros, self._buffer)
        return self._view

    def add(self, accumulator: np.ndarray, key: bytes, sign: int = 1) -> None:
        """``accumulator += sign * PRG(key)`` modulo the word size."""
        (np.add if sign > 0 else np.subtract)(accumulator, self.stream(key), out=accumulator)
