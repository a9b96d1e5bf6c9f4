"""How close SFedCA's statistic is to each client's label histogram, by round (issue 25).

A federation under random selection (the real local update of SpikeFed's ClientApp,
FedAvg by Flower's ``aggregate_arrayrecords``, no Flower or Ray around it: the statistic
does not depend on the transport) is stopped at the probe rounds; there every client
measures SFedCA's two statistics, the output layer's rates and the class-wise intensity
(the network's rate on the local samples of each class, 0 for an absent class), with the
received global model on its data (``before``: what ``sfedca-when = before`` ranks by)
and with its locally trained model (``after``, what the default ranks by), and, as
SFedCA's local DP would send them, the same vectors through the Gaussian mechanism at
each epsilon. Each vector, normalised to sum 1, is compared with
the client's label histogram: cosine similarity and L1 distance (0: the histogram
itself; 2: disjoint), averaged over clients.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.config import RunConfig


def label_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(labels, minlength=num_classes) / len(labels)


def compare(vector, histogram: np.ndarray) -> tuple[float, float]:
    """(cosine, L1 distance) of ``vector`` normalised to sum 1 against ``histogram``."""
    v = np.asarray(vector, dtype=float)
    p = v / v.sum() if v.sum() > 0 else np.full(len(v), 1 / len(v))
    cosine = float(p @ histogram / (np.linalg.norm(p) * np.linalg.norm(histogram) or 1.0))
    return cosine, float(np.abs(p - histogram).sum())


def probe(cfg: RunConfig, rounds: list[int], epsilons: list[float]) -> pd.DataFrame:
    """One row per (round, statistic, phase, epsilon): the mean over clients of cosine and L1."""
    from flwr.app import ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    from clients.app import global_model, local_update
    from core import privacy
    from core.protocol import statistic_keys
    from data import client_train_data, partition_sizes, split_of
    from models import get_workload
    from strategies import RandomSelection
    from strategies.base import ClientInfo

    torch.set_num_threads(max(1, int(cfg.num_cpus)))
    torch.manual_seed(cfg.seed)
    split = split_of(cfg)
    classes = split.spec.num_classes
    clients = {pid: ClientInfo(pid, pid, n) for pid, n in enumerate(partition_sizes(cfg))}
    selection = RandomSelection(clients=clients, fraction_train=cfg.fraction_train,
                                min_train_nodes=cfg.min_train_nodes, seed=cfg.seed)
    state = get_workload(cfg.workload).initial_model(cfg, split.spec).state_dict()
    histograms = {pid: label_histogram(np.asarray(client_train_data(cfg, pid)[1]), classes) for pid in clients}
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for server_round in range(0, max(rounds) + 1):
        if server_round in rounds:
            found: dict[tuple[str, str, float], list[tuple[float, float]]] = {}
            for pid in clients:
                _, metrics = local_update(cfg, pid, global_model(cfg, state), server_round)
                for statistic in ("output", "class"):
                    keys = statistic_keys(tuple(metrics), statistic)
                    for phase in ("before", "after"):
                        vector = metrics[keys[phase]]
                        for epsilon in [math.inf, *epsilons]:
                            if math.isfinite(epsilon):
                                vector = privacy.privatise(metrics[keys[phase]], privacy.noise_multiplier(epsilon, 1e-5, 1),
                                                           rng)
                            found.setdefault((statistic, phase, epsilon), []).append(compare(vector, histograms[pid]))
            for (statistic, phase, epsilon), pairs in found.items():
                cosines, distances = zip(*pairs)
                rows.append({"round": server_round, "statistic": statistic, "phase": phase, "epsilon": epsilon,
                             "cosine": float(np.mean(cosines)), "l1": float(np.mean(distances))})
        if server_round == max(rounds):
            break
        replies = []
        for client in selection.select(server_round + 1, list(clients.values())):
            arrays, metrics = local_update(cfg, client.partition_id, global_model(cfg, state), server_round + 1)
            replies.append(RecordDict({"arrays": ArrayRecord(arrays),
                                       "metrics": MetricRecord({"num-examples": metrics["num-examples"]})}))
        state = aggregate_arrayrecords(replies, "num-examples").to_torch_state_dict()
    return pd.DataFrame(rows)


def write(frame: pd.DataFrame, out: Path) -> None:
    """probe.csv, probe-l1.md and probe-cosine.md (rounds down, statistic x phase x epsilon across)."""
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "probe.csv", index=False)
    frame = frame.assign(column=[f"{s} {p}, eps {'inf' if math.isinf(e) else f'{e:g}'}"
                                 for s, p, e in zip(frame["statistic"], frame["phase"], frame["epsilon"])])
    for value in ("l1", "cosine"):
        table = frame.pivot(index="round", columns="column", values=value).round(3)
        (out / f"probe-{value}.md").write_text(table.to_markdown() + "\n")
