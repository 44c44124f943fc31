"""The Ray backend gives the local engine's numbers: two local workers, star and gossip, with and
without DP-SGD, compared bit for bit (issue 8: the equivalence test that .ci/run runs)."""

from __future__ import annotations

import pytest
import torch
import yaml

from phalanx.range.runner import build
from phalanx.range.scenario import load_study

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def one_ray_instance():
    """One local Ray instance for the module: each backend joins it (and leaves it running)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()

BASE = {"rounds": 2, "model": "mlp", "train": {"batch_size": 16, "lr": 0.1, "momentum": 0.5},
        "data": {"dataset": "digits", "nodes": 9, "partition": {"name": "dirichlet", "alpha": 0.5}},
        "ledger": {"enabled": False}, "ray": {"workers": 2}}


def _final(tmp_path, name, **fields):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**BASE, **fields}))
    built = build(load_study(path)[2][0])
    sim = built.simulation
    try:
        records = list(sim.run(2))
    finally:
        if sim.trainer is not None:
            sim.trainer.close()
    return sim, records


@pytest.mark.parametrize("fields", [
    {},
    {"topology": {"name": "gossip", "graph": {"name": "random_regular", "degree": 4}}},
    {"privacy": {"mechanism": "dp_sgd", "noise_multiplier": 1.0}},
    {"adversary": {"malicious": 2, "update_attack": "alie"}, "aggregator": "trimmed_mean",
     "topology": {"participation": 0.7}},
], ids=["star", "gossip", "dp-sgd", "attack-partial"])
def test_ray_with_two_workers_equals_the_local_engine(tmp_path, fields):
    local, local_records = _final(tmp_path, "local", **fields)
    remote, remote_records = _final(tmp_path, "ray", engine="ray", **fields)
    assert remote.trainer is not None and local.trainer is None
    assert torch.equal(local.rows, remote.rows)
    if local.global_row is not None:
        assert torch.equal(local.global_row, remote.global_row)
    assert [r["accuracy"] for r in local_records] == [r["accuracy"] for r in remote_records]
