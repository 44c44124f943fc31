"""``phalanx up``: a local network of node processes on loopback, and what it wrote.

:func:`up` plans the network (each node's folder with fresh keys and a configuration, one
genesis naming them all, the task as a scenario of the range), starts one ``phalanx node start``
process per node in its own session (so the network outlives the launcher), and waits while the
nodes run their rounds. Then it reads what the nodes wrote and writes what a simulated run
writes: ``summary.json``, ``<run>/metrics.jsonl`` (per round: accuracy over the honest nodes,
their spread and consensus distance, availability), and ``report.html`` through the range's own
report writer; each node's log is audited (``phalanx audit``). Then it stops every process it
started, unless asked to leave them running.

The layout::

    OUT/network.json           the nodes: names, folders, URLs, process IDs (phalanx status/down read it)
    OUT/status.json            the live network as the dashboard reads it (phalanx up and phalanx
                               status rewrite it from the nodes' /v1/status)
    OUT/genesis.yaml           the network's genesis
    OUT/nodes/<name>/          each node: node.keys, node.yaml, ledger.db, policy.txt,
                               ledger-private/, witness.json, metrics.jsonl, events.jsonl,
                               evidence.jsonl, node.log
    OUT/summary.json, OUT/<run>/metrics.jsonl, OUT/report.html

Nothing but 127.0.0.0/8 is ever used: every node listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from phalanx.network.config import GENESIS_FILE, AdmissionSpec, ConfigError, Genesis, Member, NodeConfig

NETWORK_FILE = "network.json"
HOST = "127.0.0.1"


@dataclass
class Planned:
    name: str
    folder: Path
    url: str
    malicious: bool
    role: str  # "trainer" or "server"
    shard: int
    node: str = ""  # its node ID (hex)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound and released: a race, but a short one)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def plan(scenario, out: Path, *, mode: str, timeout_s: float, encryption: str = "off",
         validators: int = 4, keep_updates: bool = True, software: str | None = None,
         sampling: dict | None = None) -> list[Planned]:
    """Write every node's folder and the genesis; return the plan (nothing is started).
    ``sampling`` (gossip): every node's peer sampler, e.g. ``{"name": "basalt", "view": 4}``."""
    import torch

    from phalanx.core.seeding import generator
    from phalanx.range.network import init_node

    n, k = scenario.data.nodes, scenario.adversary.malicious
    bad = set(torch.randperm(n, generator=generator(scenario.seed, "malicious"))[:k].tolist())  # the range's choice
    censor = None
    if mode == "committee":  # the scenario's committee: its validators, and its censoring sequencer
        validators = min(n, scenario.topology.validators)
        censor = scenario.topology.censor
        if censor is not None:
            bad.add(censor)
    names = [f"node{i}" for i in range(n)] + (["server"] if mode == "star" else [])
    ports = free_ports(len(names))
    nodes_dir = out / "nodes"
    nodes_dir.mkdir(parents=True, exist_ok=True)
    members, planned = [], []
    for i, (name, port) in enumerate(zip(names, ports)):
        folder = nodes_dir / name
        keys = init_node(folder, name, port, HOST, force=True)
        url = f"http://{HOST}:{port}"
        server = name == "server"
        roles = ["aggregator", "witness"] if server else ["trainer", "witness"]
        if not server and i < validators:
            roles.insert(1, "validator")
        members.append(Member(name=name, node=keys.node.hex(), key=keys.identity.public.raw.hex(), xk=keys.xk.hex(),
                              url=url, log=keys.log.public.raw.hex(), witness=keys.witness.public.raw.hex(),
                              roles=roles, shard=-1 if server else i))
        planned.append(Planned(name, folder, url, i in bad, "server" if server else "trainer", -1 if server else i,
                               keys.node.hex()))
    genesis = Genesis(network=f"up-{int(time.time())}", mode=mode, rounds=scenario.rounds, round_timeout_s=timeout_s,
                      admission=AdmissionSpec(), members=members,
                      task=scenario.model_dump(mode="json"))
    (out / GENESIS_FILE).write_text(yaml.safe_dump(genesis.model_dump(mode="json"), sort_keys=False))
    attack = scenario.adversary.update_attack
    for p in planned:
        config = NodeConfig(name=p.name, host=HOST, port=int(p.url.rsplit(":", 1)[1]),
                            genesis=str((out / GENESIS_FILE).resolve()), encryption=encryption,
                            keep_updates=keep_updates, software=software, sampling=sampling,
                            attack=attack.as_dict() if (p.malicious and attack is not None) else None,
                            committee_fault="censor" if censor is not None and p.shard == censor else "none")
        (p.folder / "node.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True),
                                                           sort_keys=False))
    return planned


