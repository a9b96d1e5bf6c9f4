"""One concise line per round, from the round's record: what the ServerApp logs after each
round (under `flwr run` the line to read, where Flower's own output dumps every aggregated
metric), and what `spikefed run`'s live view shows."""

from __future__ import annotations

from logging import INFO
from typing import TYPE_CHECKING

from flwr.app import ArrayRecord
from flwr.common import log

from models import get_workload
from server.config import RunConfig
from server.results import round_metrics

if TYPE_CHECKING:
    from strategies.accounting import Observer, RoundRecord


def summary(record: RoundRecord, cfg: RunConfig) -> str:
    """``accuracy 0.7125, 5 aggregated of 10 trained, 1 rejected, 2.3 s``: the workload's
    headline metric, the clients, the round's seconds."""
    metrics = round_metrics(record, cfg)
    parts = [f"{name} {float(metrics[name]):.4f}" for name in get_workload(cfg.workload).METRICS if name in metrics][:1]
    parts.append(f"{len(record.selected)} aggregated of {record.client_updates} trained")
    if record.rejected:
        parts.append(f"{len(record.rejected)} rejected")
    parts.append(f"{record.seconds:.1f} s")
    return ", ".join(parts)


def logged(cfg: RunConfig) -> Observer:
    """A strategy observer that logs each round's :func:`summary` at INFO."""
    def observe(record: RoundRecord, arrays: ArrayRecord) -> None:
        log(INFO, "round %d/%d: %s", record.server_round, cfg.num_server_rounds, summary(record, cfg))
    return observe
