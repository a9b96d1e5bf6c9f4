"""Per-run results: `config.json`, `rounds.csv` (one row per round) and `checkpoint.pt`."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from server.config import RunConfig

COLUMNS = [
    "round", "strategy", "selected_clients", "selected_nodes", "client_updates", "rejected_clients", "scores",
    "test_accuracy", "test_loss", "test_mse", "student_accuracy", "train_loss", "firing_rate", "seconds",
]


def run_dir(cfg: RunConfig) -> Path:
    """`<results-dir>/<run-name>`; an empty run-name becomes strategy-dataset-partitioner-seed-time."""
    name = cfg.run_name or (
        f"{cfg.strategy}-{cfg.dataset}-{cfg.partitioner}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    return Path(cfg.results_dir) / name


class RunResults:
    """Writes one run's result files as the run goes (a crash keeps what was written)."""

    def __init__(self, directory: Path, cfg: RunConfig) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(cfg.to_mapping(), indent=2) + "\n")
        self.rounds_csv = directory / "rounds.csv"
        with self.rounds_csv.open("w", newline="") as f:
            csv.writer(f).writerow(COLUMNS)

    def append(self, row: dict) -> None:
        """Append one round's row (keys from COLUMNS; lists are written space-separated)."""
        values = [" ".join(map(str, v)) if isinstance(v, list) else v for v in (row.get(c, "") for c in COLUMNS)]
        with self.rounds_csv.open("a", newline="") as f:
            csv.writer(f).writerow(values)

    def checkpoint(self, server_round: int, arrays: ArrayRecord) -> None:
        """Save the global model after ``server_round`` (written to a temp file, then renamed)."""
        tmp = self.directory / "checkpoint.pt.tmp"
        torch.save({"round": server_round, "state_dict": arrays.to_torch_state_dict()}, tmp)
        tmp.replace(self.directory / "checkpoint.pt")
