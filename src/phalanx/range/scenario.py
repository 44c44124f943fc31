"""Scenario files: one YAML file, validated with pydantic, every field with a default and bounds.

A file is either one scenario, or a *study*: the same top-level fields as a base, plus ``runs:``,
a list of named partial scenarios merged over the base (``phalanx run`` with no file runs the
built-in default study, ``studies/default.yaml`` beside this module). ``--set a.b=v`` overrides
are applied last, to every run.

Plug-ins (dataset, partitioner, model, graph, aggregator, attacks) are written
``{name: <registered name>, <hyper-parameter>: <value>, ...}`` or just ``<name>``; their
hyper-parameters are validated against the plug-in's own signature (:mod:`phalanx.core.registry`).

Every failure becomes a :class:`ScenarioError` with one line that names the field, the bad value
and what is allowed; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from phalanx.core import PluginError, Registry


class ScenarioError(ValueError):
    """A scenario that cannot run; ``str()`` is one line naming the field and the problem."""


def _as_plugin(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class Plugin(BaseModel):
    """A registered plug-in by name, with its hyper-parameters beside the name."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: Annotated[str, Field(min_length=1, max_length=64)]

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


PluginField = Annotated[Plugin, BeforeValidator(_as_plugin)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(Strict):
    dataset: PluginField = Field(Plugin(name="fashion_mnist"), description="Dataset to load.")
    partition: PluginField = Field(Plugin(name="dirichlet", alpha=0.5),
                                   description="How the training set is split across nodes.")
    nodes: Annotated[int, Field(ge=1, le=100_000)] = Field(40, description="Number of nodes.")
    train_samples: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Use a seeded random subset of this many training samples (all if null).")
    test_samples: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Evaluate on a seeded random subset of the test set (all if null).")
    root_samples: Annotated[int, Field(ge=1, le=100_000)] = Field(
        100, description="Star only, for rules that read a trusted root update (fltrust): the server's own clean sample of the training set, drawn at random (FLTrust uses 100).")


class TrainSpec(Strict):
    epochs: Annotated[int, Field(ge=1, le=1000)] = Field(1, description="Local epochs per round.")
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = Field(32, description="Local batch size.")
    lr: Annotated[float, Field(gt=0, le=100)] = Field(0.05, description="Local learning rate.")
    momentum: Annotated[float, Field(ge=0, lt=1)] = Field(0.0, description="SGD momentum (reset each round).")
    weight_decay: Annotated[float, Field(ge=0, le=1)] = Field(0.0, description="L2 weight decay.")
    strategy: Literal["auto", "loop", "vmap", "chunked"] = Field(
        "auto", description="How local training runs: auto picks per device and model size.")
    chunk_size: Annotated[int, Field(ge=0, le=100_000)] = Field(
        0, description="Nodes per vmap chunk for 'chunked' (0: sized to the cache).")
    workers: Annotated[int, Field(ge=0, le=256)] = Field(
        0, description="Threads for 'loop' on CPU, one node each (0: one per core for larger models).")


class TopologySpec(Strict):
    name: Literal["star", "gossip", "committee"] = Field(
        "star", description="star (server), gossip (graph) or committee (validators certify a sequencer's batch).")
    graph: PluginField = Field(Plugin(name="random_regular", degree=8),
                               description="Gossip graph (ignored for star).")
    mixing: Literal["uniform", "metropolis"] = Field("uniform", description="Gossip mixing weights.")
    participation: Annotated[float, Field(gt=0, le=1)] = Field(
        1.0, description="Star: the server samples this share of live nodes each round; gossip: each live node takes part with this probability.")
    weighting: Literal["samples", "uniform", "noised"] | None = Field(
        None, description="Star and committee aggregation weights, as the public log shows them: uniform (a public constant), noised (each node's claimed count released once with Gaussian noise, charged to its privacy account, then capped) or samples (exact claimed counts, capped: only without a ledger, which would publish them). Unset: samples without a ledger, uniform with one.")
    count_noise: Annotated[float, Field(gt=0, le=1e6)] | None = Field(
        None, description="noised: the standard deviation of a released count's noise, in samples (one sample is the sensitivity).")
    weight_cap: Annotated[float, Field(ge=1, le=1e6)] | None = Field(
        3.0, description="Star: a claimed (or released) sample count above this multiple of the round's median is capped to it (null trusts claims, to show what weight inflation does).")
    validators: Annotated[int, Field(ge=1, le=100)] = Field(
        4, description="Committee: validators that recompute and certify each round (quorum floor(2n/3) + 1).")
    crashed: Annotated[int, Field(ge=0, le=100)] = Field(0, description="Committee: validators that never answer.")
    byzantine: Annotated[int, Field(ge=0, le=100)] = Field(0, description="Committee: Byzantine validators.")
    behaviour: Literal["silent", "wrong_hash", "double_sign"] = Field(
        "wrong_hash", description="Committee: what the Byzantine validators do.")
    censor: Annotated[int, Field(ge=0, le=99)] | None = Field(
        None, description="Committee: this validator, as sequencer, drops one update after promising it (null: none).")
    merge_delay: Annotated[int, Field(ge=0, le=100)] = Field(
        1, description="Committee: rounds a sequencer's inclusion promise allows.")

    @model_validator(mode="after")
    def _committee_fits(self) -> "TopologySpec":
        if self.crashed + self.byzantine > self.validators:
            raise ValueError(f"{self.crashed} crashed and {self.byzantine} Byzantine validators do not fit in "
                             f"{self.validators}")
        if self.censor is not None and self.censor >= self.validators:
            raise ValueError(f"censor {self.censor} is not a validator (0..{self.validators - 1})")
        return self


class SybilDataSpec(Strict):
    classes: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, description="The classes the adversary's data is drawn from (null: all).")
    samples: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        400, description="How many training samples the adversary holds; every identity trains on a copy.")


