"""Run a study: build each scenario's network, run its rounds, write metrics and the report.

Output layout (``--out DIR``)::

    DIR/summary.json            every run's configuration, final metrics, events, partition,
                                and a manifest (versions, commit, config hashes, seeds)
    DIR/<run>/metrics.jsonl     one JSON record per round
    DIR/<run>/ledger.db         the run's tamper-evident ledger, with policy.txt and ledger-private/
                                beside it (unless the scenario turns it off: range/recording.py)
    DIR/report.html             self-contained report (plots embedded, opens offline)

Everything random derives from the scenario seed (:mod:`phalanx.core.seeding`), so the same seed
gives the same numbers on CPU; only the wall times differ.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

import phalanx
from phalanx.aggregate import AGGREGATORS, PRE_AGGREGATORS, Chain
from phalanx.attacks import DATA_ATTACKS, UPDATE_ATTACKS, DataSite
from phalanx.core.seeding import derive_seed, generator
from phalanx.data import DATASETS, PARTITIONERS, Dataset, label_histogram
from phalanx.engine import Fault, FaultSchedule, Simulation
from phalanx.defenses import ADMISSION, READMISSION, SCREENS, Reputation, ValidatorVote, commit_stats
from phalanx.defenses.admission import Open
from phalanx.defenses.provenance import StatsOpening
from phalanx.engine.guard import Audits, Guard
from phalanx.engine.secure import SecureAggregation
from phalanx.engine.swarm import NEVER, Swarm
from phalanx.models import MODELS, FlatModel, initial_row
from phalanx.network import TOPOLOGIES
from phalanx.privacy.accounting import PrivacyLedger
from phalanx.privacy.client import AdaptiveClipping
from phalanx.privacy.counts import CountRelease
from phalanx.privacy.plan import PrivacyPlan
from phalanx.range.scenario import Scenario, ScenarioError, slug
from phalanx.train import SGDConfig, Shards


class RunError(RuntimeError):
    """A valid scenario that cannot run here (missing data set, no CUDA, ...)."""


@dataclass
class BuiltRun:
    scenario: Scenario
    simulation: Simulation
    dataset: Dataset
    partition: dict[str, Any]
    graph: dict[str, Any] | None
    malicious: list[int]
    events: list[dict]


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("device: cuda was asked for but torch sees no CUDA device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _subset(n: int, k: int | None, seed: int, label: str) -> torch.Tensor | None:
    if k is None or k >= n:
        return None
    return torch.randperm(n, generator=generator(seed, label))[:k].sort().values


def _plugin_failure(path: str, error: Exception) -> ScenarioError:
    return ScenarioError(f"{path}: {error}")


def build(scenario: Scenario, group: int | None = None) -> BuiltRun:
    """Everything a run needs, from a validated scenario.

    With ``group`` (a scenario with ``diversity``), the run of that group alone: the whole
    network's partition, malicious nodes and poisoning, restricted to the group's nodes, training
    the group's model in a star of its own (:func:`build_study_run` puts the groups together).
    """
    s = scenario
    device = resolve_device(s.device)
    try:
        dataset = DATASETS.build(s.data.dataset.name, **s.data.dataset.params)
    except FileNotFoundError as e:
        raise RunError(str(e)) from None
    except ValueError as e:
        raise _plugin_failure("data.dataset", e) from None

    x, y = dataset.x_train, dataset.y_train
    pick = _subset(len(y), s.data.train_samples, s.seed, "train_subset")
    if pick is not None:
        x, y = x[pick], y[pick]
    try:
        parts = PARTITIONERS.build(s.data.partition.name, y, s.data.nodes,
                                   generator(s.seed, "partition"), **s.data.partition.params)
    except ValueError as e:
        raise _plugin_failure("data.partition", e) from None
    sybils = s.adversary.sybils
    n = s.total_nodes()
    if sybils is not None:  # one adversary's data, copied to every identity it may buy
        parts = list(parts) + [_adversary_shard(y, sybils.data, s.seed, dataset.num_classes)] * sybils.slots()
        malicious_ids = torch.arange(s.data.nodes, n)
    elif s.diversity is not None and s.diversity.target_group is not None:
        pool = torch.as_tensor(s.diversity.nodes_of(s.diversity.index(s.diversity.target_group)))
        malicious_ids = pool[torch.randperm(len(pool), generator=generator(s.seed, "malicious"))[: s.adversary.malicious]]
    else:
        malicious_ids = torch.randperm(n, generator=generator(s.seed, "malicious"))[: s.adversary.malicious]
    histogram = label_histogram(y, parts, dataset.num_classes)
    clean_x, clean_y = x, y
    clean_labels = [y[p] for p in parts]  # what an auditor holding each node's data sees
    malicious = torch.zeros(n, dtype=torch.bool)
    malicious[malicious_ids] = True

    site = DataSite(high=float(dataset.standardize(1.0)), low=float(dataset.standardize(0.0)))
    data_attack = None
    if s.adversary.data_attack is not None:
        data_attack = DATA_ATTACKS.build(s.adversary.data_attack.name, **s.adversary.data_attack.params)
    if data_attack is not None and len(malicious_ids):
        try:
            x, y, parts = _poison(data_attack, x, y, parts, malicious_ids.tolist(), dataset.num_classes, s.seed,
                                  high=site.high, low=site.low)
        except ValueError as e:
            raise _plugin_failure("adversary.data_attack", e) from None
    partition = {
        "partitioner": s.data.partition.name, "params": s.data.partition.params,
        "sizes": [len(p) for p in parts], "label_histogram": histogram.tolist(),
        "classes": list(dataset.classes),
    }
    model_spec = s.model
    if group is not None:  # one group of a diverse network: its nodes and its model
        keep = s.diversity.nodes_of(group)
        parts, malicious = [parts[i] for i in keep], malicious[keep]
        malicious_ids = malicious.nonzero().squeeze(1)
        n, model_spec = len(keep), s.diversity.groups[group].model

    shards = Shards.from_parts(x.to(device), y.to(device), [p.to(device) for p in parts])
    try:
        factory = lambda: MODELS.build(model_spec.name, dataset.input_shape, dataset.num_classes,  # noqa: E731
                                       **model_spec.params)
        initial = initial_row(factory, derive_seed(s.seed, "init")).to(device)
        with torch.random.fork_rng(devices=[]):  # a run never draws from the global generator
            flat_model = FlatModel(factory())
    except ValueError as e:
        raise _plugin_failure("model" if group is None else f"diversity.groups.{group}.model", e) from None

    try:
        if s.topology.name == "gossip":
            topology = TOPOLOGIES.build("gossip", n, derive_seed(s.seed, "graph"),
                                        graph=s.topology.graph.name,
                                        graph_params=s.topology.graph.params, mixing=s.topology.mixing)
        elif s.topology.name == "committee":
            t = s.topology
            topology = TOPOLOGIES.build("committee", n, derive_seed(s.seed, "graph"), validators=t.validators,
                                        crashed=t.crashed, byzantine=t.byzantine, behaviour=t.behaviour,
                                        censor=t.censor, merge_delay=t.merge_delay)
        else:
            topology = TOPOLOGIES.build("star", n, derive_seed(s.seed, "graph"))
    except ValueError as e:
        raise _plugin_failure("topology.graph", e) from None

    aggregator = Chain([PRE_AGGREGATORS.build(p.name, **p.params) for p in s.pre_aggregators],
                       AGGREGATORS.build(s.aggregator.name, **s.aggregator.params))
    screens = [SCREENS.build(p.name, **p.params) for p in s.screens]
    wants_root = any(isinstance(sc, Reputation) and sc.needs_root_loss for sc in screens)
    root_shards = None
    if (aggregator.needs_root or wants_root) and topology.kind == "star":
        # the server's own clean sample (FLTrust, Cao et al. 2021, Section 3: a small root
        # dataset the service provider collects itself), drawn before any data poisoning
        pick = torch.randperm(len(clean_y), generator=generator(s.seed, "root"))[: s.data.root_samples]
        root_shards = Shards.from_parts(clean_x[pick].to(device), clean_y[pick].to(device),
                                        [torch.arange(len(pick), device=device)])
    declared_f, declared_share = s.declared()
    update_attack = None
    if s.adversary.update_attack is not None:
        update_attack = UPDATE_ATTACKS.build(s.adversary.update_attack.name,
                                             **s.adversary.update_attack.params)
    schedule = FaultSchedule(_faults(s), n)

    test_pick = _subset(len(dataset.y_test), s.data.test_samples, s.seed, "test_subset")
    test_x, test_y = dataset.x_test, dataset.y_test
    if test_pick is not None:
        test_x, test_y = test_x[test_pick], test_y[test_pick]
    success = None
    if data_attack is not None:  # measured even with no attacker: what a clean model already does
        try:
            success = data_attack.success_set(test_x, test_y, site)
        except ValueError as e:
            raise _plugin_failure("adversary.data_attack", e) from None
        if success is not None:
            success = replace(success, inputs=success.inputs.to(device))

    privacy = _privacy_plan(s, shards, int(initial.shape[0]))
    simulation = Simulation(
        flat_model=flat_model, initial=initial, shards=shards,
        test_x=test_x.to(device), test_y=test_y.to(device), topology=topology,
        aggregator=aggregator, malicious=malicious.to(device), faults=schedule,
        sgd=SGDConfig(epochs=s.train.epochs, batch_size=s.train.batch_size, lr=s.train.lr,
                      momentum=s.train.momentum, weight_decay=s.train.weight_decay),
        seed=s.seed, update_attack=update_attack, participation=s.topology.participation,
        weighting=s.weighting(), strategy=s.train.strategy, chunk_size=s.train.chunk_size,
        workers=s.train.workers,
        eval_every=s.eval.every,
        declared_f=declared_f, declared_share=declared_share, weight_cap=s.topology.weight_cap,
        count_release=_count_release(s, privacy, shards.num_nodes), root_shards=root_shards, privacy=privacy, keep_released=s.leakage is not None,
        secure=_secure_aggregation(s), success=success,
    )
    if screens or s.quarantine is not None or s.provenance is not None or sybils is not None:
        try:
            simulation.guard = _guard(s, simulation, screens, malicious, clean_labels, y, parts,
                                      dataset.num_classes, root_shards)
        except ValueError as e:
            raise ScenarioError(f"screens: {e}") from None
    if s.engine == "ray":
        from phalanx.engine.ray_backend import RayTraining

        with torch.random.fork_rng(devices=[]):
            template = factory()
        try:
            simulation.trainer = RayTraining(template, shards, s.ray.workers, s.ray.address, str(device))
        except RuntimeError as e:
            raise RunError(str(e)) from None
    graph = {"nodes": n, "edges": [list(e) for e in topology.edges()]} if topology.kind == "gossip" else None
    return BuiltRun(s, simulation, dataset, partition, graph, sorted(malicious_ids.tolist()),
                    schedule.events())


def _adversary_shard(y: torch.Tensor, spec, seed: int, num_classes: int) -> torch.Tensor:
    """Indices of the Sybil adversary's own data: ``spec.samples`` drawn from ``spec.classes``."""
    classes = spec.classes if spec.classes is not None else list(range(num_classes))
    bad = [c for c in classes if c >= num_classes]
    if bad:
        raise ScenarioError(f"adversary.sybils.data.classes: {bad} out of range for {num_classes} classes")
    pool = torch.isin(y, torch.as_tensor(classes)).nonzero().squeeze(1)
    if len(pool) == 0:
        raise ScenarioError(f"adversary.sybils.data.classes: no training sample of classes {classes}")
    order = torch.randperm(len(pool), generator=generator(seed, "sybil-data"))
    return pool[order[: spec.samples]].sort().values


