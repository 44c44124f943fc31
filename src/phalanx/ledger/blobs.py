"""Model weights and updates live outside the log, stored by their SHA-256.

The log holds only hashes (and hiding commitments); the bytes go to a content-addressed store:
``ROOT/ab/cdef...`` for the blob whose SHA-256 is ``abcdef...`` in hex. Writes go to a temporary
file first and are renamed into place, so a blob is either whole or absent. Every read re-hashes
the bytes, so a damaged blob is reported, never returned.

Whether the bytes are kept is a setting: ``keep=True`` for audited runs and the default study;
``keep=False`` in large grids (50 nodes x 100 rounds of an MLP is gigabytes), where
:meth:`BlobStore.put` only computes the hash. Central-DP noise seeds are never stored here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from phalanx.core.commitment import content_hash


class BlobError(Exception):
    """A blob that is missing, or whose bytes no longer hash to its name."""


class BlobStore:
    """``keep``: store the bytes (else only hash them). ``sync``: flush each blob to disk before it
    is named (a simulated run turns it off: its blobs are rewritten by running it again)."""

    def __init__(self, root: str | Path, *, keep: bool = True, sync: bool = True):
        self.root = Path(root)
        self.keep = keep
        self.sync = sync

    def path(self, digest: bytes) -> Path:
        h = digest.hex()
        return self.root / h[:2] / h[2:]

    def put(self, data: bytes) -> bytes:
        """Store ``data`` (if keeping) and return its SHA-256."""
        digest = content_hash(data)
        if not self.keep:
            return digest
        path = self.path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self.sync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def has(self, digest: bytes) -> bool:
        return self.path(digest).exists()

    def get(self, digest: bytes) -> bytes:
        """The bytes whose SHA-256 is ``digest``; raises :class:`BlobError` if missing or damaged."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobError(f"blob {digest.hex()[:16]}...: not stored (dropped, or never kept)") from None
        if content_hash(data) != digest:
            raise BlobError(f"blob {digest.hex()[:16]}...: its bytes no longer hash to its name ({path})")
        return data

    def digests(self) -> Iterator[bytes]:
        if not self.root.exists():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir() and len(sub.name) == 2:
                for f in sorted(sub.iterdir()):
                    if not f.name.startswith(".tmp-"):
                        try:
                            yield bytes.fromhex(sub.name + f.name)
                        except ValueError:
                            raise BlobError(f"{f}: not a blob name") from None

    def verify(self) -> int:
        """Re-hash every stored blob; returns how many, raises :class:`BlobError` on the first bad one."""
        count = 0
        for digest in self.digests():
            self.get(digest)
            count += 1
        return count