class SybilSpec(Strict):
    count: Annotated[int, Field(ge=0, le=100_000)] | None = Field(
        None, description="Identities, given outright (the admission policy is not consulted); or give budget.")
    budget: Annotated[float, Field(ge=0, le=1e18)] | None = Field(
        None, description="The adversary's budget, in the admission policy's unit; it buys identities up to max.")
    admission: PluginField = Field(Plugin(name="open"), description="The network's admission policy: what an identity costs.")
    max: Annotated[int, Field(ge=1, le=100_000)] = Field(
        50, description="With budget: at most this many identities at once.")
    arrival: Annotated[int, Field(ge=1, le=100_000)] = Field(1, description="Round at which the identities join.")
    respawn: Annotated[int, Field(ge=0, le=100_000)] = Field(
        0, description="Replacements the adversary may buy, from what is left of its budget, as identities are quarantined.")
    data: SybilDataSpec = Field(SybilDataSpec(), description="The adversary's one dataset, copied to each identity.")

    @model_validator(mode="after")
    def _check(self) -> "SybilSpec":
        if (self.count is None) == (self.budget is None):
            raise ValueError("give exactly one of count and budget")
        return self

    def at_once(self) -> int:
        return self.count if self.count is not None else self.max

    def slots(self) -> int:
        """Node slots reserved for the adversary: its identities at once, and the replacements."""
        return self.at_once() + self.respawn


class AdversarySpec(Strict):
    malicious: Annotated[int, Field(ge=0)] = Field(0, description="Number of malicious nodes.")
    update_attack: PluginField | None = Field(None, description="Attack on what malicious nodes send.")
    data_attack: PluginField | None = Field(None, description="Attack on malicious nodes' data.")
    sybils: SybilSpec | None = Field(
        None, description="A Sybil swarm: one adversary's identities, added to data.nodes honest nodes, bought under an admission policy; the attacks apply to them.")


class QuarantineSpec(Strict):
    rounds: Annotated[int, Field(ge=1, le=100_000)] = Field(
        3, description="Consecutive flagged rounds before a node is quarantined.")
    quorum: Annotated[float, Field(gt=0, le=1)] = Field(
        0.6667, description="Share of the validators scoring a node that must vote against it for it to be flagged.")
    validators: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        None, description="Gossip: how many honest nodes, drawn at random, are validators (null: all honest nodes). A star's validator is its server.")
    readmit: PluginField = Field(Plugin(name="never"), description="Re-admission policy.")


class ProvenanceSpec(Strict):
    audits: Annotated[int, Field(ge=0, le=100_000)] = Field(
        1, description="Nodes whose dataset commitment an auditor spot-checks each round.")
    tolerance: Annotated[float, Field(ge=0, le=1)] = Field(
        0.1, description="Largest total variation distance between committed and audited label histograms.")
    corrupt: list[Annotated[int, Field(ge=0)]] = Field(
        [], description="Nodes whose dataset commitment is malformed (bad input: refused at registration).")


class FaultSpec(Strict):
    target: Literal["server", "nodes", "random"] = Field(description="What crashes.")
    nodes: list[Annotated[int, Field(ge=0)]] = Field([], description="Node ids (target: nodes).")
    count: Annotated[int, Field(ge=0)] = Field(0, description="How many random nodes (target: random).")
    crash: Annotated[int, Field(ge=1)] = Field(description="Round at which it goes down.")
    recover: Annotated[int, Field(ge=2)] | None = Field(None, description="Round at which it comes back.")

    @model_validator(mode="after")
    def _check(self) -> "FaultSpec":
        if self.recover is not None and self.recover <= self.crash:
            raise ValueError(f"recover ({self.recover}) must come after crash ({self.crash})")
        if self.target == "nodes" and not self.nodes:
            raise ValueError("target 'nodes' needs a non-empty 'nodes' list")
        if self.target == "random" and self.count < 1:
            raise ValueError("target 'random' needs 'count' of at least 1")
        return self


class AdaptiveClipSpec(Strict):
    quantile: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.5, description="Target share of updates left unclipped (Andrew et al. 2021's gamma).")
    lr: Annotated[float, Field(gt=0, le=10)] = Field(0.2, description="Geometric learning rate of the clip norm (eta).")
    count_noise: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Std of the noise on the unclipped count (sigma_b); null: participants / 20.")


