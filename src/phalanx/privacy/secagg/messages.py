"""The typed messages of the protocol and their byte encoding (Bonawitz et al. 2017, Figure 4).

======  ===================  ==================  ===============================================
round   client -> server     server -> client    content
======  ===================  ==================  ===============================================
0       AdvertiseKeys        KeyDirectory        X25519 keys ``c_u``, ``s_u``, seed commitment, signed
1       EncryptedShares      ShareBundle         AES-GCM ciphertexts of the Shamir shares, per holder
2       MaskedInput          SurvivorList        ``y_u``, packed at ``k`` bits per element
3       SurvivorSignature    SurvivorSignatures  (active model only) signatures on ``U_3``
4       UnmaskingShares      (the sum)           seed shares of survivors, key shares of dropouts
======  ===================  ==================  ===============================================

In the honest-but-curious model round 3 is skipped and the ``SurvivorList`` of round 2 starts
the unmasking.

**Bytes.** A message is a 22-byte header (``b"PXSA"``, version 1, the type, the first 16 bytes
of the session digest) and its fields in order: ids and counts as big-endian ``uint32``, keys and
commitments 32 bytes, signatures 64, Shamir shares 36, and variable blobs (ciphertexts, the
masked vector) prefixed by their ``uint32`` length. :func:`decode` refuses a message of another
session, a truncated or over-long one, and an unknown type, each with its own error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from typing import ClassVar

from phalanx.privacy.secagg.shamir import SHARE_BYTES

MAGIC = b"PXSA"
VERSION = 1
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + 2 + TAG_BYTES


class MalformedMessage(ValueError):
    """The bytes are not a well-formed message of this session."""


# field kinds: "id" uint32; ("raw", n) n bytes; "blob" uint32 length + bytes; "ids" count + uint32s;
# ("pairs", n) count + (uint32 id, n bytes) with n = None for length-prefixed blobs; "adverts"
@dataclass(frozen=True)
class Message:
    kinds: ClassVar[tuple] = ()
    type_id: ClassVar[int] = 0


@dataclass(frozen=True)
class AdvertiseKeys(Message):
    """Round 0: the two X25519 public keys and the self-mask seed commitment, signed."""
    sender: int
    cipher_pk: bytes
    mask_pk: bytes
    commitment: bytes
    signature: bytes
    kinds: ClassVar[tuple] = ("id", ("raw", 32), ("raw", 32), ("raw", 32), ("raw", 64))
    type_id: ClassVar[int] = 1


@dataclass(frozen=True)
class KeyDirectory(Message):
    """Round 0 reply: the advertisements of the recipient's share holders that reached the server."""
    recipient: int
    adverts: tuple[AdvertiseKeys, ...]
    kinds: ClassVar[tuple] = ("id", "adverts")
    type_id: ClassVar[int] = 2


@dataclass(frozen=True)
class EncryptedShares(Message):
    """Round 1: one ciphertext per holder, ``(recipient, ciphertext)``."""
    sender: int
    ciphertexts: tuple[tuple[int, bytes], ...]
    kinds: ClassVar[tuple] = ("id", ("pairs", None))
    type_id: ClassVar[int] = 3


@dataclass(frozen=True)
class ShareBundle(Message):
    """Round 1 reply: the ciphertexts addressed to the recipient, ``(sender, ciphertext)``."""
    recipient: int
    ciphertexts: tuple[tuple[int, bytes], ...]
    kinds: ClassVar[tuple] = ("id", ("pairs", None))
    type_id: ClassVar[int] = 4


@dataclass(frozen=True)
class MaskedInput(Message):
    """Round 2: ``y_u = x_u + PRG(b_u) + sum_v +-PRG(s_uv)`` packed at ``k`` bits per element."""
    sender: int
    vector: bytes
    kinds: ClassVar[tuple] = ("id", "blob")
    type_id: ClassVar[int] = 5


@dataclass(frozen=True)
class SurvivorList(Message):
    """Round 2 reply: ``U_3``, the clients whose masked inputs the server holds."""
    recipient: int
    survivors: tuple[int, ...]
    kinds: ClassVar[tuple] = ("id", "ids")
    type_id: ClassVar[int] = 6


@dataclass(frozen=True)
class SurvivorSignature(Message):
    """Round 3 (active model): the sender's identity signature on ``U_3``."""
    sender: int
    signature: bytes
    kinds: ClassVar[tuple] = ("id", ("raw", 64))
    type_id: ClassVar[int] = 7