def _salt(seed: int, node: int) -> bytes:
    """A node's statistics salt in the simulation (derived, so runs repeat; a real node draws its own)."""
    return hashlib.sha256(f"phalanx/sim-salt/{seed}/{node}".encode()).digest()


def _guard(s: Scenario, sim: Simulation, screens: list, malicious: torch.Tensor, clean_labels: list,
           y: torch.Tensor, parts: list, num_classes: int, root_shards: Shards | None) -> Guard:
    """The run's guard: screens, the validators' vote, audits and the Sybil swarm."""
    n = len(malicious)
    honest = (~malicious).nonzero().squeeze(1).tolist()
    rep = next((sc for sc in screens if isinstance(sc, Reputation)), None)
    q = s.quarantine
    readmit = READMISSION.build(q.readmit.name, **q.readmit.params) if q is not None else None
    vote = ValidatorVote(n, threshold=rep.threshold if rep is not None else float("nan"),
                         rounds=q.rounds if q is not None else NEVER, quorum=q.quorum if q is not None else 2 / 3,
                         readmit=readmit)
    validators: list[int] = []
    if s.topology.name == "gossip" and q is not None and q.validators is not None:
        order = torch.randperm(len(honest), generator=generator(s.seed, "validators"))[: q.validators]
        validators = sorted(honest[i] for i in order.tolist())
    joins = torch.ones(n, dtype=torch.int64)
    swarm = None
    sybils = s.adversary.sybils
    if sybils is not None:
        joins[malicious] = NEVER
        if sybils.budget is None:
            policy, budget = Open(), 0.0
        else:
            policy = ADMISSION.build(sybils.admission.name, **sybils.admission.params)
            budget = sybils.budget
        swarm = Swarm(malicious.nonzero().squeeze(1).tolist(), policy, budget, sybils.arrival,
                      derive_seed(s.seed, "swarm"), honest, at_once=sybils.at_once())
    audits = None
    if s.provenance is not None:
        openings = []
        for node in range(n):
            labels = y[parts[node]]
            hist = torch.bincount(labels, minlength=num_classes).tolist()
            salt = _salt(s.seed, node)
            commitment = commit_stats(len(labels), hist, salt)
            if node in s.provenance.corrupt:
                commitment = commitment[:31]  # a truncated hash: refused at registration
            openings.append(StatsOpening(commitment, len(labels), tuple(hist), salt))
        audits = Audits(openings, clean_labels, num_classes, s.provenance.audits, s.provenance.tolerance)
    root = None
    if root_shards is not None:
        root = (root_shards.x, root_shards.y)
    return Guard(screens, malicious, "gossip" if sim.topology.kind == "gossip" else "star", sim.events, vote,
                 table_index=sim.table_index.cpu() if sim.topology.kind == "gossip" else None,
                 validators=validators, joins=joins, swarm=swarm, audits=audits, root=root,
                 flat_model=sim.flat_model, dim=int(sim.rows.shape[1]), device=sim.rows.device,
                 dtype=sim.rows.dtype, seed=derive_seed(s.seed, "guard"))


