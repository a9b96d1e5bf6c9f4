"""`clustered`: clustered sampling by sample size, Fraboni, Vidal, Kameni & Lorenzi,
"Clustered Sampling: Low-Variance and Improved Representativity for Clients Selection in
Federated Learning" (ICML 2021), Algorithm 1."""

from __future__ import annotations

import numpy as np

from strategies.base import ClientInfo, SelectionStrategy


def size_clusters(sizes: list[int], m: int) -> np.ndarray:
    """Fraboni et al.'s Algorithm 1: m sampling distributions (rows, each summing to 1)
    over the clients (columns) such that client i's mass over all rows is m * n_i / n.
    Clients are poured, largest first, into the m rows in turn; a client whose mass
    overflows a row continues in the next."""
    mass = np.asarray(sizes, dtype=float) * m / np.sum(sizes)
    rows = np.zeros((m, len(sizes)))
    row, room = 0, 1.0
    for i in sorted(range(len(sizes)), key=lambda j: (-sizes[j], j)):
        left = mass[i]
        while left > 1e-12 and row < m:
            put = min(left, room)
            rows[row, i] += put
            left, room = left - put, room - put
            if room <= 1e-12:
                row, room = row + 1, 1.0
    return rows


class ClusteredSampling(SelectionStrategy):
    """Each round, one client is drawn from each of the k size-based distributions of
    :func:`size_clusters`, so every client is selected with probability proportional to
    its data size while the cohort spreads across sizes. A client drawn twice trains once
    (the cohort is then one smaller). Aggregation stays FedAvg's, weighted by examples,
    as for every strategy here, so that comparisons isolate the selection rule."""

    _rows_key: tuple | None = None
    _rows: list[tuple[np.ndarray, np.ndarray]] = []

    def select(self, server_round: int, candidates: list[ClientInfo]) -> list[ClientInfo]:
        rows = self.row_distributions(candidates, self.cohort_size(candidates))
        # one uniform per row, inverted through the row's CDF: numpy's choice(p=row), vectorised
        draws = self.round_rng(server_round).random(len(rows))
        picked = {int(support[np.searchsorted(cdf, u, side="right")]) for (support, cdf), u in zip(rows, draws)}
        return [candidates[i] for i in sorted(picked)]

    def row_distributions(self, candidates: list[ClientInfo], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each cluster's clients (indices into ``candidates``) and their CDF; computed once
        for a given set of candidates (data sizes do not change during a run)."""
        key = (k, tuple((c.partition_id, c.num_examples) for c in candidates))
        if self._rows_key != key:
            rows = size_clusters([c.num_examples for c in candidates], k)
            self._rows = []
            for row in rows:
                support = np.flatnonzero(row)
                cdf = np.cumsum(row[support] / row.sum())
                self._rows.append((support, cdf / cdf[-1]))
            self._rows_key = key
        return self._rows
