"""The eclipse attack in the range: an attacker with many addresses in few prefixes tries to fill a
victim's view, then shows it a forked checkpoint.

Population (all in 127.0.0.0/8, so distinct prefixes exist on one machine): ``honest`` peers, each
in its own /16; the attacker's ``sybils`` addresses in ``attacker_prefixes`` /16 prefixes. Each
round the victim pulls the views of its view's members (an honest peer answers with a uniform
draw from everyone it knows, the attacker's addresses included; an attacker answers with its
own addresses only) and the attacker pushes ``pushes`` of its addresses to the victim. The
victim's sampler (:mod:`phalanx.network.sampling`: Basalt, Brahms or the naive push-pull) turns
that into its next view. Then every view member offers the round's checkpoint: honest ones the
log's real one (cosigned by the n witnesses), attacker ones a fork of the same size (log-signed
in a split view, cosigned by the f Byzantine witnesses), attackers first. Two gates
(:class:`phalanx.engine.committee.CheckpointGate`) judge them: the naive one accepts any
checkpoint the log signed; the defended one needs the witness quorum and reports a stall after
``stall_after`` rounds without a new final checkpoint.

It runs as a range study (``studies/eclipse.yaml``: a scenario's ``eclipse`` section, run after
the scenario's rounds, its table and view-share curve in the report) and as ``phalanx eclipse``.
Measured per sampler, averaged over seeds: the attacker's share of the victim's view over time,
the rounds at which the view was wholly the attacker's, forks each gate accepted, and how many
rounds after the view was wholly taken the defended gate noticed the stall.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from phalanx.core.keys import SigningKey
from phalanx.engine.committee import CheckpointGate
from phalanx.ledger import Checkpoint, Policy, Signer, sign_checkpoint
from phalanx.range.scenario import EclipseSpec
from phalanx.ledger.note import SIG_COSIGNATURE
from phalanx.network.sampling import SAMPLERS

ORIGIN = "eclipse.phalanx/log"


def addresses(cfg: EclipseSpec, rng: np.random.Generator) -> np.ndarray:
    """Honest peers at 127.h.x.y (one /16 each), then the attacker's in its few /16s."""
    base = 127 << 24
    honest = base + (np.arange(cfg.honest) << 16) + rng.integers(1, 1 << 16, cfg.honest)
    prefixes = 250 - np.arange(cfg.attacker_prefixes)
    sybil = base + (prefixes[np.arange(cfg.sybils) % cfg.attacker_prefixes] << 16) + 1 + np.arange(cfg.sybils) // cfg.attacker_prefixes
    return np.concatenate([honest, sybil]).astype(np.uint32)


class Checkpoints:
    """The real chain (cosigned by every witness) and the attacker's fork (cosigned by f)."""

    def __init__(self, n: int):
        self.log = Signer(ORIGIN, SigningKey.derive("eclipse-log"))
        self.ws = [Signer(f"w{i}", SigningKey.derive("eclipse-witness", i), SIG_COSIGNATURE) for i in range(n)]
        self.policy = Policy.byzantine([self.log.vkey], {w.name: w.vkey for w in self.ws})
        self.f = (n - 1) // 3

    def note(self, size: int, fork: bool) -> bytes:
        root = hashlib.sha256(f"{'fork' if fork else 'real'} {size}".encode()).digest()
        note = sign_checkpoint(Checkpoint(ORIGIN, size, root), self.log)
        cosigners = self.ws[: self.f] if fork else self.ws
        return note.with_signatures([w.sign(note.text, 1_700_000_000 + size) for w in cosigners]).format()