class PrivacySpec(Strict):
    mechanism: Literal["none", "dp_sgd", "local", "central", "distributed"] = Field(
        "none", description="dp_sgd: sample-level DP in local training; local / central: client-level DP-FedAvg, noise at each node or at the server (star, mean rule); distributed: client-level DP under secure aggregation, each node adding its share of Skellam noise.")
    noise_multiplier: Annotated[float, Field(gt=0, le=1e4)] | None = Field(
        None, description="Noise std over the sensitivity (give this or target_epsilon).")
    target_epsilon: Annotated[float, Field(gt=0, le=1e4)] | None = Field(
        None, description="Each node's epsilon after all rounds; its noise is calibrated from it.")
    delta: Annotated[float, Field(gt=0, lt=1)] = Field(1e-5, description="The delta of (epsilon, delta).")
    clip: Annotated[float, Field(gt=0, le=1e6)] = Field(
        1.0, description="Clip norm C: of each sample's gradient (dp_sgd) or each update (client level).")
    accountant: Literal["rdp", "pld"] = Field("rdp", description="Accountant (dp-accounting): RDP or PLD.")
    adjacency: Literal["zero_out", "replace_one"] = Field(
        "zero_out", description="Client level: what a neighbouring dataset changes (sensitivity C or 2C).")
    budget: Annotated[float, Field(gt=0)] | None = Field(
        None, description="A node stops once one more round would take its epsilon past this.")
    adaptive_clip: AdaptiveClipSpec | None = Field(
        None, description="Central only: clip norm adapted to a quantile of the update norms.")

    @model_validator(mode="after")
    def _check(self) -> "PrivacySpec":
        if self.mechanism == "none":
            return self
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(f"{self.mechanism} needs exactly one of noise_multiplier and target_epsilon")
        if self.adaptive_clip is not None and self.mechanism != "central":
            raise ValueError("adaptive_clip applies to mechanism central only")
        return self


class SecureAggregationSpec(Strict):
    bucket_size: Annotated[int, Field(ge=2, le=100_000)] | None = Field(
        3, description="Nodes per bucket; each bucket's sum is revealed by its own SecAgg instance and the defense runs over the bucket means. null: one bucket of all participants (plain SecAgg: use the mean).")
    protocol: Literal["secagg", "secagg_plus"] = Field(
        "secagg", description="SecAgg (Bonawitz et al. 2017) or SecAgg+ (Bell et al. 2020, a sparse Harary graph where one fits).")
    bits: Annotated[int, Field(ge=8, le=64)] = Field(32, description="k of the ring Z_2^k.")
    clip: Annotated[float, Field(gt=0, le=1e6)] = Field(
        1.0, description="Each coordinate of an update is clipped to [-clip, clip] by the fixed-point encoding.")
    adversary: Literal["active", "honest_but_curious"] = Field(
        "active", description="Server model: active adds the signed consistency round.")
    validators: Annotated[int, Field(ge=1, le=1000)] = Field(
        4, description="Validators whose signatures seed the buckets after every update is committed.")


class LeakageSpec(Strict):
    membership: bool = Field(True, description="Membership inference: loss threshold and LiRA against the target node, loss threshold against the model an outsider sees.")
    inversion: bool = Field(True, description="Gradient inversion of single-sample updates of the target node.")
    node: Annotated[int, Field(ge=0)] | Literal["smallest"] = Field(
        "smallest", description="The target: an honest node's id, or the honest node with the smallest shard.")
    targets: Annotated[int, Field(ge=1, le=1000)] = Field(
        3, description="With node 'smallest': how many of the smallest honest shards to attack (membership scores pooled; inversion on the smallest).")
    members: Annotated[int, Field(ge=2, le=100_000)] = Field(
        500, description="At most this many member samples per target node, and as many test samples as non-members.")
    shadows: Annotated[int, Field(ge=0, le=256)] = Field(
        16, description="LiRA shadow models (0: the loss threshold alone).")
    inversion_attack: Literal["dlg", "inverting_gradients"] = Field(
        "dlg", description="DLG with iDLG labels, or Geiping et al.'s inverting gradients.")
    inversion_samples: Annotated[int, Field(ge=1, le=1000)] = Field(4, description="Samples rebuilt (and bucket sums attacked per bucket size).")
    inversion_buckets: list[Annotated[int, Field(ge=2, le=16)]] = Field(
        [2, 3], description="DLG also on revealed sums of this many single-sample updates of distinct honest nodes (SecAgg buckets).")
    inversion_steps: Annotated[int, Field(ge=1, le=100_000)] = Field(
        100, description="Optimiser iterations per sample (L-BFGS for DLG, Adam for inverting gradients).")


