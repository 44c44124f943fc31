"""A deployed node, from the range's side: its identity, its task, and its process.

- ``phalanx node init DIR``: :func:`init_node` makes the node's keys and a configuration;
- ``phalanx node start DIR``: :func:`start_node` reads the configuration, the keys and the
  genesis, builds the node's :class:`~phalanx.engine.node.task.Task` from the genesis's task (a
  scenario, built by :func:`phalanx.range.runner.build` exactly as a simulated run would be, so
  the data partition, the starting model and the chain are the simulation's) and its shard, then
  serves the API (uvicorn) while the round driver runs in its own thread.

A node halts (exit code 3) with one line when it may not go on: its software below the
network's minimum (upgrade), refused by every peer, or its keys not the genesis's.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pydantic
import yaml

from phalanx.network.config import (
    CONFIG_FILE,
    ConfigError,
    Genesis,
    NodeConfig,
    NodeKeys,
    load_config,
    load_genesis,
    one_line,
)

HALTED = 3


def init_node(folder: Path, name: str, port: int, host: str = "127.0.0.1", force: bool = False) -> NodeKeys:
    """Create ``folder`` with fresh keys and a configuration; refuse to overwrite keys."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "node.keys").exists() and not force:
        raise ConfigError(f"{folder / 'node.keys'}: already exists (a node's identity is never overwritten)")
    try:
        config = NodeConfig(name=name, host=host, port=port)
    except pydantic.ValidationError as e:
        raise ConfigError(one_line(e, "node init")) from None
    keys = NodeKeys.generate()
    keys.write(folder)
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False))
    return keys


def scenario_of(genesis: Genesis):
    """The genesis's task as a validated scenario (one-line errors, as a scenario file's)."""
    from phalanx.range.scenario import Scenario, ScenarioError, check_plugins, format_validation_error

    try:
        s = Scenario.model_validate(genesis.task)
        check_plugins(s)
        return s
    except pydantic.ValidationError as e:
        raise ConfigError(f"genesis task: {format_validation_error(e)}") from None
    except ScenarioError as e:
        raise ConfigError(f"genesis task: {e}") from None


def build_task(genesis: Genesis, shard: int, attack: dict | None):
    """The node's task: the simulation's model, chain and data, its own shard of it."""
    import torch

    from phalanx.attacks import UPDATE_ATTACKS
    from phalanx.engine.node.task import Task
    from phalanx.range.runner import build
    from phalanx.train import SGDConfig, Shards

    from phalanx.range.runner import RunError
    from phalanx.range.scenario import ScenarioError

    s = scenario_of(genesis)
    if s.weighting(logged=True) == "samples" and s.topology.name != "gossip":
        raise ConfigError("genesis task: topology.weighting samples: a deployed node always keeps a public "
                          "log, which would show exact claimed counts; use uniform or noised")
    try:
        built = build(s)
    except (ScenarioError, RunError) as e:
        raise ConfigError(f"genesis task: {e}") from None
    sim = built.simulation
    shards = None
    if shard >= 0:
        if shard >= sim.shards.num_nodes:
            raise ConfigError(f"genesis: shard {shard} is not below the task's {sim.shards.num_nodes} nodes")
        size = int(sim.shards.sizes[shard])
        shards = Shards.from_parts(sim.shards.x, sim.shards.y, [sim.shards.index[shard, :size]])
    update_attack = None
    if attack:
        spec = dict(attack)
        try:
            update_attack = UPDATE_ATTACKS.build(spec.pop("name"), **spec)
        except (KeyError, ValueError, TypeError) as e:
            raise ConfigError(f"attack: {e}") from None
    chain = [(p.name, p.params) for p in (*s.pre_aggregators, s.aggregator)]
    return Task(flat_model=sim.flat_model, initial=sim.initial.clone(), shards=shards, test_x=sim.test_x,
                test_y=sim.test_y, sgd=SGDConfig(epochs=s.train.epochs, batch_size=s.train.batch_size, lr=s.train.lr,
                                                 momentum=s.train.momentum, weight_decay=s.train.weight_decay),
                chain=sim.aggregator, chain_spec=chain, seed=s.seed, num_classes=built.dataset.num_classes,
                model_name=s.model.name, declared_f=sim.declared_f, declared_share=sim.declared_share,
                weight_cap=s.topology.weight_cap, weighting=s.weighting(logged=True),
                count_noise=s.topology.count_noise, attack=update_attack,
                colluders=max(1, s.adversary.malicious), extra={"dtype": str(torch.float32)})


def load_node(folder: Path):
    """(config, keys, genesis) of the node in ``folder``, each checked."""
    config = load_config(folder)
    keys = NodeKeys.read(folder)
    path = Path(config.genesis)
    genesis = load_genesis(path if path.is_absolute() else folder / path)
    return config, keys, genesis


def start_node(folder: Path) -> int:
    """Run the node in ``folder`` until it is stopped (0) or halts (3)."""
    config, keys, genesis = load_node(folder)  # bad files fail here, before torch loads
    import torch
    import uvicorn

    from phalanx.engine.node.runtime import Halt, Node
    from phalanx.network.app import build_app

    torch.set_num_threads(1)
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID prints every thread's stack to node.log
    logging.basicConfig(level=os.environ.get("PHALANX_LOG", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns what matters
    member = genesis.member(keys.node)
    task = build_task(genesis, member.shard if member is not None else -1, config.attack)
    from phalanx.ledger import StorageError

    try:
        node = Node(folder, config, keys, genesis, task)
    except (Halt, StorageError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return HALTED
    app = build_app(node)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port,
                                           log_level=os.environ.get("PHALANX_UVICORN_LOG", "warning"),
                                           access_log=False, lifespan="off", timeout_graceful_shutdown=5))
    driver = threading.Thread(target=node.run, name="rounds", daemon=True)

    def watch() -> None:  # a halted node stops serving: it must not pass for a live one
        node.driver_done.wait()
        if node.halted is not None:
            while not server.started:  # a halt before the server is up: tell it once it listens
                time.sleep(0.05)
            server.should_exit = True
            time.sleep(3)  # a peer's open connection may hold a graceful shutdown open
            server.force_exit = True

    (folder / "node.pid").write_text(f"{os.getpid()}\n")
    driver.start()
    threading.Thread(target=watch, name="watch", daemon=True).start()
    try:
        server.run()
    finally:
        node.close()
    code = 0
    if node.halted is not None:
        print(f"{config.name}: halted: {node.halted}", file=sys.stderr, flush=True)
        code = HALTED
    # the log is closed; a worker thread still waiting on a peer's reply must not keep a stopped
    # node's process alive (the interpreter would join it at exit)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
