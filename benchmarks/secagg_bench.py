"""Secure aggregation cost: time and bytes per client and at the server, SecAgg and SecAgg+,
against the plaintext sum measured in the same run; and the communication expansion at the
paper's scale, computed from this implementation's message sizes.

**Measured** (``secure_sum``, the real protocol in one process, active model, no dropouts unless
``--dropout``): for n in {16, 64, 256} and d in {1e4, 1e6}, 32-bit inputs. Each client's
handlers are timed on their own (every client checks every signature itself:
``memo_verify=False``), so "client s" is what one client would spend on its own machine, and
"server s" the server's compute. The reference is the **plaintext sum**: each client packs its
vector (``pack_bits``) and the server unpacks and adds them; its bytes per client are the packed
vector (``d * 4`` bytes plus the same 30-byte header). Ratios are secure / plaintext. SecAgg+
uses the degree and threshold of ``harary_parameters(n)`` (5% corrupt, 10% dropout, active).

**Analytic** (Bonawitz et al. 2017, Section 1 and 7.1: "1.73x communication expansion" for
2^10 users, 2^20-dimensional vectors, 16-bit inputs): every message a client sends or receives
in one run is built at its real size with :func:`messages.encode` (ciphertexts from a real
AES-GCM seal) for n = 2^10 and d = 2^20 in ``Z_{2^26}`` (16 bits + log2 n, so the sum cannot
wrap), and the client's total (up + down) is divided by the plaintext upload, ``d * 16`` bits.
The paper's own count, ``d * 26 + 256 (7n - 4)`` bits, is printed beside it.

    python benchmarks/secagg_bench.py [--n 16,64,256] [--d 10000,1000000] [--max-seconds 900]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np

from phalanx.privacy.secagg import harary_parameters, messages, secure_sum
from phalanx.privacy.secagg.crypto import seal
from phalanx.privacy.secagg.encoding import pack_bits, unpack_bits
from phalanx.privacy.secagg.messages import encode
from phalanx.privacy.secagg.shamir import SHARE_BYTES

BITS = 32


def plaintext_reference(x: np.ndarray) -> dict:
    """The plaintext sum: per-client packing time and bytes, the server's unpack-and-add time."""
    n, d = x.shape
    start = time.perf_counter()
    packed = [encode(messages.MaskedInput(i, pack_bits(row, BITS)), bytes(32)) for i, row in enumerate(x)]
    client_s = (time.perf_counter() - start) / n
    start = time.perf_counter()
    total = np.zeros(d, dtype=np.uint32)
    for data in packed:
        np.add(total, unpack_bits(data[30:], BITS, d), out=total)
    return {"client_seconds": client_s, "server_seconds": time.perf_counter() - start,
            "client_bytes_up": len(packed[0]), "server_bytes_in": sum(map(len, packed))}


def measure(n: int, d: int, protocol: str, dropout: float) -> dict:
    rng = np.random.default_rng(n * 7 + d)
    x = rng.integers(0, 2**32, size=(n, d), dtype=np.uint32)
    degree = threshold = None
    if protocol == "secagg+":
        params = harary_parameters(n)
        if params is None:
            return {"skipped": f"no sparse Harary graph below the complete one for n = {n}"}
        degree, threshold = params
    step = max(1, round(1 / dropout)) if dropout else 0
    dropped = {"masked_input": list(range(0, n, step))[: int(dropout * n)]} if dropout else {}
    start = time.perf_counter()
    result = secure_sum(x, bits=BITS, degree=degree, threshold=threshold, dropouts=dropped, seed=n + d,
                        memo_verify=False)
    wall = time.perf_counter() - start
    expected = x[list(result.survivors)].astype(np.uint64).sum(0) % 2**32
    if not np.array_equal(result.sum.astype(np.uint64), expected):
        raise AssertionError(f"{protocol} n={n} d={d}: the secure sum differs from the plaintext sum")
    return {"degree": degree if degree is not None else n - 1, "threshold": result.config.t,
            "wall_seconds": wall, "dropped": len(dropped.get("masked_input", [])),
            **result.cost.summary(), "plaintext": plaintext_reference(x)}