def run_one(cfg: EclipseSpec, sampler: str, seed: int, cps: Checkpoints) -> dict:
    rng = np.random.default_rng(seed)
    addr = addresses(cfg, rng)
    n = len(addr)
    bad = np.arange(n) >= cfg.honest
    victim = SAMPLERS[sampler](addr, cfg.view, np.random.default_rng(seed + 1000))
    victim.view = rng.choice(cfg.honest, cfg.view, replace=False)
    if hasattr(victim, "samples"):
        victim.samples = victim.view.copy()
    naive = CheckpointGate(cps.policy, cfg.stall_after, witness_quorum=False)
    guarded = CheckpointGate(cps.policy, cfg.stall_after)
    shares, taken_at, noticed_at, forks = [], None, None, 0
    for t in range(1, cfg.rounds + 1):
        view = victim.view[victim.view >= 0]
        pulled = [rng.integers(0, n, cfg.view) if not bad[p] else rng.integers(cfg.honest, n, cfg.view) for p in view]
        pushed = rng.integers(cfg.honest, n, cfg.pushes)
        victim.update(np.concatenate(pulled) if pulled else np.array([], int), pushed)
        view = victim.view[victim.view >= 0]
        share = float(bad[view].mean()) if len(view) else 1.0
        shares.append(share)
        if share == 1.0 and taken_at is None:
            taken_at = t
        offers = sorted(view, key=lambda p: not bad[p])  # the attacker answers first
        for p in offers:
            if naive.offer(cps.note(t, fork=bool(bad[p])), now=t) == "final" and bad[p]:
                forks += 1
                break
        for p in offers:
            guarded.offer(cps.note(t, fork=bool(bad[p])), now=t)
        if taken_at is not None and noticed_at is None and guarded.stalled(t):
            noticed_at = t
    accepted_forks = sum(1 for size, (cp, _) in guarded.accepted.items()
                         if cp.root == hashlib.sha256(f"fork {size}".encode()).digest())
    return {"sampler": sampler, "seed": seed, "share": shares, "taken_at": taken_at,
            "naive_forks": forks, "guarded_forks": accepted_forks,
            "stall_noticed": None if taken_at is None or noticed_at is None else noticed_at - taken_at}


def run(cfg: EclipseSpec) -> dict:
    cps = Checkpoints(cfg.witnesses)
    runs = [run_one(cfg, s, seed, cps) for s in cfg.samplers for seed in cfg.seeds]
    table = []
    for s in cfg.samplers:
        rs = [r for r in runs if r["sampler"] == s]
        share = np.mean([r["share"] for r in rs], axis=0)
        taken = [r["taken_at"] for r in rs if r["taken_at"] is not None]
        noticed = [r["stall_noticed"] for r in rs if r["stall_noticed"] is not None]
        at = lambda r: float(share[r - 1]) if len(share) >= r else None  # noqa: E731
        table.append({"sampler": s, "share_r5": at(5), "share_r15": at(15),
                      "share_final": float(share[-1]), "eclipsed_runs": f"{len(taken)}/{len(rs)}",
                      "naive_forks": float(np.mean([r["naive_forks"] for r in rs])),
                      "guarded_forks": float(np.mean([r["guarded_forks"] for r in rs])),
                      "stall_noticed_after": float(np.mean(noticed)) if noticed else None,
                      "share_curve": share.tolist()})
    return {"config": cfg.model_dump(mode="json"),
            "table": table, "runs": runs}


def markdown(result: dict) -> str:
    c = result["config"]
    lines = [f"Victim view {c['view']}, {c['honest']} honest peers (one /16 each), {c['sybils']} attacker "
             f"addresses in {c['attacker_prefixes']} /16s, {c['pushes']} pushes a round, {c['rounds']} rounds, "
             f"seeds {c['seeds']}; forks: checkpoints of the attacker's fork the victim accepted as final.",
             "",
             "| sampler | attacker share r5 | r15 | final | fully eclipsed | forks accepted (any log-signed) "
             "| forks accepted (witness quorum) | stall noticed after (rounds) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["table"]:
        stall = "-" if row["stall_noticed_after"] is None else f"{row['stall_noticed_after']:.1f}"
        r5, r15 = ("-" if row[k] is None else f"{row[k]:.2f}" for k in ("share_r5", "share_r15"))
        lines.append(f"| {row['sampler']} | {r5} | {r15} | {row['share_final']:.2f} "
                     f"| {row['eclipsed_runs']} | {row['naive_forks']:.1f} | {row['guarded_forks']:.1f} | {stall} |")
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "eclipse.json").write_text(json.dumps(result, indent=1))
    (out / "eclipse.md").write_text(markdown(result))
    written = [out / "eclipse.json", out / "eclipse.md"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for row in result["table"]:
        ax.plot(range(1, len(row["share_curve"]) + 1), row["share_curve"], label=row["sampler"])
    ax.set_xlabel("round")
    ax.set_ylabel("attacker share of the victim's view")
    ax.set_ylim(0, 1.02)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "eclipse.png", dpi=110)
    plt.close(fig)
    return written + [out / "eclipse.png"]
