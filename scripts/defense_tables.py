"""The README's poisoning, Sybil, reputation and diversity tables, from stored results.

    python scripts/defense_tables.py collect [OUT]   # OUT/grid-*/cells and OUT/diversity, OUT/bad-input
                                                     #   -> benchmarks/results/defenses/*.json
    python scripts/defense_tables.py readme          # those JSON files -> the README's tables

``collect`` reads the cells of each grid file under ``src/phalanx/range/grids/`` that this script
knows (the cache files of exactly the cells the file defines now, so stale cells of an earlier
version of a file are ignored) and the summaries of the two studies, and keeps what the tables
need. ``readme`` rewrites the text between each ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``
marker of the README.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "defenses"
GRIDS = ROOT / "src" / "phalanx" / "range" / "grids"
README = ROOT / "README.md"
NAMES = ("foolsgold", "backdoor", "sybil", "onoff", "budget")


# -- collect -------------------------------------------------------------------------------------------
def _series(records, key):
    return [(r["round"], r.get(key)) for r in records if isinstance(r.get(key), (int, float))]


def _cell_summary(cell, result) -> dict:
    records = result["records"]
    final = result["final"]
    guard = result.get("guard") or {}
    arrival = (guard.get("detection") or {}).get("first_arrival")
    asr = _series(records, "attack_success")
    f1 = dict(_series(records, "detect_f1"))
    out = {
        "defense": cell.defense, "attack": cell.attack, "seed": cell.seed, "wall_time_s": result["wall_time_s"],
        "accuracy": final.get("accuracy"), "attack_success": final.get("attack_success"),
        "attack_success_last5": statistics.fmean(v for _, v in asr[-5:]) if asr else None,
        "attack_success_peak": max((v for r, v in asr if r >= (arrival or 1) + 4), default=None),
        "accuracy_curve": [r.get("accuracy") for r in records],
        "attack_success_curve": [v for _, v in asr],
        "detect_f1_curve": [r.get("detect_f1") for r in records] if f1 else None,
        "malicious_admitted_curve": [r.get("malicious_admitted") for r in records] if f1 else None,
        "malicious": result.get("malicious"),
        "detect_f1": final.get("detect_f1"), "detect_precision": final.get("detect_precision"),
        "detect_recall": final.get("detect_recall"), "honest_quarantined": final.get("honest_quarantined"),
    }
    if guard:
        out["detection"] = guard.get("detection")
        out["quarantines"] = [(d["round"], d["node"]) for d in guard.get("decisions", []) if d["action"] == "quarantine"]
        if arrival is not None and f1:
            out["f1_at_arrival_plus_4"] = f1.get(arrival + 4)
        if guard.get("swarm"):
            out["swarm"] = guard["swarm"]
    return out


def collect(out_dir: Path) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from phalanx.range.grid import load_grid

    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        grid = load_grid(GRIDS / f"{name}.yaml", {}, {})
        folder = out_dir / f"grid-{name}" / "cells"
        cells, missing = [], 0
        for cell in grid.cells:
            path = folder / f"{cell.key}.json"
            if not path.exists():
                missing += 1
                continue
            cells.append(_cell_summary(cell, json.loads(path.read_text())))
        if not cells:
            print(f"{name}: no cells under {folder}")
            continue
        (RESULTS / f"{name}.json").write_text(json.dumps(
            {"grid": name, "cells": cells, "missing": missing,
             "cpu_seconds": round(sum(c["wall_time_s"] for c in cells), 1)}, indent=1) + "\n")
        print(f"{name}: {len(cells)} cells ({missing} missing)")
    for name, folder in (("diversity", "diversity"), ("bad_input", "bad-input")):
        path = out_dir / folder / "summary.json"
        if not path.exists():
            print(f"{name}: no {path}")
            continue
        summary = json.loads(path.read_text())
        keep = {"manifest": {k: summary["manifest"].get(k) for k in ("commit", "wall_time_s", "command")},
                "runs": [{k: run.get(k) for k in ("name", "final", "diversity", "evidence", "events",
                                                  "malicious", "model_parameters", "guard")}
                         for run in summary["runs"]]}
        (RESULTS / f"{name}.json").write_text(json.dumps(keep, indent=1) + "\n")
        print(f"{name}: {len(keep['runs'])} runs")


# -- tables --------------------------------------------------------------------------------------------
def pct(x, digits=0):
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def by(cells, **keys):
    return [c for c in cells if all(c[k] == v for k, v in keys.items())]


def load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def grid_cells(name):
    """``(data, cells, defense labels in file order)`` of a stored grid, or ``None``."""
    data = load(name)
    if data is None:
        return None
    cells = data["cells"]
    return data, cells, list(dict.fromkeys(c["defense"] for c in cells))


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def foolsgold_section() -> str:
    got = grid_cells("foolsgold")
    if got is None:
        return ""
    data, cells, defenses = got
    ks = [a for a in dict.fromkeys(c["attack"] for c in cells) if a.startswith("k=")]
    rows = []
    for d in defenses:
        rows.append([f"`{d}`"] + [pct(mean(c["attack_success"] for c in by(cells, defense=d, attack=k)))
                                  + f" ({pct(mean(c['accuracy'] for c in by(cells, defense=d, attack=k)))})"
                                  for k in ks])
    seeds = sorted({c["seed"] for c in cells})
    return (f"`phalanx grid src/phalanx/range/grids/foolsgold.yaml` ({len(cells)} cells, "
            f"{data['cpu_seconds'] / 60:.0f} CPU-minutes; the file states its sizes). Attack rate (the share of test "
            f"1s the global model calls 7) at round 30, mean over seeds {', '.join(map(str, seeds))}; "
            f"accuracy in brackets:\n\n" + table(["defense", *[k.replace("k=", "k = ") for k in ks]], rows))


def backdoor_section() -> str:
    got = grid_cells("backdoor")
    if got is None:
        return ""
    data, cells, defenses = got
    clean_rate = {"square": "clean, square", "bars": "clean, bars"}
    trigger = {"badnets": "square", "dba": "bars", "model replacement": "square"}
    rows, checks = [], []
    for d in defenses:
        clean_acc = mean(c["accuracy"] for c in by(cells, defense=d, attack="none"))
        row = [f"`{d}`", pct(clean_acc, 1)]
        for attack in ("badnets", "dba", "model replacement"):
            asr = mean(c["attack_success"] for c in by(cells, defense=d, attack=attack))
            base = mean(c["attack_success"] for c in by(cells, defense=d, attack=clean_rate[trigger[attack]]))
            acc = mean(c["accuracy"] for c in by(cells, defense=d, attack=attack))
            excess = None if asr is None or base is None else asr - base
            row.append(f"{pct(excess, 1)} ({pct(asr, 1)} − {pct(base, 1)}); acc {pct(acc, 1)}")
            if d == "flame":
                checks.append((attack, excess, acc))
        rows.append(row)
    mean_clean = mean(c["accuracy"] for c in by(cells, defense="mean", attack="none"))
    out = (f"`phalanx grid src/phalanx/range/grids/backdoor.yaml` ({len(cells)} cells, "
           f"{data['cpu_seconds'] / 60:.0f} CPU-minutes). Final accuracy and attack success rate (triggered test "
           "images not of class 0 classified as 0) after 20 rounds, mean over 2 seeds; each rate minus the rate "
           "of a model trained with no attacker, for the same defense and trigger:\n\n"
           + table(["defense", "no attacker: accuracy", "BadNets: ASR − clean rate", "DBA: ASR − clean rate",
                    "model replacement: ASR − clean rate"], rows))
    if checks:
        lines = [f"- {a}: {pct(e, 1)} above the clean rate (limit 5 points: {'pass' if e is not None and e <= 0.05 else 'fail'}); "
                 f"accuracy {pct(acc, 1)}, {pct(None if mean_clean is None else mean_clean - acc, 1)} below the mean's "
                 f"{pct(mean_clean, 1)} with no attacker (limit 2 points: "
                 f"{'pass' if mean_clean is not None and mean_clean - acc <= 0.02 else 'fail'})"
                 for a, e, acc in checks]
        out += "\n\nThe chain named before the grid ran, FLAME in front of the mean:\n\n" + "\n".join(lines)
    return out


def sybil_section() -> str:
    got = grid_cells("sybil")
    if got is None:
        return ""
    data, cells, defenses = got
    attacks = [a for a in dict.fromkeys(c["attack"] for c in cells) if a != "none"]
    rows = []
    for a in attacks:
        for d in defenses:
            group = by(cells, defense=d, attack=a)
            reach = [c.get("detection", {}).get("rounds_to_f1_target") for c in group]
            reach_txt = ", ".join("never" if r is None else str(r) for r in reach)
            rows.append([a, f"`{d}`", pct(mean(c["attack_success"] for c in group)),
                         pct(max((c["attack_success_peak"] or 0) for c in group)),
                         f"{mean(c.get('f1_at_arrival_plus_4') for c in group):.2f}" if mean(c.get("f1_at_arrival_plus_4") for c in group) is not None else "—",
                         reach_txt, str(sum(c["honest_quarantined"] or 0 for c in group)),
                         pct(mean(c["accuracy"] for c in group), 1)])
    seeds = sorted({c["seed"] for c in cells})
    return (f"`phalanx grid src/phalanx/range/grids/sybil.yaml` ({len(cells)} cells, {data['cpu_seconds'] / 60:.0f} "
            f"CPU-minutes), seeds {', '.join(map(str, seeds))}; the Sybils arrive at round 5. Attack rate at round 20 "
            "(mean over seeds) and its peak from round 9 on (largest over seeds); F1 of the flagged nodes 4 rounds "
            "after the arrival (round 9; mean over seeds); the rounds from arrival until F1 first reached 0.9 (per "
            "seed); honest nodes quarantined (summed over seeds); accuracy at round 20:\n\n"
            + table(["Sybils", "defense", "attack rate", "peak", "F1 at arrival + 4", "rounds to F1 0.9",
                     "honest quarantined", "accuracy"], rows))


def onoff_section() -> str:
    got = grid_cells("onoff")
    if got is None:
        return ""
    data, cells, defenses = got
    on_rounds = [r for r in range(1, 31) if (r - 1) % 10 >= 6]
    rows = []
    for d in defenses:
        row = [f"`{d}`", pct(mean(c["accuracy"] for c in by(cells, defense=d, attack="none")), 1)]
        for a in ("on-off", "always"):
            group = by(cells, defense=d, attack=a)
            worst = mean(min(acc for r, acc in enumerate(c["accuracy_curve"], 1)
                             if acc is not None and (a == "always" or r in on_rounds)) for c in group)
            admitted = mean(sum(x or 0 for r, x in enumerate(c["malicious_admitted_curve"] or [], 1)
                                if a == "always" or r in on_rounds) for c in group) if group and group[0]["malicious_admitted_curve"] else None
            if "quarantines" in group[0]:
                bad = mean(len([q for q in c["quarantines"] if q[1] in c["malicious"]]) for c in group)
                good = mean(c["honest_quarantined"] or 0 for c in group)
                quarantined = f"{bad:.1f} / {good:.1f}"
            else:
                quarantined = "—"
            row += [pct(mean(c["accuracy"] for c in group), 1), pct(worst, 1),
                    "—" if admitted is None else f"{admitted:.0f}", quarantined]
        rows.append(row)
    return ("`phalanx grid src/phalanx/range/grids/onoff.yaml` (8 of 40 nodes; on-off: honest 6 rounds, then 4 "
            "rounds sending their update reversed x5, attacking in rounds 7-10, 17-20 and 27-30; always: from round "
            f"1). Mean over 2 seeds; {len(cells)} cells, {data['cpu_seconds'] / 60:.0f} CPU-minutes. \"Lowest\" is the "
            "lowest accuracy during the attacking rounds; \"admitted\" counts the attackers' rows that reached the "
            "rule in those rounds (of 8 per round, 96 in all for on-off, 240 for always); \"quarantined\" counts "
            "the attackers / the honest nodes the server quarantined:\n\n"
            + table(["reputation", "no attacker", "on-off: final", "lowest", "admitted", "quarantined",
                     "always: final", "lowest", "admitted", "quarantined"], rows))


def budget_section() -> str:
    data = load("budget")
    if data is None:
        return ""
    cells = data["cells"]
    attacks = [a for a in dict.fromkeys(c["attack"] for c in cells) if a != "none"]
    rows, needed = [], {}
    for a in attacks:
        policy, budget = a.rsplit(", ", 1)
        plain, guarded = by(cells, defense="mean", attack=a), by(cells, defense="reputation+quarantine", attack=a)
        if not plain or not guarded:
            continue
        s0, s1 = plain[0].get("swarm") or {}, guarded[0].get("swarm") or {}
        unit = s0.get("unit", "")
        rows.append([policy, "any" if unit == "nothing" else f"{budget} {unit}", str(s0.get("identities_initial", "—")),
                     pct(plain[0]["attack_success"]), f"{s1.get('identities_bought', '—')} ({s1.get('identities_lost', '—')} quarantined)",
                     "—" if unit == "nothing" else f"{s1.get('slashed', 0):,.0f}", pct(guarded[0]["attack_success"])])
        for label, cell in (("mean", plain[0]), ("reputation+quarantine", guarded[0])):
            if (cell["attack_success"] or 0) >= 0.5 and (policy, label) not in needed:
                needed[(policy, label)] = "any" if unit == "nothing" else f"{budget} {unit}"
    policies = list(dict.fromkeys(a.rsplit(", ", 1)[0] for a in attacks))
    need_rows = [[p, needed.get((p, "mean"), "more than the largest tried"),
                  needed.get((p, "reputation+quarantine"), "more than the largest tried")] for p in policies]
    return (f"`phalanx grid src/phalanx/range/grids/budget.yaml` ({len(cells)} cells, {data['cpu_seconds'] / 60:.0f} "
            "CPU-minutes, seed 0). FoolsGold's setting; the adversary fields at most 10 identities at once and may buy "
            "10 replacements. Attack rate at round 30:\n\n"
            + table(["admission", "budget", "identities", "attack rate, mean", "bought, reputation + quarantine",
                     "spent on identities lost", "attack rate, reputation + quarantine"], rows)
            + "\n\nThe Sybil budget needed to move the model (the smallest budget tried whose identities reach an "
            "attack rate of 50%):\n\n" + table(["admission", "against the mean", "against reputation + quarantine"],
                                                need_rows))


def diversity_section() -> str:
    data = load("diversity")
    if data is None:
        return ""
    runs = {r["name"]: r for r in data["runs"]}
    clean = runs.get("diverse, no attacker")
    hit = runs.get("diverse, backdoor aimed at the cnn")
    mono = runs.get("monoculture cnn, same backdoor")
    if not (clean and hit and mono):
        return ""
    groups = ["lr", "mlp", "cnn"]
    rows = []
    for name, run in (("no attacker", clean), ("backdoor aimed at the cnn", hit)):
        f = run["final"]
        rows.append([name] + [f"{pct(f.get(f'accuracy_{g}'), 1)} / {pct(f.get(f'attack_success_{g}'), 1)}" for g in groups]
                    + [f"{pct(f.get('accuracy'), 1)} / {pct(f.get('attack_success'), 1)}"])
    for name, label in (("monoculture cnn, no attacker", "monoculture (all 30 nodes train the CNN), no attacker"),
                        ("monoculture cnn, same backdoor", "monoculture, 3 of the 30 nodes backdooring")):
        m = (runs.get(name) or {}).get("final") or {}
        rows.append([label, "—", "—", f"{pct(m.get('accuracy'), 1)} / {pct(m.get('attack_success'), 1)}", "—"])
    out = ("`phalanx run src/phalanx/range/studies/diversity.yaml` "
           f"({data['manifest'].get('wall_time_s', 0) / 60:.1f} minutes). Accuracy / backdoor success rate after 15 rounds:\n\n"
           + table(["run", "lr group", "mlp group", "cnn group", "ensemble"], rows))
    for attack in ("fgsm", "pgd"):
        t = clean["diversity"][attack]
        members = [*groups, "ensemble"]
        out += (f"\n\n{attack.upper()} transfer on the clean diverse run (epsilon {clean['diversity']['epsilon_raw']} in "
                f"raw pixel units, {clean['diversity']['samples']} test images): among the images each target gets "
                "right, the share it gets wrong once perturbed:\n\n"
                + table(["crafted against", *[f"on {m}" for m in members]],
                        [[src, *[pct(t[src][m]) for m in members]] for src in members]))
    return out


def badinput_section() -> str:
    data = load("bad_input")
    if data is None:
        return ""
    rows = []
    for run in data["runs"]:
        kinds = [e for e in run["events"] if e["kind"] in ("evidence", "quarantine")]
        first = next((e["text"] for e in kinds if "dropped" in e["text"]), "—")
        refused = next((e["text"] for e in kinds if "registration" in e["text"]), "—")
        rows.append([run["name"], refused, first, ", ".join(f"node {k}: {v}" for k, v in run["evidence"].items()),
                     str(len([e for e in run["events"] if e["kind"] == "quarantine"])), pct(run["final"]["accuracy"], 1)])
    return ("`phalanx run src/phalanx/range/studies/bad_input.yaml` (5 rounds, 10 nodes; every run finishes):\n\n"
            + table(["run", "at registration", "first rejection", "rows dropped per sender", "quarantined",
                     "accuracy"], rows))


SECTIONS = {"foolsgold": foolsgold_section, "backdoor": backdoor_section, "sybil": sybil_section,
            "onoff": onoff_section, "budget": budget_section, "diversity": diversity_section,
            "badinput": badinput_section}


def readme() -> None:
    text = README.read_text()
    for name, make in SECTIONS.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if start not in text:
            print(f"README has no {start}")
            continue
        body = make()
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: f"{start}\n{body}\n{end}", text,
                      flags=re.S)
    README.write_text(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "collect":
        collect(Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "out")
    elif len(sys.argv) > 1 and sys.argv[1] == "readme":
        readme()
    else:
        print(__doc__)
        sys.exit(2)
