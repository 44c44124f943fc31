"""The in-process driver: the real protocol (real keys, masks, Shamir shares, byte messages) for
``n`` simulated clients and one server in one process, with dropouts at chosen phases and a
record of what it cost.

``secure_sum(inputs (n, d), ...)`` builds one :class:`SessionConfig`, an Ed25519 identity per
client, ``n`` :class:`Client` state machines and a :class:`Server`, and runs the rounds. Every
message goes through :func:`messages.encode` and :func:`messages.decode`, so the byte counts are
those of the wire format. Each client's handler and the server's are timed separately, so the
cost record gives time per phase per client and at the server as if each ran on its own machine
(they run one after another here).

``dropouts`` maps a phase to the clients that drop out *at* it: they send nothing from that
phase on. The sum is that of ``U_3``'s inputs (:attr:`SecureSum.survivors`), exact over
``Z_{2^k}`` with up to ``n - t`` dropouts in all; one more aborts with :class:`TooFewSurvivors`.

``bucket_sums`` runs one instance per bucket (bucketed secure aggregation, Velicheti, Xia and
Koyejo 2021, "Secure Byzantine-Robust Distributed Learning via Clustering"): each bucket's sum is
revealed on its own, with its own session id, keys and threshold. How the buckets are drawn is
the caller's choice; :func:`random_buckets` draws them from a seed that no single party may
steer (the engine derives it after every update is committed).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from phalanx.privacy.secagg.client import Client
from phalanx.privacy.secagg.config import PHASES, Adversary, SessionConfig
from phalanx.privacy.secagg.encoding import FixedPoint, as_ring_elements
from phalanx.privacy.secagg.identity import ed25519_signer, ed25519_verifier
from phalanx.privacy.secagg.messages import Message, decode, encode
from phalanx.privacy.secagg.server import Rejection, Server


class SeededRandom:
    """Deterministic random bytes (AES-256-CTR keystream under SHA-256 of the labels), for tests
    and reproducible benchmarks only: a real client draws from ``os.urandom``."""

    def __init__(self, *labels: object):
        key = hashlib.sha256("/".join(["phalanx-secagg-seeded", *map(str, labels)]).encode()).digest()
        self._stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def __call__(self, n: int) -> bytes:
        return self._stream.update(bytes(n))


@dataclass
class Cost:
    """Bytes and seconds, as each party would see them on its own machine."""

    clients: tuple[int, ...]
    up_bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))     # by message type
    down_bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    client_up: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    client_down: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    client_seconds: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    server_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def summary(self) -> dict:
        """JSON-ready figures: totals by message type, per-client mean and max, server totals."""
        def stats(values: Iterable[float]) -> dict:
            arr = np.asarray(list(values), dtype=float)
            if not arr.size:
                return {"mean": 0.0, "max": 0.0}
            return {"mean": float(arr.mean()), "max": float(arr.max())}

        per_client_time = defaultdict(float)
        for phase in self.client_seconds.values():
            for c, s in phase.items():
                per_client_time[c] += s
        return {
            "bytes_up_by_type": dict(self.up_bytes),
            "bytes_down_by_type": dict(self.down_bytes),
            "client_bytes_up": stats(self.client_up.get(c, 0) for c in self.clients),
            "client_bytes_down": stats(self.client_down.get(c, 0) for c in self.clients),
            "server_bytes_in": int(sum(self.up_bytes.values())),
            "server_bytes_out": int(sum(self.down_bytes.values())),
            "client_seconds_by_phase": {p: stats(v.values()) for p, v in self.client_seconds.items()},
            "client_seconds": stats(per_client_time.values()),
            "server_seconds_by_phase": dict(self.server_seconds),
            "server_seconds": float(sum(self.server_seconds.values())),
        }


@dataclass
class SecureSum:
    """What the server learnt: the sum over ``Z_{2^k}`` of the survivors' inputs (and its decoded
    value when the inputs were reals), plus the survivors, refusals and cost."""

    sum: np.ndarray
    survivors: tuple[int, ...]
    config: SessionConfig
    cost: Cost
    rejected: list[Rejection]
    value: np.ndarray | None = None


def identity_key(client: int, seed: int | None) -> Ed25519PrivateKey:
    """The Ed25519 identity the driver gives ``client`` (derived from ``seed``, or fresh)."""
    raw = SeededRandom(seed, ("identity", client))(32) if seed is not None else os.urandom(32)
    return Ed25519PrivateKey.from_private_bytes(raw)


def make_parties(config: SessionConfig, x: np.ndarray, *, seed: int | None = None,
                 memo_verify: bool = True) -> tuple[dict[int, Client], Server]:
    """One :class:`Client` per row of ``x`` (ids ``config.clients``) with an Ed25519 identity, and
    the :class:`Server`; randomness from ``seed`` (reproducible) or ``os.urandom``."""
    identities = {c: identity_key(c, seed) for c in config.clients}
    verify = ed25519_verifier({c: k.public_key().public_bytes_raw() for c, k in identities.items()},
                              memo=memo_verify)
    clients = {c: Client(config, c, x[i], sign=ed25519_signer(identities[c]), verify=verify,
                         randbytes=SeededRandom(seed, ("client", c)) if seed is not None else os.urandom)
               for i, c in enumerate(config.clients)}
    return clients, Server(config, verify)


def _ring_inputs(inputs, codec: FixedPoint | None, bits: int) -> tuple[np.ndarray, int]:
    floating = (inputs.is_floating_point() if isinstance(inputs, torch.Tensor)
                else np.asarray(inputs).dtype.kind == "f")
    if floating:
        if codec is None:
            raise ValueError("real inputs need a codec: codec=FixedPoint.for_sum(n, clip)")
        codec.check_clients(len(inputs))
        return codec.encode(inputs), codec.bits
    if codec is not None:
        raise ValueError("integer inputs are elements of Z_2^k already; pass bits, not a codec")
    return as_ring_elements(inputs, bits), bits


def secure_sum(inputs, *, codec: FixedPoint | None = None, bits: int = 32, threshold: int | None = None,
               degree: int | None = None, adversary: Adversary = "active",
               dropouts: Mapping[str, Iterable[int]] | None = None, session_id: bytes | None = None,
               seed: int | None = None, ids: Sequence[int] | None = None,
               intercept: Callable[[str, str, int, Message], Message | None] | None = None,
               memo_verify: bool = True) -> SecureSum:
    """Run SecAgg (``degree=None``) or SecAgg+ (an even Harary ``degree``) over the rows of ``inputs``.

    ``inputs``: ``(n, d)`` integers in ``[0, 2^bits)``, or reals with a ``codec``. ``ids``: the
    clients' ids (default ``0..n-1``). ``dropouts``: ``{phase: ids}``, phases in
    :data:`~phalanx.privacy.secagg.config.PHASES`. ``seed``: deterministic keys and shares (tests,
    benchmarks); ``None`` draws from ``os.urandom``. ``intercept(direction, phase, party, message)``
    may replace (or, returning ``None``, drop) any message in transit: ``direction`` is ``"up"``
    (client ``party`` to server) or ``"down"`` (server to client ``party``); the tests use it to
    play a lying client or an active server. ``memo_verify``: the simulated clients share one
    memo of signature verdicts (each signature is checked once in the process; the verdicts are
    the same); ``False`` makes every client check every signature itself, for per-client timings.
    """
    x, bits = _ring_inputs(inputs, codec, bits)
    if x.ndim != 2:
        raise ValueError(f"inputs must be (n, d), got shape {x.shape}")
    ids = tuple(range(len(x))) if ids is None else tuple(int(i) for i in ids)
    if len(ids) != len(x):
        raise ValueError(f"{len(ids)} ids for {len(x)} input rows")
    order = np.argsort(ids, kind="stable")
    ids, x = tuple(ids[i] for i in order), x[order]   # the session lists its clients sorted
    dropouts = {p: set(map(int, v)) for p, v in (dropouts or {}).items()}
    unknown = set(dropouts) - set(PHASES)
    if unknown:
        raise ValueError(f"unknown dropout phases {sorted(unknown)}; phases are {PHASES}")
    if session_id is None:
        session_id = os.urandom(16) if seed is None \
            else hashlib.sha256(f"session/{seed}".encode()).digest()[:16]
    config = SessionConfig(session_id=session_id, clients=ids, dim=x.shape[1], bits=bits,
                           threshold=threshold, degree=degree, adversary=adversary)
    clients, server = make_parties(config, x, seed=seed, memo_verify=memo_verify)
    cost = Cost(clients=ids)
    digest = config.digest

    gone: set[int] = set()

    def uplink(phase: str, step: Callable[[Client, Message | None], Message],
               inbox: dict[int, bytes] | None) -> list[bytes]:
        gone.update(dropouts.get(phase, ()))
        arrived = []
        for c in ids:
            if c in gone or (inbox is not None and c not in inbox):
                continue
            start = time.perf_counter()
            incoming = None if inbox is None else decode(inbox[c], digest)
            message = step(clients[c], incoming)
            data = encode(message, digest)
            cost.client_seconds[phase][c] = time.perf_counter() - start
            if intercept is not None:
                replaced = intercept("up", phase, c, message)
                if replaced is None:
                    continue
                data = encode(replaced, digest)
            cost.up_bytes[type(message).__name__] += len(data)
            cost.client_up[c] += len(data)
            arrived.append(data)
        return arrived

    def serve(phase: str, collect, arrived: list[bytes]):
        start = time.perf_counter()
        replies = collect(decode(d, digest) for d in arrived)
        if not isinstance(replies, dict):
            cost.server_seconds[phase] += time.perf_counter() - start
            return replies
        out = {}
        for c, message in replies.items():
            if intercept is not None:
                message = intercept("down", phase, c, message)
                if message is None:
                    continue
            out[c] = encode(message, digest)
            cost.down_bytes[type(message).__name__] += len(out[c])
            cost.client_down[c] += len(out[c])
        cost.server_seconds[phase] += time.perf_counter() - start
        return out

    inbox = serve("advertise", server.collect_advertisements,
                  uplink("advertise", lambda c, _: c.advertise(), None))
    inbox = serve("share_keys", server.collect_shares, uplink("share_keys", Client.share_keys, inbox))
    inbox = serve("masked_input", server.collect_masked, uplink("masked_input", Client.masked_input, inbox))
    if config.active:
        inbox = serve("consistency", server.collect_signatures,
                      uplink("consistency", Client.consistency, inbox))
    else:
        gone.update(dropouts.get("consistency", ()))
    total = serve("unmasking", server.collect_unmasking, uplink("unmasking", Client.unmask, inbox))
    return SecureSum(sum=total, survivors=server.survivors, config=config, cost=cost,
                     rejected=server.rejected,
                     value=None if codec is None else codec.decode(total))


def random_buckets(n: int, size: int, seed: bytes) -> list[np.ndarray]:
    """``n // size`` buckets of ``size`` or ``size + 1`` of the indices ``0..n-1``, from a random
    permutation derived from ``seed`` (bytes that no single party could steer)."""
    if not 2 <= size <= n:
        raise ValueError(f"bucket size must be in 2..{n}, got {size}")
    key = int.from_bytes(hashlib.sha256(b"phalanx/secagg/v1/buckets" + seed).digest()[:8], "little")
    order = np.random.Generator(np.random.PCG64(key)).permutation(n)
    return np.array_split(order, n // size)


def bucket_sums(inputs, buckets: Sequence[Sequence[int]], *, session_id: bytes, **options) -> list[SecureSum]:
    """One :func:`secure_sum` per bucket of row indices; bucket ``i``'s session id is SHA-256 of
    ``session_id`` and ``i``, its client ids are the rows' indices. ``dropouts`` (if given) name
    row indices too and apply to whichever bucket holds them."""
    dropouts = options.pop("dropouts", None) or {}
    results = []
    for i, rows in enumerate(buckets):
        rows = [int(r) for r in rows]
        members = set(rows)
        sid = hashlib.sha256(session_id + b"/bucket/" + i.to_bytes(4, "big")).digest()[:16]
        local = {p: [c for c in v if c in members] for p, v in dropouts.items()}
        results.append(secure_sum(inputs[rows], ids=rows, session_id=sid, dropouts=local, **options))
    return results
