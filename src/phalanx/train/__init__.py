"""Local training of every participating node, batched or looped as the device prefers."""

from phalanx.train.local import (
    SGDConfig,
    Shards,
    batch_plan,
    choose_strategy,
    choose_workers,
    train_nodes,
)

__all__ = ["SGDConfig", "Shards", "batch_plan", "choose_strategy", "choose_workers", "train_nodes"]
