"""`spike-diversity`: client selection by the diversity of the clients' spike activity.

The spiking-FL client-selection code (GitHub peter0201yu/FedSNN-ClientSelection,
``models/client_selection.py``) chooses among trained candidates greedily by diversity;
this strategy applies that greedy facility-location choice (DivFL's,
:func:`strategies.divfl.facility_location`) to what a spiking client can report without
sending its weights: the firing rates of every spiking layer after local training (the
``firing-after/`` metrics, concatenated in layer order). So it runs in SFedCA's two phases:
m = ceil(factor x k) random candidates train and reply with their rates only, the k whose
activity patterns cover the others best upload their weights, the others drop theirs.

Replies without the rates are not ranked; when fewer than k are, random ones fill the
places left (with a ClientApp that sends no rates: k random candidates).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Message

from core.config import at_least
from core.protocol import FIRING_AFTER
from strategies.base import ClientInfo, SelectionStrategy
from strategies.divfl import facility_location, pairwise_distances
from strategies.messaging import reply_metrics


def spike_activity(metrics) -> np.ndarray | None:
    """The ``firing-after/`` rates of every layer, in layer order, as one vector (None when absent)."""
    keys = sorted(k for k in metrics if k.startswith(FIRING_AFTER))
    return np.concatenate([np.asarray(metrics[k], dtype=float) for k in keys]) if keys else None


class SpikeDiversity(SelectionStrategy):
    """Two-phase selection of the k candidates whose spike activity after training is the
    most representative of all m (see the module docstring).

    Parameters
    ----------
    candidate_factor : float
        m = min(N, ceil(candidate_factor x k)) (run config `spike-diversity-candidate-factor`, default 2).
    **kwargs
        Flower's ``FedAvg`` arguments and SpikeFed's ``seed``, ``clients`` (see SelectionStrategy).
    """

    PREFIX = "spike-diversity-"
    KEYS = {"spike-diversity-candidate-factor": at_least(2.0, 1, meaning=(
        "`spike-diversity`: m = factor x k random candidates train; the k with the most representative firing "
        "rates upload"))}
    two_phase = True

    def __init__(self, *, candidate_factor: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.candidate_factor = candidate_factor

    def select(self, server_round: int, candidates: list[ClientInfo]) -> list[ClientInfo]:
        return self.random_candidates(server_round, candidates, self.candidate_factor)

    def choose_aggregated(self, server_round: int, replies: list[Message]) -> list[Message]:
        k = min(self.clients_per_round, len(replies))
        rates = [spike_activity(reply_metrics(m)) for m in replies]
        lengths = [len(r) for r in rates if r is not None]
        length = max(set(lengths), key=lengths.count) if lengths else 0
        ranked = [i for i, r in enumerate(rates) if r is not None and len(r) == length]
        missing = next((m for m, r in zip(replies, rates) if r is None), None)
        if missing is not None:
            self.has_statistics(reply_metrics(missing), [FIRING_AFTER],
                                "those are not ranked; random candidates fill the places left")
        distances = pairwise_distances(np.stack([rates[i] for i in ranked])) if ranked else np.zeros((0, 0))
        chosen_rows = facility_location(distances, k)
        picked = [ranked[i] for i in chosen_rows]
        if picked:  # each ranked candidate's distance to the nearest chosen one
            nearest = distances[chosen_rows].min(0)
            self.record.scores = {self.client(replies[i].metadata.src_node_id).partition_id: float(d)
                                  for i, d in zip(ranked, nearest)}
        rest = [m for i, m in enumerate(replies) if i not in picked]
        places = min(k - len(picked), len(rest))
        chosen = [replies[i] for i in picked]
        if places > 0:
            chosen += self.sample(self.round_rng(server_round, "fill"), rest, places)
        return sorted(chosen, key=lambda m: self.client(m.metadata.src_node_id).partition_id)