def paper_scale(n: int = 2**10, d: int = 2**20, input_bits: int = 16) -> dict:
    """Per-client bytes at the paper's scale, from the real message encodings."""
    bits = input_bits + math.ceil(math.log2(n))
    digest = bytes(32)
    advert = messages.AdvertiseKeys(0, bytes(32), bytes(32), bytes(32), bytes(64))
    ciphertext = seal(bytes(32), digest, 0, 1, bytes(2 * SHARE_BYTES))
    everyone = tuple(range(n))
    size = {
        "AdvertiseKeys": encode(advert, digest),
        "KeyDirectory": encode(messages.KeyDirectory(0, (advert,) * n), digest),
        "EncryptedShares": encode(messages.EncryptedShares(0, ((1, ciphertext),) * (n - 1)), digest),
        "ShareBundle": encode(messages.ShareBundle(0, ((1, ciphertext),) * (n - 1)), digest),
        "MaskedInput": encode(messages.MaskedInput(0, bytes((d * bits + 7) // 8)), digest),
        "SurvivorList": encode(messages.SurvivorList(0, everyone), digest),
        "SurvivorSignature": encode(messages.SurvivorSignature(0, bytes(64)), digest),
        "SurvivorSignatures": encode(messages.SurvivorSignatures(0, everyone, ((1, bytes(64)),) * n), digest),
        "UnmaskingShares": encode(messages.UnmaskingShares(0, ((1, bytes(SHARE_BYTES)),) * n, ()), digest),
    }
    size = {k: len(v) for k, v in size.items()}
    up_hbc = size["AdvertiseKeys"] + size["EncryptedShares"] + size["MaskedInput"] + size["UnmaskingShares"]
    down_hbc = size["KeyDirectory"] + size["ShareBundle"] + size["SurvivorList"]
    up_active = up_hbc + size["SurvivorSignature"]
    down_active = down_hbc + size["SurvivorSignatures"]
    plain = d * input_bits / 8
    paper_bits = d * bits + 256 * (7 * n - 4)
    return {"n": n, "d": d, "input_bits": input_bits, "ring_bits": bits, "message_bytes": size,
            "plaintext_bytes": plain,
            "honest_but_curious": {"up": up_hbc, "down": down_hbc, "expansion": (up_hbc + down_hbc) / plain},
            "active": {"up": up_active, "down": down_active, "expansion": (up_active + down_active) / plain},
            "paper_count_expansion": paper_bits / (d * input_bits), "paper_reported": 1.73}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="16,64,256")
    ap.add_argument("--d", default="10000,1000000")
    ap.add_argument("--protocols", default="secagg,secagg+")
    ap.add_argument("--dropout", type=float, default=0.0, help="share of clients dropping at masked_input")
    ap.add_argument("--skip", default="", help="cells to skip, e.g. secagg:256:1000000")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "secagg_bench.json"))
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    scale = paper_scale()
    print("communication expansion at the paper's scale (2^10 users, 2^20 dims, 16-bit inputs, "
          f"Z_2^{scale['ring_bits']}), per client, up + down over the plaintext upload:")
    for model in ("honest_but_curious", "active"):
        m = scale[model]
        print(f"  {model:<20} up {m['up'] / 2**20:.3f} MiB, down {m['down'] / 2**20:.3f} MiB: "
              f"{m['expansion']:.3f}x  (Bonawitz et al. report 1.73x; their count gives "
              f"{scale['paper_count_expansion']:.3f}x; ratio ours/theirs {m['expansion'] / 1.73:.3f})")

    cells = {}
    print(f"\n{'protocol':<8} {'n':>4} {'d':>8} {'k':>3} {'t':>4} | "
          f"{'client s':>9} {'plain':>8} {'ratio':>7} | "
          f"{'client up KiB':>13} {'down KiB':>9} {'ratio':>6} | {'server s':>8} {'plain':>7} {'ratio':>7} | "
          f"{'server in MiB':>13} {'out MiB':>8}")
    for protocol in args.protocols.split(","):
        for n in map(int, args.n.split(",")):
            for d in map(int, map(float, args.d.split(","))):
                key = f"{protocol}:{n}:{d}"
                if key in skip:
                    cells[key] = {"skipped": "--skip"}
                    print(f"{protocol:<8} {n:>4} {d:>8} skipped (--skip)")
                    continue
                r = measure(n, d, protocol, args.dropout)
                cells[key] = r
                if "skipped" in r:
                    print(f"{protocol:<8} {n:>4} {d:>8} skipped: {r['skipped']}")
                    continue
                p = r["plaintext"]
                cs = r["client_seconds"]["mean"]
                cup, cdown = r["client_bytes_up"]["mean"], r["client_bytes_down"]["mean"]
                print(f"{protocol:<8} {n:>4} {d:>8} {r['degree']:>3} {r['threshold']:>4} | {cs:>9.4f} "
                      f"{p['client_seconds']:>8.5f} {cs / p['client_seconds']:>6.0f}x | {cup / 1024:>13.1f} "
                      f"{cdown / 1024:>9.1f} {(cup + cdown) / p['client_bytes_up']:>5.2f}x | "
                      f"{r['server_seconds']:>8.3f} {p['server_seconds']:>7.4f} "
                      f"{r['server_seconds'] / p['server_seconds']:>6.0f}x | "
                      f"{r['server_bytes_in'] / 2**20:>13.2f} {r['server_bytes_out'] / 2**20:>8.2f}",
                      flush=True)
    out = {"platform": platform.platform(), "processor": platform.processor(), "bits": BITS,
           "dropout": args.dropout, "paper_scale": scale, "cells": cells}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
