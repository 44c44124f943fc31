"""Every run of the range writes its ledger: attach the engine's recorder, then summarise what it
wrote for ``summary.json`` and the report.

One ledger per run, beside the run's metrics (one log per origin keeps each run's audit,
receipts and trace self-contained, and runs of a study share nothing but their seed)::

    OUT/<run>/ledger.db          the public log (phalanx audit / receipt / trace)
    OUT/<run>/policy.txt         the log's and the validators' keys, and the quorum (C2SP tlog-policy)
    OUT/<run>/ledger-private/    salts and kept bytes for receivers and auditors (audit --replay)

A diverse run (``diversity:``, one star per group of nodes, in lockstep) writes one ledger per
group, since each group aggregates on its own and its log must replay on its own::

    OUT/<run>/<group>/ledger.db, policy.txt, ledger-private/   (origin phalanx.sim/<run>/<group>)

Node ``i`` of a group's log is the group's ``i``-th node (the summary lists the network's ids).
The scenario's ``ledger`` section turns it off, keeps hashes only, sets the validators and the
checkpoint interval, and may schedule a rollback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phalanx.engine.provenance import LEDGER_FILE, POLICY_FILE, LedgerRecorder, RecorderConfig, RollbackPlan
from phalanx.ledger.trace import LedgerIndex, trace


@dataclass
class GroupLedgers:
    """A diverse run's ledgers: (group name, its network node ids, its recorder, its folder)."""

    groups: list[tuple[str, list[int], LedgerRecorder, Path]]


def attach(built, run_dir: Path) -> LedgerRecorder | GroupLedgers | None:
    """Start the run's ledger (registrations, datasets, the starting model) and hook it to the
    simulation (a diverse run: one per group); ``None`` when the scenario turns the ledger off."""
    s = built.scenario
    if not s.ledger.enabled:
        for stale in (LEDGER_FILE, POLICY_FILE):  # a ledger of an earlier run here would mislead
            (run_dir / stale).unlink(missing_ok=True)
        return None
    from phalanx.range.scenario import slug

    if s.diversity is not None:
        groups = []
        for g, (spec, sim) in enumerate(zip(s.diversity.groups, built.simulation.groups)):
            folder = run_dir / spec.name
            recorder = LedgerRecorder(sim, folder, _config(built, f"phalanx.sim/{slug(s.name)}/{spec.name}",
                                                           spec.model.name))
            sim.observer = recorder
            groups.append((spec.name, s.diversity.nodes_of(g), recorder, folder))
        return GroupLedgers(groups)
    recorder = LedgerRecorder(built.simulation, run_dir, _config(built, f"phalanx.sim/{slug(s.name)}", s.model.name))
    built.simulation.observer = recorder
    if built.simulation.guard is not None:
        built.simulation.guard.on_decision = recorder.decision
    return recorder


def _config(built, origin: str, model: str) -> RecorderConfig:
    s = built.scenario
    rollback = s.ledger.rollback
    return RecorderConfig(
        origin=origin, seed=s.seed, chain=[(p.name, p.params) for p in (*s.pre_aggregators, s.aggregator)],
        num_classes=built.dataset.num_classes, keep_updates=s.ledger.keep_updates,
        validators=s.topology.validators if s.topology.name == "committee" else s.ledger.validators,
        checkpoint_every=s.ledger.checkpoint_every,
        rollback=None if rollback is None else RollbackPlan(rollback.at, rollback.to_round, rollback.reason),
        model=model)


def finish(recorder: LedgerRecorder | GroupLedgers, built, run_dir: Path) -> dict[str, Any]:
    """Close the ledger; its summary, with the provenance of the run's final model for the report
    (the star's global model, or the first honest node's in gossip); a diverse run's: each group's
    under ``groups``."""
    if isinstance(recorder, GroupLedgers):
        return {"groups": [{"group": name, "nodes": nodes,
                            **_finish(rec, sim, folder, f"{run_dir.name}/{folder.name}")}
                           for (name, nodes, rec, folder), sim in zip(recorder.groups, built.simulation.groups)]}
    return _finish(recorder, built.simulation, run_dir, run_dir.name)


def _finish(recorder: LedgerRecorder, sim, run_dir: Path, name: str) -> dict[str, Any]:
    recorder.checkpointed()
    index = LedgerIndex.build(recorder.ledger.entries())
    summary = recorder.close()
    if summary["model"] is not None:
        model, whose = bytes.fromhex(summary["model"]), "the global model"
    else:
        honest = [i for i, bad in enumerate(sim.malicious.tolist()) if not bad] or [0]
        model, whose = bytes.fromhex(summary["models"][honest[0]]), f"node {honest[0]}'s model"
    provenance = trace(index, model)
    rounds, grid = provenance.matrix()
    summary["folder"] = name
    summary["trace"] = {"model": model.hex(), "whose": whose, "rounds": rounds, "grid": grid,
                        "records": len(provenance.records),
                        "reverted": [{"rounds": r["rounds"], "at": r["at"], "to_round": r["round"],
                                      "reason": r["reason"]} for r in index.reverted()]}
    return summary
