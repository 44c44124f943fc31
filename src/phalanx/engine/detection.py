"""Detection metrics: how well the nodes a defense flags match the nodes that are malicious.

Each round the guard (:mod:`phalanx.engine.guard`) knows which present nodes the network flags
(a quorum of validators votes against them, or they are quarantined) and, being a simulation,
which are truly malicious. Against that truth:

    precision = TP / (TP + FP),   recall = TP / (TP + FN),   F1 = 2 P R / (P + R),

counted over the network's members that round: the nodes that have joined (quarantined ones
included, so a mistaken quarantine keeps counting as a false flag). With nothing flagged,
precision is 0 unless no malicious node is present either (then every figure is 1: nothing to
find, nothing wrongly found); with no malicious node present, recall is 1.

**Time to detection** of a malicious node is the number of rounds from its arrival to the first
round it is flagged (0: flagged in the round it arrived). **Honest nodes quarantined by mistake**
counts every honest node that was ever quarantined.
"""

from __future__ import annotations

import torch


def scores(flagged: torch.Tensor, malicious: torch.Tensor, present: torch.Tensor) -> dict[str, float]:
    """Precision, recall and F1 of ``flagged`` against ``malicious`` over the ``present`` nodes."""
    f, m = flagged & present, malicious & present
    tp = int((f & m).sum())
    fp = int((f & ~m).sum())
    fn = int((~f & m).sum())
    if tp + fp == 0:
        precision = 1.0 if int(m.sum()) == 0 else 0.0
    else:
        precision = tp / (tp + fp)
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"detect_precision": precision, "detect_recall": recall, "detect_f1": f1,
            "flagged": int(f.sum()), "false_flags": fp}


class DetectionLog:
    """First flag per node, across rounds, for the time to detection."""

    def __init__(self, malicious: torch.Tensor, joins: torch.Tensor):
        self.malicious = malicious.cpu()
        self.joins = joins.cpu()
        self.first = torch.full_like(self.joins, -1)
        self.f1: list[tuple[int, float]] = []

    def record(self, r: int, flagged: torch.Tensor, f1: float) -> None:
        fresh = flagged.cpu() & (self.first < 0)
        self.first[fresh] = r
        self.f1.append((r, f1))

    def summary(self, target_f1: float = 0.9) -> dict:
        """Per malicious node that arrived: detected or not and after how many rounds."""
        last = self.f1[-1][0] if self.f1 else 0
        arrived = self.malicious & (self.joins <= last)
        detected = self.malicious & (self.first >= 0)
        delays = (self.first - self.joins)[detected].tolist()
        arrival = int(self.joins[self.malicious].min()) if bool(self.malicious.any()) else None
        reach = next((r for r, f in self.f1 if f >= target_f1 and (arrival is None or r >= arrival)), None)
        return {
            "malicious_arrived": int(arrived.sum()), "malicious_detected": int(detected.sum()),
            "time_to_detection_mean": sum(delays) / len(delays) if delays else None,
            "time_to_detection_max": max(delays) if delays else None,
            "first_arrival": arrival,
            f"first_round_f1_{int(round(target_f1 * 100))}": reach,
            "rounds_to_f1_target": None if reach is None or arrival is None else reach - arrival,
        }
