"""Ed25519 keys and signatures, and node identities.

Every node, the log and every witness holds an Ed25519 key (Bernstein et al. 2012; RFC 8032,
2017) through the ``cryptography`` package. A node's identity is the SHA-256 of its raw 32-byte
public key, so an ID can be checked against the key that signs, and two keys never share one.

Signatures are deterministic (RFC 8032 section 5.1.6), so a seeded simulation writes the same
ledger bytes every time. :meth:`SigningKey.derive` makes a key from a secret and labels, for
such runs; :meth:`SigningKey.generate` draws one from the operating system.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBLIC_KEY_SIZE = 32
SEED_SIZE = 32
SIGNATURE_SIZE = 64


class KeyFormatError(ValueError):
    """Bytes that are not an Ed25519 key."""


class SignatureError(ValueError):
    """A signature that does not verify under the key it claims."""


def node_id(public_key: bytes) -> bytes:
    """The ID of the node that holds ``public_key``: SHA-256 of the raw 32-byte key."""
    return hashlib.sha256(public_key).digest()


class VerifyKey:
    """An Ed25519 public key: verifies signatures, names a node."""

    __slots__ = ("raw", "_key")

    def __init__(self, raw: bytes):
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != PUBLIC_KEY_SIZE:
            got = f"{len(raw)} bytes" if isinstance(raw, (bytes, bytearray)) else type(raw).__name__
            raise KeyFormatError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes (got {got})")
        self.raw = bytes(raw)
        try:
            self._key = Ed25519PublicKey.from_public_bytes(self.raw)
        except ValueError as e:
            raise KeyFormatError(f"not an Ed25519 public key: {e}") from None

    @property
    def node_id(self) -> bytes:
        return node_id(self.raw)

    def verify(self, signature: bytes, message: bytes) -> None:
        """Return if ``signature`` is this key's over ``message``; raise :class:`SignatureError` if not."""
        if len(signature) != SIGNATURE_SIZE:
            raise SignatureError(f"an Ed25519 signature is {SIGNATURE_SIZE} bytes (got {len(signature)})")
        try:
            self._key.verify(bytes(signature), bytes(message))
        except InvalidSignature:
            raise SignatureError(f"bad signature for key {self.raw.hex()[:16]}...") from None

    def is_valid(self, signature: bytes, message: bytes) -> bool:
        try:
            self.verify(signature, message)
        except SignatureError:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"VerifyKey({self.raw.hex()[:16]}...)"


class SigningKey:
    """An Ed25519 private key, made from its 32-byte seed."""

    __slots__ = ("seed", "_key", "public")

    def __init__(self, seed: bytes):
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_SIZE:
            raise KeyFormatError(f"an Ed25519 seed is {SEED_SIZE} bytes")
        self.seed = bytes(seed)
        self._key = Ed25519PrivateKey.from_private_bytes(self.seed)
        self.public = VerifyKey(self._key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> SigningKey:
        """A new key from the operating system's randomness."""
        return cls(os.urandom(SEED_SIZE))

    @classmethod
    def derive(cls, secret: bytes | str, *labels: object) -> SigningKey:
        """A key determined by ``secret`` and ``labels`` (for seeded simulations and tests)."""
        h = hashlib.sha256(b"phalanx/key/v1")
        for part in (secret, *labels):
            b = part if isinstance(part, bytes) else str(part).encode()
            h.update(len(b).to_bytes(8, "big") + b)
        return cls(h.digest())

    @property
    def node_id(self) -> bytes:
        return self.public.node_id

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(bytes(message))

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public.raw.hex()[:16]}...)"
