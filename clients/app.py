"""The SpikeFed ClientApp: local training of the workload, with firing statistics.

Every train reply carries, besides the workload's metrics: the firing rates of each spiking
layer of the received model on the local data (``firing-before/``) and of the trained
model (``firing-after/``), the class-wise firing intensity before and after
(``class-intensity-before`` / ``-after``, one value per class), and the estimated energy
of the local work (``energy-snn``, ``energy-ann`` in joules). When the train config says
``two-phase``, the reply holds these metrics only and the trained weights wait in the
node's state until a ``train.upload`` message for the same round asks for them.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients import faults
from clients.replies import discard_reply, query_reply, statistics_metrics, train_reply, upload_reply
from core import privacy
from core.config import RunConfig
from core.protocol import (CLIPPING_NORM, COMPUTE_SECONDS, FAULT_KEY, MESSAGE_KEYS, NUM_EXAMPLES, PROXIMAL_MU,
                           QUERY_STATISTICS, SERVER_ROUND)
from data import client_test_data, client_train_data, split_of
from models import get_workload
from models.device import model_device

app = ClientApp()


def _setup(msg: Message, context: Context) -> tuple[RunConfig, int]:
    """The run config the server sent (validated there), and this node's partition id."""
    cfg = RunConfig({k: v for k, v in msg.content["config"].items() if k not in MESSAGE_KEYS})
    threads = max(1, int(cfg.num_cpus))
    if torch.get_num_threads() != threads:  # setting it rebuilds the thread pool: once per actor
        torch.set_num_threads(threads)
    return cfg, int(context.node_config["partition-id"])


def _global_model(msg: Message, cfg: RunConfig) -> torch.nn.Module:
    return global_model(cfg, msg.content["arrays"].to_torch_state_dict())


def global_model(cfg: RunConfig, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The workload's model holding ``state_dict``: one model object per process and run
    config, overwritten by each message (a Ray actor serves thousands of virtual clients)."""
    model = _model(cfg)
    model.load_state_dict(state_dict)
    return model


@functools.lru_cache(maxsize=1)
def _model(cfg: RunConfig) -> torch.nn.Module:
    return get_workload(cfg.workload).build_model(cfg, split_of(cfg).spec)


def local_update(cfg: RunConfig, pid: int, model: torch.nn.Module, server_round: int, proximal_mu: float = 0.0
                 ) -> tuple[dict[str, torch.Tensor], dict]:
    """Client ``pid``'s round: firing statistics of the received model on its data, local
    training (FedProx's term with ``proximal_mu``), the statistics again; returns the
    trained weights and the reply's metrics."""
    start = time.perf_counter()
    workload = get_workload(cfg.workload)
    local = client_train_data(cfg, pid)
    num_classes = split_of(cfg).spec.num_classes
    # One seed per (run seed, round, client): the same run repeats exactly.
    seed = cfg.seed * 1_000_003 + server_round * 1_009 + pid
    torch.manual_seed(seed)
    before = workload.firing_statistics(model, local, cfg, num_classes)
    metrics = workload.train(model, local, cfg, seed, proximal_mu)
    after = workload.firing_statistics(model, local, cfg, num_classes)
    n = len(local[1])
    metrics = {
        NUM_EXAMPLES: n,
        **metrics,
        **statistics_metrics(before, after),
        # local training plus the two statistics passes, at the trained model's rates
        **workload.energy(model, local, cfg, train_samples=n * cfg.local_epochs, inference_samples=2 * n),
    }
    metrics[COMPUTE_SECONDS] = time.perf_counter() - start
    # copies: the model object is reused by the next message
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, metrics


def noise_rng(cfg: RunConfig, msg: Message, pid: int, kind: str) -> np.random.Generator:
    """The generator of a reply's privacy noise: one per (run seed, round, client, reply kind)."""
    return np.random.default_rng([cfg.seed, int(msg.content["config"][SERVER_ROUND]), pid, kind == "query"])


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Report this node's partition id, its node-config num-partitions and data size;
    when the query carries a model, also that model's metrics on the local training data
    (Power-of-Choice ranks clients by this local loss), or with ``query-statistics`` its
    firing statistics there (SFedCA's selection before training). Either is one forward
    pass, counted in the energy."""
    cfg, pid = _setup(msg, context)
    num_partitions = int(context.node_config["num-partitions"])
    info = {"partition-id": pid, "num-partitions": num_partitions, "num-examples": 0}
    if num_partitions == cfg.num_partitions:
        local = client_train_data(cfg, pid)
        info["num-examples"] = len(local[1])
        if "arrays" in msg.content:
            workload, model = get_workload(cfg.workload), _global_model(msg, cfg)
            if msg.content["config"].get(QUERY_STATISTICS, False):
                num_classes = split_of(cfg).spec.num_classes
                info.update(statistics_metrics(workload.firing_statistics(model, local, cfg, num_classes)))
                if privacy.enabled(cfg):
                    info = privacy.private_statistics(info, cfg, "query", noise_rng(cfg, msg, pid, "query"))
            else:
                info.update(workload.evaluate(model, local, cfg))
            info.update(workload.energy(model, local, cfg, train_samples=0, inference_samples=len(local[1])))
    return query_reply(msg, info)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Measure firing rates of the received model, train it locally, measure again
    (or misbehave, when the server injects a fault)."""
    cfg, pid = _setup(msg, context)
    fault = str(msg.content["config"].get(FAULT_KEY, ""))
    faults.before_training(fault, cfg.round_timeout)
    server_round = int(msg.content["config"][SERVER_ROUND])
    model = _global_model(msg, cfg)
    arrays, metrics = local_update(cfg, pid, model, server_round,
                                   float(msg.content["config"].get(PROXIMAL_MU, 0.0)))
    if CLIPPING_NORM in msg.content["config"]:  # Flower's client-side DP: clip what is kept or sent
        norm = float(msg.content["config"][CLIPPING_NORM])
        arrays = privacy.clip_update(ArrayRecord(arrays), msg.content["arrays"], norm).to_torch_state_dict()
    if privacy.enabled(cfg):
        metrics = privacy.private_statistics(metrics, cfg, "train", noise_rng(cfg, msg, pid, "train"))
    if fault.startswith("corrupt:"):
        faults.corrupt(fault, arrays, metrics)
    return train_reply(msg, context, arrays, metrics, model_device(model))


@app.train("upload")
def upload(msg: Message, context: Context) -> Message:
    """Second phase of a two-phase round: send the weights trained for this round (then forget them)."""
    return upload_reply(msg, context)


@app.train("discard")
def discard(msg: Message, context: Context) -> Message:
    """Second phase, for a candidate that was not chosen: drop the weights kept for this round."""
    return discard_reply(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received model on this client's share of the test split."""
    cfg, pid = _setup(msg, context)
    local = client_test_data(cfg, pid)
    metrics = get_workload(cfg.workload).evaluate(_global_model(msg, cfg), local, cfg)
    record = MetricRecord({"num-examples": len(local[1]), **metrics})
    return Message(RecordDict({"metrics": record}), reply_to=msg)
