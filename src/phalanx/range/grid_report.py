"""What a grid shows: ``grid.json``, ``grid.md``, the self-contained ``report.html``, the terminal.

All three views are made from the same formatted rows (:func:`summary_rows`,
:func:`check_rows`, :func:`matrix_rows`), so the page, the Markdown and the terminal never
disagree. Accuracies are shown in percent; differences in points (1 point = 0.01 accuracy).

The page follows the study report (:mod:`phalanx.range.report`): one file, the heat maps as
embedded PNG ``data:`` URIs, inline CSS, no JavaScript, no external URL, and a
Content-Security-Policy that forbids loading anything; every string from data is escaped by
jinja2's autoescape and, in a plot, for matplotlib's mathtext.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.table import Table

from phalanx.range.report import CSP, Plot, _figure, manifest_rows, mpl_text, number, png_uri

__all__ = ["GridProgress", "markdown", "print_tables", "render_grid_report", "write_outputs"]

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("phalanx.range", "templates"), autoescape=True,
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True,
)
SUMMARY_COLUMNS = {
    "defense": "defense", "clean": "clean", "worst": "worst case", "worst_attack": "worst attack",
    "min_honest": "worst min honest", "spread": "seed spread",
}
EXPOSED_COLUMN = {"exposed": "honest updates exposed / round"}


def summary_columns(summary: Mapping[str, Any]) -> dict[str, str]:
    """The summary table's columns: exposure too when some defense ran secure aggregation."""
    exposed = any(d.get("exposed") is not None for t in summary["summary"]["topologies"]
                  for d in t["defenses"])
    return {**SUMMARY_COLUMNS, **(EXPOSED_COLUMN if exposed else {})}


LEGEND = ("clean = accuracy with no attacker; worst case = the lowest mean accuracy over the other "
          "attacks, and that attack; worst min honest = the lowest mean accuracy of the worst "
          "honest node over those attacks; seed spread = min–max over seeds of the worst case.")
CHECK_COLUMNS = {"check": "check", "value": "value", "limit": "limit", "result": "result"}


# -- formatting ------------------------------------------------------------------------------------
def pct(value: Any) -> str:
    x = number(value)
    return "—" if x is None else f"{100 * x:.1f}%"


def pts(value: Any) -> str:
    x = number(value)
    return "—" if x is None else f"{100 * x:.1f} pts"


def verdict(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "unknown"}[passed]


def spread(stats: Mapping[str, Any] | None) -> str:
    if not stats or stats.get("accuracy_lo") is None:
        return "—"
    return f"{100 * stats['accuracy_lo']:.1f}–{100 * stats['accuracy_hi']:.1f}%"


def summary_rows(topology: Mapping[str, Any], chosen: str | None) -> list[dict[str, str]]:
    """Per defense: clean accuracy, worst case (and its attack), worst min honest, spread."""
    rows = []
    for d in topology["defenses"]:
        worst, low = d["worst"], d["worst_min_honest"]
        mark = "" if d["worst_complete"] else " (incomplete)"
        rows.append({
            "defense": d["label"] + (" (chosen)" if d["label"] == chosen else ""),
            "clean": pct((d["clean"] or {}).get("accuracy")),
            "worst": pct(worst["accuracy"]) + mark if worst else "—",
            "worst_attack": worst["attack"] if worst else "—",
            "min_honest": f"{pct(low['accuracy_min'])} ({low['attack']})" if low else "—",
            "spread": spread(worst),
            "exposed": "—" if d.get("exposed") is None else f"{d['exposed']:.2f}",
        })
    return rows


def matrix_rows(topology: Mapping[str, Any], attacks: Sequence[str]) -> list[dict[str, Any]]:
    """Per defense, per attack: mean accuracy, its seed range and the mean min honest accuracy."""
    return [{"defense": d["label"],
             "cells": [{"accuracy": pct(d["attacks"][a]["accuracy"]), "spread": spread(d["attacks"][a]),
                        "min": pct(d["attacks"][a]["accuracy_min"]),
                        "done": f"{d['attacks'][a]['done']}/{d['attacks'][a]['seeds']}"}
                       for a in attacks]}
            for d in topology["defenses"]]


def check_rows(checks: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """The done checks (a), (b), (c) of one topology as table rows."""
    if not checks:
        return []
    w, m, c = checks["worst_case"], checks["min_honest"], checks["clean_cost"]
    base = f"{checks['baseline']} with no attacker: {pct(checks['baseline_clean'])}"
    return [
        {"check": "(a) worst case over attacks",
         "value": f"{pct(w['accuracy'])} ({w['attack'] or '—'}), {pts(w['gap'])} below {base}",
         "limit": f"at most {pts(w['limit'])} below", "result": verdict(w["passed"])},
        {"check": "(b) minimum honest accuracy, worst case",
         "value": f"{pct(m['accuracy_min'])} ({m['attack'] or '—'})", "limit": "shown",
         "result": "—"},
        {"check": "(c) cost with no attacker",
         "value": f"{pct(c['accuracy'])}, {pts(c['cost'])} below {base}",
         "limit": f"at most {pts(c['limit'])}", "result": verdict(c["passed"])},
    ]


def collapse_rows(topology: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"attack": c["attack"], "accuracy": pct(c["accuracy"]),
             "collapses": {True: "yes", False: "no", None: "unknown"}[c["collapsed"]]}
            for c in topology["collapse"]]