def _secure_aggregation(s: Scenario) -> SecureAggregation | None:
    spec = s.secure_aggregation
    if spec is None:
        return None
    return SecureAggregation(bucket_size=spec.bucket_size, clip=spec.clip,
                             seed=derive_seed(s.seed, "secure-aggregation"), protocol=spec.protocol,
                             bits=spec.bits, adversary=spec.adversary, validators=spec.validators)


def _privacy_plan(s: Scenario, shards: Shards, dim: int) -> PrivacyPlan | None:
    """The run's privacy plan, its noise calibrated per node when a target epsilon is given."""
    p = s.privacy
    if p.mechanism == "none":
        return None
    adaptive = None
    if p.adaptive_clip is not None:
        adaptive = AdaptiveClipping(p.adaptive_clip.quantile, p.adaptive_clip.lr,
                                    p.adaptive_clip.count_noise)
    try:
        plan = PrivacyPlan.build(
            p.mechanism, sizes=shards.sizes, epochs=s.train.epochs, batch_size=s.train.batch_size,
            rounds=s.rounds, clip=p.clip, delta=p.delta, noise_multiplier=p.noise_multiplier,
            target_epsilon=p.target_epsilon, accountant=p.accountant, adjacency=p.adjacency,
            budget=p.budget, adaptive=adaptive, dim=dim,
            bucket_size=s.secure_aggregation.bucket_size if s.secure_aggregation else None,
            bits=s.secure_aggregation.bits if s.secure_aggregation else 32)
        if adaptive is not None:  # fails early when the count's noise cannot fit in the budget
            expected = max(1, round(s.topology.participation * s.data.nodes))
            plan.noise_std(expected)
    except ValueError as e:
        raise ScenarioError(f"privacy: {e}") from None
    return plan


