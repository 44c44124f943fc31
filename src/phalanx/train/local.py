"""Local training of many nodes at once: minibatch SGD with momentum and weight decay.

Every participating node runs ``epochs`` passes of minibatch SGD over its own shard, starting from
its row of the ``(n, d)`` parameter stack, and the rows are overwritten with the result. The
update is PyTorch's ``torch.optim.SGD`` (dampening 0, no Nesterov), applied per node:

    g = grad L_i(w) + weight_decay * w,   buf = momentum * buf + g,   w = w - lr * buf

with ``buf`` starting at zero each round (a fresh optimizer per round, as FedAvg clients do;
McMahan et al. 2017, Algorithm 1). ``L_i`` is the mean cross-entropy over the batch.

Three strategies compute exactly this, and a test checks they agree with training each node on
its own (to floating-point tolerance):

- ``loop``: one template module whose parameters are views into one flat buffer; each node's
  row is copied in, trained, and copied out. Per-node weights stay in cache, which is what wins
  on a small CPU (shared/ARCHITECTURE.md, measured: 186 ms against 360 ms for 100 LeNets).
- ``vmap``: ``torch.func.vmap(grad(loss))`` over all nodes at once; one kernel per layer per
  step, which is what wins on a GPU where each small kernel costs a launch.
- ``chunked``: ``vmap`` over chunks of ``chunk_size`` nodes, grouped by shard size so that few
  padded steps are wasted; bounds memory and keeps a chunk's weights in cache.

``auto`` picks by device (:func:`choose_strategy`), and ``loop`` on CPU trains one node per core
in worker threads for models big enough to gain from it (:func:`choose_workers`);
``benchmarks/engine_overhead.py`` measures the choice. All strategies consume one *batch plan* (:func:`batch_plan`), drawn from a
seeded generator, so they see the same batches in the same order.

Nodes with an empty shard are handled explicitly: they take no step and their row is unchanged.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from phalanx.models.flat import FlatModel
from phalanx.privacy.dpsgd import (DPSGD, clip_and_sum, noisy_mean, per_sample_grad_fn,
                                   poisson_plan)
from phalanx.privacy.ghost import GhostClipping
from phalanx.privacy.ghost import supported as ghost_supported

Strategy = Literal["auto", "loop", "vmap", "chunked"]


@dataclass(frozen=True)
class SGDConfig:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass
class Shards:
    """All nodes' training data: one pooled ``(x, y)`` on the device and each node's indices.

    ``index[i, :sizes[i]]`` are node i's rows of the pool; the rest of the row is padding (0).
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    sizes: torch.Tensor

    @classmethod
    def from_parts(cls, x: torch.Tensor, y: torch.Tensor, parts: list[torch.Tensor]) -> "Shards":
        sizes = torch.tensor([len(p) for p in parts], dtype=torch.int64)
        width = max(1, int(sizes.max()) if len(parts) else 1)
        index = torch.zeros(len(parts), width, dtype=torch.int64)
        for i, p in enumerate(parts):
            index[i, : len(p)] = p
        return cls(x=x, y=y, index=index.to(x.device), sizes=sizes.to(x.device))

    @property
    def num_nodes(self) -> int:
        return self.index.shape[0]


