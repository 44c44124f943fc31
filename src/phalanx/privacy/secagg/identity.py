"""Identity signatures, injected: the protocol never holds a key store.

A client is given a ``sign(message) -> signature`` callable for its own identity key; every party
is given a ``verify(client_id, message, signature) -> bool`` callable that knows the identity
public keys. The engine connects them to the nodes' identity keys (``phalanx.core`` key types);
the two adapters here wrap raw Ed25519 keys from the ``cryptography`` package, for the in-process
driver and the tests.

Every signed message starts with a purpose label and the session digest
(:func:`advertisement_message`, :func:`survivors_message`), so a signature is valid for one
purpose in one session only: a replayed advertisement from another session, round or bucket does
not verify.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from phalanx.privacy.secagg.crypto import DOMAIN

Signer = Callable[[bytes], bytes]
Verifier = Callable[[int, bytes, bytes], bool]


def advertisement_message(digest: bytes, client: int, cipher_pk: bytes, mask_pk: bytes,
                          commitment: bytes) -> bytes:
    """What a client signs in round 0: its two X25519 public keys and its seed commitment."""
    return DOMAIN + b"advertise/" + digest + struct.pack(">I", client) + cipher_pk + mask_pk + commitment


def survivors_message(digest: bytes, survivors: tuple[int, ...]) -> bytes:
    """What a client signs in the consistency check: the survivor set ``U_3`` it was shown."""
    return DOMAIN + b"survivors/" + digest + struct.pack(f">I{len(survivors)}I", len(survivors), *survivors)


def ed25519_signer(private_key: Ed25519PrivateKey) -> Signer:
    """``sign`` for one Ed25519 identity key."""
    return private_key.sign


def ed25519_verifier(public_keys: Mapping[int, bytes], *, memo: bool = False) -> Verifier:
    """``verify`` against raw 32-byte Ed25519 public keys by client id (unknown ids never verify).

    ``memo=True`` remembers each verdict by ``(id, message, signature)``: the in-process driver
    uses it so that the ``n`` simulated clients checking the same signature pay for it once; the
    verdicts are the same as without it.
    """
    keys = {int(c): Ed25519PublicKey.from_public_bytes(bytes(pk)) for c, pk in public_keys.items()}
    seen: dict[tuple[int, bytes, bytes], bool] = {}

    def verify(client: int, message: bytes, signature: bytes) -> bool:
        if memo and (client, message, signature) in seen:
            return seen[client, message, signature]
        key = keys.get(client)
        try:
            ok = key is not None and (key.verify(signature, message) is None)
        except InvalidSignature:
            ok = False
        if memo:
            seen[client, message, signature] = ok
        return ok

    return verify
