"""The network view's data: who the nodes are, what role each plays, how trusted, who talks to whom.

From a run's summary (the range knows the truth) and its ledger (what the network itself
recorded), each node gets:

- a **role**: ``malicious`` (the range's ground truth: ``malicious`` in summary.json, Sybils
  included), ``quarantined`` (the validators' last decision about it, from the guard's decisions;
  the same decisions are the ledger's ``quarantine`` entries), ``honest`` otherwise; plus the
  infrastructure the ledger registers: the star's ``server`` and the ``validator`` witnesses;
- a **reputation** in [0, 1]: the mean score the receivers hold of it at the end of the run
  (beta reputation, ``guard.reputation`` in summary.json), or ``None`` without that defense;
- its **evidence** count (rows of it rejected) and crash events.

Edges follow the topology: a gossip run's graph (``graph.edges``), every trainer to the server in a
star, and the validators to the server (or, in gossip, to no one: they only cosign the log).

**The seam for a live network** (``phalanx up``, the node daemons): :func:`network_from_status`
takes the JSON a node's status endpoint would return, ``{"nodes": [{"id", "name", "version",
"role", "peers", "reputation", "quarantined"}]}``, into the same shape. The names and versions in
it come from the nodes themselves, untrusted: the page shows them as text only.
"""

from __future__ import annotations

from typing import Any

MAX_NODES = 20_000
MAX_EDGES = 400_000


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None


def run_network(summary: dict[str, Any], ledger_roles: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Nodes and edges of one finished (or running) run, from its summary.json entry (or of a
    deployed network, when the entry is a status snapshot)."""
    if "status" in summary:
        return network_from_status(summary["status"])
    partition = summary.get("partition") if isinstance(summary.get("partition"), dict) else {}
    graph = summary.get("graph") if isinstance(summary.get("graph"), dict) else None
    sizes = partition.get("sizes") if isinstance(partition.get("sizes"), list) else []
    n = len(sizes)
    if graph and isinstance(graph.get("nodes"), int):
        n = max(n, graph["nodes"])
    n = min(n, MAX_NODES)
    malicious = {m for m in summary.get("malicious") or [] if isinstance(m, int)}
    guard = summary.get("guard") if isinstance(summary.get("guard"), dict) else {}
    quarantined: dict[int, dict] = {}
    decisions: dict[int, list[dict]] = {}
    for d in guard.get("decisions") or []:
        if isinstance(d, dict) and isinstance(d.get("node"), int):
            decisions.setdefault(d["node"], []).append(d)
            if d.get("action") == "quarantine":
                quarantined[d["node"]] = d
            elif d.get("action") == "release":
                quarantined.pop(d["node"], None)
    reputation = guard.get("reputation") if isinstance(guard.get("reputation"), list) else []
    evidence = summary.get("evidence") if isinstance(summary.get("evidence"), dict) else {}
    crashed: set[int] = set()
    for ev in summary.get("events") or []:
        if isinstance(ev, dict) and ev.get("kind") == "crash":
            t = ev.get("target")
            for x in t if isinstance(t, list) else [t]:
                if isinstance(x, int):
                    crashed.add(x)
    nodes = []
    for i in range(n):
        role = "quarantined" if i in quarantined else "malicious" if i in malicious else "honest"
        nodes.append({"id": i, "name": f"node{i}", "role": role, "malicious": i in malicious,
                      "quarantined": i in quarantined,
                      "reputation": _num(reputation[i]) if i < len(reputation) else None,
                      "evidence": evidence.get(str(i), 0) if isinstance(evidence.get(str(i), 0), int) else 0,
                      "crashed": i in crashed, "samples": sizes[i] if i < len(sizes) else None})
    edges: list[list[int]] = []
    star = summary.get("topology") == "star" or (graph is None and summary.get("topology") != "gossip")
    if graph and isinstance(graph.get("edges"), list):
        for e in graph["edges"][:MAX_EDGES]:
            if isinstance(e, list) and len(e) == 2 and all(isinstance(x, int) and 0 <= x < n for x in e):
                edges.append(e)
    extra = []
    if star and n:
        extra.append({"id": n, "name": "server", "role": "server", "malicious": False, "quarantined": False,
                      "reputation": None, "evidence": 0, "crashed": -1 in crashed or _server_crashed(summary),
                      "samples": None})
        edges += [[i, n] for i in range(n)]
    validators = len([r for r in (ledger_roles or {}).values() if "validator" in r])
    if not validators and isinstance(summary.get("ledger"), dict):
        validators = summary["ledger"].get("validators") or 0
    validators = min(int(validators) if isinstance(validators, int) else 0, 64)
    base = n + len(extra)
    for v in range(validators):
        extra.append({"id": base + v, "name": f"validator{v}", "role": "validator", "malicious": False,
                      "quarantined": False, "reputation": None, "evidence": 0, "crashed": False, "samples": None})
        if star and n:
            edges.append([base + v, n])
    return {"nodes": nodes + extra, "edges": edges, "topology": "star" if star else "gossip",
            "decisions": {str(k): v for k, v in decisions.items()}}


def _server_crashed(summary: dict[str, Any]) -> bool:
    return any(isinstance(ev, dict) and ev.get("kind") == "crash" and ev.get("target") == "server"
               for ev in summary.get("events") or [])


def network_from_status(status: dict[str, Any]) -> dict[str, Any]:
    """The network view of a deployed network, from a status endpoint's JSON (see the module doc)."""
    raw = status.get("nodes") if isinstance(status, dict) else None
    if not isinstance(raw, list):
        raise ValueError("status: expected an object with a list of nodes")
    nodes, ids = [], {}
    for i, item in enumerate(raw[:MAX_NODES]):
        if not isinstance(item, dict):
            continue
        key = str(item.get("id", i))[:128]
        ids[key] = len(nodes)
        role = item.get("role") if item.get("role") in ("honest", "validator", "server", "quarantined") else "honest"
        if item.get("quarantined") is True:
            role = "quarantined"
        nodes.append({"id": len(nodes), "name": str(item.get("name", key))[:256],
                      "version": str(item.get("version", ""))[:256], "role": role, "malicious": False,
                      "quarantined": role == "quarantined", "reputation": _num(item.get("reputation")),
                      "evidence": 0, "crashed": item.get("up") is False, "samples": None})
    edges = []
    for item in raw[:MAX_NODES]:
        if isinstance(item, dict) and isinstance(item.get("peers"), list):
            a = ids.get(str(item.get("id")))
            for p in item["peers"][:1000]:
                b = ids.get(str(p))
                if a is not None and b is not None and a < b:
                    edges.append([a, b])
    return {"nodes": nodes, "edges": edges[:MAX_EDGES], "topology": "network", "decisions": {}}


__all__ = ["network_from_status", "run_network"]
