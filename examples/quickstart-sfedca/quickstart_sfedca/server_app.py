"""The ServerApp: this app's model and evaluation, SpikeFed's client selection."""

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAdam, FedAvg

from quickstart_sfedca.task import SpikingMLP, evaluate, test_set
from strategies import STRATEGIES
from strategies.aggregators import Aggregation

app = ServerApp()
# SpikeFed's default server learning rate for FedAdam (docs/strategies.md#aggregators)
AGGREGATORS = {"fedavg": FedAvg(), "fedadam": FedAdam(eta=0.03)}


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    torch.manual_seed(int(cfg["seed"]))
    model = SpikingMLP(int(cfg["timesteps"]))
    x, y = test_set(int(cfg["seed"]))

    def global_evaluation(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        metrics = evaluate(model, x, y)
        log(20, "round %d: test accuracy %.4f", server_round, metrics["accuracy"])
        return MetricRecord(metrics)

    # Built like Flower's FedAvg; SFedCA's own options have defaults (candidate_factor=2, rule="balance").
    # The chosen updates are aggregated by a Flower strategy; a server optimiser steps the
    # parameters only, BatchNorm's running statistics (the model's buffers) take FedAvg's mean.
    aggregator = AGGREGATORS[str(cfg["aggregator"])]
    buffers = [name for name, _ in model.named_buffers()]
    strategy = STRATEGIES[str(cfg["strategy"])](
        fraction_train=float(cfg["fraction-train"]), min_train_nodes=int(cfg["min-train-nodes"]),
        fraction_evaluate=0.0, seed=int(cfg["seed"]), aggregation=Aggregation(aggregator, buffers))
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                            num_rounds=int(cfg["num-server-rounds"]), train_config=ConfigRecord(),
                            evaluate_fn=global_evaluation)
    final = result.evaluate_metrics_serverapp[int(cfg["num-server-rounds"])]
    log(20, "final test accuracy %.4f with %s over %s", final["accuracy"], type(strategy).__name__,
        type(aggregator).__name__)
