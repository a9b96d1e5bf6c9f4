"""The SpikeFed ServerApp: strategy by name, the workload's model, evaluation, results,
a checkpoint after every round and resuming from it (run config `resume`)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from logging import ERROR, INFO
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from models import get_workload
from server.config import KEYS, ConfigError, load_config
from server.discovery import discover_clients
from server.launch import Launch, prepare
from server.progress import logged
from server.tracking import tracker
from server.results import RunResults, run_dir, set_rng_states
from strategies import STRATEGIES, privacy
from strategies.accounting import Observer

# Ray's driver warns on every start that a future Ray will stop hiding GPUs from actors with
# num_gpus=0; nothing a user does here changes that, and SpikeFed's clients ask for GPUs by num-gpus.
warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)


def mean_firing_rate(rates: Mapping[str, list[float]]) -> float:
    """Mean over layers of each layer's mean rate."""
    return float(np.mean([np.mean(v) for v in rates.values()]))


def run_federation(grid: Grid, launch: Launch, observers: Sequence[Observer] = ()) -> Path:
    """Run rounds up to ``num-server-rounds`` (continuing a resumed run); returns the
    results directory. Each round's record goes to the results files, to the log (one line),
    to the tracker ``tracking`` names and then to ``observers``."""
    cfg, split, done = launch.cfg, launch.split, launch.done
    workload = get_workload(cfg.workload)
    log(INFO, "%d partitions of %s, sizes %d..%d", len(launch.sizes), cfg.dataset, min(launch.sizes),
        max(launch.sizes))
    clients = discover_clients(grid, cfg)
    model = launch.model
    selection = STRATEGIES[cfg.strategy].from_config(cfg, clients, [name for name, _ in model.named_buffers()])
    strategy = privacy.wrap(selection, cfg)
    if launch.checkpoint:
        strategy.load_state_dict(launch.checkpoint["strategy"], done)
        log(INFO, "resuming %s after round %d of %d", cfg.resume, done, cfg.num_server_rounds)
    set_rng_states(launch.rng)
    results = RunResults(run_dir(cfg), cfg, launch.checkpoint["rows"] if launch.checkpoint else None)
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
            rates = workload.firing_rates(model, test_data, cfg)
            metrics["firing-rate"] = mean_firing_rate(rates)
            metrics |= {f"firing-rate/{layer}": float(np.mean(v)) for layer, v in rates.items()}  # for tracking
        if server_round > 0:
            metrics |= workload.after_round(server_round + done, arrays.to_torch_state_dict(), cfg, split,
                                            results.directory)
        return MetricRecord(metrics)

    config = ConfigRecord(cfg.for_clients(KEYS))  # the keys a ClientApp reads, no more
    with tracker(cfg, done) as trackers:
        selection.observers += [results.observer(strategy.state_dict), logged(cfg), *trackers, *observers]
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=cfg.num_server_rounds - done,
            timeout=cfg.round_timeout,
            train_config=config,
            evaluate_config=ConfigRecord(cfg.for_clients(KEYS)),
            evaluate_fn=evaluate,
        )
    log(INFO, "Results: %s", results.directory)
    return results.directory


class OneLineConfigErrors(logging.Filter):
    """Drops Flower's log record of a ConfigError raised by the ServerApp: Flower logs an
    app's exception with its full traceback, but a bad run config is the user's to fix and
    :func:`make_server_app` has already said it in one line (the run still fails). Drops
    too the warning FedAvg gives every run that evaluates on the server only (SpikeFed's
    default, ``fraction-evaluate=0``): nothing for the user to fix."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("fraction_evaluate is set to 0.0"):
            return False
        return not (record.exc_info and isinstance(record.exc_info[1], ConfigError))


def make_server_app(launch: Launch | None = None, observers: Sequence[Observer] = ()) -> ServerApp:
    """A ServerApp that runs ``launch`` (how `spikefed run` hands its prepared run to a
    programmatic simulation), or, without one, prepares Flower's run config; ``observers``
    get each round's record (e.g. `spikefed run`'s live line)."""
    app = ServerApp()
    flower_logger = logging.getLogger("flwr")
    if not any(isinstance(f, OneLineConfigErrors) for f in flower_logger.filters):
        flower_logger.addFilter(OneLineConfigErrors())

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            run_federation(grid, launch or prepare(load_config(context.run_config)), observers)
        except ConfigError as err:
            log(ERROR, "config error: %s", err)
            raise

    return app


app = make_server_app()
