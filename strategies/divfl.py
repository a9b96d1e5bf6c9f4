"""`divfl`: diverse client selection, Balakrishnan, Li, Zhou, Himayat, Smith & Bilmes,
"Diverse Client Selection for Federated Learning via Submodular Maximization" (ICLR 2022).

DivFL picks the clients whose updates best represent everyone's: it maximises the
facility-location function, i.e. minimises sum_i min_{j in S} ||g_i - g_j|| over the
selected set S, greedily (:func:`facility_location`). The paper runs it on the gradients of
all clients; its practical variant keeps each client's last (stale) gradient. Here, as in
the greedy ``grad_diversity`` of the spiking-FL client-selection code (GitHub
peter0201yu/FedSNN-ClientSelection, ``models/client_selection.py``), it runs on the fresh
updates of m = ceil(factor x k) random candidates: every candidate trains and uploads its
weights (the uplink of m models is counted), the k chosen are averaged by FedAvg.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Message

from core.config import at_least
from strategies.base import ClientInfo, SelectionStrategy


def facility_location(distances: np.ndarray, k: int) -> list[int]:
    """Greedy facility location on a square ``distances`` matrix: each step adds the row j
    that most lowers sum_i min_{s in S} distances[s, i] (ties: the lowest index); the ``k``
    indices, ascending. The greedy step is DivFL's (within 1 - 1/e of the optimum)."""
    distances = np.asarray(distances, dtype=float)
    nearest = np.full(len(distances), np.inf)  # each row's distance to the set so far
    chosen: list[int] = []
    for _ in range(min(k, len(distances))):
        cost = np.minimum(nearest[None, :], distances).sum(1)
        cost[chosen] = np.inf
        best = int(np.argmin(cost))
        chosen.append(best)
        nearest = np.minimum(nearest, distances[best])
    return sorted(chosen)


def pairwise_distances(rows: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``rows`` [m, d]."""
    squares = (rows ** 2).sum(1)
    return np.sqrt(np.maximum(squares[:, None] + squares[None, :] - 2 * rows @ rows.T, 0.0))


def flat_update(reply: ArrayRecord, reference: ArrayRecord) -> np.ndarray:
    """The reply's weights minus the global ones, floating-point arrays only, flattened."""
    return np.concatenate([(reply[key].numpy() - array.numpy()).ravel() for key, array in reference.items()
                           if np.issubdtype(array.numpy().dtype, np.floating)])


class DivFL(SelectionStrategy):
    """m random candidates train and upload; the k whose updates cover the others best are
    aggregated (see the module docstring).

    Parameters
    ----------
    candidate_factor : float
        m = min(N, ceil(candidate_factor x k)) (run config `divfl-candidate-factor`, default 2,
        SFedCA's).
    **kwargs
        Flower's ``FedAvg`` arguments and SpikeFed's ``seed``, ``clients`` (see SelectionStrategy).
    """

    PREFIX = "divfl-"
    KEYS = {"divfl-candidate-factor": at_least(2.0, 1, meaning=(
        "`divfl`: m = factor x k random candidates train and upload; the k most representative updates are kept"))}

    def __init__(self, *, candidate_factor: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.candidate_factor = candidate_factor

    def select(self, server_round: int, candidates: list[ClientInfo]) -> list[ClientInfo]:
        return self.random_candidates(server_round, candidates, self.candidate_factor)

    def choose_aggregated(self, server_round: int, replies: list[Message]) -> list[Message]:
        """The k replies picked by facility location over their updates; each candidate's
        score is its update's distance to the nearest chosen one (0 for the chosen)."""
        k = min(self.clients_per_round, len(replies))
        if len(replies) <= k:
            return replies
        updates = np.stack([flat_update(next(iter(m.content.array_records.values())), self._global_arrays)
                            for m in replies])
        distances = pairwise_distances(updates)
        picked = facility_location(distances, k)
        pids = [self.client(m.metadata.src_node_id).partition_id for m in replies]
        self.record.scores = dict(zip(pids, distances[picked].min(0).tolist()))
        return [replies[i] for i in picked]
