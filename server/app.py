"""The SpikeFed ServerApp: strategy by name, the workload's model, evaluation, results,
a checkpoint after every round and resuming from it (run config `resume`)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from logging import ERROR, INFO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from data import partition_sizes, split_of
from models import get_workload
from server.config import ConfigError, RunConfig, load_config
from server.discovery import discover_clients
from server.results import RunResults, load_checkpoint, run_dir, set_rng_states
from strategies import STRATEGIES, privacy

# Ray's driver warns on every start that a future Ray will stop hiding GPUs from actors with
# num_gpus=0; nothing a user does here changes that, and SpikeFed's clients ask for GPUs by num-gpus.
warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)


def mean_firing_rate(rates: Mapping[str, list[float]]) -> float:
    """Mean over layers of each layer's mean rate."""
    return float(np.mean([np.mean(v) for v in rates.values()]))


def run_federation(grid: Grid, cfg: RunConfig) -> Path:
    """Run rounds up to ``cfg.num_server_rounds`` (continuing ``cfg.resume`` when set);
    returns the results directory."""
    torch.manual_seed(cfg.seed)
    workload = get_workload(cfg.workload)
    split = split_of(cfg)
    sizes = partition_sizes(cfg)  # fails early, with advice, if the split is impossible
    log(INFO, "%d partitions of %s, sizes %d..%d", len(sizes), cfg.dataset, min(sizes), max(sizes))

    clients = discover_clients(grid, cfg)
    selection = STRATEGIES[cfg.strategy].from_config(cfg, clients)
    strategy = privacy.wrap(selection, cfg)
    model = workload.initial_model(cfg, split.spec)
    done = 0
    if cfg.resume:
        checkpoint = load_checkpoint(cfg)
        done = checkpoint["round"]
        model.load_state_dict(checkpoint["state_dict"])
        strategy.load_state_dict(checkpoint["strategy"], done)
        set_rng_states(checkpoint["rng"])
        log(INFO, "resuming %s after round %d of %d", cfg.resume, done, cfg.num_server_rounds)
    results = RunResults(run_dir(cfg), cfg, checkpoint["rows"] if cfg.resume else None)
    if done >= cfg.num_server_rounds:
        log(INFO, "%s already holds %d rounds: nothing to run", results.directory, done)
        return results.directory
    test_data = (split.x_test, split.y_test)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """Server-side evaluation of the global model after ``server_round`` (0: the initial
        one), with the workload's own after-round work (e.g. a distilled DDA student)."""
        if server_round == 0 and done:
            return MetricRecord()  # evaluated before the crash
        metrics: dict[str, Any] = {}
        if cfg.server_eval:
            model.load_state_dict(arrays.to_torch_state_dict())
            metrics = workload.evaluate(model, test_data, cfg)
            metrics["firing-rate"] = mean_firing_rate(workload.firing_rates(model, test_data, cfg))
        if server_round > 0:
            metrics |= workload.after_round(server_round + done, arrays.to_torch_state_dict(), cfg, split,
                                            results.directory)
        return MetricRecord(metrics)

    selection.observers.append(results.observer(strategy.state_dict))  # rounds.csv and the checkpoint
    config = ConfigRecord(cfg.to_mapping())
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=cfg.num_server_rounds - done,
        timeout=cfg.round_timeout,
        train_config=config,
        evaluate_config=ConfigRecord(cfg.to_mapping()),
        evaluate_fn=evaluate,
    )
    log(INFO, "Results: %s", results.directory)
    return results.directory


class OneLineConfigErrors(logging.Filter):
    """Drops Flower's log record of a ConfigError raised by the ServerApp: Flower logs an
    app's exception with its full traceback, but a bad run config is the user's to fix and
    :func:`make_server_app` has already said it in one line (the run still fails)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConfigError))


def make_server_app(overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """A ServerApp whose run config is Flower's run config updated with ``overrides``
    (how `spikefed run` passes its settings to a programmatic simulation)."""
    app = ServerApp()
    flower_logger = logging.getLogger("flwr")
    if not any(isinstance(f, OneLineConfigErrors) for f in flower_logger.filters):
        flower_logger.addFilter(OneLineConfigErrors())

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            cfg = load_config({**context.run_config, **(overrides or {})})
            run_federation(grid, cfg)
        except ConfigError as err:
            log(ERROR, "config error: %s", err)
            raise

    return app


app = make_server_app()
