"""Model diversity: groups of nodes training different architectures, and their ensemble.

A monoculture fails all at once: one adversarial example, one backdoor crafted for the model
everyone runs, breaks every node. Here the nodes are split into groups, each training its own
architecture (logistic regression, an MLP, a CNN) and aggregating within itself (a star per
group, each with the run's defense chain), and the groups' global models vote as an ensemble
(the mean of their softmax outputs; Dietterich 2000, "Ensemble methods in machine learning",
on why independent errors average out).

Each round every group runs its own round (:class:`~phalanx.engine.simulation.Simulation`), and
the record holds each group's accuracy (``accuracy_<group>``) and attack success rate
(``attack_success_<group>``) beside the ensemble's (``accuracy``, ``attack_success``).

After the run, :meth:`Diversity.transfer` measures transfer: FGSM and PGD examples crafted
against each group's model (white-box) and against the ensemble, and their success on every
group and on the ensemble (:mod:`phalanx.attacks.adversarial`). A poisoning attack aimed at one
group (its malicious nodes all in that group) shows in the per-group success rates: what the
ensemble keeps of it is what diversity bought.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from phalanx.attacks import SuccessSet
from phalanx.attacks.adversarial import fgsm, pgd, success_rate
from phalanx.core.seeding import generator
from phalanx.engine.simulation import Simulation


@dataclass
class Diversity:
    names: list[str]  # one per group
    groups: list[Simulation]  # each a star over its own nodes
    nodes: list[list[int]]  # each group's node ids in the whole network
    test_x: torch.Tensor
    test_y: torch.Tensor
    success: SuccessSet | None = None
    seed: int = 0
    events: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, sim in zip(self.names, self.groups):
            if sim.topology.kind != "star":
                raise ValueError(f"diversity: group {name} must be a star (each group aggregates within itself)")
        self.guard = None

    # -- what the runner reads from a simulation -------------------------------------------------
    @property
    def rejected(self) -> torch.Tensor:
        n = sum(len(ns) for ns in self.nodes)
        out = torch.zeros(n, dtype=torch.int64)
        for ids, sim in zip(self.nodes, self.groups):
            out[torch.as_tensor(ids)] = sim.rejected
        return out

    @property
    def aggregator(self):
        return self.groups[0].aggregator

    def parameters(self) -> dict[str, int]:
        return {name: int(sim.rows.shape[1]) for name, sim in zip(self.names, self.groups)}

    # -- rounds ------------------------------------------------------------------------------------
    def logits(self, x: torch.Tensor, group: int) -> torch.Tensor:
        sim = self.groups[group]
        sim.flat_model.flat.copy_(sim.global_row)
        return sim.flat_model.module(x)

    def ensemble_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the mean of the groups' softmax outputs (what the ensemble votes with)."""
        probs = torch.stack([self.logits(x, g).softmax(1) for g in range(len(self.groups))]).mean(0)
        return probs.clamp(min=1e-12).log()

    @torch.no_grad()
    def evaluate(self) -> dict:
        out: dict = {}
        accs = []
        for g, name in enumerate(self.names):
            acc = float((self.logits(self.test_x, g).argmax(1) == self.test_y).double().mean())
            out[f"accuracy_{name}"] = acc
            accs.append(acc)
            if self.success is not None:
                out[f"attack_success_{name}"] = float(
                    (self.logits(self.success.inputs, g).argmax(1) == self.success.target).double().mean())
        out["accuracy"] = float((self.ensemble_logits(self.test_x).argmax(1) == self.test_y).double().mean())
        out["accuracy_min"], out["accuracy_max"] = min(accs), max(accs)
        if self.success is not None:
            out["attack_success"] = float(
                (self.ensemble_logits(self.success.inputs).argmax(1) == self.success.target).double().mean())
        return out

    def run(self, rounds: int, start: int = 1) -> Iterator[dict]:
        t_start = time.perf_counter()
        for r in range(start, rounds + 1):
            t0 = time.perf_counter()
            info: dict = {}
            for name, sim in zip(self.names, self.groups):
                got = sim.step(r)
                info[f"participants_{name}"] = got["participants"]
                info["availability"] = min(info.get("availability", 1.0), got["availability"])
            self._collect_events()
            info.update(self.evaluate())
            now = time.perf_counter()
            yield {"round": r, **info, "wall_time_s": now - t0, "elapsed_s": now - t_start}

    def _collect_events(self) -> None:
        """The groups' new events, named by group, with node ids of the whole network."""
        taken = self.__dict__.setdefault("_taken", [0] * len(self.groups))
        for g, (name, sim) in enumerate(zip(self.names, self.groups)):
            ids = self.nodes[g]
            local = lambda t: ids[t] if isinstance(t, int) and 0 <= t < len(ids) else t  # noqa: E731
            for e in sim.events[taken[g]:]:
                target = e.get("target")
                target = [local(t) for t in target] if isinstance(target, list) else local(target)
                self.events.append({**e, "target": target, "text": f"group {name}: {e.get('text', '')}"})
            taken[g] = len(sim.events)

    # -- transfer ------------------------------------------------------------------------------------
    def transfer(self, epsilon: float, steps: int, samples: int, low: float, high: float) -> dict:
        """Success of FGSM and PGD examples from each source (group or ensemble) on each target."""
        x, y = self.test_x[:samples], self.test_y[:samples]
        models = {name: (lambda inp, g=g: self.logits(inp, g)) for g, name in enumerate(self.names)}
        models["ensemble"] = self.ensemble_logits
        table: dict = {"epsilon": epsilon, "steps": steps, "samples": int(len(y)), "fgsm": {}, "pgd": {}}
        g = generator(self.seed, "transfer", device=x.device)
        for source, model in models.items():
            crafted = {"fgsm": fgsm(model, x, y, epsilon, low, high),
                       "pgd": pgd(model, x, y, epsilon, low, high, steps=steps, generator=g)}
            for attack, adv in crafted.items():
                table[attack][source] = {target: round(success_rate(m, x, adv, y)[0], 4)
                                         for target, m in models.items()}
        return table
