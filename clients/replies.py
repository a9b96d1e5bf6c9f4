"""What a ClientApp sends to SpikeFed's strategies (the protocol of :mod:`core.protocol`).

SpikeFed's own ClientApp uses these, and so can anyone's::

    @app.train()
    def train(msg, context):
        model = ...  # a spikingjelly network (multi-step) holding msg.content["arrays"]
        return train_with_statistics(msg, context, model, lambda: my_training(model),
                                     inputs=x, labels=y, num_classes=10, timesteps=4)

    @app.train("upload")
    def upload(msg, context):
        return upload_reply(msg, context)

    @app.train("discard")
    def discard(msg, context):
        return discard_reply(msg, context)
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Mapping

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from core.protocol import (CLASS_AFTER, CLASS_BEFORE, EXECUTOR, FIRING_AFTER, FIRING_BEFORE, NUM_EXAMPLES,
                           SERVER_ROUND, TWO_PHASE_KEY, firing_metrics)
from models.firing import FiringStatistics, firing_statistics

# node-state records of a two-phase round: the trained weights, their metrics, the round
KEPT_ARRAYS, KEPT_METRICS, KEPT_ROUND = "kept-arrays", "kept-metrics", "kept-round"


def statistics_metrics(before: FiringStatistics, after: FiringStatistics | None = None) -> dict[str, list[float]]:
    """The reply's firing-statistics entries, from the received model (``before``) and the
    trained one (``after``; None: a query's reply, before training only)."""
    metrics = {**firing_metrics(FIRING_BEFORE, before.rates), CLASS_BEFORE: before.class_intensity}
    if after is not None:
        metrics.update({**firing_metrics(FIRING_AFTER, after.rates), CLASS_AFTER: after.class_intensity})
    return metrics


def executor(device: torch.device) -> ConfigRecord:
    """Where this process runs: its Ray node inside a Ray simulation (ClientApps run in Ray
    actors there), else its host name; and ``device``."""
    host = socket.gethostname()
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        host = f"ray-{sys.modules['ray'].get_runtime_context().get_node_id()[:8]}"
    return ConfigRecord({"host": host, "device": str(device)})


def train_reply(msg: Message, context: Context, arrays: Mapping[str, torch.Tensor],
                metrics: Mapping[str, int | float | list], device: torch.device | None = None) -> Message:
    """The reply to a train message: the trained ``arrays`` and ``metrics`` (and where they
    were trained, :func:`executor`); or, when the train config says ``two-phase``, the
    metrics only, the weights kept in the node's state until :func:`upload_reply` is asked
    for them. ``device``: where they were trained (default: where ``arrays`` are)."""
    where = executor(device or next(iter(arrays.values())).device)
    arrays = ArrayRecord({k: v.detach().cpu() for k, v in arrays.items()})
    config = msg.content.config_records.get("config", ConfigRecord())
    if not config.get(TWO_PHASE_KEY, False):
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(dict(metrics)), EXECUTOR: where}),
                       reply_to=msg)
    context.state[KEPT_ARRAYS] = arrays
    context.state[KEPT_METRICS] = MetricRecord(dict(metrics))
    context.state[KEPT_ROUND] = ConfigRecord({SERVER_ROUND: int(config[SERVER_ROUND])})
    return Message(RecordDict({"metrics": MetricRecord(dict(metrics)), EXECUTOR: where}), reply_to=msg)


def upload_reply(msg: Message, context: Context) -> Message:
    """Second phase of a two-phase round: the weights trained for the asked round (then forgotten).
    Raises when this node keeps no update of that round (the server then rejects it, reason `error`)."""
    wanted = int(msg.content["config"][SERVER_ROUND])
    kept = context.state.get(KEPT_ROUND)
    if kept is None or int(kept[SERVER_ROUND]) != wanted:
        have = "none" if kept is None else f"round {kept[SERVER_ROUND]}"
        raise RuntimeError(f"asked to upload the update of round {wanted}, but this node keeps {have}")
    del context.state[KEPT_ROUND]
    content = {"arrays": context.state.pop(KEPT_ARRAYS), "metrics": context.state.pop(KEPT_METRICS)}
    return Message(RecordDict(content), reply_to=msg)


def discard_reply(msg: Message, context: Context) -> Message:
    """A candidate of a two-phase round that was not chosen: forget the weights kept for the
    asked round (a node keeps nothing between rounds it is not aggregated in). The reply
    says whether there was anything to drop."""
    wanted = int(msg.content["config"][SERVER_ROUND])
    kept = context.state.get(KEPT_ROUND)
    dropped = kept is not None and int(kept[SERVER_ROUND]) == wanted
    if dropped:
        for key in (KEPT_ROUND, KEPT_ARRAYS, KEPT_METRICS):
            del context.state[key]
    return Message(RecordDict({"info": MetricRecord({"dropped": int(dropped)})}), reply_to=msg)


def train_with_statistics(msg: Message, context: Context, model: torch.nn.Module,
                          train: Callable[[], Mapping[str, float]], inputs: torch.Tensor,
                          labels: torch.Tensor | None = None, num_classes: int = 0, timesteps: int = 1) -> Message:
    """Measure ``model``'s firing statistics on ``inputs`` (with ``labels`` and
    ``num_classes``: also per class), call ``train()`` (trains ``model`` in place, returns
    metrics such as ``train-loss`` or Oort's ``loss-sq-mean``), measure again, and reply
    as the protocol says (:func:`train_reply`).

    ``model`` is a spikingjelly network in multi-step mode whose forward runs the
    ``timesteps`` steps itself (its neurons' outputs are [T, N, ...]).
    """
    before = firing_statistics(model, inputs, timesteps, labels, num_classes)
    metrics = dict(train())
    after = firing_statistics(model, inputs, timesteps, labels, num_classes)
    metrics = {NUM_EXAMPLES: len(inputs), **metrics, **statistics_metrics(before, after)}
    return train_reply(msg, context, model.state_dict(), metrics)


def query_reply(msg: Message, metrics: Mapping[str, float]) -> Message:
    """The reply to a strategy's `query` (Power-of-Choice asks for ``loss`` on the local data)."""
    return Message(RecordDict({"info": MetricRecord(dict(metrics))}), reply_to=msg)
