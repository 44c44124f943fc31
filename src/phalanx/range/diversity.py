"""A scenario's ``diversity`` section: one star per group of nodes, each with its own model.

:func:`build_diverse` builds each group's run with :func:`phalanx.range.runner.build` (the whole
network's partition, malicious nodes and poisoning, restricted to the group's nodes) and puts
them together as a :class:`~phalanx.engine.diversity.Diversity`, which the study runs like any
simulation. :func:`transfer_table` is the after-run measurement the summary keeps: FGSM and PGD
examples from each group's model and from the ensemble, and their success on every group and on
the ensemble, at the section's ``epsilon`` (raw pixel units, converted to the standardized
inputs).
"""

from __future__ import annotations

from typing import Any

from phalanx.engine.diversity import Diversity
from phalanx.range.scenario import Scenario


def build_diverse(s: Scenario):
    """The run of a diverse network: every group's star, with the ensemble on top."""
    from phalanx.range.runner import BuiltRun, build

    spec = s.diversity
    runs = [build(s, group=g) for g in range(len(spec.groups))]
    first = runs[0].simulation
    nodes = [spec.nodes_of(g) for g in range(len(spec.groups))]
    malicious = sorted(nodes[g][i] for g, b in enumerate(runs) for i in b.malicious)
    sim = Diversity([g.name for g in spec.groups], [b.simulation for b in runs], nodes, first.test_x,
                    first.test_y, first.success, seed=s.seed)
    return BuiltRun(s, sim, runs[0].dataset, runs[0].partition, None, malicious, runs[0].events)


def transfer_table(b: Any) -> dict:
    """The transfer table of a finished diverse run (see the module docstring)."""
    spec, dataset = b.scenario.diversity, b.dataset
    low, high = float(dataset.standardize(0.0)), float(dataset.standardize(1.0))
    epsilon = spec.epsilon * (high - low)  # raw [0, 1] units -> the standardized input space
    table = b.simulation.transfer(epsilon, spec.pgd_steps, spec.samples, low, high)
    table["epsilon_raw"] = spec.epsilon
    return table