def _declared(value: Any) -> str:
    return "real share" if value is None else str(value)


def cell_rows(cells: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Every cell: labels, chain, declared f beside real f, final metrics, status."""
    out = []
    for c in cells:
        attack = c.get("update_attack") or c.get("data_attack")
        status = "cached" if c["cached"] else str(c["status"])
        out.append({
            "topology": c["topology"], "defense": c["defense"], "attack": c["attack"],
            "seed": str(c["seed"]), "chain": " → ".join(c["chain"]),
            "declared_f": _declared(c["declared_f"]), "real_f": str(c["real_f"]),
            "attack_spec": json.dumps(attack, sort_keys=True) if attack else "—",
            "accuracy": pct(c["final"].get("accuracy")), "min": pct(c["final"].get("accuracy_min")),
            "wall": "—" if number(c["wall_time_s"]) is None else f"{c['wall_time_s']:.1f} s",
            "status": status if c["status"] != "failed" else f"failed: {c['error']}",
            "sha": str(c["config_sha256"])[:12],
        })
    return out


# -- the heat map ----------------------------------------------------------------------------------
def heat_map(topology: Mapping[str, Any], attacks: Sequence[str]) -> Plot:
    """Defenses (rows) x attacks (columns); colour and number = mean accuracy over seeds."""
    defenses = [d["label"] for d in topology["defenses"]]
    values = np.array([[number(d["attacks"][a]["accuracy"]) if number(d["attacks"][a]["accuracy"])
                        is not None else np.nan for a in attacks] for d in topology["defenses"]],
                      dtype=float).reshape(len(defenses), len(attacks))
    # margins in inches, from the longest tick labels (about 0.065 in a character at 8 pt)
    left = 0.35 + 0.065 * max(len(d) for d in defenses)
    bottom = 0.45 + 0.035 * max(len(a) for a in attacks)  # labels turned by 30 degrees
    width, height = left + 0.95 * len(attacks) + 0.9, bottom + 0.42 * len(defenses) + 0.45
    with _figure(width, height) as fig:
        ax = fig.add_axes((left / width, bottom / height, 0.95 * len(attacks) / width,
                           0.42 * len(defenses) / height))
        cax = fig.add_axes(((width - 0.65) / width, bottom / height, 0.12 / width,
                            0.42 * len(defenses) / height))
        image = ax.imshow(np.ma.masked_invalid(values), cmap=_cmap(), vmin=0.0, vmax=1.0,
                          aspect="auto")
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                v = values[i, j]
                text = "—" if np.isnan(v) else f"{100 * v:.1f}"
                dark = not np.isnan(v) and (v < 0.25 or v > 0.85)
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
        ax.set_xticks(range(len(attacks)), [mpl_text(a) for a in attacks], rotation=30,
                      ha="right", fontsize=8)
        ax.set_yticks(range(len(defenses)), [mpl_text(d) for d in defenses], fontsize=8)
        ax.set_title(mpl_text(f"{topology['label']}: mean accuracy (%) over seeds"), fontsize=9,
                     loc="left")
        bar = fig.colorbar(image, cax=cax)
        bar.set_ticks([0, 0.25, 0.5, 0.75, 1], labels=["0", "25", "50", "75", "100"])
        cax.tick_params(labelsize=7)
        return Plot(title=topology["label"], uri=png_uri(fig),
                    alt=f"heat map of mean accuracy, {len(defenses)} defenses by {len(attacks)} "
                        f"attacks, topology {topology['label']}")


def _cmap():
    import matplotlib

    return matplotlib.colormaps["RdYlGn"].with_extremes(bad="#dddddd")


# -- the three views -----------------------------------------------------------------------------
def _views(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    layout, s = summary["layout"], summary["summary"]
    return [{"label": t["label"], "summary": summary_rows(t, layout["chosen"]),
             "matrix": matrix_rows(t, layout["attacks"]), "checks": check_rows(t["checks"]),
             "passed": (t["checks"] or {}).get("passed"), "has_checks": bool(t["checks"]),
             "verdict": verdict((t["checks"] or {}).get("passed")),
             "collapse": collapse_rows(t), "topology": t} for t in s["topologies"]]


def render_grid_report(summary: Mapping[str, Any]) -> str:
    """The grid's report page as a string."""
    layout = summary["layout"]
    views = _views(summary)
    for v in views:
        v["heat"] = heat_map(v["topology"], layout["attacks"])
    manifest = dict(summary.get("manifest") or {})
    manifest.pop("config_sha256", None)  # one per cell: in the cells table instead
    return _ENV.get_template("grid.html.j2").render(
        csp=markupsafe.Markup(CSP), grid=str(summary["grid"]), description=summary["description"],
        legend=LEGEND,
        started=manifest.get("started"), layout=layout, counts=summary["counts"], views=views,
        summary_columns=summary_columns(summary), check_columns=CHECK_COLUMNS,
        cells=cell_rows(summary["cells"]),
        base=json.dumps(summary.get("base") or {}, indent=2, ensure_ascii=False, default=str),
        manifest=manifest_rows(manifest),
    )


def _md_table(columns: Mapping[str, str], rows: Sequence[Mapping[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[k]).replace("|", "\\|") for k in columns) + " |" for r in rows]
    return lines + [""]


def markdown(summary: Mapping[str, Any]) -> str:
    """``grid.md``: per topology, the summary table, the full matrix, the done checks, collapses."""
    layout = summary["layout"]
    attacks = layout["attacks"]
    seeds = ", ".join(map(str, layout["seeds"]))
    lines = [f"## Grid {summary['grid']}", ""]
    if summary["description"]:
        lines += [str(summary["description"]).strip(), ""]
    lines += [f"Final test accuracy of the honest models, mean over seeds {seeds}. {LEGEND}", ""]
    lines += [f"- {note}" for note in layout["notes"]] + ([""] if layout["notes"] else [])
    for v in _views(summary):
        lines += [f"### {v['label']}", ""]
        lines += _md_table(summary_columns(summary), v["summary"])
        columns = {"defense": "defense", **{f"a{i}": a for i, a in enumerate(attacks)}}
        rows = [{"defense": m["defense"], **{f"a{i}": f"{c['accuracy']} ({c['spread']})"
                                            for i, c in enumerate(m["cells"])}} for m in v["matrix"]]
        lines += ["Mean accuracy (min–max over seeds) per attack:", ""] + _md_table(columns, rows)
        if v["has_checks"]:
            lines += [f"Done checks for {layout['chosen']}: **{verdict(v['passed'])}**", ""]
            lines += _md_table(CHECK_COLUMNS, v["checks"])
        if v["collapse"]:
            at = pct(layout["criteria"]["collapse_at"])
            lines += [f"Does plain {layout['baseline']} collapse (accuracy at most {at})?", ""]
            lines += _md_table({"attack": "attack", "accuracy": "accuracy",
                                "collapses": "collapses"}, v["collapse"])
    return "\n".join(lines).rstrip() + "\n"


def print_tables(summary: Mapping[str, Any], console: Console) -> None:
    """The summary table and the done checks of every topology, as rich tables."""
    layout = summary["layout"]
    for v in _views(summary):
        table = Table(title=f"{summary['grid']}: {v['label']}", title_justify="left")
        columns = summary_columns(summary)
        for key, title in columns.items():
            table.add_column(title, justify="left" if key in ("defense", "worst_attack") else "right")
        for row in v["summary"]:
            table.add_row(*(row[k] for k in columns))
        console.print(table)
        if v["has_checks"]:
            checks = Table(title=f"done checks for {layout['chosen']}: {verdict(v['passed'])}",
                           title_justify="left")
            for title in CHECK_COLUMNS.values():
                checks.add_column(title)
            for row in v["checks"]:
                checks.add_row(*(row[k] for k in CHECK_COLUMNS))
            console.print(checks)
        collapsed = [c["attack"] for c in v["collapse"] if c["collapses"] == "yes"]
        if v["collapse"]:
            console.print(f"plain {layout['baseline']} collapses under: "
                          f"{', '.join(collapsed) or 'no attack'}", markup=False, highlight=False)
    console.print(LEGEND, markup=False, highlight=False)
    for note in layout["notes"]:
        console.print(f"note: {note}", markup=False, highlight=False)


def write_outputs(out_dir: Path, summary: Mapping[str, Any]) -> None:
    """``grid.json``, ``grid.md`` and ``report.html`` under ``out_dir``."""
    out_dir = Path(out_dir)
    (out_dir / "grid.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "grid.md").write_text(markdown(summary))
    (out_dir / "report.html").write_text(render_grid_report(summary), encoding="utf-8", newline="\n")


# -- progress --------------------------------------------------------------------------------------
class GridProgress:
    """One bar: cells finished of those to run (cached ones are counted apart), with an ETA."""

    def __init__(self, total: int, cached: int, enabled: bool = True):
        self.failed = 0
        self._progress = Progress(
            TextColumn("[bold]grid[/] ({task.fields[cached]} cached)"), BarColumn(),
            MofNCompleteColumn(), TextColumn("eta"), TimeRemainingColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[last]}", markup=False), console=Console(stderr=True),
            disable=not enabled,
        )
        self._task = self._progress.add_task("grid", total=total, cached=cached, last="")

    def __enter__(self) -> GridProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def advance(self, cell: Any, result: Mapping[str, Any]) -> None:
        if result.get("status") == "ok":
            last = f"{cell.label}: {pct((result.get('final') or {}).get('accuracy'))}"
        else:
            self.failed += 1
            last = f"{cell.label}: failed"
        self._progress.update(self._task, advance=1, last=last[:60])
