"""What receivers and auditors hold beside the public log: the salts that open its hiding
commitments, and the bytes it only names by hash.

The log (``ledger.db``) holds hiding commitments ``SHA-256(salt || bytes)`` to updates, claimed
counts, datasets and any private aggregation input (a root update, a rule's state, a pre-noise
aggregate), and plain SHA-256 hashes of public models. A run keeps, in ``ledger-private/``:

- ``openings.jsonl``: one line per commitment, ``{"c": hex, "salt": hex, "blob": hex}`` (a tensor
  whose bytes are in the blob store under their SHA-256) or ``{"c", "salt", "value": ...}`` (a
  count or a dataset's statistics). Giving these lines to someone is opening the commitments
  to them: the salt goes to receivers and auditors only (issue 5: a plain hash of un-noised
  data lets anyone test a guess);
- ``blobs/``: the bytes, content-addressed (:class:`phalanx.ledger.blobs.BlobStore`). Tensors are
  stored as their raw little-endian bytes; the dtype is in the run's round-0 record.

Nothing here needs to be trusted: :meth:`Openings.tensor` checks each opening against its
commitment and each blob against its hash, so a changed byte is reported, never used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from phalanx.core.commitment import SALT_SIZE
from phalanx.ledger.blobs import BlobError, BlobStore

OPENINGS = "openings.jsonl"
BLOBS = "blobs"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class PrivateError(ValueError):
    """Private material that is missing, malformed, or does not open what it claims to."""


def tensor_view(t: torch.Tensor) -> memoryview:
    """The raw bytes of ``t`` (on the CPU, contiguous), without a copy where possible."""
    array = np.ascontiguousarray(t.detach().cpu().numpy())
    return memoryview(array.reshape(-1).view(np.uint8))


def tensor_hash(t: torch.Tensor) -> bytes:
    """SHA-256 of the tensor's bytes: the name of a public model."""
    return hashlib.sha256(tensor_view(t)).digest()


def tensor_commitment(salt: bytes, t: torch.Tensor) -> bytes:
    """``SHA-256(salt || bytes)`` of the tensor, as :func:`phalanx.core.commitment.hiding_commitment`."""
    if len(salt) != SALT_SIZE:
        raise ValueError(f"a salt is {SALT_SIZE} bytes")
    h = hashlib.sha256(salt)
    h.update(tensor_view(t))
    return h.digest()


def decode_tensor(data: bytes, dtype: str) -> torch.Tensor:
    if dtype not in DTYPES:
        raise PrivateError(f"unknown dtype {dtype!r}")
    width = torch.empty((), dtype=DTYPES[dtype]).element_size()
    if len(data) % width:
        raise PrivateError(f"{len(data)} bytes is not a whole number of {dtype} values")
    return torch.frombuffer(bytearray(data), dtype=DTYPES[dtype])


class PrivateWriter:
    """Writes openings and blobs for a run (``keep=False``: nothing is written at all)."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.blobs = None
        self._lines: list[str] = []
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self.blobs = BlobStore(folder / BLOBS, sync=False)
            (folder / OPENINGS).write_text("")

    @property
    def keeping(self) -> bool:
        return self.folder is not None

    def keep_tensor(self, t: torch.Tensor) -> bytes:
        """Store the tensor's bytes (when keeping); its SHA-256 either way."""
        if self.blobs is None:
            return tensor_hash(t)
        return self.blobs.put(tensor_view(t).tobytes())

    def commit_tensor(self, salt: bytes, t: torch.Tensor) -> bytes:
        """The hiding commitment to ``t``; when keeping, its opening and its bytes too."""
        commitment = tensor_commitment(salt, t)
        if self.keeping:
            self._lines.append(json.dumps({"c": commitment.hex(), "salt": salt.hex(),
                                           "blob": self.keep_tensor(t).hex()}))
        return commitment

    def opening(self, commitment: bytes, salt: bytes, value) -> None:
        """Keep the opening of a commitment to a small value (a count, a dataset's statistics)."""
        if self.keeping:
            self._lines.append(json.dumps({"c": commitment.hex(), "salt": salt.hex(), "value": value}))

    def flush(self) -> None:
        if self.keeping and self._lines:
            with (self.folder / OPENINGS).open("a") as f:
                f.write("".join(line + "\n" for line in self._lines))
            self._lines = []


class Openings:
    """The private material of a run, read back for replay."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / OPENINGS
        if not path.is_file():
            raise PrivateError(f"{self.folder}: no {OPENINGS} (was the run's ledger.keep_updates off?)")
        self.blobs = BlobStore(self.folder / BLOBS)
        self._open: dict[bytes, dict] = {}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            try:
                row = json.loads(line)
                commitment, salt = bytes.fromhex(row["c"]), bytes.fromhex(row["salt"])
                if len(commitment) != 32 or len(salt) != SALT_SIZE or not ("blob" in row or "value" in row):
                    raise ValueError("wrong sizes or fields")
                if "blob" in row:
                    bytes.fromhex(row["blob"])
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise PrivateError(f"{path}: line {n} is not an opening ({e})") from None
            self._open[commitment] = {**row, "salt": salt}

    def __contains__(self, commitment: bytes) -> bool:
        return commitment in self._open

    def model(self, digest: bytes, dtype: str) -> torch.Tensor:
        """A public tensor by its SHA-256."""
        try:
            return decode_tensor(self.blobs.get(digest), dtype)
        except BlobError as e:
            raise PrivateError(str(e)) from None

    def tensor(self, commitment: bytes, dtype: str) -> torch.Tensor:
        """The tensor a hiding commitment was made to, checked against the commitment."""
        row = self._open.get(commitment)
        if row is None or "blob" not in row:
            raise PrivateError(f"no opening for the commitment {commitment.hex()[:16]}...")
        t = self.model(bytes.fromhex(row["blob"]), dtype)
        if tensor_commitment(row["salt"], t) != commitment:
            raise PrivateError(f"the opening of {commitment.hex()[:16]}... does not open it "
                               "(salt or blob changed)")
        return t

    def salt(self, commitment: bytes) -> bytes:
        row = self._open.get(commitment)
        if row is None:
            raise PrivateError(f"no opening for the commitment {commitment.hex()[:16]}...")
        return row["salt"]