class EclipseSpec(Strict):
    """The eclipse attack on one victim's view, per sampler (:mod:`phalanx.range.eclipse`)."""

    honest: Annotated[int, Field(ge=1, le=249)] = Field(200, description="Honest peers, one /16 of 127.0.0.0/8 each.")
    sybils: Annotated[int, Field(ge=1, le=1_000_000)] = Field(2000, description="The attacker's addresses.")
    attacker_prefixes: Annotated[int, Field(ge=1, le=100)] = Field(2, description="The /16 prefixes they lie in.")
    view: Annotated[int, Field(ge=1, le=1000)] = Field(16, description="Slots in the victim's view (at most the honest peers: it starts among them).")
    pushes: Annotated[int, Field(ge=0, le=100_000)] = Field(16, description="Attacker addresses pushed to the victim each round.")
    rounds: Annotated[int, Field(ge=1, le=10_000)] = Field(30, description="Rounds of view updates and checkpoint offers.")
    seeds: Annotated[list[Annotated[int, Field(ge=0, lt=1 << 32)]], Field(min_length=1, max_length=100)] = Field(
        [0, 1, 2], description="Seeds averaged over.")
    witnesses: Annotated[int, Field(ge=1, le=100)] = Field(4, description="The log's witnesses; the attacker holds f = (n - 1) // 3 of them.")
    stall_after: Annotated[int, Field(ge=1, le=1000)] = Field(3, description="Rounds without a new final checkpoint before the defended victim reports a stall.")
    samplers: Annotated[list[Literal["push_pull", "brahms", "basalt"]], Field(min_length=1, max_length=3)] = Field(
        ["push_pull", "brahms", "basalt"], description="Victim samplers compared (phalanx.network.sampling).")


def _printable(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("control characters are not allowed")
    return value


class RollbackSpec(Strict):
    at: Annotated[int, Field(ge=2)] = Field(description="Round at whose start the validators roll back.")
    to_round: Annotated[int, Field(ge=0)] = Field(
        description="Round whose model the network resumes from (0: the starting model).")
    reason: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)] = Field(
        "scheduled by the scenario", description="Why, as the rollback entry says.")

    @model_validator(mode="after")
    def _check(self) -> "RollbackSpec":
        if self.to_round > self.at - 2:
            raise ValueError(f"to_round ({self.to_round}) must be at most at - 2 ({self.at - 2}): "
                             "a rollback reverts at least one round")
        return self


class LedgerSpec(Strict):
    enabled: bool = Field(True, description="Write the run's tamper-evident ledger, OUT/<run>/ledger.db.")
    keep_updates: bool = Field(
        True, description="Keep the bytes and salts behind every commitment in OUT/<run>/ledger-private, so the audit can replay each aggregate; off: hashes only.")
    validators: Annotated[int, Field(ge=1, le=100)] = Field(
        4, description="Validators who cosign checkpoints and vote: 3f + 1 of them, 2f + 1 make a checkpoint final (a committee topology's validators take their place).")
    checkpoint_every: Annotated[int, Field(ge=1, le=100_000)] = Field(
        1, description="Checkpoint every k rounds (and at the end).")
    rollback: RollbackSpec | None = Field(
        None, description="A governance-approved rollback, e.g. {at: 6, to_round: 3} (null: none).")


class RaySpec(Strict):
    workers: Annotated[int, Field(ge=1, le=4096)] = Field(
        2, description="Ray actors the nodes are sharded over (node i trains on actor i mod workers).")
    address: str | None = Field(
        None, description="An existing Ray cluster to join ('auto', 'ray://head:10001'); null starts a local one.")


class GroupSpec(Strict):
    name: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_]+$")] = Field(
        description="The group's name (letters, digits, _): its metrics are accuracy_<name>, attack_success_<name>.")
    model: PluginField = Field(description="The architecture this group trains.")
    nodes: Annotated[int, Field(ge=1, le=100_000)] = Field(description="How many of data.nodes are in this group.")


class DiversitySpec(Strict):
    groups: Annotated[list[GroupSpec], Field(min_length=2, max_length=16)] = Field(
        description="Groups of nodes, each training its own architecture in its own star; their node counts add up to data.nodes.")
    target_group: str | None = Field(
        None, description="Put every malicious node in this group (a poisoning tailored to one group); null: anywhere.")
    epsilon: Annotated[float, Field(gt=0, le=1)] = Field(
        0.1, description="L-infinity budget of the FGSM and PGD examples, in raw pixel units [0, 1].")
    pgd_steps: Annotated[int, Field(ge=1, le=1000)] = Field(10, description="PGD steps.")
    samples: Annotated[int, Field(ge=1, le=100_000)] = Field(500, description="Test images the transfer table is measured on.")

    def nodes_of(self, group: int) -> list[int]:
        start = sum(g.nodes for g in self.groups[:group])
        return list(range(start, start + self.groups[group].nodes))

    def index(self, name: str) -> int:
        return [g.name for g in self.groups].index(name)


class EvalSpec(Strict):
    every: Annotated[int, Field(ge=1, le=100_000)] = Field(1, description="Evaluate every k rounds.")


def _check_declared_f(value: Any) -> Any:
    ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
        ok = m is not None and float(m.group(1)) < 100
    if not ok:
        raise ValueError("expected a count >= 0 (e.g. 10) or a share below 100% (e.g. '20%')")
    return value


DeclaredF = Annotated[int | str | None, BeforeValidator(_check_declared_f)]


def _split_chain(data: Any) -> Any:
    """``aggregator: [pre..., rule]`` is shorthand for ``pre_aggregators`` plus ``aggregator``."""
    if isinstance(data, dict) and isinstance(data.get("aggregator"), list):
        chain = data["aggregator"]
        if not chain:
            raise ValueError("aggregator: an empty chain; name at least the rule")
        if data.get("pre_aggregators"):
            raise ValueError("aggregator: given as a chain and pre_aggregators is also set; use one")
        data = {**data, "pre_aggregators": chain[:-1], "aggregator": chain[-1]}
    return data