def _count_release(s: Scenario, privacy: PrivacyPlan | None, nodes: int) -> CountRelease | None:
    """Weighting noised: each node's count released once, charged to its DP-SGD account when it
    has one, else to an account of its own (phalanx.privacy.counts)."""
    if s.weighting() != "noised":
        return None
    account = privacy.ledger if privacy is not None else PrivacyLedger(s.privacy.delta, s.privacy.accountant)
    return CountRelease(s.topology.count_noise, nodes, s.seed, account)


def _faults(s: Scenario) -> list[Fault]:
    out = []
    for i, f in enumerate(s.faults):
        if f.target == "server":
            out.append(Fault(nodes=(), crash=f.crash, recover=f.recover, server=True))
        elif f.target == "nodes":
            out.append(Fault(nodes=tuple(f.nodes), crash=f.crash, recover=f.recover))
        else:
            ids = torch.randperm(s.data.nodes, generator=generator(s.seed, "fault", i))[: f.count]
            out.append(Fault(nodes=tuple(sorted(ids.tolist())), crash=f.crash, recover=f.recover))
    return out


def _poison(attack, x, y, parts, malicious: list[int], num_classes: int, seed: int,
            high: float = 1.0, low: float = 0.0):
    """Give each malicious node its own rewritten copy of its shard, appended to the pool."""
    xs, ys, parts = [x], [y], list(parts)
    offset = len(y)
    for rank, node in enumerate(malicious):
        idx = parts[node]
        if len(idx) == 0:
            continue
        site = DataSite(node=node, rank=rank, attackers=len(malicious), high=high, low=low)
        px, py = attack.poison_node(x[idx], y[idx], num_classes, generator(seed, "data_attack", node), site)
        xs.append(px)
        ys.append(py)
        parts[node] = torch.arange(offset, offset + len(idx))
        offset += len(idx)
    return torch.cat(xs), torch.cat(ys), parts


