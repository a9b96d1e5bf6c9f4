"""Per-run results: `config.json`, `rounds.csv` (one row per round) and `checkpoint.pt`
(everything a resumed run needs: global weights, strategy state, RNG states, rows so far)."""

from __future__ import annotations

import csv
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from flwr.app import ArrayRecord

from models import test_metrics
from server.config import ConfigError, RunConfig, load_config

if TYPE_CHECKING:
    from strategies.accounting import Observer, RoundRecord


def test_columns() -> list[str]:
    """rounds.csv's test metrics: test_<name> for each metric a workload declares (models.test_metrics)."""
    return [f"test_{name}" for name in test_metrics()]


def columns() -> list[str]:
    """rounds.csv's columns, in order."""
    return ["round", "strategy", "selected_clients", "selected_nodes", "client_updates", "rejected_clients",
            "rejections", "injected_faults", "model_updated", "scores", *test_columns(), "student_accuracy",
            "train_loss", "firing_rate", "uplink_bytes", "downlink_bytes", "energy_snn_j", "energy_ann_j",
            "energy_snn_j_cumulative", "energy_ann_j_cumulative", "executors", "client_seconds", "eval_seconds",
            "seconds", "sim_seconds", "sim_seconds_cumulative", "dp_statistics_epsilon", "dp_model_epsilon"]


def counts(values) -> str:
    """``a:2 b:1`` for the values' occurrences, sorted by value."""
    return " ".join(f"{v}:{n}" for v, n in sorted(Counter(values).items()))


def round_metrics(record: RoundRecord, cfg: RunConfig) -> dict[str, Any]:
    """The new global model's test metrics: the server's evaluation, else (``server-eval=false``)
    the clients' federated one."""
    metrics = dict(record.server_metrics or {})
    if not cfg.server_eval and record.evaluate_metrics is not None:
        metrics |= dict(record.evaluate_metrics)
    return metrics


def round_row(record: RoundRecord, cfg: RunConfig, previous: Mapping[str, Any]) -> dict[str, Any]:
    """rounds.csv's row of a round's ``record`` (``previous``: the row before, for the running sums)."""
    metrics = round_metrics(record, cfg)
    train = dict(record.train_metrics or {})
    energy = {f"energy_{kind}_j": record.energy[f"energy-{kind}"] for kind in ("snn", "ann")}
    return {
        "round": record.server_round,
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
        "student_accuracy": metrics.get("student_accuracy", ""),
        "train_loss": train.get("train-loss", ""),
        "firing_rate": metrics.get("firing-rate", ""),
        "uplink_bytes": record.uplink_bytes,
        "downlink_bytes": record.downlink_bytes,
        **{k: f"{v:.6g}" for k, v in energy.items()},
        **{f"{k}_cumulative": f"{float(previous.get(f'{k}_cumulative') or 0.0) + v:.6g}" for k, v in energy.items()},
        "executors": counts(record.executors.values()),
        "client_seconds": round(record.compute_seconds, 3),
        "eval_seconds": round(record.eval_seconds, 3),
        "seconds": round(record.seconds, 3),
        # devices on: the round's critical path on the clients' devices, and its running sum
        **({"sim_seconds": "", "sim_seconds_cumulative": ""} if record.sim_seconds is None else {
            "sim_seconds": f"{record.sim_seconds:.6g}",
            "sim_seconds_cumulative": f"{float(previous.get('sim_seconds_cumulative') or 0.0) + record.sim_seconds:.6g}"}),
        **{f"dp_{kind}_epsilon": "" if value is None else f"{value:.6g}"
           for kind, value in (("statistics", record.statistics_epsilon), ("model", record.model_epsilon))},
    }


CHECKPOINT = "checkpoint.pt"
# keys a resumed run may change: where it is written, how long it runs, that it resumes
RESUMABLE_CHANGES = {"resume", "num-server-rounds", "results-dir", "run-name"}


def run_dir(cfg: RunConfig) -> Path:
    """The folder being resumed, or `<results-dir>/<run-name>`; an empty run-name becomes
    strategy-dataset-partitioner-seed-time."""
    if cfg.resume:
        return Path(cfg.resume)
    name = cfg.run_name or (
        f"{cfg.strategy}-{cfg.dataset}-{cfg.partitioner}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    return Path(cfg.results_dir) / name


def rng_states() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": list(np.random.get_state()), "python": random.getstate()}
    state["numpy"][1] = state["numpy"][1].tolist()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(cfg: RunConfig) -> dict[str, Any]:
    """The checkpoint of the run ``cfg.resume`` names, checked against ``cfg``
    (ConfigError naming the path or the first differing key)."""
    directory = Path(cfg.resume)
    path = directory / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"resume={str(directory)!r} holds no {CHECKPOINT}; accepted: a run folder that "
                          "completed at least one round")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        recorded = load_config(checkpoint["config"]).to_mapping()
    except ConfigError as err:
        raise ConfigError(f"resume={str(directory)!r}: its recorded config is no longer valid ({err})") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise ConfigError(f"resume={str(directory)!r}: {CHECKPOINT} cannot be read ({type(err).__name__}: "
                          f"{first_line}); accepted: a checkpoint written by SpikeFed") from None
    for key, value in cfg.to_mapping().items():
        if key not in RESUMABLE_CHANGES and recorded[key] != value:
            raise ConfigError(f"{key}={value!r} differs from the resumed run's {recorded[key]!r}; a resumed "
                              f"run keeps its config except {', '.join(sorted(RESUMABLE_CHANGES))}")
    return checkpoint


class RunResults:
    """Writes one run's result files as the run goes (a crash keeps what was written)."""

    def __init__(self, directory: Path, cfg: RunConfig, rows: list[dict] | None = None) -> None:
        """Start ``directory``'s files, or rewrite them with the ``rows`` of a checkpoint."""
        self.directory = directory
        self.cfg = cfg
        self.config = cfg.to_mapping()
        self.rows: list[dict] = []
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(self.config, indent=2) + "\n")
        self.rounds_csv = directory / "rounds.csv"
        with self.rounds_csv.open("w", newline="") as f:
            csv.writer(f).writerow(columns())
        for row in rows or []:
            self.append(row)

    def append(self, row: dict) -> None:
        """Append one round's row (keys from :func:`columns`; lists are written space-separated)."""
        row = {c: row.get(c, "") for c in columns()}
        self.rows.append(row)
        values = [" ".join(map(str, v)) if isinstance(v, list) else v for v in row.values()]
        with self.rounds_csv.open("a", newline="") as f:
            csv.writer(f).writerow(values)

    def observer(self, strategy_state: Callable[[], dict]) -> Observer:
        """A strategy observer: each round's row appended, then the checkpoint written (with
        ``strategy_state()``)."""
        def observe(record: RoundRecord, arrays: ArrayRecord) -> None:
            self.append(round_row(record, self.cfg, self.rows[-1] if self.rows else {}))
            self.checkpoint(record.server_round, arrays, strategy_state())
        return observe

    def checkpoint(self, server_round: int, arrays: ArrayRecord, strategy_state: dict) -> None:
        """Save what a resumed run needs after ``server_round`` (temp file, then an atomic rename)."""
        tmp = self.directory / f"{CHECKPOINT}.tmp"
        torch.save({"round": server_round, "state_dict": arrays.to_torch_state_dict(),
                    "strategy": strategy_state, "rng": rng_states(), "rows": self.rows,
                    "config": self.config}, tmp)
        tmp.replace(self.directory / CHECKPOINT)
