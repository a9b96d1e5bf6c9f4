"""What a run starts from, prepared in one place: the partitions, the split, the initial (or
resumed) model and the random states the rounds continue from.

The ServerApp prepares its run with :func:`prepare` under every launcher (`flwr run`, the
compose deployment); `spikefed run` and `spikefed compare` call it before any process starts,
so that a bad partitioning or checkpoint stops in one line, and hand the result to the
ServerApp they start (:func:`server.app.make_server_app`), which then uses it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from data import Split, partition_sizes, split_of
from models import get_workload
from server.config import RunConfig, load_config
from server.results import load_checkpoint, rng_states, run_dir


@dataclass(frozen=True)
class Launch:
    """A prepared run.

    Parameters
    ----------
    cfg : the validated run config, its ``run-name`` fixed (so the caller knows where the results go).
    split : the dataset's train and test split.
    sizes : training samples per partition.
    model : the workload's initial model, seeded by ``seed``; the checkpoint's weights when resuming.
    checkpoint : what ``resume`` names (None for a new run).
    rng : the random states the rounds start from: right after the model was built, or the checkpoint's.
    """

    cfg: RunConfig
    split: Split
    sizes: list[int]
    model: torch.nn.Module
    checkpoint: dict[str, Any] | None
    rng: dict[str, Any]

    @property
    def done(self) -> int:
        """Rounds already run (those of the resumed checkpoint)."""
        return self.checkpoint["round"] if self.checkpoint else 0


def prepare(cfg: RunConfig) -> Launch:
    """Everything a run of ``cfg`` needs before its first round; ConfigError (one line) when
    the data cannot be partitioned as asked, the initial model cannot be made (e.g. an
    unreadable ``dda-student``) or the checkpoint to resume does not fit."""
    torch.manual_seed(cfg.seed)
    sizes = partition_sizes(cfg)
    split = split_of(cfg)
    model = get_workload(cfg.workload).initial_model(cfg, split.spec)
    checkpoint = load_checkpoint(cfg) if cfg.resume else None
    if checkpoint:
        model.load_state_dict(checkpoint["state_dict"])
    if not cfg.run_name:
        cfg = load_config({**cfg.to_mapping(), "run-name": run_dir(cfg).name})
    return Launch(cfg, split, sizes, model, checkpoint, checkpoint["rng"] if checkpoint else rng_states())