class Scenario(Strict):
    """One run of the range."""

    @model_validator(mode="before")
    @classmethod
    def _chain_shorthand(cls, data: Any) -> Any:
        return _split_chain(data)

    def declared(self) -> tuple[int | None, float | None]:
        """(count, share) of the declared f; the default share is the real malicious share."""
        f = self.declared_f
        if isinstance(f, int):
            return f, None
        if isinstance(f, str):
            return None, float(f.strip().rstrip("%").strip()) / 100
        sybils = self.adversary.sybils
        bad = self.adversary.malicious + (sybils.slots() if sybils is not None else 0)
        return None, bad / self.total_nodes()

    name: Annotated[str, Field(min_length=1, max_length=80)] = Field("run", description="Run name.")
    description: str = Field("", description="Free text shown in the report.")
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = Field(0, description="Seed of every random choice.")
    rounds: Annotated[int, Field(ge=1, le=100_000)] = Field(30, description="Number of rounds.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA if available.")
    plugins: list[str] = Field([], description="Python modules to import first (user plug-ins).")
    data: DataSpec = DataSpec()
    model: PluginField = Field(Plugin(name="mlp"), description="Model to train.")
    train: TrainSpec = TrainSpec()
    topology: TopologySpec = TopologySpec()
    pre_aggregators: list[PluginField] = Field(
        [], description="Pre-aggregators run in this order before the rule (e.g. [arc, nnm]). Writing `aggregator: [arc, nnm, trimmed_mean]` sets both.")
    aggregator: PluginField = Field(Plugin(name="mean"), description="Aggregation rule (the last stage of the defense chain).")
    declared_f: DeclaredF = Field(
        None, description="The f the defense assumes, per receiver: a count (10), a share of the rows it aggregates ('20%', rounded up), or null for the real malicious share. The real f is adversary.malicious.")
    adversary: AdversarySpec = AdversarySpec()
    faults: list[FaultSpec] = Field([], description="Crash and recovery schedule.")
    privacy: PrivacySpec = PrivacySpec()
    screens: list[PluginField] = Field(
        [], description="Sender-aware defenses in front of the chain, in order: foolsgold, flame, norm_bound, reputation.")
    quarantine: QuarantineSpec | None = Field(
        None, description="Validators quarantine nodes flagged for several rounds (null: flags are only measured).")
    provenance: ProvenanceSpec | None = Field(
        None, description="Dataset commitments at registration and an auditor's spot checks (null: none).")
    secure_aggregation: SecureAggregationSpec | None = Field(
        None, description="Star only: bucketed secure aggregation (null: the server sees every update).")
    leakage: LeakageSpec | None = Field(None, description="After the run, attack its privacy (null: no attack).")
    eclipse: EclipseSpec | None = Field(
        None, description="After the run, the eclipse attack on a victim's view, with and without the defenses (null: none).")
    ledger: LedgerSpec = Field(LedgerSpec(), description="The run's tamper-evident ledger (grids turn it off).")
    engine: Literal["local", "ray"] = Field(
        "local", description="Where local training runs: in this process, or sharded over Ray actors.")
    ray: RaySpec = RaySpec()
    diversity: DiversitySpec | None = Field(
        None, description="Model diversity: groups of nodes training different architectures, an ensemble, and a transfer table (null: one model).")
    eval: EvalSpec = EvalSpec()

    def total_nodes(self) -> int:
        """Every node slot: the honest ``data.nodes`` plus the Sybil swarm's slots."""
        sybils = self.adversary.sybils
        return self.data.nodes + (sybils.slots() if sybils is not None else 0)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Scenario":
        n = self.total_nodes()
        if self.adversary.sybils is not None and self.adversary.malicious:
            raise _FieldError("adversary.malicious", self.adversary.malicious,
                              "with adversary.sybils the malicious nodes are its identities; set 0")
        for i, node in enumerate(self.provenance.corrupt if self.provenance else []):
            if node >= n:
                raise _FieldError(f"provenance.corrupt.{i}", node, f"node ids must be below {n}")
        if self.diversity is not None:
            self._check_diversity()
        if (self.screens or self.quarantine is not None or self.provenance is not None) \
                and (self.secure_aggregation is not None or self.privacy.mechanism == "central"):
            raise _FieldError("screens", [p.name for p in self.screens], "screens, quarantine and audits "
                              "read each update; secure aggregation and central DP hide them from the server")
        if self.adversary.malicious > n:
            raise _FieldError("adversary.malicious", self.adversary.malicious,
                               f"more malicious nodes than nodes ({n})")
        for i, f in enumerate(self.faults):
            bad = [j for j in f.nodes if j >= n]
            if bad:
                raise _FieldError(f"faults.{i}.nodes", bad, f"node ids must be below {n}")
            if f.count > n:
                raise _FieldError(f"faults.{i}.count", f.count, f"more than the {n} nodes")
            if f.target == "server" and self.topology.name != "star":
                raise _FieldError(f"faults.{i}.target", "server", "only a star has a server")
        if self.eclipse is not None:
            self._check_eclipse(self.eclipse)
        if isinstance(self.leakage, LeakageSpec) and isinstance(self.leakage.node, int) \
                and self.leakage.node >= n:
            raise _FieldError("leakage.node", self.leakage.node, f"node ids must be below {n}")
        if self.secure_aggregation is not None:
            if self.topology.name != "star":
                raise _FieldError("secure_aggregation", "set", "secure aggregation needs a star's server")
            if self.privacy.mechanism == "central":
                raise _FieldError("privacy.mechanism", "central", "under secure aggregation the "
                                  "server never sees the sum before it is revealed; use distributed")
        if self.privacy.mechanism == "distributed":
            if self.secure_aggregation is None:
                raise _FieldError("privacy.mechanism", "distributed",
                                  "distributed noise is added under secure aggregation: set secure_aggregation")
            if self.privacy.accountant != "rdp":
                raise _FieldError("privacy.accountant", self.privacy.accountant,
                                  "distributed (Skellam) noise is accounted in RDP only")
        self._check_weighting()
        rollback = self.ledger.rollback
        if rollback is not None:
            if not self.ledger.enabled:
                raise _FieldError("ledger.rollback", rollback.model_dump(), "a rollback is logged: it needs "
                                  "ledger.enabled")
            if rollback.at > self.rounds:
                raise _FieldError("ledger.rollback.at", rollback.at, f"after the last round ({self.rounds})")
        if self.privacy.mechanism == "central":
            if self.topology.name != "star":
                raise _FieldError("privacy.mechanism", "central",
                                  "central DP needs a star's server; use local or dp_sgd in gossip")
            if self.pre_aggregators or self.aggregator.name != "mean":
                raise _FieldError("privacy.mechanism", "central", "central DP noises the mean of "
                                  "clipped updates: it needs aggregator mean with no pre-aggregator")
        return self

    def weighting(self, logged: bool | None = None) -> str:
        """The star's weights: ``topology.weighting``, or when unset, samples for a run that writes
        no public log and uniform for one that does (``logged``: default ``ledger.enabled``; a
        deployed node always logs). A weight the log shows is never an exact count
        (:mod:`phalanx.privacy.counts`)."""
        logged = self.ledger.enabled if logged is None else logged
        return self.topology.weighting or ("uniform" if logged else "samples")

    def _check_weighting(self) -> None:
        t = self.topology
        weighting = self.weighting()
        if weighting == "samples" and self.ledger.enabled and self.topology.name != "gossip":
            raise _FieldError("topology.weighting", "samples", "the ledger logs each update's weight, so exact "
                              "claimed counts would be public: use uniform or noised (with count_noise), "
                              "or turn the ledger off")
        if (weighting == "noised") != (t.count_noise is not None):
            raise _FieldError("topology.count_noise", t.count_noise,
                              "weighting noised needs count_noise, and only it uses one")
        if weighting == "noised" and self.privacy.mechanism in ("local", "central", "distributed"):
            raise _FieldError("topology.weighting", "noised", f"under client-level DP ({self.privacy.mechanism}) a "
                              "count's sensitivity is the whole count: use uniform")
        if weighting == "noised" and self.privacy.target_epsilon is not None:
            raise _FieldError("topology.weighting", "noised", "a target epsilon is calibrated for training "
                              "alone and the count's release would spend on top of it: give noise_multiplier")

    def _check_diversity(self) -> None:
        d = self.diversity
        total = sum(g.nodes for g in d.groups)
        if total != self.data.nodes:
            raise _FieldError("diversity.groups", [g.nodes for g in d.groups],
                              f"the groups' nodes add up to {total}, not data.nodes = {self.data.nodes}")
        names = [g.name for g in d.groups]
        if len(set(names)) != len(names):
            raise _FieldError("diversity.groups", names, "two groups share a name")
        if d.target_group is not None:
            if d.target_group not in names:
                raise _FieldError("diversity.target_group", d.target_group, f"no such group; have {', '.join(names)}")
            size = d.groups[d.index(d.target_group)].nodes
            if self.adversary.malicious > size:
                raise _FieldError("adversary.malicious", self.adversary.malicious,
                                  f"more than the {size} nodes of group {d.target_group}")
        if self.topology.name != "star":
            raise _FieldError("topology.name", self.topology.name, "with diversity each group is a star")
        if self.faults:
            raise _FieldError("faults", len(self.faults), "not available with diversity")
        for what, on in (("screens", bool(self.screens)), ("adversary.sybils", self.adversary.sybils is not None),
                         ("secure_aggregation", self.secure_aggregation is not None),
                         ("privacy.mechanism", self.privacy.mechanism != "none"), ("leakage", self.leakage is not None),
                         ("quarantine", self.quarantine is not None), ("provenance", self.provenance is not None)):
            if on:
                raise _FieldError(what, "set", "not available with diversity (each group runs the plain chain)")

    @staticmethod
    def _check_eclipse(e: EclipseSpec) -> None:
        if e.honest + e.attacker_prefixes > 250:
            raise _FieldError("eclipse.attacker_prefixes", e.attacker_prefixes,
                              f"{e.honest} honest /16s and the attacker's must fit in 127.0.0.0/8's 250")
        if e.view > e.honest:
            raise _FieldError("eclipse.view", e.view, f"the victim's first view is drawn from the {e.honest} honest peers")
        if -(-e.sybils // e.attacker_prefixes) >= 1 << 16:
            raise _FieldError("eclipse.sybils", e.sybils, f"more than a /16 holds in each of {e.attacker_prefixes} prefixes")
        if len(set(e.samplers)) != len(e.samplers):
            raise _FieldError("eclipse.samplers", e.samplers, "a sampler is named twice")

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


class _FieldError(ValueError):
    def __init__(self, path: str, value: Any, problem: str):
        self.path, self.value, self.problem = path, value, problem
        super().__init__(f"{path}: {problem} (got {value!r})")


# -- plug-in names and hyper-parameters ----------------------------------------------------------
def plugin_slots() -> list[tuple[str, Registry]]:
    """(path in the scenario, registry) for every plug-in field (``pre_aggregators`` is a list)."""
    from phalanx.aggregate import AGGREGATORS, PRE_AGGREGATORS
    from phalanx.attacks import DATA_ATTACKS, UPDATE_ATTACKS
    from phalanx.data import DATASETS, PARTITIONERS
    from phalanx.defenses import ADMISSION, READMISSION, SCREENS
    from phalanx.models import MODELS
    from phalanx.network import GRAPHS

    return [
        ("data.dataset", DATASETS), ("data.partition", PARTITIONERS), ("model", MODELS),
        ("topology.graph", GRAPHS), ("pre_aggregators", PRE_AGGREGATORS), ("aggregator", AGGREGATORS),
        ("adversary.update_attack", UPDATE_ATTACKS), ("adversary.data_attack", DATA_ATTACKS),
        ("adversary.sybils.admission", ADMISSION), ("screens", SCREENS), ("quarantine.readmit", READMISSION),
        ("diversity.groups[].model", MODELS),
    ]


def _lookup(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part)
    return obj


def _specs(scenario: Scenario, path: str) -> list[tuple[str, Plugin]]:
    """(path, spec) of each plug-in at ``path``: one, none, or a list's items.

    ``a.b[].c`` is the plug-in ``c`` of every item of the list ``a.b``.
    """
    if "[]." in path:
        head, tail = path.split("[].", 1)
        items = _lookup(scenario, head) or []
        return [(f"{head}.{i}.{p}", spec) for i, item in enumerate(items) for p, spec in _specs(item, tail)]
    spec = _lookup(scenario, path)
    if spec is None:
        return []
    if isinstance(spec, list):
        return [(f"{path}.{i}", item) for i, item in enumerate(spec)]
    return [(path, spec)]


def check_plugins(scenario: Scenario) -> None:
    """Every plug-in name is registered and its hyper-parameters fit its signature."""
    for slot, registry in plugin_slots():
        for path, spec in _specs(scenario, slot):
            if slot in ("aggregator", "pre_aggregators") and "f" in spec.params:
                raise ScenarioError(f"{path}.f: set the f a defense assumes with declared_f, "
                                    f"not per stage (got {spec.params['f']!r})")
            try:
                registry.validate(spec.name, spec.params)
            except PluginError as e:
                raise ScenarioError(f"{path}.name: {e} (got {spec.name!r})") from None
            except pydantic.ValidationError as e:
                allowed = sorted(registry.params_model(spec.name).model_fields)
                raise ScenarioError(format_validation_error(e, prefix=path, allowed=allowed)) from None


def with_plugin_defaults(scenario: Scenario) -> Scenario:
    """The scenario with every plug-in's defaults filled in, so equal configs hash equally."""
    data = scenario.model_dump(mode="json")
    for slot, registry in plugin_slots():
        for path, spec in _specs(scenario, slot):
            node = data
            *parents, leaf = path.split(".")
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            full = {"name": spec.name, **registry.validate(spec.name, spec.params)}
            if slot in ("aggregator", "pre_aggregators"):
                full.pop("f", None)  # the engine passes declared_f per receiver
            if isinstance(node, list):
                node[int(leaf)] = full
            else:
                node[leaf] = full
    return Scenario.model_validate(data)


# -- loading ---------------------------------------------------------------------------------------
def default_study_path() -> Path:
    return Path(str(resources.files("phalanx.range").joinpath("studies/default.yaml")))


def network_task_path() -> Path:
    """The built-in task of ``phalanx up`` (a single scenario)."""
    return Path(str(resources.files("phalanx.range").joinpath("studies/network.yaml")))


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(f"{path}: cannot read: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ScenarioError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: the top level must be a mapping of fields, got {type(data).__name__}")
    return data


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}``; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ScenarioError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=0.1")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ScenarioError(f"--set {item!r}: {part} is set twice")
        node[parts[-1]] = value
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_entry_point_plugins() -> None:
    """Import every module that installed packages expose in the ``phalanx.plugins`` group."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="phalanx.plugins"):
        try:
            entry.load()
        except Exception as e:  # a third-party package may fail in any way
            raise ScenarioError(f"plugins: entry point {entry.name!r} ({entry.value}) failed to load: "
                                f"{type(e).__name__}: {e}") from None


def import_plugins(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # a user's module may fail in any way
            raise ScenarioError(f"plugins: cannot import {name!r}: {type(e).__name__}: {e}") from None


def load_study(
    path: Path | None, overrides: dict[str, Any] | None = None, seed: int | None = None
) -> tuple[str, str, list[Scenario]]:
    """Read a scenario or study file; return (study name, description, validated runs)."""
    source = path or default_study_path()
    raw = load_yaml(source)
    raw_runs = raw.pop("runs", None)
    study = str(raw.pop("study", source.stem))
    description = str(raw.pop("study_description", ""))
    overrides = dict(overrides or {})
    if seed is not None:
        overrides["seed"] = seed
    load_entry_point_plugins()
    if raw_runs is None:
        merged = [("", merge_scenario(raw, overrides))]
    elif not isinstance(raw_runs, list) or not raw_runs:
        raise ScenarioError(f"{source}: runs: expected a non-empty list of runs")
    else:
        merged = []
        for i, run in enumerate(raw_runs):
            if not isinstance(run, dict):
                raise ScenarioError(f"{source}: runs.{i}: expected a mapping, got {run!r}")
            label = f"run {run.get('name', i)!r}: "
            merged.append((label, merge_scenario(merge_scenario(raw, run), overrides)))
    runs, folders = [], {}
    for label, data in merged:
        try:
            import_plugins(_plugin_modules(data.get("plugins", [])))
            scenario = Scenario.model_validate(data)
            check_plugins(scenario)
            scenario = with_plugin_defaults(scenario)
        except pydantic.ValidationError as e:
            raise ScenarioError(f"{source}: {label}{format_validation_error(e)}") from None
        except ScenarioError as e:
            raise ScenarioError(f"{source}: {label}{e}") from None
        folder = slug(scenario.name)
        if scenario.name in folders.values():
            raise ScenarioError(f"{source}: {label}name: two runs are named {scenario.name!r}")
        if folder in folders:
            raise ScenarioError(f"{source}: {label}name: runs {folders[folder]!r} and {scenario.name!r} "
                                f"would share the output folder {folder!r}; rename one")
        folders[folder] = scenario.name
        runs.append(scenario)
    return study, description, runs


def slug(name: str) -> str:
    """The run's output folder name: ``name`` with anything but letters, digits, ``._-`` as ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def _plugin_modules(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ScenarioError(f"plugins: expected a list of module names (got {value!r})")
    return value


