"""The task as a Flower 1.42 app: a ServerApp running the stock FedAvg strategy, and a ClientApp.

This module is imported by :mod:`flower_task` in the driver and, by reference, in every Ray actor
that runs a ClientApp, so the actors import it (and :mod:`common`) instead of receiving pickled
copies of data: each actor loads Fashion-MNIST and the partition once (cached in ``common``).

- Server: ``flwr.serverapp.strategy.FedAvg`` with ``fraction_train`` = the task's
  participation and ``fraction_evaluate=0`` (no federated evaluation), aggregating the clients'
  ``ArrayRecord`` weighted by the ``num-examples`` each one reports. Central evaluation
  (``evaluate_fn``) runs on the full test set only after the last round, like the other sides.
- Client: loads the global weights into the task's model, trains it with
  :func:`common.train_local` on the shard of its ``partition-id``, and replies with the weights
  and its sample count.
"""

from __future__ import annotations

import common
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

#: Filled in by the ServerApp (it runs in a thread of the driver process).
RESULT: dict = {}
#: One model per task in each actor process, built once: every message overwrites all its weights.
_MODELS: dict = {}

client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    config = msg.content["config"]
    task = common.TASKS[str(config["task"])]
    partition = int(context.node_config["partition-id"])
    dataset, parts = common.load(int(context.node_config["num-partitions"]))
    if task.name not in _MODELS:
        _MODELS[task.name] = common.make_model(task, dataset)
    model = _MODELS[task.name]
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    gen = common.client_generator(task, int(config["server-round"]), partition)
    n = common.train_local(model, dataset.x_train, dataset.y_train, parts[partition], task, gen)
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                          "metrics": MetricRecord({"num-examples": n})})
    return Message(content=content, reply_to=msg)


def server_app(task: common.Task) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        dataset, _ = common.load(task.nodes)
        model = common.make_model(task, dataset)

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if server_round != task.rounds:
                return None
            model.load_state_dict(arrays.to_torch_state_dict())
            acc = common.accuracy(model, dataset.x_test, dataset.y_test)
            RESULT["accuracy"] = acc
            return MetricRecord({"accuracy": acc})

        strategy = FedAvg(fraction_train=task.participation, fraction_evaluate=0.0,
                          min_available_nodes=task.nodes)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                       num_rounds=task.rounds, train_config=ConfigRecord({"task": task.name}),
                       evaluate_fn=evaluate)

    return app