@dataclass(frozen=True)
class SurvivorSignatures(Message):
    """Round 3 reply: ``U_3`` and the signatures on it, ``(signer, signature)``."""
    recipient: int
    survivors: tuple[int, ...]
    signatures: tuple[tuple[int, bytes], ...]
    kinds: ClassVar[tuple] = ("id", "ids", ("pairs", 64))
    type_id: ClassVar[int] = 8


@dataclass(frozen=True)
class UnmaskingShares(Message):
    """Round 4: shares of ``b_v`` for survivors ``v`` and of ``s_v^SK`` for dropouts, ``(owner, share)``."""
    sender: int
    seed_shares: tuple[tuple[int, bytes], ...]
    key_shares: tuple[tuple[int, bytes], ...]
    kinds: ClassVar[tuple] = ("id", ("pairs", SHARE_BYTES), ("pairs", SHARE_BYTES))
    type_id: ClassVar[int] = 9


TYPES: dict[int, type[Message]] = {cls.type_id: cls for cls in (
    AdvertiseKeys, KeyDirectory, EncryptedShares, ShareBundle, MaskedInput, SurvivorList,
    SurvivorSignature, SurvivorSignatures, UnmaskingShares)}


def _write(kind, value, out: list[bytes]) -> None:
    if kind == "id":
        out.append(struct.pack(">I", value))
    elif kind == "blob":
        out.append(struct.pack(">I", len(value)) + value)
    elif kind == "ids":
        out.append(struct.pack(f">I{len(value)}I", len(value), *value))
    elif kind == "adverts":
        out.append(struct.pack(">I", len(value)))
        for advert in value:
            _write_fields(advert, out)
    elif kind[0] == "raw":
        if len(value) != kind[1]:
            raise MalformedMessage(f"field of {kind[1]} bytes holds {len(value)}")
        out.append(value)
    else:  # ("pairs", size)
        out.append(struct.pack(">I", len(value)))
        for ident, blob in value:
            _write("id", ident, out)
            _write("blob" if kind[1] is None else ("raw", kind[1]), blob, out)


def _write_fields(message: Message, out: list[bytes]) -> None:
    for f, kind in zip(fields(message), message.kinds):
        _write(kind, getattr(message, f.name), out)


class _Reader:
    def __init__(self, data: bytes, offset: int):
        self.data, self.pos = memoryview(data), offset

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MalformedMessage(f"truncated: needs {n} bytes at offset {self.pos}, "
                                   f"{len(self.data) - self.pos} left")
        chunk = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return chunk

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def read(self, kind):
        if kind == "id":
            return self.u32()
        if kind == "blob":
            return self.take(self.u32())
        if kind == "ids":
            count = self.u32()
            return struct.unpack(f">{count}I", self.take(4 * count))
        if kind == "adverts":
            return tuple(self.message(AdvertiseKeys) for _ in range(self.u32()))
        if kind[0] == "raw":
            return self.take(kind[1])
        item = "blob" if kind[1] is None else ("raw", kind[1])
        return tuple((self.u32(), self.read(item)) for _ in range(self.u32()))

    def message(self, cls: type[Message]) -> Message:
        return cls(*(self.read(kind) for kind in cls.kinds))


def encode(message: Message, digest: bytes) -> bytes:
    """The message's bytes, tagged with the session ``digest``."""
    out = [MAGIC, bytes([VERSION, message.type_id]), digest[:TAG_BYTES]]
    _write_fields(message, out)
    return b"".join(out)


def decode(data: bytes, digest: bytes) -> Message:
    """The message in ``data``; raises :class:`MalformedMessage` naming what is wrong."""
    if len(data) < HEADER_BYTES or data[:4] != MAGIC:
        raise MalformedMessage("not a secure-aggregation message (bad magic or too short)")
    if data[4] != VERSION:
        raise MalformedMessage(f"unsupported version {data[4]} (this is version {VERSION})")
    cls = TYPES.get(data[5])
    if cls is None:
        raise MalformedMessage(f"unknown message type {data[5]}")
    if data[6:HEADER_BYTES] != digest[:TAG_BYTES]:
        raise MalformedMessage(f"{cls.__name__} belongs to another session")
    reader = _Reader(data, HEADER_BYTES)
    message = reader.message(cls)
    if reader.pos != len(data):
        raise MalformedMessage(f"{cls.__name__} has {len(data) - reader.pos} trailing bytes")
    return message