def merge_scenario(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``deep_merge``, except that a plug-in given a new name starts from fresh parameters.

    Merging ``{name: iid}`` over ``{name: dirichlet, alpha: 0.5}`` must not keep ``alpha``: the
    hyper-parameters belong to the plug-in they were written for.
    """
    merged = deep_merge(base, over)
    if isinstance(over.get("aggregator"), list) and "pre_aggregators" not in over:
        merged.pop("pre_aggregators", None)  # a chain given in full replaces the base's chain
    for path, _ in plugin_slots():
        *parents, leaf = path.split(".")
        b, o, m = base, over, merged
        for part in parents:
            b = b.get(part) if isinstance(b, dict) else None
            o = o.get(part) if isinstance(o, dict) else None
            m = m.get(part) if isinstance(m, dict) else None
        if not (isinstance(o, dict) and isinstance(m, dict) and leaf in o):
            continue
        new, old = o[leaf], (b or {}).get(leaf) if isinstance(b, dict) else None
        new_name = new if isinstance(new, str) else (new.get("name") if isinstance(new, dict) else None)
        old_name = old if isinstance(old, str) else (old.get("name") if isinstance(old, dict) else None)
        if new_name is not None and new_name != old_name:
            m[leaf] = copy.deepcopy(new)
    return merged


# -- one-line errors -------------------------------------------------------------------------------
def format_validation_error(
    error: pydantic.ValidationError, prefix: str = "", allowed: list[str] | None = None
) -> str:
    """The first error as one line: ``path: problem (got value)``, plus a count of the rest.

    ``allowed`` lists the keys accepted where an unknown key was found, when the caller knows them
    better than the schema (a plug-in's hyper-parameters)."""
    errors = error.errors(include_url=False)
    first = errors[0]
    loc = [str(p) for p in first["loc"] if not str(p).startswith("function-")]
    path = ".".join([prefix, *loc] if prefix else loc) or "(top level)"
    ctx_error = (first.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _FieldError):
        line = f"{ctx_error.path}: {ctx_error.problem} (got {ctx_error.value!r})"
    elif first["type"] == "extra_forbidden":
        keys = allowed if allowed is not None else _allowed_keys(error.title, loc[:-1])
        hint = f"; allowed: {', '.join(keys) or '(none)'}" if keys is not None else ""
        line = f"{path}: unknown key{hint}"
    elif first["type"] == "missing":
        line = f"{path}: required field is missing"
    else:
        msg = first["msg"].removeprefix("Value error, ")
        line = f"{path}: {msg[0].lower() + msg[1:]} (got {first.get('input')!r})"
    more = len(errors) - 1
    return line + (f" (+{more} more problem{'s' if more > 1 else ''})" if more else "")


def _allowed_keys(title: str, loc: list[str]) -> list[str]:
    model: Any = Scenario if title == "Scenario" else None
    if model is None:
        return []
    for part in loc:
        if part.isdigit():
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)
                      and issubclass(a, BaseModel)), ann)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return sorted(model.model_fields)
