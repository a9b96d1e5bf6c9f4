"""`oort`: Oort, Lai, Zhu, Madhyastha & Chowdhury, "Oort: Efficient Federated Learning via
Guided Participant Selection" (OSDI 2021), Alg. 1: statistical utility, and with devices on
(:mod:`strategies.devices`) its system utility."""

from __future__ import annotations

import math

import numpy as np
from flwr.app import Message

from core.config import at_least, share
from core.protocol import LOSS_SQ_MEAN, NUM_EXAMPLES
from strategies.base import ClientInfo, SelectionStrategy
from strategies.messaging import reply_metrics

STALENESS = 0.1  # Oort's staleness-bonus constant: sqrt(0.1 * log R / L_i)
CUTOFF = 0.95  # Oort samples exploited clients among utilities >= 95% of the k-th best


class Oort(SelectionStrategy):
    """Statistical utility of client i after it trains: U_i = |B_i| * sqrt(mean_k loss_k^2)
    over its training samples (clients report ``loss-sq-mean``). Each round a share
    epsilon of the cohort explores clients never trained (uniformly: there is no system
    speed to prefer here), the rest exploits: utilities plus the staleness bonus
    sqrt(0.1 * log R / L_i) (L_i = last round i trained), cut off at 95% of the
    (1 - epsilon) k-th best and sampled proportionally to utility. epsilon decays by a
    factor each round down to a floor, as in Oort.

    With devices, the system utility: a client whose round would take t_i longer than the
    preferred duration T has its utility multiplied by (T / t_i)^penalty, T the
    ``round_threshold`` percentile of all clients' durations (Oort's ``getTopK``; t_i the
    train message's expected time on the client's device), and unexplored clients are
    sampled proportionally to their data size times the same factor (Oort's initial reward
    is the data size) instead of uniformly. Oort's pacer (which relaxes T when the utility
    stalls) is not modelled: T stays at its percentile.

    Clients whose replies lack ``loss-sq-mean`` get no utility and stay unexplored: with a
    ClientApp that never sends it, Oort samples uniformly (said once, in one line).

    Parameters
    ----------
    explore_fraction, explore_decay, explore_min : float
        Run config `oort-explore-fraction` (0.9), `oort-explore-decay` (0.98),
        `oort-explore-min` (0.2), Oort's defaults.
    round_threshold, round_penalty : float
        Run config `oort-round-threshold` (30, percent) and `oort-round-penalty` (2), Oort's
        defaults; used with devices only.
    **kwargs
        Flower's ``FedAvg`` arguments and SpikeFed's ``seed``, ``clients`` (see SelectionStrategy).
    """

    STATE = ("utility", "last_round")
    PREFIX = "oort-"
    KEYS = {
        "oort-explore-fraction": share(0.9, meaning=(
            "`oort`: share of the cohort that explores unseen clients at first (Oort's default)")),
        "oort-explore-decay": share(0.98, meaning="`oort`: factor the exploration share is multiplied by each round"),
        "oort-explore-min": share(0.2, meaning="`oort`: the smallest exploration share"),
        "oort-round-threshold": at_least(30.0, 0, 100, meaning=(
            "`oort` with devices: the preferred round duration T is this percentile of the clients' durations")),
        "oort-round-penalty": at_least(2.0, 0, meaning="`oort` with devices: utility x (T / t_i)^penalty when t_i > T"),
    }

    def __init__(self, *, explore_fraction: float = 0.9, explore_decay: float = 0.98, explore_min: float = 0.2,
                 round_threshold: float = 30.0, round_penalty: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.explore, self.explore_decay, self.explore_min = explore_fraction, explore_decay, explore_min
        self.round_threshold, self.round_penalty = round_threshold, round_penalty
        self.utility: dict[int, float] = {}  # partition id -> U_i
        self.last_round: dict[int, int] = {}  # partition id -> L_i

    def exploration(self, server_round: int) -> float:
        return max(self.explore * self.explore_decay ** (server_round - 1), self.explore_min)

    def system_utility(self, candidates: list[ClientInfo]) -> dict[int, float]:
        """Per candidate, (T / t_i)^penalty when its expected duration t_i exceeds T, else 1
        (all 1 without devices)."""
        if self.devices is None:
            return {c.partition_id: 1.0 for c in candidates}
        model_bytes = sum(len(array.data) for array in self._global_arrays.values())
        durations = {c.partition_id: self.devices.train_seconds(c.partition_id, c.num_examples, model_bytes)
                     for c in self.clients.values()}
        ranked = sorted(durations.values())
        preferred = ranked[min(int(len(ranked) * self.round_threshold / 100), len(ranked) - 1)]
        return {c.partition_id: min(1.0, preferred / durations[c.partition_id]) ** self.round_penalty
                for c in candidates}

    def select(self, server_round: int, candidates: list[ClientInfo]) -> list[ClientInfo]:
        k = self.cohort_size(candidates)
        rng = self.round_rng(server_round)
        system = self.system_utility(candidates)
        seen = [c for c in candidates if c.partition_id in self.utility]
        unseen = [c for c in candidates if c.partition_id not in self.utility]
        n_explore = min(len(unseen), max(k - len(seen), round(self.exploration(server_round) * k)))
        pids = np.array([c.partition_id for c in seen], dtype=np.int64)
        scores = (np.array([self.utility[p] for p in pids.tolist()], dtype=float)
                  + np.sqrt(STALENESS * math.log(server_round) / np.array([self.last_round[p] for p in pids.tolist()])))
        scores *= np.array([system[p] for p in pids.tolist()], dtype=float)
        self.record.scores = dict(zip(pids.tolist(), scores.tolist()))
        exploit: list[ClientInfo] = []
        n_exploit = k - n_explore
        if n_exploit:
            ranked = np.lexsort((pids, -scores))  # highest score first, ties by partition id
            cutoff = CUTOFF * scores[ranked[n_exploit - 1]]
            pool = ranked[scores[ranked] >= cutoff]
            exploit = self.sample(rng, [seen[i] for i in pool.tolist()], n_exploit,
                                  weights=np.maximum(scores[pool], 1e-12).tolist())
        weights = None if self.devices is None else [c.num_examples * system[c.partition_id] for c in unseen]
        explore = self.sample(rng, unseen, n_explore, weights) if n_explore else []
        return sorted(exploit + explore, key=lambda c: c.partition_id)

    def choose_aggregated(self, server_round: int, replies: list[Message]) -> list[Message]:
        """Record the trained clients' utilities; all valid replies are aggregated."""
        for msg in replies:
            metrics = reply_metrics(msg)
            if not self.has_statistics(metrics, [LOSS_SQ_MEAN], "those clients stay unexplored (uniform sampling)"):
                continue
            pid = self.client(msg.metadata.src_node_id).partition_id
            self.utility[pid] = metrics[NUM_EXAMPLES] * float(np.sqrt(metrics[LOSS_SQ_MEAN]))
            self.last_round[pid] = server_round
        return replies
