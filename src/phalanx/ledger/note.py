"""Signed notes and verifier keys, exactly as C2SP signed-note (c2sp.org/signed-note@v1.0.0).

A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines::

    <text, each line ending in \\n>
    <blank line>
    — <key name> base64(4-byte key ID || signature)
    ...

- the text is separated from the signatures by the *last* blank line; no ASCII control
  characters but newline anywhere; key names are non-empty, with no Unicode space and no '+';
- key ID = SHA-256(key name || 0x0A || signature type || public key)[:4];
- a verifier key (*vkey*) is ``<name>+<hex key ID>+<base64(type || public key)>``, split on '+'
  at most twice (base64 holds '+');
- verifying: signatures from unknown keys (name and ID not both known) are ignored; a signature
  from a known key that fails rejects the whole note; a note with no verified signature from a
  known key is rejected.

Two signature types are implemented: 0x01, Ed25519 over the note text (the log's own signature),
and 0x04, the timestamped Ed25519 cosignature of C2SP tlog-cosignature (``cosignature/v1``),
whose signature is ``u64 timestamp || Ed25519(message)`` with message::

    cosignature/v1
    time <timestamp>
    <the whole note text>

Private keys are written as Go's ``golang.org/x/mod/sumdb/note`` writes them:
``PRIVATE+KEY+<name>+<hex key ID>+<base64(type || 32-byte seed)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from phalanx.core.keys import KeyFormatError, SignatureError, SigningKey, VerifyKey

SIG_ED25519 = 0x01
SIG_COSIGNATURE = 0x04
SIG_NAMES = {SIG_ED25519: "Ed25519", SIG_COSIGNATURE: "cosignature/v1 (timestamped Ed25519)"}
#: Most signature lines a note may carry (the spec asks verifiers to accept at least 16).
MAX_SIGNATURES = 100
MAX_NOTE_SIZE = 1 << 20
COSIGNATURE_HEADER = b"cosignature/v1\n"
_DASH = "\u2014 "


class NoteError(ValueError):
    """A note, vkey or key that is malformed."""


class NoteVerificationError(NoteError):
    """A note that no known key signed, or that a known key's signature fails on."""


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64decode(text: str, what: str) -> bytes:
    """Standard base64 (RFC 4648 section 4), strictly: padding, alphabet, and canonical bits."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError(f"{what}: not valid base64") from None
    if base64.b64encode(data).decode() != text:
        raise NoteError(f"{what}: not in canonical base64")
    return data


def check_key_name(name: str) -> str:
    if not name:
        raise NoteError("key name is empty")
    if "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"key name {name!r} contains a space or '+'")
    if any(ord(c) < 0x20 for c in name):
        raise NoteError(f"key name {name!r} contains a control character")
    return name


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4], the C2SP key ID."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def cosignature_message(text: bytes, timestamp: int) -> bytes:
    return COSIGNATURE_HEADER + b"time %d\n" % timestamp + text


# ---------------------------------------------------------------------------- notes

@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key's name, its 4-byte ID, and the signature bytes after the ID."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{_DASH}{self.name} {b64encode(self.key_id + self.signature)}\n"


@dataclass(frozen=True)
class Note:
    """A note's text (ending in a newline) and its signature lines, in order."""

    text: str
    signatures: tuple[NoteSignature, ...] = ()

    def format(self) -> bytes:
        if not self.signatures:
            raise NoteError("a signed note needs at least one signature")
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode()

    def with_signatures(self, extra: Iterable[NoteSignature]) -> Note:
        """This note with ``extra`` signatures appended (those already present are not repeated)."""
        have = list(self.signatures)
        for s in extra:
            if s not in have:
                have.append(s)
        return Note(self.text, tuple(have))


def _check_text(text: str, what: str) -> None:
    for i, c in enumerate(text):
        if ord(c) < 0x20 and c != "\n":
            raise NoteError(f"{what}: control character U+{ord(c):04X} at offset {i}")


def parse_signature_line(line: str, n: int = 1) -> NoteSignature:
    """``— <name> <base64>`` (without its newline)."""
    if not line.startswith(_DASH):
        raise NoteError(f"signature line {n} does not start with an em dash and a space")
    name, sep, b64 = line[len(_DASH):].partition(" ")
    if not sep:
        raise NoteError(f"signature line {n}: no space between key name and signature")
    try:
        check_key_name(name)
    except NoteError as e:
        raise NoteError(f"signature line {n}: {e}") from None
    raw = b64decode(b64, f"signature line {n}")
    if len(raw) < 5:
        raise NoteError(f"signature line {n}: {len(raw)} bytes is too short for a key ID and a signature")
    return NoteSignature(name, raw[:4], raw[4:])


