"""The study report: one self-contained HTML page that opens offline.

A finished study (its ``summary`` and every run's per-round ``records``) becomes
``report.html``: a summary table, the curves of all runs on shared axes, the data partitions,
the gossip graphs, each run's resolved configuration and the reproducibility manifest.

The page carries everything it shows. Plots are matplotlib PNGs embedded as ``data:`` URIs,
the CSS is inline, there is no JavaScript and no external URL, and a Content-Security-Policy
meta tag forbids loading anything else. Every string that comes from data is HTML-escaped by
jinja2's autoescape, and escaped for matplotlib's mathtext before it reaches a plot.

The output is a function of the inputs alone: the timestamp shown is the manifest's
``started``, the graph layout is seeded, and PNGs are written without a software tag, so the
same study gives the same bytes.

Any numeric per-round key outside :data:`KNOWN_KEYS` (``attack_success``, ``epsilon``, ...)
gets its own small plot under "Other metrics", so new metrics show up without editing this
module.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import matplotlib
import matplotlib.patches

# Headless rendering, no display needed; every pyplot figure below is closed after use.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from matplotlib.transforms import offset_copy  # noqa: E402

from phalanx.range.defense_report import defense_rows, diversity_tables, swarm_rows  # noqa: E402

__all__ = ["CSP", "KNOWN_KEYS", "render_report", "write_report"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""The page may load nothing: images only from ``data:`` URIs, styles only inline; the report adds
``script-src`` with the SHA-256 of its two scripts (the dashboard's and the verifier's, see
:mod:`phalanx.dashboard.embed`): no other script, no inline handler, no eval."""

KNOWN_KEYS = frozenset(
    {
        "round",
        "accuracy",
        "loss",
        "accuracy_min",
        "accuracy_max",
        "consensus_distance",
        "epsilon",
        "epsilon_mean",
        "availability",
        "alive",
        "participants",
        "wall_time_s",
        "elapsed_s",
    }
)
"""Record keys with a place of their own in the report; other numeric keys get a generic plot."""

