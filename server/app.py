"""The SpikeFed ServerApp: strategy by name, the workload's model, evaluation, results,
a checkpoint after every round and resuming from it (run config `resume`)."""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
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
from server.results import RunResults, load_checkpoint, run_dir, set_rng_states, test_columns
from strategies import STRATEGIES, privacy

# Ray's driver warns on every start that a future Ray will stop hiding GPUs from actors with
# num_gpus=0; nothing a user does here changes that, and SpikeFed's clients ask for GPUs by num-gpus.
warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)


def mean_firing_rate(rates: Mapping[str, list[float]]) -> float:
    """Mean over layers of each layer's mean rate."""
    return float(np.mean([np.mean(v) for v in rates.values()]))


def counts(values) -> str:
    """``a:2 b:1`` for the values' occurrences, sorted by value."""
    return " ".join(f"{v}:{n}" for v, n in sorted(Counter(values).items()))


def run_federation(grid: Grid, cfg: RunConfig) -> Path:
    """Run rounds up to ``cfg.num_server_rounds`` (continuing ``cfg.resume`` when set);
    returns the results directory."""
    torch.manual_seed(cfg.seed)
    workload = get_workload(cfg.workload)
    split = split_of(cfg)
    sizes = partition_sizes(cfg)  # fails early, with advice, if the split is impossible
    log(INFO, "%d partitions of %s, sizes %d..%d", len(sizes), cfg.dataset, min(sizes), max(sizes))

    clients = discover_clients(grid, cfg)
    strategy = privacy.wrap(STRATEGIES[cfg.strategy].from_config(cfg, clients), cfg)
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
    last = time.perf_counter()

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """Server-side evaluation; after each round it also writes the row and checkpoint."""
        nonlocal last
        metrics: dict[str, Any] = {}
        if server_round == 0 and done:
            return MetricRecord()  # evaluated before the crash
        server_round += done
        started = time.perf_counter()
        if cfg.server_eval:
            model.load_state_dict(arrays.to_torch_state_dict())
            metrics = workload.evaluate(model, test_data, cfg)
            metrics["firing-rate"] = mean_firing_rate(workload.firing_rates(model, test_data, cfg))
        eval_seconds = time.perf_counter() - started
        if server_round == 0:
            return MetricRecord(metrics)
        record = strategy.record
        if not cfg.server_eval and record.evaluate_metrics is not None:
            metrics = dict(record.evaluate_metrics)
        train = dict(record.train_metrics or {})
        extra = workload.after_round(server_round, arrays.to_torch_state_dict(), cfg, split, results.directory)
        previous = results.rows[-1] if results.rows else {}
        energy = {f"energy_{kind}_j": record.energy[f"energy-{kind}"] for kind in ("snn", "ann")}
        results.append({
            "round": server_round,
            "strategy": cfg.strategy,
            "selected_clients": [c.partition_id for c in record.selected],
            "selected_nodes": [c.node_id for c in record.selected],
            "client_updates": record.client_updates,
            "rejected_clients": sorted(record.rejected),
            "rejections": counts(r.reason for r in record.rejected.values()),
            "injected_faults": counts(f.split(":")[0] for f in record.injected.values()),
            "model_updated": record.model_updated,
            "scores": [f"{pid}:{score:.6g}" for pid, score in sorted(record.scores.items())],
            **{column: metrics.get(column.removeprefix("test_"), "") for column in test_columns()},
            "train_loss": train.get("train-loss", ""),
            "firing_rate": metrics.get("firing-rate", ""),
            "uplink_bytes": record.uplink_bytes,
            "downlink_bytes": record.downlink_bytes,
            **{k: f"{v:.6g}" for k, v in energy.items()},
            **{f"{k}_cumulative": f"{float(previous.get(f'{k}_cumulative') or 0.0) + v:.6g}" for k, v in energy.items()},
            "executors": counts(record.executors.values()),
            "client_seconds": round(record.compute_seconds, 3),
            "eval_seconds": round(eval_seconds, 3),
            "seconds": round(time.perf_counter() - last, 3),
            **{f"dp_{kind}_epsilon": "" if value is None else f"{value:.6g}"
               for kind, value in (("statistics", record.statistics_epsilon), ("model", record.model_epsilon))},
            **extra,
        })
        results.checkpoint(server_round, arrays, strategy.state_dict())
        last = time.perf_counter()
        return MetricRecord(metrics)

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