def batch_plan(
    shards: Shards, nodes: torch.Tensor, epochs: int, batch_size: int, generator: torch.Generator
) -> torch.Tensor:
    """Pool indices of every batch of every node: ``(k, epochs, steps, batch_size)``, -1 = padding.

    Each epoch draws a fresh permutation of each node's shard (one ``argsort`` of random keys over
    all nodes at once). Epoch ``e`` of node ``i`` has ``ceil(size_i / batch_size)`` batches, the
    last one possibly short; steps beyond that are all padding.
    """
    sizes = shards.sizes[nodes]
    width = max(1, int(sizes.max())) if len(nodes) else 1
    steps = -(-width // batch_size)
    positions = torch.arange(width, device=sizes.device)
    valid = positions[None, :] < sizes[:, None]
    index = shards.index[nodes, :width]
    plans = []
    for _ in range(epochs):
        keys = torch.rand(len(nodes), width, generator=generator, device=generator.device)
        keys = keys.to(sizes.device).masked_fill(~valid, 2.0)
        order = keys.argsort(dim=1)
        shuffled = index.gather(1, order).masked_fill(~valid, -1)
        padded = F.pad(shuffled, (0, steps * batch_size - width), value=-1)
        plans.append(padded.view(len(nodes), steps, batch_size))
    return torch.stack(plans, dim=1)


def choose_strategy(device: torch.device, dim: int, nodes: int) -> str:
    """The fastest strategy for this device, as measured by ``benchmarks/engine_overhead.py``.

    On CUDA one batched kernel per layer beats a launch per node per layer: ``vmap``. On CPU,
    per-node weights that stay in cache win for every model in the zoo, and ``vmap``'s start-up
    cost (about a second in a fresh process) is never paid back at these sizes: ``loop``.
    """
    return "vmap" if device.type == "cuda" else "loop"


def choose_workers(device: torch.device, dim: int, nodes: int) -> int:
    """Worker threads for ``loop`` on CPU: one per core for models of ``SMALL_MODEL_DIM`` and up.

    Each node runs on one intra-op thread (see ``_train_loop_parallel``), so the cores are used by
    training nodes side by side: measured 1.67x the hand-written loop on the CNN task of
    ``benchmarks/flower_compare.py``. Tiny models (logistic regression) are bound by Python's
    per-op overhead, which threads share one GIL for, so they stay on one worker.
    """
    if device.type != "cpu" or dim < SMALL_MODEL_DIM:
        return 1
    return max(1, min(torch.get_num_threads(), nodes))


SMALL_MODEL_DIM = 20_000


def train_nodes(
    flat_model: FlatModel,
    rows: torch.Tensor,
    nodes: torch.Tensor,
    shards: Shards,
    config: SGDConfig,
    generator: torch.Generator,
    strategy: Strategy = "auto",
    chunk_size: int = 0,
    workers: int = 0,
    dp: DPSGD | None = None,
    noise_seed: int = 0,
    ids: torch.Tensor | None = None,
) -> None:
    """Train ``rows[nodes]`` in place on each node's shard. ``nodes`` is a 1-D index tensor.

    ``ids``: the nodes' ids in the network when ``nodes`` only index ``rows`` (a buffer that holds
    just the round's participants: the star's); their shards, batches and DP noise follow ``ids``.

    ``workers`` (0: :func:`choose_workers`; ``loop`` on CPU only) trains disjoint groups of nodes
    in that many threads,
    each with its own copy of the template model and one intra-op thread: torch releases the GIL
    inside its kernels, and small per-node kernels use one core each better than two together.

    ``dp``: train with DP-SGD instead (:mod:`phalanx.privacy.dpsgd`): Poisson batches drawn
    from ``generator``, per-sample clipping, and Gaussian noise drawn from generators derived
    from ``noise_seed`` (one per node in ``loop``, one per chunk of nodes in ``vmap``).
    """
    if len(nodes) == 0:
        return
    ids = nodes if ids is None else ids
    plan, active = make_plan(shards, ids, config, generator, dp is not None)
    train_planned(flat_model, rows, nodes, shards, config, plan, active, strategy, chunk_size,
                  workers, dp, noise_seed, ids=ids)


def make_plan(shards: Shards, nodes: torch.Tensor, config: SGDConfig, generator: torch.Generator,
              private: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every batch ``nodes`` take this round: shuffled batches (:func:`batch_plan`), or Poisson
    batches with each node's active steps when training is ``private`` (DP-SGD)."""
    if not private:
        return batch_plan(shards, nodes, config.epochs, config.batch_size, generator), None
    return poisson_plan(shards.index[nodes], shards.sizes[nodes], config.epochs, config.batch_size,
                        generator)


def train_planned(flat_model: FlatModel, rows: torch.Tensor, nodes: torch.Tensor, shards: Shards,
                  config: SGDConfig, plan: torch.Tensor, active: torch.Tensor | None,
                  strategy: Strategy = "auto", chunk_size: int = 0, workers: int = 0,
                  dp: DPSGD | None = None, noise_seed: int = 0,
                  ids: torch.Tensor | None = None) -> None:
    """Train ``rows[nodes]`` in place on a plan made by :func:`make_plan` for those nodes.

    ``ids``: the nodes' ids in the network, where ``nodes`` only index ``rows`` (a backend that
    trains a block of the nodes in a buffer of its own); DP-SGD's noise is drawn per id, so the
    same node gets the same noise wherever it trains. Defaults to ``nodes``.
    """
    ids = nodes if ids is None else ids
    if strategy == "auto":
        strategy = choose_strategy(rows.device, rows.shape[1], len(nodes))
    if strategy == "loop":
        if workers <= 0:
            workers = choose_workers(rows.device, rows.shape[1], len(nodes))
        if dp is not None:
            _in_workers(flat_model, rows, workers, len(nodes), lambda fm, g: _train_loop_dp(
                fm, rows, nodes[g], ids[g], shards, plan[g], active[g], config, dp, noise_seed))
        else:
            _train_loop_parallel(flat_model, rows, nodes, shards, plan, config, workers)
        return
    if dp is not None:
        chunk = len(nodes) if strategy == "vmap" else (chunk_size or default_chunk_size(rows.shape[1]))
        for i, start in enumerate(range(0, len(nodes), chunk)):
            sel = slice(start, start + chunk)
            _train_vmap_dp(flat_model, rows, nodes[sel], ids[sel], shards, plan[sel], active[sel], config,
                           dp, torch.Generator(device=rows.device).manual_seed(noise_seed + i))
        return
    if strategy == "vmap":
        chunk_size = len(nodes)
    elif chunk_size <= 0:
        chunk_size = default_chunk_size(rows.shape[1])
    order = shards.sizes[ids].argsort(descending=True, stable=True)
    for start in range(0, len(nodes), chunk_size):
        pick = order[start : start + chunk_size]
        _train_vmap(flat_model, rows, nodes[pick], shards, plan[pick], config)


def default_chunk_size(dim: int) -> int:
    """Nodes per vmap chunk on CPU: about 4 MB of weights (a core's share of cache), 2..64 nodes."""
    return int(max(2, min(64, (1 << 20) // max(dim, 1))))


def _sgd_step(w, buf, g, config: SGDConfig) -> None:
    """One in-place SGD step on lists of tensors (torch.optim.SGD's update, foreach kernels)."""
    if config.weight_decay:
        torch._foreach_add_(g, w, alpha=config.weight_decay)
    if config.momentum:
        torch._foreach_mul_(buf, config.momentum)
        torch._foreach_add_(buf, g)
        g = buf
    torch._foreach_add_(w, g, alpha=-config.lr)


def _in_workers(fm: FlatModel, rows, workers: int, count: int, job) -> None:
    """``job(model, group)`` over ``count`` nodes split into ``workers`` groups, one thread each.

    On CPU every thread runs one intra-op thread (see :func:`_train_loop_parallel`).
    """
    if rows.device.type != "cpu":
        job(fm, torch.arange(count))
        return
    workers = max(1, min(workers, count))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        groups = torch.arange(count).tensor_split(workers)
        if workers == 1:
            job(fm, groups[0])
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for done in [pool.submit(job, replica, g) for replica, g in zip(_replicas(fm, workers), groups)]:
                done.result()
    finally:
        torch.set_num_threads(threads)


def _train_loop_parallel(fm: FlatModel, rows, nodes, shards, plan, config, workers: int) -> None:
    """The loop, on CPU with one intra-op thread per node and ``workers`` nodes at a time.

    Spreading one node's batch-32 kernels over several intra-op threads is erratic on small CPUs:
    on 2 cores the same LeNet round ran at 3 updates/s in one run of ``engine_overhead.py`` and
    300/s in another, and the CNN task of ``flower_compare.py`` took 46 to 231 s over five runs,
    against a steady 36 to 41 s with one thread per node. Single-threaded kernels also make a
    node's arithmetic the same whatever the core count.
    """
    if rows.device.type != "cpu":
        _train_loop(fm, rows, nodes, shards, plan, config)
        return
    workers = max(1, min(workers, len(nodes)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if workers == 1:
            _train_loop(fm, rows, nodes, shards, plan, config)
            return
        replicas = _replicas(fm, workers)
        groups = torch.arange(len(nodes)).tensor_split(workers)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            jobs = [pool.submit(_train_loop, replica, rows, nodes[g], shards, plan[g], config)
                    for replica, g in zip(replicas, groups)]
            for job in jobs:
                job.result()
    finally:
        torch.set_num_threads(threads)


def _replicas(fm: FlatModel, count: int) -> list[FlatModel]:
    """``fm`` and ``count - 1`` copies of it, cached on ``fm`` across rounds."""
    cached = fm.__dict__.setdefault("_replicas", [fm])
    while len(cached) < count:
        cached.append(FlatModel(copy.deepcopy(fm.module)))
    return cached[:count]


def _train_loop(fm: FlatModel, rows, nodes, shards: Shards, plan, config: SGDConfig) -> None:
    module, params = fm.module, fm.params
    momentum = torch.zeros_like(fm.flat) if config.momentum else None
    bufs = [momentum[s.offset : s.offset + s.numel].view(s.shape) for s in fm.slots] if momentum is not None else []
    counts = plan.ge(0).sum(dim=3).tolist()  # (k, epochs, steps) valid samples per batch
    node_list = nodes.tolist()
    for k, node in enumerate(node_list):
        with torch.no_grad():
            fm.flat.copy_(rows[node])
        if momentum is not None:
            momentum.zero_()
        for e, epoch_counts in enumerate(counts[k]):
            for s, n_valid in enumerate(epoch_counts):
                if n_valid == 0:
                    break
                idx = plan[k, e, s, :n_valid]
                loss = F.cross_entropy(module(shards.x[idx]), shards.y[idx])
                grads = list(torch.autograd.grad(loss, params))
                with torch.no_grad():
                    _sgd_step(params, bufs, grads, config)
        with torch.no_grad():
            rows[node].copy_(fm.flat)


def _train_vmap(fm: FlatModel, rows, nodes, shards: Shards, plan, config: SGDConfig) -> None:
    def batch_loss(row, xb, yb, weight):
        losses = F.cross_entropy(fm.functional(row, xb), yb, reduction="none")
        return (losses * weight).sum() / weight.sum().clamp(min=1.0)

    grad_fn = vmap(grad(batch_loss))
    w = rows[nodes]
    buf = torch.zeros_like(w) if config.momentum else None
    k, epochs, steps, _ = plan.shape
    for e in range(epochs):
        for s in range(steps):
            idx = plan[:, e, s, :]
            valid = idx.ge(0)
            active = valid.any(dim=1)
            n_active = int(active.sum())
            if n_active == 0:
                break
            if n_active < k:  # only nodes with a batch at this step take it
                sel = active.nonzero().squeeze(1)
                w_sel, buf_sel = w[sel], (buf[sel] if buf is not None else None)
                _vmap_step(grad_fn, w_sel, buf_sel, idx[sel], valid[sel], shards, config)
                w[sel] = w_sel
                if buf is not None:
                    buf[sel] = buf_sel
            else:
                _vmap_step(grad_fn, w, buf, idx, valid, shards, config)
    rows[nodes] = w


def _vmap_step(grad_fn, w, buf, idx, valid, shards: Shards, config: SGDConfig) -> None:
    safe = idx.clamp(min=0)
    g = grad_fn(w, shards.x[safe], shards.y[safe], valid.to(w.dtype))
    _sgd_step([w], [buf] if buf is not None else [], [g], config)


def _train_loop_dp(fm: FlatModel, rows, nodes, ids, shards: Shards, plan, active, config: SGDConfig,
                   dp: DPSGD, noise_seed: int) -> None:
    """DP-SGD, one node at a time, in the template module: clipped per-sample sums, then noise.

    Models of Linear and Conv2d layers clip without forming per-sample gradients
    (:class:`~phalanx.privacy.ghost.GhostClipping`); any other model forms them with ``torch.func``.
    """
    ghost = GhostClipping(fm.module, [s.name for s in fm.slots]) if ghost_supported(fm.module) else None
    per_sample = None if ghost is not None else per_sample_grad_fn(fm)
    momentum = torch.zeros_like(fm.flat) if config.momentum else None
    counts = plan.ge(0).sum(dim=3).tolist()
    for k, (node, ident) in enumerate(zip(nodes.tolist(), ids.tolist())):
        with torch.no_grad():
            fm.flat.copy_(rows[node])
        if momentum is not None:
            momentum.zero_()
        noise_std = (dp.noise_multiplier[ident] * dp.clip).reshape(())
        g_noise = torch.Generator(device=fm.flat.device).manual_seed(noise_seed + ident)
        for e in range(plan.shape[1]):
            for s in range(plan.shape[2]):
                if not bool(active[k, e, s]):
                    break
                idx = plan[k, e, s, : counts[k][e][s]]
                if not len(idx):  # an empty Poisson batch still takes its noisy step
                    g_sum = torch.zeros_like(fm.flat)
                elif ghost is not None:
                    g_sum = ghost.clipped_sum(shards.x[idx], shards.y[idx], dp.clip)
                else:
                    g_sum = clip_and_sum(per_sample(fm.flat.detach(), shards.x[idx], shards.y[idx]),
                                         torch.ones(len(idx), dtype=torch.bool, device=idx.device), dp.clip)
                with torch.no_grad():
                    g = noisy_mean(g_sum, noise_std, config.batch_size, g_noise)
                    _sgd_step([fm.flat], [momentum] if momentum is not None else [], [g], config)
        with torch.no_grad():
            rows[node].copy_(fm.flat)


def _train_vmap_dp(fm: FlatModel, rows, nodes, ids, shards: Shards, plan, active, config: SGDConfig,
                   dp: DPSGD, g_noise: torch.Generator) -> None:
    """DP-SGD for a block of nodes at once: ``vmap`` over nodes of the per-sample gradients."""
    per_sample = vmap(per_sample_grad_fn(fm))
    w = rows[nodes]
    buf = torch.zeros_like(w) if config.momentum else None
    noise_std = dp.noise_multiplier.to(w.device)[ids.to(w.device)] * dp.clip
    for e in range(plan.shape[1]):
        for s in range(plan.shape[2]):
            step = active[:, e, s]
            if not bool(step.any()):
                break
            idx = plan[:, e, s, :]
            valid = idx.ge(0)
            safe = idx.clamp(min=0)
            g_sum = clip_and_sum(per_sample(w, shards.x[safe], shards.y[safe]), valid, dp.clip)
            g = noisy_mean(g_sum, noise_std, config.batch_size, g_noise)
            g = torch.where(step[:, None], g, torch.zeros_like(g))
            new_w, new_buf = w.clone(), (buf.clone() if buf is not None else None)
            _sgd_step([new_w], [new_buf] if new_buf is not None else [], [g], config)
            w = torch.where(step[:, None], new_w, w)  # a node past its last step stays put
            if buf is not None:
                buf = torch.where(step[:, None], new_buf, buf)
    rows[nodes] = w
