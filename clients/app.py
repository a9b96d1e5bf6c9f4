"""The SpikeFed ClientApp: local training of the workload, with firing statistics."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients import faults
from data import client_test_data, client_train_data, load_split
from models import get_workload
from server.config import RunConfig, load_config
from strategies.base import firing_metrics
from strategies.validation import FIRING_AFTER, FIRING_BEFORE

app = ClientApp()


def _setup(msg: Message, context: Context) -> tuple[RunConfig, int]:
    """The run config the server sent, and this node's partition id."""
    cfg = load_config(dict(msg.content["config"]))
    threads = max(1, int(cfg.num_cpus))
    if torch.get_num_threads() != threads:  # setting it rebuilds the thread pool: once per actor
        torch.set_num_threads(threads)
    return cfg, int(context.node_config["partition-id"])


def _global_model(msg: Message, cfg: RunConfig) -> torch.nn.Module:
    return global_model(cfg, msg.content["arrays"].to_torch_state_dict())


def global_model(cfg: RunConfig, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The workload's model holding ``state_dict``."""
    spec = load_split(cfg.dataset, cfg.data_dir, cfg.test_fraction, cfg.seed).spec
    model = get_workload(cfg.workload).build_model(cfg, spec)
    model.load_state_dict(state_dict)
    return model


def local_update(cfg: RunConfig, pid: int, model: torch.nn.Module, server_round: int
                 ) -> tuple[dict[str, torch.Tensor], dict]:
    """Client ``pid``'s round: firing rates of the received model on its data, local
    training, firing rates again; returns the trained weights and the reply's metrics."""
    workload = get_workload(cfg.workload)
    data = client_train_data(cfg, pid)
    # One seed per (run seed, round, client): the same run repeats exactly.
    seed = cfg.seed * 1_000_003 + server_round * 1_009 + pid
    torch.manual_seed(seed)
    before = workload.firing_rates(model, data, cfg)
    metrics = workload.train(model, data, cfg, seed)
    after = workload.firing_rates(model, data, cfg)
    metrics = {
        "num-examples": len(data[1]),
        **metrics,
        **firing_metrics(FIRING_BEFORE, before),
        **firing_metrics(FIRING_AFTER, after),
    }
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, metrics


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Report this node's partition id, its node-config num-partitions and data size;
    when the query carries a model, also that model's metrics on the local training data
    (Power-of-Choice ranks clients by this local loss)."""
    cfg, pid = _setup(msg, context)
    num_partitions = int(context.node_config["num-partitions"])
    info = {"partition-id": pid, "num-partitions": num_partitions, "num-examples": 0}
    if num_partitions == cfg.num_partitions:
        data = client_train_data(cfg, pid)
        info["num-examples"] = len(data[1])
        if "arrays" in msg.content:
            info.update(get_workload(cfg.workload).evaluate(_global_model(msg, cfg), data, cfg))
    return Message(RecordDict({"info": MetricRecord(info)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Measure firing rates of the received model, train it locally, measure again
    (or misbehave, when the server injects a fault)."""
    cfg, pid = _setup(msg, context)
    fault = str(msg.content["config"].get(faults.FAULT_KEY, ""))
    faults.before_training(fault, cfg.round_timeout)
    arrays, metrics = local_update(cfg, pid, _global_model(msg, cfg), int(msg.content["config"]["server-round"]))
    if fault.startswith("corrupt:"):
        faults.corrupt(fault, arrays, metrics)
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received model on this client's share of the test split."""
    cfg, pid = _setup(msg, context)
    data = client_test_data(cfg, pid)
    metrics = get_workload(cfg.workload).evaluate(_global_model(msg, cfg), data, cfg)
    record = MetricRecord({"num-examples": len(data[1]), **metrics})
    return Message(RecordDict({"metrics": record}), reply_to=msg)
