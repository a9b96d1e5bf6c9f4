"""Experiment tracking: each round's record logged to TensorBoard or MLflow as the run goes,
by a strategy observer, with the run config as hyper-parameters (run config ``tracking``).

The libraries' own writers do the work: torch's ``SummaryWriter`` (event files under
``<results-dir>/tensorboard/<name>``: ``tensorboard --logdir results``) and MLflow's client
on a local SQLite store (``<results-dir>/mlflow.db`` unless ``tracking-uri`` names another;
MLflow's file store is in maintenance mode and refuses to start without an opt-out). No
server runs. The scalars are rounds.csv's numeric columns (:func:`server.results.round_row`),
one per round, step = the round; the server's evaluation adds each layer's firing rate.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import ArrayRecord

from core.config import RunConfig
from server.results import round_metrics, round_row

if TYPE_CHECKING:
    from strategies.accounting import Observer, RoundRecord

# rounds.csv's columns that are not scalars of a round
NOT_SCALARS = {"round", "strategy", "selected_clients", "selected_nodes", "rejected_clients", "rejections",
               "injected_faults", "scores", "executors", "energy_snn_j_cumulative", "energy_ann_j_cumulative",
               "sim_seconds_cumulative"}


def scalars(record: RoundRecord, cfg: RunConfig) -> dict[str, float]:
    """A round's scalars: rounds.csv's numeric values, the count of clients aggregated and
    rejected, and the server's per-layer firing rates (``firing-rate/<layer>``)."""
    row = round_row(record, cfg, {})
    out = {}
    for name, value in row.items():
        if name in NOT_SCALARS or value in ("", None):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[name] = number
    out["clients_aggregated"] = float(len(record.selected))
    out["clients_rejected"] = float(len(record.rejected))
    out |= {k.replace("firing-rate/", "firing_rate/"): float(v) for k, v in round_metrics(record, cfg).items()
            if k.startswith("firing-rate/")}
    return out


def hyperparameters(cfg: RunConfig) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool)) and not (isinstance(v, float) and math.isinf(v))
                else str(v)) for k, v in cfg.to_mapping().items()}


class TensorBoardTracker:
    """Event files under ``<results-dir>/tensorboard/<name>`` (torch's ``SummaryWriter``); a
    run started afresh (``done`` = 0) replaces what an earlier attempt of it wrote there."""

    def __init__(self, cfg: RunConfig, name: str, done: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.cfg = cfg
        directory = Path(cfg.results_dir) / "tensorboard" / name
        if not done:
            shutil.rmtree(directory, ignore_errors=True)
        self.writer = SummaryWriter(log_dir=str(directory))
        # run_name "." keeps the hyper-parameters in the run's own folder, not a timestamped one
        self.writer.add_hparams(hyperparameters(self.cfg), {}, run_name=".")

    def __call__(self, record: RoundRecord, arrays: ArrayRecord) -> None:
        for name, value in scalars(record, self.cfg).items():
            self.writer.add_scalar(name, value, record.server_round)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    """One MLflow run (MLflow's client; experiment = the results folder). A run started afresh
    (``done`` = 0) replaces earlier runs of its name; a resumed one goes on logging to its own."""

    def __init__(self, cfg: RunConfig, name: str, done: int) -> None:
        from mlflow.tracking import MlflowClient  # installed: server/config.py checks it

        for noisy in ("mlflow", "alembic"):  # their INFO lines on creating the store's tables
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.cfg = cfg
        uri = cfg.tracking_uri or f"sqlite:///{(Path(cfg.results_dir) / 'mlflow.db').resolve()}"
        Path(cfg.results_dir).mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=uri)
        experiment = str(cfg.results_dir)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        earlier = self.client.search_runs([experiment_id], filter_string=f"attributes.run_name = '{name}'",
                                          order_by=["attributes.start_time DESC"])
        if done and earlier:
            self.run_id = earlier[0].info.run_id
            self.client.update_run(self.run_id, "RUNNING")
            return
        for run in earlier:
            self.client.delete_run(run.info.run_id)
        self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
        for key, value in hyperparameters(cfg).items():
            self.client.log_param(self.run_id, key, value)

    def __call__(self, record: RoundRecord, arrays: ArrayRecord) -> None:
        for name, value in scalars(record, self.cfg).items():
            self.client.log_metric(self.run_id, name, value, step=record.server_round)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


@contextmanager
def tracker(cfg: RunConfig, done: int = 0) -> Iterator[list[Observer]]:
    """The observers ``tracking`` asks for (none, or one tracker) for a run after ``done``
    rounds (a resumed one), closed at the end of the run."""
    if cfg.tracking == "none":
        yield []
        return
    name = cfg.tracking_run or cfg.run_name or Path(cfg.resume).name
    kind = TensorBoardTracker if cfg.tracking == "tensorboard" else MLflowTracker
    active = kind(cfg, name, done)
    try:
        yield [active]
    finally:
        active.close()
