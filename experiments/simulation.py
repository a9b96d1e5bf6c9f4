"""Run one SpikeFed federation on Flower's Ray simulation engine, from Python."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from flwr.simulation import run_simulation

from clients.app import app as client_app
from server import simulation_engine
from server.app import make_server_app
from server.config import ConfigError, load_config
from server.launch import Launch, prepare
from server.results import run_dir
from strategies.accounting import Observer


class NoRunSimulationDeprecation(logging.Filter):
    """Flower 1.42 logs on every call that ``run_simulation`` is deprecated in favour of
    ``flwr run``. SpikeFed calls it to run many federations from one process (grids,
    benchmarks, tests); `flwr run` is supported as well (README) and runs the same apps."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "The `run_simulation` function is deprecated" not in record.getMessage()


logging.getLogger("flwr").addFilter(NoRunSimulationDeprecation())


def resolve(overrides: dict[str, Any]) -> Launch:
    """The run the overrides ask for, validated and prepared (:func:`server.launch.prepare`)
    before any process starts, with the GPU request checked for a local Ray."""
    cfg = load_config(overrides)
    # A local Ray without a GPU would wait for one forever; a cluster's GPUs may be on other nodes.
    if cfg.num_gpus > 0 and not cfg.ray_address and not torch.cuda.is_available():
        raise ConfigError(f"num-gpus={cfg.num_gpus} but torch sees no GPU here; accepted: num-gpus=0, "
                          "or a ray-address whose cluster has GPUs")
    return prepare(cfg)


def simulate(launch: Launch, observers: Sequence[Observer] = ()) -> Path:
    """Run ``launch`` (from :func:`resolve`) with one virtual SuperNode per partition, on a local Ray or on the Ray
    cluster ``ray-address`` names (Flower's Ray backend places the ClientApp actors across
    its nodes, ``num-cpus`` / ``num-gpus`` each); returns the results dir."""
    cfg = launch.cfg
    simulation_engine.install()  # one pass per poll over the messages, not one per node
    init_args = {"logging_level": "ERROR", "log_to_driver": False}
    if cfg.ray_address:
        init_args["address"] = cfg.ray_address
    elif not os.environ.get("RAY_ADDRESS"):  # a Ray started here (a cluster keeps its own settings)
        # Ray starts its workers at niceness 15, behind the driver and its own daemons: on a
        # few cores their every wake-up then stalls a multi-threaded torch step in an actor
        init_args["_system_config"] = {"worker_niceness": 0}
    run_simulation(
        server_app=make_server_app(launch, observers),
        client_app=client_app,
        num_supernodes=cfg.num_partitions,
        backend_config={
            "client_resources": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
            "init_args": init_args,
        },
    )
    return run_dir(cfg)


def read_rounds(directory: Path) -> list[dict[str, str]]:
    """The rows of a run's rounds.csv."""
    with (directory / "rounds.csv").open() as f:
        return list(csv.DictReader(f))