def spawn(p: Planned, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start one node process in its own session (it survives the launcher), output to node.log."""
    log = (p.folder / "node.log").open("ab")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "phalanx.cli", "node", "start", str(p.folder)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=environment)


def write_network(out: Path, planned: list[Planned], procs: dict[str, subprocess.Popen], run: str) -> None:
    data = {"run": run, "started": time.time(), "launcher": os.getpid(),
            "nodes": [{"name": p.name, "node": p.node, "folder": str(p.folder.resolve()), "url": p.url,
                       "malicious": p.malicious, "role": p.role, "shard": p.shard,
                       "pid": procs[p.name].pid if p.name in procs else None}
                      for p in planned]}
    tmp = out / (NETWORK_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, out / NETWORK_FILE)


def read_network(out: Path) -> dict[str, Any]:
    try:
        data = json.loads((out / NETWORK_FILE).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{out / NETWORK_FILE}: no such file (start a network with phalanx up --out {out})") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{out / NETWORK_FILE}: unreadable: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise ConfigError(f"{out / NETWORK_FILE}: not a network file")
    return data


def node_status(url: str, timeout: float = 2.0) -> dict | None:
    import httpx

    try:
        r = httpx.get(f"{url}/v1/status", timeout=timeout)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


STATUS_FILE = "status.json"


def write_snapshot(out: Path, nodes: list[dict], statuses: dict[str, dict | None]) -> None:
    """``OUT/status.json``: the network as the dashboard reads a deployed one
    (:func:`phalanx.dashboard.network.network_from_status`): each node's ID, name, software,
    role, the peers it sees up, and whether it answers."""
    items = []
    for node in nodes:
        st = statuses.get(node["name"])
        roles = (st or {}).get("roles") or []
        role = "server" if node.get("role") == "server" else "validator" if "validator" in roles else "honest"
        items.append({"id": node.get("node") or (st or {}).get("node", node["name"]), "name": node["name"],
                      "version": (st or {}).get("software", ""), "role": role, "up": st is not None,
                      "round": (st or {}).get("round"), "halted": (st or {}).get("halted"),
                      "peers": [p["node"] for p in (st or {}).get("peers", []) if p.get("up")],
                      "reputation": None, "quarantined": False})
    tmp = out / (STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps({"time": time.time(), "nodes": items}, indent=1) + "\n")
    os.replace(tmp, out / STATUS_FILE)


def status(out: Path) -> list[dict]:
    """One row per node of the network in ``out``: up or not, its round, log, peers, accuracy
    (and ``OUT/status.json`` rewritten from what the nodes said)."""
    rows = []
    nodes = read_network(out)["nodes"]
    statuses = {node["name"]: node_status(node["url"]) for node in nodes}
    write_snapshot(out, nodes, statuses)
    for node in nodes:
        st = statuses[node["name"]]
        rows.append({"name": node["name"], "url": node["url"], "pid": node.get("pid"), "malicious": node["malicious"],
                     "up": st is not None, **({} if st is None else {
                         "round": st["round"], "rounds": st["rounds"], "done": st["done"], "halted": st["halted"],
                         "log": st["log"]["size"], "checkpoints": st["log"]["checkpoints"],
                         "peers_up": sum(p["up"] for p in st["peers"]), "accuracy": st["accuracy"],
                         "evidence": len(st["evidence"])})})
    return rows


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie child of this process counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def stop(pids: list[int], grace: float = 10.0) -> int:
    """SIGTERM each node process, SIGKILL what is left after ``grace`` seconds; how many were running."""
    running = [p for p in pids if p and _alive(p)]
    for pid in running:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.time() + grace
    while time.time() < end and any(_alive(p) for p in running):
        time.sleep(0.1)
    for pid in running:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return len(running)


def down(out: Path) -> int:
    """Stop every node process the network file in ``out`` names."""
    return stop([n.get("pid") for n in read_network(out)["nodes"]])


def wait_done(urls: dict[str, str], rounds: int, deadline: float, report: Callable[[dict], None] | None = None,
              need: set[str] | None = None, exited: Callable[[str], bool] = lambda name: False
              ) -> dict[str, dict | None]:
    """Poll the nodes until every one in ``need`` (default: all) is done, halted or has exited
    (``exited(name)``), or ``deadline`` passes; the last status of each (``None``: no answer)."""
    need = set(urls) if need is None else need
    last: dict[str, dict | None] = {}
    while time.time() < deadline:
        last = {name: node_status(url) for name, url in urls.items()}
        if report is not None:
            report(last)
        if all((last.get(n) is not None and (last[n]["done"] or last[n]["halted"])) or exited(n) for n in need):
            break
        time.sleep(1.0)
    return last


# ------------------------------------------------------------------ governance, from the operators' side

def govern(out: Path, action: str, params: dict, *, deadline: int, title: str = "",
           voters: int | None = None, choice: str = "yes") -> dict[str, int]:
    """Log a proposal in every live node's log, and the validators' votes on it.

    A local network's operators hold every node's keys (``OUT/nodes/*/node.keys``), so this acts
    as each validator in turn: the first one proposes, then ``voters`` of them (default: all)
    vote ``choice``. Each entry is signed by the validator for the log it goes into and sent in an
    envelope from that validator (``submit``). Returns the proposal's index in each node's log.
    """
    from phalanx.governance import check_proposal
    from phalanx.governance.state import GovernanceError
    from phalanx.ledger import GovernanceProposal, GovernanceVote, sign_entry
    from phalanx.network.client import PeerError, Transport
    from phalanx.network.config import NodeKeys, load_genesis
    from phalanx.network.envelope import Fork, Identity
    from phalanx.network.messages import make, read
    from phalanx.network.peers import Peer

    try:
        check_proposal(action, params)
    except GovernanceError as e:
        raise ConfigError(f"proposal: {e}") from None
    network = read_network(out)
    genesis = load_genesis(out / GENESIS_FILE)
    folders = {n["name"]: Path(n["folder"]) for n in network["nodes"]}
    validators = [m for m in genesis.members if "validator" in m.roles][:voters]
    keys = {m.name: NodeKeys.read(folders[m.name]) for m in validators}
    indices: dict[str, int] = {}
    for target in genesis.members:
        st = node_status(target.url)
        if st is None:
            continue
        fork = Fork(genesis.protocol, bytes.fromhex(st["fork"]["hash"]), st["fork"]["next"])
        peer = Peer(node=bytes.fromhex(target.node), url=target.url, xk=bytes.fromhex(target.xk))
        origin = genesis.origin(peer.node)

        def submit(name: str, body) -> int:
            k = keys[name]
            transport = Transport(lambda: Identity(k.node, k.identity, k.xkey), lambda: fork, encryption="auto")
            try:
                for _ in range(5):  # the validator's own node may take a sequence number meanwhile
                    seq = read("seq_reply", transport.call(peer, "seq", make("empty")), 1024)["seq"]
                    entry = sign_entry(body, k.identity, seq, origin)
                    try:
                        reply = transport.call(peer, "submit", make("submit", entry=entry.encoding))
                        return read("submit_reply", reply, 1024)["index"]
                    except PeerError as e:
                        if "seq" not in str(e):
                            raise
                raise ConfigError(f"{target.name}: could not find a free sequence number for {name}")
            except PeerError as e:
                raise ConfigError(f"{target.name} refused {name}'s {body.TYPE}: {e}") from None
            finally:
                transport.close()

        proposal = GovernanceProposal(action=action, params=params, title=title or action, deadline=deadline)
        index = submit(validators[0].name, proposal)
        for v in validators:
            submit(v.name, GovernanceVote(proposal=index, choice=choice))
        indices[target.name] = index
    return indices


# ------------------------------------------------------------------ what the nodes wrote

def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut by kill -9
    return out


def _model(folder: Path, digest: str):
    import torch

    from phalanx.ledger import BlobStore

    try:
        data = BlobStore(folder / "ledger-private" / "blobs").get(bytes.fromhex(digest))
    except Exception:  # a model that was not kept or is damaged: left out of the distance
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.float32)


def round_records(planned: list[Planned], mode: str) -> list[dict]:
    """One record per round, over the honest nodes (the server's model in a star), in the
    simulation's keys: accuracy (mean), accuracy_min/max, loss, consensus_distance, availability,
    participants, rejected_rows, wall_time_s, elapsed_s."""
    import torch

    per = {p.name: {m["round"]: m for m in _lines(p.folder / "metrics.jsonl")} for p in planned}
    honest = [p for p in planned if not p.malicious and p.role == "trainer"]
    rounds = sorted({r for p in planned for r in per[p.name]})
    records = []
    for r in rounds:
        rows = [per[p.name][r] for p in honest if r in per[p.name]]
        everyone = [per[p.name][r] for p in planned if r in per[p.name]]
        if mode == "star":
            server = next((per[p.name].get(r) for p in planned if p.role == "server"), None)
            accs = [server["accuracy"]] if server and server.get("accuracy") is not None else []
            losses = [server["loss"]] if accs else []
            dist = None
        else:
            accs = [m["accuracy"] for m in rows if m.get("accuracy") is not None]
            losses = [m["loss"] for m in rows if m.get("loss") is not None]
            models = [_model(p.folder, per[p.name][r]["model"]) for p in honest if r in per[p.name]]
            models = [m for m in models if m is not None]
            dist = None
            if len(models) > 1:
                x = torch.stack(models).double()
                dist = float((x - x.mean(0)).pow(2).sum(1).mean().sqrt())
        records.append({
            "round": r, "accuracy": sum(accs) / len(accs) if accs else None,
            "accuracy_min": min(accs) if accs else None, "accuracy_max": max(accs) if accs else None,
            "loss": sum(losses) / len(losses) if losses else None, "consensus_distance": dist,
            "availability": sum(m.get("availability", 0.0) for m in rows) / max(1, len(honest)),
            "participants": sum(1 for m in everyone if m.get("role", "") != "server"),
            "rejected_rows": sum(m.get("rejected_rows", 0) for m in everyone),
            "wall_time_s": max(m["wall_time_s"] for m in everyone),
            "elapsed_s": max(m["elapsed_s"] for m in everyone),
        })
    return records


def audit_logs(planned: list[Planned]) -> list[dict]:
    """``phalanx audit`` on each node's log (structural checks and the engine's)."""
    from phalanx.engine.provenance.checks import EngineChecks
    from phalanx.ledger import Ledger
    from phalanx.ledger.audit import audit

    out = []
    for p in planned:
        path = p.folder / "ledger.db"
        if not path.exists():
            out.append({"node": p.name, "ok": False, "summary": "no ledger.db"})
            continue
        try:
            with Ledger.open(str(path), readonly=True) as opened:
                origin = opened.origin
            report = audit(str(path), checks=EngineChecks(origin).checks(), workers=1)
            out.append({"node": p.name, "ok": report.ok, "summary": report.summary(), "entries": report.entries,
                        "checkpoints": report.checkpoints})
        except Exception as e:  # a node's log the audit cannot open: say so, keep going
            out.append({"node": p.name, "ok": False, "summary": f"{type(e).__name__}: {e}"})
    return out


def _events(planned: list[Planned]) -> list[dict]:
    out = []
    for p in planned:
        for e in _lines(p.folder / "events.jsonl"):
            if e.get("kind") in ("evidence", "availability", "governance", "catchup", "rollback", "refused", "halt"):
                out.append({"round": e.get("round", 0), "kind": e["kind"], "target": p.name,
                            "text": f"{p.name}: {e.get('text', '')}"})
    return out[:500]


def _ledger_summary(p: Planned, out: Path) -> dict | None:
    """The report's ledger section for one node's log: size, checkpoints, its model's provenance."""
    from phalanx.ledger import Ledger
    from phalanx.ledger.trace import LedgerIndex, trace

    path = p.folder / "ledger.db"
    if not path.exists():
        return None
    try:
        with Ledger.open(str(path), readonly=True) as ledger:
            entries = list(ledger.entries())
            summary = {"path": "ledger.db", "policy": "policy.txt", "origin": ledger.origin, "log_vkey": ledger.vkey,
                       "entries": ledger.size, "checkpoints": ledger.checkpoint_count,
                       "validators": len(ledger.policy.witnesses), "keep_updates": False,
                       "folder": str(p.folder.relative_to(out))}
        index = LedgerIndex.build(iter(entries))
        records = [e for _, e in entries if e.type == "aggregate_record" and e.key == entries[0][1].key]
        if records:
            model = records[-1].body.result
            provenance = trace(index, model)
            rounds, grid = provenance.matrix()
            summary["trace"] = {"model": model.hex(), "whose": f"{p.name}'s model", "rounds": rounds, "grid": grid,
                                "records": len(provenance.records), "reverted": []}
        return summary
    except Exception:  # the report shows what it can; the audit table says what is wrong
        return None


def up(scenario, out: Path, *, mode: str, timeout_s: float, encryption: str, keep: bool = False,
       progress: Callable[[str], None] = print, startup_s: float = 120.0, software: str | None = None,
       sampling: dict | None = None) -> dict:
    """Start the network, wait for its rounds, write metrics, summary, report; stop it (unless ``keep``)."""
    from phalanx.range.report import write_report
    from phalanx.range.runner import _run_summary, build, manifest
    from phalanx.range.scenario import slug

    out.mkdir(parents=True, exist_ok=True)
    built = build(scenario)  # the task must build here before any node tries
    planned = plan(scenario, out, mode=mode, timeout_s=timeout_s, encryption=encryption, software=software,
                   sampling=sampling)
    procs: dict[str, subprocess.Popen] = {}
    run = slug(scenario.name)
    t0 = time.time()
    stopped = False

    def stop_all(*_):
        nonlocal stopped
        if not stopped:
            stopped = True
            stop([p.pid for p in procs.values()])

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def interrupted(signum, frame):
        stop_all()
        raise KeyboardInterrupt

    for s in previous:
        signal.signal(s, interrupted)
    try:
        for p in planned:
            procs[p.name] = spawn(p)
        write_network(out, planned, procs, run)
        progress(f"started {len(planned)} node processes ({mode}); phalanx status --out {out} shows them")
        seen: dict[str, int] = {}

        listed = read_network(out)["nodes"]

        def report_progress(st: dict) -> None:
            write_snapshot(out, listed, st)
            rounds = {n: s["round"] for n, s in st.items() if s is not None}
            if rounds and rounds != seen:
                seen.clear()
                seen.update(rounds)
                low, high = min(rounds.values()), max(rounds.values())
                progress(f"round {low}..{high} of {scenario.rounds} ({len(rounds)}/{len(planned)} nodes answering, "
                         f"{time.time() - t0:.0f} s)")

        deadline = t0 + startup_s + scenario.rounds * timeout_s * {"star": 3, "committee": 4}.get(mode, 2)
        final = wait_done({p.name: p.url for p in planned}, scenario.rounds, deadline, report_progress,
                          exited=lambda name: procs[name].poll() is not None)
        for p in planned:
            code = procs[p.name].poll()
            if code not in (None, 0):
                tail = (p.folder / "node.log").read_text(errors="replace").strip().splitlines()[-1:]
                progress(f"{p.name} exited with code {code}: {tail[0] if tail else ''}")
        records = round_records(planned, mode)
        run_dir = out / run
        run_dir.mkdir(parents=True, exist_ok=True)
        with (run_dir / "metrics.jsonl").open("w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        if not keep:
            stop_all()
        audits = audit_logs(planned)
        info = _run_summary(built, records)
        info.update({"topology": f"{mode} (real processes)", "events": built.events + _events(planned),
                     "graph": None if mode != "gossip" else
                     {"nodes": scenario.data.nodes,
                      "edges": [[i, j] for i in range(scenario.data.nodes) for j in range(i + 1, scenario.data.nodes)]},
                     "network": {"nodes": [{"name": p.name, "malicious": p.malicious, "role": p.role,
                                            "round": (final.get(p.name) or {}).get("round"),
                                            "halted": (final.get(p.name) or {}).get("halted")} for p in planned],
                                 "audit": audits, "encryption": encryption, "timeout_s": timeout_s,
                                 "wall_time_s": round(time.time() - t0, 1)}})
        first_honest = next((p for p in planned if not p.malicious and p.role == "trainer"), planned[0])
        ledger = _ledger_summary(first_honest, out)
        if ledger is not None:
            info["ledger"] = ledger
        summary = {"study": "network", "description": f"phalanx up: {len(planned)} node processes on loopback, "
                                                      f"{mode} mode", "manifest": manifest([scenario], "cpu"),
                   "runs": [info]}
        summary["manifest"]["wall_time_s"] = round(time.time() - t0, 3)
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
        write_report(out, summary, {scenario.name: records})
        return summary
    finally:
        if not keep:
            stop_all()
        for s, handler in previous.items():
            signal.signal(s, handler)
