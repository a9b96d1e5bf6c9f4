"""The run configuration, assembled: every plug-in's declared keys plus the server's own.

Flower hands the ServerApp a flat mapping with dashed keys (``[tool.flwr.app.config]``
plus ``--run-config`` overrides). :func:`load_config` checks it once, at start, and
returns a :class:`core.config.RunConfig` or raises :class:`ConfigError` with one line
naming the bad key and what is accepted. The ServerApp sends the resolved mapping to the
clients in every message's config record.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from typing import Any

import data
import models
import strategies
from core.config import ConfigError, Key, RunConfig, above, at_least, choice, load
from core.protocol import MESSAGE_KEYS

TRACKERS = ("none", "tensorboard", "mlflow")  # server/tracking.py

# The server's own keys (the rest are declared by data/, models/ and strategies/).
SERVER_KEYS = {
    "num-server-rounds": at_least(30, 1, meaning="federated rounds"),
    "server-eval": Key(True, meaning="evaluate the global model on the held-out test split each round"),
    "seed": Key(0, meaning="seeds partitioning, model init, client choice and local training", client=True),
    "results-dir": Key("results", meaning="where run folders go"),
    "run-name": Key("", meaning="run folder name; empty = `<strategy>-<dataset>-<partitioner>-seed<seed>-<time>`"),
    "num-cpus": above(1.0, 0, meaning="Ray CPUs per simulated client (`spikefed run`), torch threads per client",
                      client=True),
    "num-gpus": at_least(0.0, 0, meaning=(
        "Ray GPU fraction per simulated client (`spikefed run`); above 0, clients and the server's evaluation run on "
        "CUDA where torch sees a GPU, else say so in one line and use the CPU"), client=True),
    "ray-address": Key("", meaning=(  # empty: a local Ray of the simulation's own
        "a running Ray cluster to join (`auto`, `<host>:<port>`, `ray://<host>:<port>`); empty starts a local Ray "
        "([cluster-and-gpu.md](cluster-and-gpu.md))")),
    "tracking": choice("none", TRACKERS, meaning=(
        "log each round's scalars and the run config to `tensorboard` (`<results-dir>/tensorboard/`) or `mlflow` "
        "(a local SQLite store, `<results-dir>/mlflow.db`) as the run goes ([tracking.md](tracking.md))")),
    "tracking-run": Key("", meaning=(
        "the run's name in the tracker; empty = `run-name` (`spikefed compare` names each cell "
        "`<strategy>/<partition>/seed<k>`)")),
    "tracking-uri": Key("", meaning=(
        "`tracking=mlflow`: the MLflow tracking URI; empty = `sqlite:///<results-dir>/mlflow.db`")),
    "resume": Key("", meaning=(
        "a run folder to continue from its `checkpoint.pt` (`spikefed resume` sets it; with `flwr run`, pass it with "
        "the run's config)")),
}

# Keys that do not change what a run computes: a grid's complete cells stay complete when they change.
NOT_RESULTS = ("results-dir", "run-name", "tracking", "tracking-run", "tracking-uri")

KEYS: dict[str, Key] = {**strategies.KEYS, **models.KEYS, **data.KEYS, **SERVER_KEYS}
# Same values as [tool.flwr.app.config] in pyproject.toml (a test keeps them equal).
DEFAULTS: dict[str, Any] = {name: key.default for name, key in KEYS.items()}


def _check_evaluation(cfg: RunConfig) -> None:
    if not cfg.server_eval and cfg.fraction_evaluate == 0:
        raise ConfigError("server-eval=false with fraction-evaluate=0 evaluates nothing; "
                          "accepted: server-eval=true or fraction-evaluate in (0, 1]")


def _check_ray_address(cfg: RunConfig) -> None:
    if cfg.ray_address and not re.fullmatch(r"auto|(ray://)?[\w.\-]+:\d+", cfg.ray_address):
        raise ConfigError(f"ray-address={cfg.ray_address!r} is not a Ray address; accepted: empty (a local Ray), "
                          "auto, <host>:<port> (the head's GCS port) or ray://<host>:<port>")


def _check_tracking(cfg: RunConfig) -> None:
    if cfg.tracking == "mlflow" and importlib.util.find_spec("mlflow") is None:
        raise ConfigError("tracking='mlflow' needs MLflow: pip install 'spikefed[tracking]' (mlflow-skinny, sqlalchemy, "
                          "alembic); accepted otherwise: tracking=tensorboard or none")


CHECKS = (*strategies.CHECKS, *models.CHECKS, _check_evaluation, _check_ray_address, _check_tracking)


def clients_per_round(cfg: RunConfig) -> int:
    """How many clients train each round in a federation of num-partitions clients."""
    return strategies.settings.clients_per_round(cfg.num_partitions, cfg.fraction_train, cfg.min_train_nodes)


def load_config(values: Mapping[str, Any]) -> RunConfig:
    """Merge ``values`` over :data:`DEFAULTS`, check every key, return a RunConfig.

    The server's own message-config keys (:data:`core.protocol.MESSAGE_KEYS`) are ignored.
    """
    return load(values, KEYS, CHECKS, ignored=MESSAGE_KEYS)


__all__ = ["DEFAULTS", "KEYS", "ConfigError", "RunConfig", "clients_per_round", "load_config"]