def parse_signature_lines(data: str) -> list[NoteSignature]:
    """Signature lines, each ending in a newline (as a witness returns them)."""
    if not data.endswith("\n"):
        raise NoteError("the signature lines do not end in a newline")
    lines = data[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"{len(lines)} signatures is more than the {MAX_SIGNATURES} accepted")
    return [parse_signature_line(line, i + 1) for i, line in enumerate(lines)]


def parse_note(data: bytes | str) -> Note:
    """Split a signed note into text and signatures, refusing anything the spec does not allow."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) > MAX_NOTE_SIZE:
            raise NoteError(f"note of {len(data)} bytes is larger than {MAX_NOTE_SIZE}")
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise NoteError(f"note is not valid UTF-8 (byte {e.start})") from None
    elif len(data) > MAX_NOTE_SIZE:
        raise NoteError(f"note of {len(data)} characters is larger than {MAX_NOTE_SIZE}")
    _check_text(data, "note")
    split = data.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line between text and signatures")
    text, sigs = data[:split + 1], data[split + 2:]
    if not sigs:
        raise NoteError("note has no signature lines")
    return Note(text, tuple(parse_signature_lines(sigs)))


# ---------------------------------------------------------------------------- keys

@dataclass(frozen=True)
class Verifier:
    """A known key: its name, type and public key; checks signature lines in its name and ID."""

    name: str
    sig_type: int
    public_key: bytes
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if self.sig_type not in SIG_NAMES:
            raise NoteError(f"{self.name}: unsupported signature type 0x{self.sig_type:02x}")
        VerifyKey(self.public_key)
        object.__setattr__(self, "key_id", key_id(self.name, self.sig_type, self.public_key))

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{b64encode(bytes([self.sig_type]) + self.public_key)}"

    def matches(self, sig: NoteSignature) -> bool:
        return sig.name == self.name and sig.key_id == self.key_id

    def verify(self, text: bytes, signature: bytes) -> int | None:
        """Check ``signature`` (the bytes after the key ID) over note ``text``.

        Returns the cosignature's timestamp for type 0x04, ``None`` for type 0x01; raises
        :class:`NoteVerificationError` if it does not verify.
        """
        key = VerifyKey(self.public_key)
        try:
            if self.sig_type == SIG_ED25519:
                key.verify(signature, text)
                return None
            if len(signature) != 8 + 64:
                raise SignatureError(f"a cosignature is 72 bytes after the key ID (got {len(signature)})")
            timestamp = int.from_bytes(signature[:8], "big")
            if timestamp >= 1 << 63:
                raise SignatureError(f"cosignature timestamp {timestamp} exceeds 2**63 - 1")
            key.verify(signature[8:], cosignature_message(text, timestamp))
            return timestamp
        except SignatureError as e:
            raise NoteVerificationError(f"signature by known key {self.name} does not verify ({e})") from None


def _key_parts(text: str, what: str) -> tuple[str, str, int, bytes]:
    """``<name>+<hex key ID>+<base64(type || 32 bytes)>``, split on '+' at most twice (base64 holds
    '+'): the shape of a vkey, and of a private key after its ``PRIVATE+KEY+``."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"{what} {text[:60]!r}: expected <name>+<key ID>+<key>")
    name, hex_id, b64 = parts
    try:
        check_key_name(name)
    except NoteError as e:
        raise NoteError(f"{what}: {e}") from None
    if len(hex_id) != 8 or hex_id != hex_id.lower() or any(c not in "0123456789abcdef" for c in hex_id):
        raise NoteError(f"{what} {name}: key ID {hex_id!r} is not 8 lowercase hex digits")
    raw = b64decode(b64, f"{what} {name}")
    if len(raw) != 33:
        raise NoteError(f"{what} {name}: expected a type byte and 32 bytes of key, got {len(raw)} bytes")
    return name, hex_id, raw[0], raw[1:]


def parse_vkey(vkey: str) -> Verifier:
    """``<name>+<hex key ID>+<base64(type || key)>`` -> :class:`Verifier`; the ID must match."""
    name, hex_id, sig_type, key = _key_parts(vkey, "vkey")
    try:
        verifier = Verifier(name, sig_type, key)
    except KeyFormatError as e:
        raise NoteError(f"vkey {name}: {e}") from None
    if verifier.key_id.hex() != hex_id:
        raise NoteError(f"vkey {name}: key ID {hex_id} does not match the key (want {verifier.key_id.hex()})")
    return verifier