DPI = 100
PALETTE = ("tab10", "Dark2", "Set1")
MANIFEST_ORDER = (
    "phalanx",
    "python",
    "torch",
    "numpy",
    "platform",
    "device",
    "commit",
    "config_sha256",
    "seeds",
    "started",
    "wall_time_s",
)
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("phalanx.range", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Plot:
    """One embedded figure: its heading, its PNG as a data URI, its alt text and caption."""

    title: str
    uri: str
    alt: str
    caption: str = ""


@dataclass(frozen=True)
class Run:
    """One run as the report sees it: name, colour, its summary entry and its records."""

    name: str
    color: str
    info: Mapping[str, Any]
    records: list[Mapping[str, Any]] = field(default_factory=list)

    @property
    def events(self) -> list[Mapping[str, Any]]:
        return list(self.info.get("events") or [])


# ---------------------------------------------------------------------------------------------
# Entry points


def write_report(out_dir: Path, summary: dict, records: dict[str, list[dict]]) -> Path:
    """Write ``out_dir/report.html`` for a finished study and return its path.

    ``summary`` is the study summary (name, description, manifest, one entry per run);
    ``records[run_name]`` is that run's list of per-round metric records. Any metric may be
    ``None`` in some rounds; only the non-null, finite points are plotted.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text(render_report(summary, records), encoding="utf-8", newline="\n")
    return path


def render_report(summary: Mapping[str, Any], records: Mapping[str, Sequence[Mapping]]) -> str:
    """The report page as a string (what :func:`write_report` writes)."""
    from phalanx.dashboard.embed import report_parts

    runs = collect_runs(summary, records)
    manifest = dict(summary.get("manifest") or {})
    dash = report_parts(summary, records)
    return _ENV.get_template("report.html.j2").render(
        # constants of ours and the hashes of our own two scripts, not data: written as they are
        csp=markupsafe.Markup(f"{CSP}; script-src {dash['script_src']}"),
        dashboard={k: markupsafe.Markup(v) for k, v in dash.items()},
        study=str(summary.get("study") or "study"),
        description=str(summary.get("description") or ""),
        started=manifest.get("started"),
        runs=runs,
        rows=[summary_row(run) for run in runs],
        events=event_rows(runs),
        curves=curve_plots(runs),
        others=other_plots(runs),
        partitions=partition_plots(runs),
        graphs=[p for p in (graph_plot(run) for run in runs) if p is not None],
        leakage=leakage_rows(runs),
        leakage_plot=leakage_plot(runs),
        eclipse=eclipse_rows(runs),
        eclipse_plots=[p for p in (eclipse_plot(run) for run in runs) if p is not None],
        ledgers=ledger_rows(runs),
        provenance=[p for p in (provenance_plot(run) for run in runs) if p is not None],
        defenses=defense_rows(runs),
        swarms=swarm_rows(runs),
        diversity=diversity_tables(runs),
        configs=[config_block(run) for run in runs],
        manifest=manifest_rows(manifest),
        seeds=[str(s) for s in (manifest.get("seeds") or [])],
        commit=manifest.get("commit"),
    )


# ---------------------------------------------------------------------------------------------
# Runs, values and tables


def collect_runs(summary: Mapping[str, Any], records: Mapping[str, Sequence[Mapping]]) -> list[Run]:
    """Runs in the summary's order, then any run with records but no summary entry, by name."""
    infos = {str(r.get("name")): r for r in summary.get("runs") or []}
    names = list(infos) + sorted(str(n) for n in records if str(n) not in infos)
    colors = _colors(len(names))
    return [
        Run(
            name=name,
            color=colors[i],
            info=infos.get(name, {"name": name}),
            records=sorted(records.get(name) or [], key=_round_of),
        )
        for i, name in enumerate(names)
    ]


def _colors(n: int) -> list[str]:
    """``n`` distinct colours, the same for the same run order in every plot and table."""
    pool = [mcolors.to_hex(c) for cmap in PALETTE for c in matplotlib.colormaps[cmap].colors]
    unique = list(dict.fromkeys(pool))
    return [unique[i % len(unique)] for i in range(n)]


def _round_of(record: Mapping[str, Any]) -> float:
    value = number(record.get("round"))
    return value if value is not None else math.inf


def number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` for null, booleans, text and NaN/inf."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(rounds, values) of ``key`` over the records where both are numbers."""
    points = [(number(r.get("round")), number(r.get(key))) for r in records]
    kept = [(x, y) for x, y in points if x is not None and y is not None]
    return [x for x, _ in kept], [y for _, y in kept]


def final_record(run: Run) -> Mapping[str, Any]:
    """The summary's ``final`` record, else the last record with a non-null accuracy."""
    final = run.info.get("final")
    if final:
        return final
    scored = [r for r in run.records if number(r.get("accuracy")) is not None]
    return scored[-1] if scored else (run.records[-1] if run.records else {})


def _last(records: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = series(records, key)[1]
    return values[-1] if values else None


def _fmt(value: Any, spec: str = ".3f", unit: str = "") -> str:
    x = number(value)
    return "—" if x is None else f"{x:{spec}}{unit}"


def summary_row(run: Run) -> dict[str, str]:
    """The summary table's cells for one run, already formatted."""
    final = final_record(run)
    wall = _last(run.records, "elapsed_s")
    if wall is None and run.records:
        wall = sum(series(run.records, "wall_time_s")[1]) or None
    return {
        "name": run.name,
        "color": run.color,
        "topology": str(run.info.get("topology") or "—"),
        "accuracy": _fmt(final.get("accuracy")),
        "accuracy_min": _fmt(final.get("accuracy_min")),
        "availability": _fmt(final.get("availability")),
        "consensus": _fmt(final.get("consensus_distance"), ".3g"),
        "epsilon": _fmt(_last(run.records, "epsilon"), ".3g"),
        "rounds": str(len(run.records)),
        "wall": _fmt(wall, ".1f", " s"),
    }


def leakage_rows(runs: Sequence[Run]) -> list[dict[str, str]]:
    """One row per run attacked after it ran (:mod:`phalanx.range.leakage`), already formatted."""
    rows = []
    for run in runs:
        leak = run.info.get("leakage")
        if not isinstance(leak, Mapping):
            continue
        if "error" in leak:
            rows.append({"name": run.name, "color": run.color, "error": str(leak["error"])})
            continue
        node = (leak.get("membership") or {}).get("node") or {}
        lira, loss = node.get("lira") or {}, node.get("loss_threshold") or {}
        outsider = ((leak.get("membership") or {}).get("outsider") or {})
        inv = leak.get("inversion") or {}
        rows.append({
            "name": run.name, "color": run.color, "error": "",
            "target": _targets(leak),
            "epsilon": _fmt(leak.get("epsilon_node"), ".3g") if leak.get("epsilon_node") is not None else "no DP",
            "loss_auc": _fmt(loss.get("auc")), "lira_auc": _fmt(lira.get("auc")),
            "lira_tpr1": _fmt(lira.get("tpr_at_1pct_fpr")), "lira_tpr01": _fmt(lira.get("tpr_at_0.1pct_fpr")),
            "outsider": f"{outsider.get('model', '—')}: {_fmt((outsider.get('loss_threshold') or {}).get('auc'))}",
            "inversion": (f"{inv.get('attack')}: {_fmt(inv.get('psnr_db'), '.1f')} dB, SSIM "
                          f"{_fmt(inv.get('ssim'), '.2f')}, {_fmt(inv.get('recovered'), '.0%')} recovered"
                          + "".join(f"; sums of {k}: {_fmt(b.get('psnr_db'), '.1f')} dB, "
                                    f"{_fmt(b.get('recovered'), '.0%')}"
                                    for k, b in (inv.get("buckets") or {}).items())
                          if inv else "—"),
        })
    return rows


def _targets(leak: Mapping[str, Any]) -> str:
    nodes = leak.get("target_nodes") or [leak.get("target_node")]
    sizes = leak.get("shard_sizes") or [leak.get("shard_size")]
    word = "node" if len(nodes) == 1 else "nodes"
    return f"{word} {', '.join(map(str, nodes))} ({', '.join(map(str, sizes))} samples)"


def leakage_plot(runs: Sequence[Run]) -> Plot | None:
    """Membership AUC against the target node's epsilon, one point per run (runs without DP at
    the right edge, marked), when at least two runs were attacked."""
    points = []
    for run in runs:
        leak = run.info.get("leakage")
        node = ((leak or {}).get("membership") or {}).get("node") if isinstance(leak, Mapping) else None
        if not node:
            continue
        points.append((run, number(leak.get("epsilon_node")), number((node.get("lira") or {}).get("auc")),
                       number((node.get("loss_threshold") or {}).get("auc"))))
    if len(points) < 2:
        return None
    finite = [e for _, e, _, _ in points if e is not None]
    no_dp_x = (max(finite) * 1.3 if finite else 1.0)
    with _figure(5.4, 3.3) as fig:
        ax = fig.add_subplot()
        for run, eps, lira, loss in points:
            x = eps if eps is not None else no_dp_x
            for value, marker in ((lira, "o"), (loss, "s")):
                if value is not None:
                    ax.scatter([x], [value], color=run.color, marker=marker, s=28,
                               label=mpl_text(run.name) if marker == "o" else None)
        ax.axhline(0.5, color="0.6", linewidth=0.8, linestyle=":")
        if any(e is None for _, e, _, _ in points):
            ax.axvline(no_dp_x, color="0.8", linewidth=0.8)
            ax.text(no_dp_x, 0.51, " no DP", fontsize=7, color="0.4")
        ax.set_title("Membership AUC against epsilon (o: LiRA, s: loss threshold)", fontsize=10)
        ax.set_xlabel("epsilon of the target node")
        ax.set_ylabel("AUC")
        ax.legend(fontsize=7, frameon=False)
        fig.subplots_adjust(left=0.72 / 5.4, right=0.97, bottom=0.5 / 3.3, top=1 - 0.33 / 3.3)
        return Plot(title="leakage", uri=png_uri(fig), alt="membership AUC against epsilon per run")


def eclipse_rows(runs: Sequence[Run]) -> list[dict[str, str]]:
    """One row per (run, sampler) of the eclipse attack (:mod:`phalanx.range.eclipse`), formatted."""
    rows = []
    for run in runs:
        ecl = run.info.get("eclipse")
        if not isinstance(ecl, Mapping):
            continue
        for row in ecl.get("table") or []:
            stall = row.get("stall_noticed_after")
            rows.append({"name": run.name, "color": run.color, "sampler": str(row.get("sampler")),
                         "r5": _fmt(row.get("share_r5")), "r15": _fmt(row.get("share_r15")),
                         "final": _fmt(row.get("share_final")), "eclipsed": str(row.get("eclipsed_runs")),
                         "naive": _fmt(row.get("naive_forks"), ".1f"), "guarded": _fmt(row.get("guarded_forks"), ".1f"),
                         "stall": "—" if stall is None else _fmt(stall, ".1f")})
    return rows


def eclipse_plot(run: Run) -> Plot | None:
    """The attacker's share of the victim's view over the rounds, one curve per sampler."""
    ecl = run.info.get("eclipse")
    table = ecl.get("table") if isinstance(ecl, Mapping) else None
    if not table:
        return None
    with _figure(5.4, 3.1) as fig:
        ax = fig.add_subplot()
        for row in table:
            curve = [number(v) for v in row.get("share_curve") or []]
            ax.plot(range(1, len(curve) + 1), [float("nan") if v is None else v for v in curve],
                    label=mpl_text(str(row.get("sampler"))), linewidth=1.4)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{mpl_text(run.name)}: attacker share of the victim's view", fontsize=10)
        ax.set_xlabel("round")
        ax.set_ylabel("attacker share")
        ax.legend(fontsize=7, frameon=False)
        fig.subplots_adjust(left=0.72 / 5.4, right=0.97, bottom=0.5 / 3.1, top=1 - 0.33 / 3.1)
        return Plot(title=f"eclipse: {run.name}", uri=png_uri(fig),
                    alt="attacker share of the victim's view per round, per sampler")


def ledger_rows(runs: Sequence[Run]) -> list[dict[str, str]]:
    """One row per run that wrote a ledger (:mod:`phalanx.range.recording`), already formatted."""
    rows = []
    for run in runs:
        ledger = run.info.get("ledger")
        if not isinstance(ledger, Mapping):
            continue
        if isinstance(ledger.get("groups"), list):  # a diverse run: one ledger per group
            rows.extend(_ledger_row(run, f"{run.name} / {g.get('group')}", g) for g in ledger["groups"]
                        if isinstance(g, Mapping))
        else:
            rows.append(_ledger_row(run, run.name, ledger))
    return rows


def _ledger_row(run: Run, name: str, ledger: Mapping) -> dict[str, str]:
    """A ledger summary's table row, already formatted."""
    folder = str(ledger.get("folder") or "RUN")
    equivocation = ledger.get("equivocation") or {}
    rollbacks = ledger.get("rollbacks") or []
    trace = ledger.get("trace") or {}
    return {
        "name": name, "color": run.color,
        "entries": str(ledger.get("entries", "—")), "checkpoints": str(ledger.get("checkpoints", "—")),
        "validators": str(ledger.get("validators", "—")),
        "kept": "yes" if ledger.get("keep_updates") else "hashes only",
        "model": f"{trace.get('whose', 'model')} {str(trace.get('model') or '')[:16]}",
        "equivocation": ", ".join(f"node {k}: {v}" for k, v in equivocation.items()) or "none",
        "rollback": "; ".join(f"at round {r['at']} to round {r['to_round']}: {r['reason']}"
                              for r in rollbacks) or "none",
        "audit": f"phalanx audit {folder}/ledger.db --policy {folder}/policy.txt"
                 + (" --replay" if ledger.get("keep_updates") else ""),
    }


#: Provenance picture colours: absent, used, rejected, equivocated (codes of phalanx.ledger.trace).
PROVENANCE_COLORS = ("#f2f2f2", "#4c9a5b", "#c8423b", "#e69b23")


def ledger_folder(run: Run) -> str:
    ledger = run.info.get("ledger")
    return str(ledger.get("folder") or "RUN") if isinstance(ledger, Mapping) else "RUN"


def provenance_plot(run: Run) -> Plot | None:
    """Which node's update of which round went into the run's final model (rounds on y, nodes on
    x); ``None`` for a run without a ledger."""
    ledger = run.info.get("ledger")
    trace = ledger.get("trace") if isinstance(ledger, Mapping) else None
    if not isinstance(trace, Mapping) or not trace.get("grid"):
        return None
    grid = np.asarray(trace["grid"], dtype=float)
    rounds, nodes = grid.shape
    height = min(max(2.4, 0.16 * rounds + 1.2), 7.0)
    with _figure(10.0, height) as fig:
        ax = fig.add_subplot()
        cmap = mcolors.ListedColormap(PROVENANCE_COLORS)
        ax.imshow(grid, aspect="auto", cmap=cmap, vmin=-0.5, vmax=3.5, interpolation="nearest",
                  origin="upper", extent=(-0.5, nodes - 0.5, rounds + 0.5, 0.5))
        for r in trace.get("reverted") or []:
            if r.get("rounds"):
                ax.axhspan(min(r["rounds"]) - 0.5, max(r["rounds"]) + 0.5, color="0.55", alpha=0.35, lw=0)
                ax.text(nodes - 0.5, min(r["rounds"]) - 0.5, mpl_text(f" reverted at round {r['at']}"),
                        fontsize=7, va="top", ha="right", color="0.2")
        ax.set_xlabel("node")
        ax.set_ylabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        model = str(trace.get("model") or "")[:16]
        whose = trace.get("whose", "the model")
        ax.set_title(mpl_text(f"{_short(run.name, 40)}: provenance of {whose} {model}"), fontsize=10)
        handles = [matplotlib.patches.Patch(color=c, label=label) for c, label in
                   zip(PROVENANCE_COLORS[1:], ("update used", "rejected", "equivocation"), strict=True)]
        ax.legend(handles=handles, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.subplots_adjust(left=0.07, right=0.86, bottom=0.5 / height, top=1 - 0.35 / height)
        bad = run.info.get("malicious") or []
        return Plot(title=run.name, uri=png_uri(fig),
                    alt=f"provenance of {run.name}'s final model: {rounds} rounds by {nodes} nodes",
                    caption=f"{trace.get('records', 0)} aggregate records behind this model"
                            + (f"; malicious nodes: {', '.join(map(str, bad))}" if bad else "")
                            + f"; phalanx trace {ledger_folder(run)}/ledger.db {model} prints them")


def event_rows(runs: Sequence[Run]) -> list[dict[str, str]]:
    """Every scheduled event of every run, in run order."""
    return [
        {
            "run": run.name,
            "color": run.color,
            "round": str(e.get("round", "—")),
            "kind": str(e.get("kind") or ""),
            "target": str(e.get("target") or ""),
            "text": str(e.get("text") or ""),
        }
        for run in runs
        for e in run.events
    ]


def config_block(run: Run) -> dict[str, str]:
    """A run's resolved config as pretty JSON (which is also valid YAML) and its hash."""
    config = run.info.get("config")
    text = "(not recorded)"
    if config:
        text = json.dumps(config, indent=2, ensure_ascii=False, default=str)
    return {
        "name": run.name,
        "color": run.color,
        "description": str(run.info.get("description") or ""),
        "sha256": str(run.info.get("config_sha256") or "—"),
        "text": text,
    }


def manifest_rows(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, value) rows: the usual keys first in a fixed order, then any others by name."""
    known = [k for k in MANIFEST_ORDER if k in manifest]
    keys = known + sorted(str(k) for k in manifest if k not in MANIFEST_ORDER)
    return [(key, _manifest_value(key, manifest[key])) for key in keys]


def _manifest_value(key: str, value: Any) -> str:
    if key == "wall_time_s" and number(value) is not None:
        return f"{number(value):.1f} s"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    return "—" if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# Figures


@contextmanager
def _figure(width: float, height: float) -> Iterator[Figure]:
    """A pyplot figure that is closed whatever happens while drawing it."""
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    try:
        yield fig
    finally:
        plt.close(fig)


def png_uri(fig: Figure) -> str:
    """``fig`` as a deterministic PNG ``data:`` URI (no software tag, fixed DPI)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def mpl_text(text: Any) -> str:
    """``text`` safe for a matplotlib label: no mathtext, no legend-hiding leading underscore."""
    text = str(text).replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def _short(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_label(event: Mapping[str, Any]) -> str:
    """A short label for an event line: its text, else "target kind"."""
    text = str(event.get("text") or "").strip()
    if not text:
        text = " ".join(str(event.get(k) or "") for k in ("target", "kind")).strip() or "event"
    return _short(text)


def _draw_events(ax: Axes, runs: Sequence[Run]) -> None:
    """Each run's events as dotted vertical lines in its colour, labelled beside the line."""
    seen: dict[float, int] = {}
    for run in runs:
        for event in run.events:
            x = number(event.get("round"))
            if x is None:
                continue
            k = seen.get(x, 0)
            seen[x] = k + 1
            ax.axvline(x, color=run.color, linestyle=":", linewidth=1.2)
            # x in data, y in axes units; the k-th label at the same round moves right.
            where = offset_copy(ax.get_xaxis_transform(), fig=ax.figure, x=2 + 9 * k, y=-2,
                                units="points")
            ax.text(x, 1.0, mpl_text(event_label(event)), transform=where, rotation=90, fontsize=7,
                    color=run.color, ha="left", va="top",
                    bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 0.6})


def _style_axes(ax: Axes, ylabel: str, runs: Sequence[Run]) -> None:
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False, ncol=1 if len(runs) <= 5 else 2)


def _has(runs: Sequence[Run], key: str) -> bool:
    return any(series(run.records, key)[0] for run in runs)


def metric_plot(runs: Sequence[Run], key: str, title: str, ylabel: str, *, log: bool = False,
                unit_range: bool = False, band: bool = False, size: tuple[float, float] = (5.4, 3.3)
                ) -> Plot | None:
    """All runs' ``key`` against the round on one axes; ``None`` when no run has a value.

    ``band`` shades accuracy_min..accuracy_max, ``log`` uses a log y-axis when every value is
    positive, ``unit_range`` fixes the y-axis to [0, 1]. Events are drawn for the runs that
    have a value of ``key``.
    """
    if not _has(runs, key):
        return None
    with _figure(*size) as fig:
        ax = fig.add_subplot()
        values: list[float] = []
        for run in runs:
            xs, ys = series(run.records, key)
            values += ys
            if band:
                _draw_band(ax, run)
            if xs:
                ax.plot(xs, ys, color=run.color, label=mpl_text(run.name), linewidth=1.6,
                        marker="o" if len(xs) <= 40 else None, markersize=2.5)
        if log and values and min(values) > 0:
            ax.set_yscale("log")
        if unit_range:
            ax.set_ylim(-0.02, 1.02)
        _draw_events(ax, [run for run in runs if _has([run], key)])
        ax.set_title(mpl_text(title), fontsize=10)
        _style_axes(ax, ylabel, runs)
        # Fixed margins in inches: as readable as tight_layout and half the drawing time.
        width, height = size
        fig.subplots_adjust(left=0.72 / width, right=0.97, bottom=0.5 / height,
                            top=1 - 0.33 / height)
        return Plot(title=title, uri=png_uri(fig), alt=f"{title} against round, {len(runs)} runs")


def _draw_band(ax: Axes, run: Run) -> None:
    """Shade between accuracy_min and accuracy_max where both are known and differ somewhere."""
    points = [(number(r.get("round")), number(r.get("accuracy_min")), number(r.get("accuracy_max")))
              for r in run.records]
    points = [p for p in points if None not in p]
    if points and any(hi > lo for _, lo, hi in points):
        xs, lo, hi = zip(*points)
        ax.fill_between(xs, lo, hi, color=run.color, alpha=0.18, linewidth=0)


def curve_plots(runs: Sequence[Run]) -> list[Plot]:
    """Accuracy (with its min..max band over honest nodes), loss, availability, consensus."""
    plots = [
        metric_plot(runs, "accuracy", "Test accuracy (band: min..max over honest nodes)", "accuracy", band=True),
        metric_plot(runs, "loss", "Test loss", "loss"),
        metric_plot(runs, "availability", "Availability", "share of honest nodes aggregating",
                    unit_range=True),
        metric_plot(runs, "consensus_distance", "Consensus distance", "distance", log=True),
        metric_plot(runs, "epsilon", "Privacy spent: epsilon of the most exposed honest node",
                    "epsilon (at the run's delta)"),
    ]
    return [p for p in plots if p is not None]


def other_metric_keys(runs: Sequence[Run]) -> list[str]:
    """Numeric per-round keys outside :data:`KNOWN_KEYS`, sorted by name."""
    keys = {k for run in runs for r in run.records for k, v in r.items()
            if k not in KNOWN_KEYS and number(v) is not None}
    return sorted(map(str, keys))


def other_plots(runs: Sequence[Run]) -> list[Plot]:
    """One small plot per numeric key the report has no dedicated place for."""
    plots = (metric_plot(runs, key, key, key, size=(4.6, 2.9)) for key in other_metric_keys(runs))
    return [p for p in plots if p is not None]


def _partition_key(partition: Mapping[str, Any]) -> str:
    return json.dumps(partition, sort_keys=True, default=str)


def partition_plots(runs: Sequence[Run]) -> list[Plot]:
    """One picture per distinct partition; runs that share a partition share its picture."""
    groups: dict[str, tuple[Mapping[str, Any], list[str]]] = {}
    for run in runs:
        partition = run.info.get("partition")
        if partition:
            groups.setdefault(_partition_key(partition), (partition, []))[1].append(run.name)
    return [partition_plot(partition, names) for partition, names in groups.values()]


def _partition_title(partition: Mapping[str, Any]) -> str:
    params = partition.get("params") or {}
    if isinstance(params, Mapping):
        args = ", ".join(f"{k}={v}" for k, v in params.items())
    else:
        args = str(params)
    name = str(partition.get("partitioner") or "partition")
    return f"{name} ({args})" if args else name


def partition_plot(partition: Mapping[str, Any], run_names: Sequence[str]) -> Plot:
    """Heat map of labels per node (nodes on x, classes on y) above a bar chart of shard sizes."""
    hist = np.asarray(partition.get("label_histogram") or [], dtype=float)
    sizes = [number(s) or 0.0 for s in partition.get("sizes") or []]
    has_hist = hist.ndim == 2 and hist.size > 0
    n_classes = hist.shape[1] if has_hist else 0
    title = _partition_title(partition)
    heat_h = min(max(2.2, 0.22 * n_classes), 6.0) if has_hist else 0.0
    with _figure(10.0, heat_h + 2.0) as fig:
        heights = [heat_h, 1.6] if has_hist else [1.0]
        grid = fig.add_gridspec(len(heights), 2, height_ratios=heights, width_ratios=[40, 1],
                                hspace=0.08, wspace=0.02)
        bar_ax = fig.add_subplot(grid[-1, 0])
        if has_hist:
            heat_ax = fig.add_subplot(grid[0, 0], sharex=bar_ax)
            classes = partition.get("classes") or []
            _draw_heat(fig, heat_ax, fig.add_subplot(grid[0, 1]), hist, classes)
            heat_ax.set_title(mpl_text(title), fontsize=10)
            heat_ax.tick_params(labelbottom=False)
        else:
            bar_ax.set_title(mpl_text(title), fontsize=10)
        _draw_sizes(bar_ax, sizes)
        fig.subplots_adjust(left=0.14, right=0.95, top=0.93, bottom=0.16 if has_hist else 0.25)
        return Plot(
            title=title,
            uri=png_uri(fig),
            alt=f"label histogram and shard sizes of {len(sizes)} nodes, {title}",
            caption="used by " + "; ".join(run_names),
        )


def _draw_heat(fig: Figure, ax: Axes, cax: Axes, hist: np.ndarray, classes: Sequence[Any]) -> None:
    """Nodes on x, classes on y (the first class on top), colour = samples of that class."""
    n_nodes, n_classes = hist.shape
    image = ax.imshow(hist.T, aspect="auto", cmap="viridis", interpolation="nearest",
                      origin="upper", extent=(-0.5, n_nodes - 0.5, n_classes - 0.5, -0.5))
    names = [str(c) for c in classes]
    if len(names) != n_classes:
        names = [str(i) for i in range(n_classes)]
    step = max(1, math.ceil(n_classes / 24))
    ax.set_yticks(range(0, n_classes, step), [mpl_text(n) for n in names[::step]], fontsize=7)
    fig.colorbar(image, cax=cax).set_label("samples", fontsize=8)
    cax.tick_params(labelsize=7)


def _draw_sizes(ax: Axes, sizes: Sequence[float]) -> None:
    ax.bar(range(len(sizes)), sizes, width=0.85, color="#5b7fa6")
    ax.set_xlim(-0.5, max(len(sizes), 1) - 0.5)
    ax.set_xlabel("node")
    ax.set_ylabel("shard size", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)


def graph_layout(n: int, edges: Sequence[tuple[int, int]]) -> np.ndarray:
    """Node positions, ``(n, 2)``: networkx's spring layout with a fixed seed, else a circle."""
    try:
        import networkx as nx
    except ImportError:
        angles = 2 * np.pi * np.arange(n) / max(n, 1)
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(edges)
    pos = nx.spring_layout(graph, seed=0)
    return np.array([pos[i] for i in range(n)], dtype=float).reshape(n, 2)


def graph_plot(run: Run) -> Plot | None:
    """A run's gossip graph, small, nodes in the run's colour; ``None`` for runs without one."""
    graph = run.info.get("graph")
    if not graph:
        return None
    nodes = graph.get("nodes")
    n = len(nodes) if isinstance(nodes, Sequence) else int(number(nodes) or 0)
    edges = [(int(a), int(b)) for a, b in graph.get("edges") or []]
    edges = [(a, b) for a, b in edges if 0 <= a < n and 0 <= b < n]
    pos = graph_layout(n, edges)
    with _figure(3.6, 3.6) as fig:
        ax = fig.add_subplot()
        segments = [pos[[a, b]] for a, b in edges]
        ax.add_collection(LineCollection(segments, colors="#b8b8b8", linewidths=0.6, zorder=1))
        ax.scatter(pos[:, 0], pos[:, 1], s=min(60.0, max(8.0, 1600.0 / max(n, 1))),
                   color=run.color, edgecolors="white", linewidths=0.5, zorder=2)
        ax.set_title(mpl_text(_short(run.name, 40)), fontsize=9)
        ax.set_axis_off()
        ax.set_aspect("equal", adjustable="datalim")
        fig.subplots_adjust(left=0.03, right=0.97, bottom=0.03, top=0.92)
        degree = 2 * len(edges) / n if n else 0.0
        return Plot(title=run.name, uri=png_uri(fig),
                    alt=f"gossip graph of {run.name}: {n} nodes, {len(edges)} edges",
                    caption=f"{n} nodes, {len(edges)} edges, mean degree {degree:.1f}")
