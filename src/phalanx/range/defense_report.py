"""The report's defense tables: detection, quarantine, attack success and the Sybil swarm.

One row per run that had a guard (:mod:`phalanx.engine.guard`) or a targeted attack: the final
attack success rate, the detection figures of the last round (precision, recall, F1 of the nodes
the network flags against the truly malicious ones), the time to detection, how many nodes were
quarantined (and how many of them honest), and, for a Sybil swarm, what its budget bought under
the admission policy. The per-round curves of the same figures are among the report's other
metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["defense_rows", "diversity_tables", "swarm_rows"]


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—"
    return f"{value:{spec}}"


def _final(run: Any) -> Mapping[str, Any]:
    from phalanx.range.report import final_record  # report imports this module

    return final_record(run)


def _peak_after(run: Any, key: str, start: int) -> float | None:
    values = [r.get(key) for r in run.records if isinstance(r.get("round"), int) and r["round"] >= start]
    values = [v for v in values if isinstance(v, (int, float))]
    return max(values) if values else None


def defense_rows(runs: Sequence[Any]) -> list[dict[str, str]]:
    """One formatted row per run with a guard or an attack success rate."""
    rows = []
    for run in runs:
        guard = run.info.get("guard")
        final = _final(run)
        if not guard and final.get("attack_success") is None:
            continue
        detection = (guard or {}).get("detection") or {}
        decisions = (guard or {}).get("decisions") or []
        quarantined = sorted({d.get("node") for d in decisions if d.get("action") == "quarantine"})
        rows.append({
            "name": run.name, "color": run.color, "defense": str(run.info.get("defense") or "—"),
            "accuracy": _fmt(final.get("accuracy")),
            "success": _fmt(final.get("attack_success")),
            "success_peak": _fmt(_peak_after(run, "attack_success", 2)),
            "precision": _fmt(final.get("detect_precision")), "recall": _fmt(final.get("detect_recall")),
            "f1": _fmt(final.get("detect_f1")),
            "ttd": (f"{_fmt(detection.get('time_to_detection_mean'), '.1f')} / "
                    f"{_fmt(detection.get('time_to_detection_max'), 'd')}") if guard else "—",
            "to_f1": _fmt(detection.get("rounds_to_f1_target"), "d") if guard else "—",
            "detected": (f"{detection.get('malicious_detected', 0)} of {detection.get('malicious_arrived', 0)}"
                         if guard else "—"),
            "quarantined": str(len(quarantined)) if guard else "—",
            "honest_quarantined": str(len((guard or {}).get("honest_quarantined") or [])) if guard else "—",
        })
    return rows


def swarm_rows(runs: Sequence[Any]) -> list[dict[str, str]]:
    """One formatted row per run with a Sybil swarm: what its budget bought and what it did."""
    rows = []
    for run in runs:
        swarm = (run.info.get("guard") or {}).get("swarm")
        if not swarm:
            continue
        final = _final(run)
        rows.append({
            "name": run.name, "color": run.color, "policy": str(swarm.get("policy") or "—"),
            "unit": str(swarm.get("unit") or ""), "budget": _fmt(swarm.get("budget"), ",.0f"),
            "initial": str(swarm.get("identities_initial")), "bought": str(swarm.get("identities_bought")),
            "lost": str(swarm.get("identities_lost")), "slashed": _fmt(swarm.get("slashed"), ",.0f"),
            "honest_cost": _fmt(swarm.get("honest_join_cost"), ",.0f"),
            "success": _fmt(final.get("attack_success")), "accuracy": _fmt(final.get("accuracy")),
        })
    return rows


def diversity_tables(runs: Sequence[Any]) -> list[dict[str, Any]]:
    """Per diverse run: its groups' final accuracy and attack success, and the transfer tables."""
    out = []
    for run in runs:
        table = run.info.get("diversity")
        if not isinstance(table, Mapping):
            continue
        final = _final(run)
        groups = [k.removeprefix("accuracy_") for k in final if k.startswith("accuracy_")
                  and k not in ("accuracy_min", "accuracy_max")]
        members = [*groups, "ensemble"]
        summary = [{"group": g, "accuracy": _fmt(final.get("accuracy" if g == "ensemble" else f"accuracy_{g}")),
                    "success": _fmt(final.get("attack_success" if g == "ensemble" else f"attack_success_{g}"))}
                   for g in members]
        transfer = {attack: [{"source": src, "cells": [_fmt((table.get(attack) or {}).get(src, {}).get(t), ".2f")
                                                        for t in members]}
                             for src in members]
                    for attack in ("fgsm", "pgd")}
        out.append({"name": run.name, "color": run.color, "members": members, "summary": summary,
                    "transfer": transfer, "epsilon": _fmt(table.get("epsilon_raw"), "g"),
                    "samples": str(table.get("samples", "—")), "steps": str(table.get("steps", "—"))})
    return out