# -- the study ---------------------------------------------------------------------------------------
def manifest(runs: list[Scenario], device: str) -> dict[str, Any]:
    import numpy

    return {
        "phalanx": phalanx.__version__, "python": platform.python_version(),
        "torch": torch.__version__, "numpy": numpy.__version__,
        "platform": platform.platform(), "commit": _commit(), "device": device,
        "config_sha256": {r.name: r.sha256() for r in runs},
        "seeds": sorted({r.seed for r in runs}),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["phalanx", *sys.argv[1:]]),
    }


def _commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_study(study: str, description: str, runs: list[Scenario], out_dir: Path,
              progress: bool = True) -> dict[str, Any]:
    """Run every scenario, write all outputs under ``out_dir``, return the summary."""
    from phalanx.range import recording
    from phalanx.range.progress import StudyProgress
    from phalanx.range.report import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    built = []
    for s in runs:
        which = f"run {s.name!r}: " if len(runs) > 1 else ""
        try:
            if s.diversity is not None:
                from phalanx.range.diversity import build_diverse

                built.append(build_diverse(s))
            else:
                built.append(build(s))
        except ScenarioError as e:
            raise ScenarioError(f"{which}{e}") from None
        except RunError as e:
            raise RunError(f"{which}{e}") from None
    device = str(built[0].simulation.test_x.device) if built else "cpu"
    summary: dict[str, Any] = {"study": study, "description": description,
                               "manifest": manifest(runs, device), "runs": []}
    records: dict[str, list[dict]] = {}
    with StudyProgress(enabled=progress) as bar:
        for b in built:
            s = b.scenario
            run_dir = out_dir / slug(s.name)
            run_dir.mkdir(parents=True, exist_ok=True)
            task = bar.add(s.name, s.rounds)
            recorder = recording.attach(b, run_dir)
            rows: list[dict] = []
            try:
                with (run_dir / "metrics.jsonl").open("w") as fh:
                    for record in b.simulation.run(s.rounds):
                        rows.append(record)
                        fh.write(json.dumps(record) + "\n")
                        fh.flush()  # a line per finished round, for phalanx dashboard --live
                        bar.advance(task, record)
            finally:
                for sim in getattr(b.simulation, "groups", [b.simulation]):  # a diverse run: one per group
                    if sim.trainer is not None:
                        sim.trainer.close()
            records[s.name] = rows
            summary["runs"].append(_run_summary(b, rows))
            if recorder is not None:
                summary["runs"][-1]["ledger"] = recording.finish(recorder, b, run_dir)
            if s.leakage is not None:
                from phalanx.range.leakage import evaluate

                summary["runs"][-1]["leakage"] = evaluate(b, s.leakage)
            if s.eclipse is not None:
                from phalanx.range.eclipse import run as run_eclipse

                summary["runs"][-1]["eclipse"] = run_eclipse(s.eclipse)
            if s.diversity is not None:
                from phalanx.range.diversity import transfer_table

                summary["runs"][-1]["diversity"] = transfer_table(b)
    summary["manifest"]["wall_time_s"] = round(time.perf_counter() - t0, 3)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    write_report(out_dir, summary, records)
    return summary


def _run_summary(b: BuiltRun, rows: list[dict]) -> dict[str, Any]:
    s = b.scenario
    final = next((r for r in reversed(rows) if r.get("accuracy") is not None), rows[-1] if rows else {})
    return {
        "name": s.name, "topology": s.topology.name, "description": s.description,
        "config": s.model_dump(mode="json"), "config_sha256": s.sha256(), "final": final,
        "events": b.events + b.simulation.events, "partition": b.partition, "graph": b.graph,
        "evidence": {str(i): int(c) for i, c in enumerate(b.simulation.rejected.tolist()) if c},
        "defense": " -> ".join([*(p.name for p in s.screens), b.simulation.aggregator.name()]),
        **({"guard": b.simulation.guard.summary()} if b.simulation.guard is not None else {}),
        **({"committee": b.simulation.committee.summary()}
           if getattr(b.simulation, "committee", None) is not None else {}),
        "malicious": b.malicious, "dataset": {"name": b.dataset.name, "source": b.dataset.source},
        "model_parameters": (b.simulation.parameters() if s.diversity is not None
                             else b.simulation.rows.shape[1]),
    }
