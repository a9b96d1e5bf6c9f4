"""`power-of-choice`: Cho, Wang & Joshi, "Client Selection in Federated Learning:
Convergence Analysis and Power-of-Choice Selection Strategies" (2020, arXiv 2010.01243)."""

from __future__ import annotations

import math

from core.config import at_least
from strategies.base import ClientInfo, SelectionStrategy


def highest_loss(pool: list[ClientInfo], losses: dict[int, float], k: int) -> list[ClientInfo]:
    """The ``k`` clients of ``pool`` with the highest loss (ties: lower partition id first);
    clients without a loss are skipped."""
    ranked = sorted((c for c in pool if c.partition_id in losses),
                    key=lambda c: (-losses[c.partition_id], c.partition_id))
    return sorted(ranked[:k], key=lambda c: c.partition_id)


class PowerOfChoice(SelectionStrategy):
    """Each round: (1) sample a candidate set of d clients without replacement, with
    probability proportional to their data size; (2) send them the global model and ask
    for their local loss on it (a `query` message whose reply holds a MetricRecord ``info``
    with ``loss``); (3) train the k with the highest loss. When fewer than k candidates
    answer, the places left go to unanswered candidates drawn at random (with a ClientApp
    that has no query handler, Power-of-Choice samples d by size, then k of them uniformly).

    Parameters
    ----------
    candidate_factor : float
        d = min(N, ceil(candidate_factor * k)) (run config `poc-candidate-factor`, default 2).
    **kwargs
        Flower's ``FedAvg`` arguments and SpikeFed's ``seed``, ``clients`` (see SelectionStrategy).
    """

    PREFIX = "poc-"
    KEYS = {"poc-candidate-factor": at_least(2.0, 1, meaning=(
        "`power-of-choice`: d = factor x k candidates, sampled by data size, report their loss"))}

    def __init__(self, *, candidate_factor: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.candidate_factor = candidate_factor

    def select(self, server_round: int, candidates: list[ClientInfo]) -> list[ClientInfo]:
        pool = self.candidate_set(server_round, candidates)
        losses = {pid: float(info["loss"]) for pid, info in self.query(pool).items() if "loss" in info}
        chosen = self.choose(candidates, pool, losses)
        left = [c for c in pool if c.partition_id not in losses]
        places = min(min(self.clients_per_round, len(candidates)) - len(chosen), len(left))
        if places > 0:
            chosen += self.sample(self.round_rng(server_round, "fill"), left, places)
        return sorted(chosen, key=lambda c: c.partition_id)

    def candidate_set(self, server_round: int, candidates: list[ClientInfo]) -> list[ClientInfo]:
        """Step 1: d clients drawn proportionally to their data size."""
        k = self.cohort_size(candidates)
        d = min(len(candidates), max(k, math.ceil(self.candidate_factor * k)))
        return self.sample(self.round_rng(server_round), candidates, d,
                           weights=[c.num_examples for c in candidates])

    def choose(self, candidates: list[ClientInfo], pool: list[ClientInfo], losses: dict[int, float]
               ) -> list[ClientInfo]:
        """Step 3: the k with the highest reported loss."""
        self.record.scores = losses
        return highest_loss(pool, losses, min(self.clients_per_round, len(candidates)))
