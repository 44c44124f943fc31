"""Every run of the range writes its ledger: attach the engine's recorder, then summarise what it
wrote for ``summary.json`` and the report.

One ledger per run, beside the run's metrics (one log per origin keeps each run's audit,
receipts and trace self-contained, and runs of a study share nothing but their seed)::

    OUT/<run>/ledger.db          the public log (phalanx audit / receipt / trace)
    OUT/<run>/policy.txt         the log's and the validators' keys, and the quorum (C2SP tlog-policy)
    OUT/<run>/ledger-private/    salts and kept bytes for receivers and auditors (audit --replay)

A diverse run (``diversity:``, several stars in lockstep) writes no ledger yet: each group would
need its own log, and that is not built. The scenario's ``ledger`` section turns it off, keeps hashes only, sets the validators and the
checkpoint interval, and may schedule a rollback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phalanx.engine.provenance import LEDGER_FILE, POLICY_FILE, LedgerRecorder, RecorderConfig, RollbackPlan
from phalanx.ledger.trace import LedgerIndex, trace


def attach(built, run_dir: Path) -> LedgerRecorder | None:
    """Start the run's ledger (registrations, datasets, the starting model) and hook it to the
    simulation; ``None`` when the scenario turns the ledger off, or runs groups of architectures."""
    s = built.scenario
    if not s.ledger.enabled or s.diversity is not None:
        for stale in (LEDGER_FILE, POLICY_FILE):  # a ledger of an earlier run here would mislead
            (run_dir / stale).unlink(missing_ok=True)
        return None
    from phalanx.range.scenario import slug

    rollback = s.ledger.rollback
    config = RecorderConfig(
        origin=f"phalanx.sim/{slug(s.name)}", seed=s.seed,
        chain=[(p.name, p.params) for p in (*s.pre_aggregators, s.aggregator)],
        num_classes=built.dataset.num_classes, keep_updates=s.ledger.keep_updates,
        validators=s.topology.validators if s.topology.name == "committee" else s.ledger.validators,
        checkpoint_every=s.ledger.checkpoint_every,
        rollback=None if rollback is None else RollbackPlan(rollback.at, rollback.to_round, rollback.reason),
        model=s.model.name)
    recorder = LedgerRecorder(built.simulation, run_dir, config)
    built.simulation.observer = recorder
    if built.simulation.guard is not None:
        built.simulation.guard.on_decision = recorder.decision
    return recorder


def finish(recorder: LedgerRecorder, built, run_dir: Path) -> dict[str, Any]:
    """Close the ledger; its summary, with the provenance of the run's final model for the report
    (the star's global model, or the first honest node's in gossip)."""
    recorder.checkpointed()
    index = LedgerIndex.build(recorder.ledger.entries())
    summary = recorder.close()
    if summary["model"] is not None:
        model, whose = bytes.fromhex(summary["model"]), "the global model"
    else:
        honest = [i for i, bad in enumerate(built.simulation.malicious.tolist()) if not bad] or [0]
        model, whose = bytes.fromhex(summary["models"][honest[0]]), f"node {honest[0]}'s model"
    provenance = trace(index, model)
    rounds, grid = provenance.matrix()
    summary["folder"] = run_dir.name
    summary["trace"] = {"model": model.hex(), "whose": whose, "rounds": rounds, "grid": grid,
                        "records": len(provenance.records),
                        "reverted": [{"rounds": r["rounds"], "at": r["at"], "to_round": r["round"],
                                      "reason": r["reason"]} for r in index.reverted()]}
    return summary