@dataclass(frozen=True)
class Signer:
    """A private key under a name, signing notes as type 0x01 or cosigning as type 0x04."""

    name: str
    key: SigningKey
    sig_type: int = SIG_ED25519

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if self.sig_type not in SIG_NAMES:
            raise NoteError(f"{self.name}: unsupported signature type 0x{self.sig_type:02x}")

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.sig_type, self.key.public.raw)

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    def sign(self, text: str | bytes, timestamp: int | None = None) -> NoteSignature:
        """Sign note text; a cosigner needs ``timestamp`` (POSIX seconds)."""
        data = text.encode() if isinstance(text, str) else bytes(text)
        kid = key_id(self.name, self.sig_type, self.key.public.raw)
        if self.sig_type == SIG_ED25519:
            return NoteSignature(self.name, kid, self.key.sign(data))
        if timestamp is None or not 0 <= timestamp < 1 << 63:
            raise NoteError(f"cosigner {self.name}: a timestamp in [0, 2**63) is required (got {timestamp})")
        sig = self.key.sign(cosignature_message(data, timestamp))
        return NoteSignature(self.name, kid, timestamp.to_bytes(8, "big") + sig)

    def private_key(self) -> str:
        """``PRIVATE+KEY+<name>+<hex ID>+<base64(type || seed)>``: keep it secret."""
        kid = key_id(self.name, self.sig_type, self.key.public.raw).hex()
        return f"PRIVATE+KEY+{self.name}+{kid}+{b64encode(bytes([self.sig_type]) + self.key.seed)}"


def parse_private_key(text: str) -> Signer:
    """The inverse of :meth:`Signer.private_key`."""
    if not text.strip().startswith("PRIVATE+KEY+"):
        raise NoteError("private key: expected PRIVATE+KEY+<name>+<key ID>+<key>")
    name, hex_id, sig_type, seed = _key_parts(text.strip()[len("PRIVATE+KEY+"):], "private key")
    signer = Signer(name, SigningKey(seed), sig_type)
    if signer.verifier.key_id.hex() != hex_id:
        raise NoteError(f"private key {name}: key ID {hex_id} does not match the key")
    return signer


def split_before_note(data: bytes | str, what: str) -> tuple[list[str], str]:
    """The C2SP shape of a tlog-proof or a witness request: lines, a blank line, then a note.

    Returns the lines before the blank line and the note's text (still to be parsed).
    """
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError(f"{what} is not valid UTF-8") from None
    head, sep, note = data.partition("\n\n")
    if not sep:
        raise NoteError(f"{what} has no blank line before the checkpoint")
    return head.split("\n"), note


# ---------------------------------------------------------------------------- verifying

@dataclass(frozen=True)
class VerifiedSignature:
    verifier: Verifier
    signature: NoteSignature
    timestamp: int | None


@dataclass(frozen=True)
class VerifiedNote:
    """A note whose known signatures all verified; ``unknown`` lists the lines that were ignored."""

    note: Note
    verified: tuple[VerifiedSignature, ...]
    unknown: tuple[NoteSignature, ...]

    def signed_by(self, verifier: Verifier) -> VerifiedSignature | None:
        return next((v for v in self.verified if v.verifier == verifier), None)


def _as_verifiers(keys: Iterable[Verifier | str]) -> list[Verifier]:
    return [parse_vkey(k) if isinstance(k, str) else k for k in keys]


def verify_note(note: Note | bytes | str, vkeys: Iterable[Verifier | str]) -> VerifiedNote:
    """Verify a note against known keys; raise :class:`NoteVerificationError` unless one signed it.

    Every signature line from a known key (same name and ID) must verify; lines from unknown keys
    are ignored, as the spec requires, and listed in ``unknown``.
    """
    if not isinstance(note, Note):
        note = parse_note(note)
    known = _as_verifiers(vkeys)
    text = note.text.encode()
    verified: list[VerifiedSignature] = []
    unknown: list[NoteSignature] = []
    for sig in note.signatures:
        verifier = next((v for v in known if v.matches(sig)), None)
        if verifier is None:
            unknown.append(sig)
            continue
        if any(v.verifier == verifier for v in verified):
            raise NoteVerificationError(f"two signatures by known key {verifier.name}")
        verified.append(VerifiedSignature(verifier, sig, verifier.verify(text, sig.signature)))
    if not verified:
        names = sorted({s.name for s in note.signatures})
        raise NoteVerificationError(
            f"no signature from a known key (signed by: {', '.join(names)}; known: "
            f"{', '.join(sorted(v.name for v in known)) or 'none'})")
    return VerifiedNote(note, tuple(verified), tuple(unknown))
