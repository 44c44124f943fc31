"""What a finished run leaks: membership inference and gradient inversion against its nodes.

After a run whose scenario has a ``leakage`` section, the range attacks it as an honest-but-curious
receiver would, with what the protocol showed that receiver (:mod:`phalanx.attacks.membership`,
:mod:`phalanx.attacks.inversion`):

- **Target nodes.** Honest nodes that took part: by default the ``targets`` with the smallest
  shards (small shards overfit, which is where the risk is), or the node the scenario names.
- **Membership, against those nodes** (scores pooled over them into one ROC curve). Each one's
  *released* model, the base it trained from plus the
  update as it left the node (after its local DP noise, if any; a server that adds central
  noise sees the update in the clear). Members: the node's training samples; non-members: as
  many test samples. The loss-threshold attack, and LiRA with ``shadows`` shadow models trained
  the way the node trains (same base, epochs, batch, learning rate and DP mechanism) on random
  halves of the candidates.
- **Membership, against the model an outsider sees** (the star's global model; in gossip, the
  target node's current model), with members drawn from every honest node's data: the loss
  threshold only. LiRA's shadows would each be a whole federated run, out of reach on a CPU.
- **Inversion.** A single update of one sample from the node's shard, one local step from the
  run's initial model (a node's first update, from the model everyone starts from: Zhu et al.'s
  setting), released as the run's mechanism releases it: the plain gradient, a DP-SGD step on a
  batch of that one sample (clipped, noised), or a local-DP update. DLG (or inverting gradients)
  rebuilds the sample; PSNR and SSIM against the truth, and the share above 20 dB. The same on
  revealed bucket sums of ``s`` such updates from distinct honest nodes (``inversion_buckets``,
  2 and 3 by default): DLG rebuilds ``s`` images from the sum. From a
  trained base DLG's L-BFGS search mostly fails even without any defence (measured: 2 to 11 dB
  on the MLP after 3 rounds), so the first update is the exposure that counts.

**Non-members** are test samples drawn with the members' label mix (the same count per class,
as far as the test set has them): a node's shard is label-skewed, and uniform test samples
would score as non-members merely for belonging to classes the node never saw.

Each run reports these beside its epsilon, so a study with runs at several privacy levels reads
as curves of leakage against epsilon (:mod:`phalanx.range.report`).
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
import torch.nn.functional as F

from phalanx.attacks.inversion import dlg, image_quality, inverting_gradients
from phalanx.attacks.membership import (lira_scores, loss_threshold_scores, roc_metrics,
                                        scaled_confidence)
from phalanx.core.seeding import derive_seed, generator
from phalanx.privacy.client import clip_updates
from phalanx.privacy.dpsgd import DPSGD
from phalanx.train import Shards, train_nodes

RECOVERED_DB = 20.0  # a reconstruction above this PSNR counts as recovered (the bar)


def evaluate(built, spec) -> dict[str, Any]:
    """The leakage metrics of a finished run (``built``: a :class:`~phalanx.range.runner.BuiltRun`)."""
    sim = built.simulation
    nodes = _target_nodes(sim, spec)
    if not nodes:
        return {"error": "no honest node released an update, so there is nothing to attack"}
    seed = built.scenario.seed
    node = nodes[0]
    eps = [_node_epsilon(sim, n) for n in nodes]
    out: dict[str, Any] = {"target_node": node, "target_nodes": nodes,
                           "shard_size": int(sim.shards.sizes[node]),
                           "shard_sizes": [int(sim.shards.sizes[n]) for n in nodes],
                           "epsilon_node": None if eps[0] is None else max(eps)}
    test_x, test_y = built.dataset.x_test.to(sim.rows.device), built.dataset.y_test.to(sim.rows.device)
    if spec.membership:
        out["membership"] = {
            "node": _membership_nodes(sim, nodes, spec, test_x, test_y, seed),
            "outsider": _membership_outsider(sim, node, spec, test_x, test_y, seed),
        }
    if spec.inversion:
        out["inversion"] = _inversion(sim, node, spec, built.dataset, seed)
    return out


def _target_nodes(sim, spec) -> list[int]:
    """The attacked nodes: the one the scenario names, or the ``targets`` honest nodes with the
    smallest shards among those that released an update."""
    released = ~sim.released.isnan().any(1) & sim.honest & (sim.shards.sizes > 0)
    if spec.node != "smallest":
        return [int(spec.node)] if bool(released[int(spec.node)]) else []
    candidates = released.nonzero().squeeze(1)
    order = sim.shards.sizes[candidates].argsort(stable=True)
    return candidates[order][: spec.targets].tolist()


def _node_epsilon(sim, node: int) -> float | None:
    return None if sim.privacy is None else sim.privacy.ledger.epsilon(node)


def _logits_of(sim, row: torch.Tensor):
    fm = sim.flat_model
    return lambda x: fm.functional(row, x)


def _shard(sim, node: int) -> torch.Tensor:
    return sim.shards.index[node, : int(sim.shards.sizes[node])]


def _membership_nodes(sim, nodes, spec, test_x, test_y, seed) -> dict[str, Any]:
    """Membership against each target node's released model, scores pooled over the targets.

    A LiRA score is a log-likelihood ratio and a loss-threshold score a loss, so scores from
    different nodes' models are on one scale and one ROC curve covers them all.
    """
    loss_in, loss_out, lira_in, lira_out = [], [], [], []
    for node in nodes:
        g = generator(seed, "leakage", "members", node)
        own = _shard(sim, node)
        members = own[torch.randperm(len(own), generator=g)[: spec.members]]
        mx, my = sim.shards.x[members], sim.shards.y[members]
        members, mx, my, outside = _matched(members, mx, my, test_y, g)
        nx, ny = test_x[outside], test_y[outside]
        target = _logits_of(sim, sim.released[node])
        loss_in.append(loss_threshold_scores(target, mx, my))
        loss_out.append(loss_threshold_scores(target, nx, ny))
        if spec.shadows > 0:
            scores = _lira(sim, node, spec, torch.cat([mx, nx]), torch.cat([my, ny]), seed)
            lira_in.append(scores[: len(members)])
            lira_out.append(scores[len(members):])
    result = {"loss_threshold": roc_metrics(torch.cat(loss_in), torch.cat(loss_out))}
    if lira_in:
        result["lira"] = {**roc_metrics(torch.cat(lira_in), torch.cat(lira_out)), "shadows": spec.shadows}
    return result


def _matched(members, mx, my, test_y, g):
    """Test samples with the members' label counts; members of a class the test set has too few
    of are dropped, so both sides keep the same mix. Returns members, their x and y, non-members.
    """
    keep, outside = [], []
    for c in my.unique().tolist():
        mine = (my == c).nonzero().squeeze(1)
        theirs = (test_y == c).nonzero().squeeze(1)
        take = min(len(mine), len(theirs))
        keep.append(mine[:take])
        outside.append(theirs[torch.randperm(len(theirs), generator=g)[:take].to(theirs.device)])
    keep_t = torch.cat(keep) if keep else members[:0]
    return members[keep_t], mx[keep_t], my[keep_t], torch.cat(outside) if outside else keep_t


def _lira(sim, node, spec, px, py, seed) -> torch.Tensor:
    """LiRA scores of the candidates ``(px, py)`` against the node: shadows trained like it,
    from its base, on random halves of the candidates."""
    k, n = spec.shadows, len(py)
    g = generator(seed, "leakage", "shadows", node)
    # each candidate is in exactly half of the shadows (a balanced design: Carlini et al. 2022)
    inside = torch.stack([torch.randperm(k, generator=g) < k // 2 for _ in range(n)], dim=1)
    parts = [inside[j].nonzero().squeeze(1).to(px.device) for j in range(k)]
    shards = Shards.from_parts(px, py, parts)
    rows = sim.released_base[node].expand(k, -1).clone()
    dp = None
    if sim.privacy is not None and sim.privacy.mechanism == "dp_sgd":
        dp = DPSGD(sim.privacy.clip, sim.privacy.noise_multiplier[node].expand(k).float())
    base = rows.clone()
    train_nodes(sim.flat_model, rows, torch.arange(k, device=rows.device), shards, sim.sgd,
                generator(seed, "leakage", "shadow-batches"), sim.strategy, sim.chunk_size,
                sim.workers, dp=dp, noise_seed=derive_seed(seed, "leakage", "shadow-noise"))
    if sim.privacy is not None and sim.privacy.mechanism == "local":
        sent, _ = clip_updates(rows - base, sim.privacy.clip)
        noise = torch.randn(sent.shape, generator=generator(seed, "leakage", "shadow-local-dp"))
        rows = base + sent + noise.to(sent) * sim.privacy.noise_std(1)
    shadow_phi = torch.stack([scaled_confidence(_logits_of(sim, r), px, py) for r in rows])
    target_phi = scaled_confidence(_logits_of(sim, sim.released[node]), px, py)
    return lira_scores(target_phi, shadow_phi, inside.to(shadow_phi.device))


def _membership_outsider(sim, node, spec, test_x, test_y, seed) -> dict[str, Any]:
    g = generator(seed, "leakage", "outsider")
    honest = sim.honest.nonzero().squeeze(1)
    pool = torch.cat([_shard(sim, int(i)) for i in honest]) if len(honest) else torch.zeros(0, dtype=torch.int64)
    members = pool[torch.randperm(len(pool), generator=g)[: spec.members]]
    members, mx, my, outside = _matched(members, sim.shards.x[members], sim.shards.y[members],
                                        test_y, g)
    model = sim.global_row if sim.global_row is not None else sim.rows[node]
    target = _logits_of(sim, model)
    return {"model": "global" if sim.global_row is not None else f"node {node}'s model",
            "loss_threshold": roc_metrics(loss_threshold_scores(target, mx, my),
                                          loss_threshold_scores(target, test_x[outside], test_y[outside]))}


def _inversion(sim, node, spec, dataset, seed) -> dict[str, Any]:
    g = generator(seed, "leakage", "inversion")
    own = _shard(sim, node)
    picks = own[torch.randperm(len(own), generator=g)[: spec.inversion_samples]]
    w = sim.initial
    attack = dlg if spec.inversion_attack == "dlg" else inverting_gradients
    pixel_range = 1.0 / float(dataset.std)
    per_sample = []
    for j, i in enumerate(picks.tolist()):
        x, y = sim.shards.x[i : i + 1], sim.shards.y[i : i + 1]
        seen = _released_gradient(sim, node, w, x, y, generator(seed, "leakage", "inversion-noise", j))
        rec = attack(sim.flat_model, w, seen, tuple(x.shape[1:]),
                     generator(seed, "leakage", "inversion-start", j), steps=spec.inversion_steps)
        per_sample.append(image_quality(rec, x[0], pixel_range))
    out = {"attack": spec.inversion_attack, **_quality(per_sample), "per_sample": per_sample}
    if spec.inversion_attack == "dlg" and spec.inversion_buckets:
        out["buckets"] = {str(size): _bucket_inversion(sim, node, spec, size, pixel_range, seed)
                          for size in spec.inversion_buckets}
    return out


def _quality(per_sample: list[dict[str, float]]) -> dict[str, Any]:
    """Median PSNR and SSIM (an exact reconstruction has an unbounded PSNR, which would swamp a
    mean) and the share above :data:`RECOVERED_DB`."""
    psnr = [q["psnr_db"] for q in per_sample]
    return {"samples": len(psnr), "psnr_db": statistics.median(psnr),
            "ssim": statistics.median(q["ssim"] for q in per_sample),
            "recovered": sum(p > RECOVERED_DB for p in psnr) / len(psnr)}


def _bucket_inversion(sim, node, spec, size, pixel_range, seed) -> dict[str, Any]:
    """DLG on revealed bucket sums: ``size`` single-sample updates of distinct honest nodes (the
    target and ``size - 1`` others), each released as the run's mechanism releases it, summed as
    SecAgg reveals a bucket of honest nodes; ``size`` images rebuilt from the sum, each original
    scored against its best reconstruction."""
    g = generator(seed, "leakage", "bucket-inversion", size)
    others = [int(i) for i in sim.honest.nonzero().squeeze(1).tolist()
              if i != node and int(sim.shards.sizes[i]) > 0]
    per_sample = []
    for trial in range(spec.inversion_samples):
        members = [node] + [others[int(j)] for j in torch.randperm(len(others), generator=g)[: size - 1]]
        xs, ys, total = [], [], torch.zeros_like(sim.initial)
        for m, member in enumerate(members):
            own = _shard(sim, member)
            i = int(own[int(torch.randint(len(own), (1,), generator=g))])
            x, y = sim.shards.x[i : i + 1], sim.shards.y[i : i + 1]
            noise_g = generator(seed, "leakage", "bucket-noise", size, trial, m)
            total = total + _released_gradient(sim, member, sim.initial, x, y, noise_g)
            xs.append(x[0])
            ys.append(int(y))
        rec = dlg(sim.flat_model, sim.initial, total, tuple(xs[0].shape),
                  generator(seed, "leakage", "bucket-start", size, trial), steps=spec.inversion_steps,
                  batch=size)
        for original in xs:
            scores = [image_quality(r, original, pixel_range) for r in rec]
            per_sample.append(max(scores, key=lambda q: q["psnr_db"]))
    return {"bucket_size": size, **_quality(per_sample)}


def _released_gradient(sim, node, w, x, y, g) -> torch.Tensor:
    """What a receiver learns of one sample's gradient from the update the node would send.

    The receiver knows the learning rate and batch size, so it undoes them; what it cannot
    undo is the clipping and the noise.
    """
    leaf = w.detach().clone().requires_grad_(True)
    grad = torch.autograd.grad(F.cross_entropy(sim.flat_model.functional(leaf, x), y), leaf)[0]
    plan = sim.privacy
    if plan is None or plan.mechanism == "central":  # the server sees the update in the clear
        return grad
    if plan.mechanism == "dp_sgd":
        clipped, _ = clip_updates(grad[None], plan.clip)
        std = float(plan.noise_multiplier[node]) * plan.clip
        return clipped[0] + torch.randn(grad.shape, generator=g).to(grad) * std
    lr = sim.sgd.lr
    sent, _ = clip_updates(-lr * grad[None], plan.clip)
    noisy = sent[0] + torch.randn(grad.shape, generator=g).to(grad) * plan.noise_std(1)
    return -noisy / lr
