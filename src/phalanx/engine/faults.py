"""Crashes and recoveries, by round.

A fault takes down the star's server, or a set of nodes, at the start of round ``crash`` and
brings it back at the start of round ``recover`` (never, if ``recover`` is ``None``). A crashed
node neither trains, sends nor aggregates; it keeps its last model and resumes from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Fault:
    nodes: tuple[int, ...]  # empty for the server
    crash: int
    recover: int | None = None
    server: bool = False

    def down(self, round_: int) -> bool:
        return self.crash <= round_ and (self.recover is None or round_ < self.recover)

    def describe(self) -> str:
        who = "server" if self.server else (
            f"node {self.nodes[0]}" if len(self.nodes) == 1 else f"{len(self.nodes)} nodes"
        )
        return f"{who} crashes" if self.recover is None else f"{who} down until round {self.recover}"


class FaultSchedule:
    def __init__(self, faults: list[Fault], num_nodes: int):
        for f in faults:
            bad = [i for i in f.nodes if not 0 <= i < num_nodes]
            if bad:
                raise ValueError(f"fault names nodes {bad} outside 0..{num_nodes - 1}")
        self.faults = list(faults)
        self.num_nodes = num_nodes

    def alive(self, round_: int) -> torch.Tensor:
        up = torch.ones(self.num_nodes, dtype=torch.bool)
        for f in self.faults:
            if f.nodes and f.down(round_):
                up[list(f.nodes)] = False
        return up

    def server_alive(self, round_: int) -> bool:
        return not any(f.server and f.down(round_) for f in self.faults)

    def events(self) -> list[dict]:
        out = []
        for f in self.faults:
            target = "server" if f.server else list(f.nodes)
            out.append({"round": f.crash, "kind": "crash", "target": target, "text": f.describe()})
            if f.recover is not None:
                out.append({"round": f.recover, "kind": "recover", "target": target,
                            "text": "server recovers" if f.server else "nodes recover"})
        return sorted(out, key=lambda e: e["round"])
