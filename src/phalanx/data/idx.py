"""Reader for the IDX format of MNIST and Fashion-MNIST, strict about what it accepts.

IDX (LeCun, Cortes and Burges, "The MNIST database of handwritten digits", 1998, section "File
formats for the MNIST database") is a big-endian header followed by raw data:

====  ==========================================================================
byte  meaning
====  ==========================================================================
0-1   two zero bytes
2     type code of the data: 0x08 unsigned byte, 0x09 signed byte, 0x0B int16,
      0x0C int32, 0x0D float32, 0x0E float64
3     number of dimensions ``d``
4..   ``d`` big-endian uint32 sizes, then ``prod(sizes)`` items, row-major
====  ==========================================================================

MNIST and Fashion-MNIST use 0x08 only (images are ``(n, 28, 28)`` from byte 16, labels ``(n,)``
from byte 8), so that is the one type supported; any other is refused by name. Files may be
gzipped (recognised by their first two bytes ``1f 8b``, whatever their name). Every check that
fails raises :class:`IdxFormatError` naming the file and what was wrong (bad magic, unsupported
type, header cut short, fewer or more data bytes than the header declares), so a hostile or
damaged file never ends in a numpy traceback.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IdxFormatError", "read_idx"]

_GZIP_MAGIC = b"\x1f\x8b"
_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


class IdxFormatError(ValueError):
    """A file is not a well-formed IDX file of a supported type."""


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a ``uint8`` array of the declared shape.

    The bytes ``00 00 08 01 | 00 00 00 03 | 07 08 09`` read as ``array([7, 8, 9], dtype=uint8)``.
    The array is a read-only view of the file's bytes; ``.copy()`` it to write to it.

    Raises :class:`IdxFormatError` for anything that is not an unsigned-byte IDX file whose size
    matches its header, and ``FileNotFoundError`` if ``path`` does not exist.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            # wbits=31: gzip container; zlib releases the GIL, so files decompress in parallel.
            data = zlib.decompress(raw, 31)
        except (zlib.error, EOFError, gzip.BadGzipFile) as e:
            raise IdxFormatError(f"{path}: corrupt gzip data ({e})") from None
    else:
        data = raw
    return _parse(data, path)


def _parse(data: bytes, path: Path) -> np.ndarray:
    if len(data) < 4:
        raise IdxFormatError(f"{path}: {len(data)} bytes is too short for an IDX header (need 4)")
    if data[0] != 0 or data[1] != 0:
        raise IdxFormatError(
            f"{path}: bad magic number {data[:4].hex()}: an IDX file starts with two zero bytes"
        )
    type_code, ndim = data[2], data[3]
    if type_code != 0x08:
        name = _TYPE_NAMES.get(type_code, "unknown")
        raise IdxFormatError(
            f"{path}: unsupported IDX type code 0x{type_code:02X} ({name}); "
            "only 0x08 (unsigned byte) is supported"
        )
    if ndim == 0:
        raise IdxFormatError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(
            f"{path}: header cut short: {ndim} dimensions need {header} header bytes, "
            f"file has {len(data)}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    actual = len(data) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise IdxFormatError(
            f"{path}: {what}: header declares shape {dims} = {expected} data bytes, "
            f"file has {actual}"
        )
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)
