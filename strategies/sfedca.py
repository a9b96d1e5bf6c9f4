"""`sfedca`: credit-assignment active client selection for spiking FL.

Zhan, Cao, Xie, Zhang, Tang, Liu, "SFedCA: Credit Assignment-Based Active Client
Selection Strategy for Spiking Federated Learning", arXiv 2406.12200 (IEEE TNNLS 2025).

From the paper (abstract): a client's credit comes from the firing intensity state of the
spiking network on its data before local training (the received global model) and after
(its trained model); the change reflects how far the client's data distribution is from
what the global model has learned, and clients are aggregated by credit so that the
aggregate moves toward a balanced global sample distribution.

The paper's equations and algorithm box were not available here (the stored text holds
only the abstract and the introduction), so the details follow the reading in
shared/papers.md, each a run-config key:

1. statistic (`sfedca-credit-layers`): ``output`` = the output layer's per-class firing
   rates averaged over T and the local training samples (default); ``all`` = every
   spiking layer's vector (per channel / per neuron) concatenated;
2. credit c_i = d(r_i^before, r_i^after) (`sfedca-credit-distance`): ``l1`` (default),
   ``l2``, ``cosine`` (1 - cosine similarity) or ``kl`` = KL(after || before) of the two
   vectors normalised to sum 1;
3. a candidate set larger than the aggregated set trains each round
   (`sfedca-candidate-fraction` of the clients, default 0.5); the k = clients-per-round
   candidates with the highest credit this round are aggregated, weighted by their
   number of examples (FedAvg);
4. credits persist across rounds as an exponential moving average
   C_i <- (1 - beta) C_i + beta c_i (`sfedca-credit-decay` = beta, default 0.5) and
   steer the next candidate set: the highest stored credits fill it, except a share
   (`sfedca-explore-fraction`, default 0.3) that goes to clients never seen (drawn
   uniformly), then to those whose credit is oldest.
Replies lacking firing rates are logged with the missing key and left out of the
credit-based choice (never scored as zero); they are not aggregated.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Message

from strategies.base import ClientInfo, SelectionStrategy, reply_metrics
from strategies.validation import FIRING_AFTER, FIRING_BEFORE

CREDIT_DISTANCES = ("l1", "l2", "cosine", "kl")
CREDIT_LAYERS = ("output", "all")


def credits(before: np.ndarray, after: np.ndarray, distance: str = "l1") -> np.ndarray:
    """Distance between each client's firing-rate vectors before and after local training:
    rows of ``before`` and ``after`` [clients, rates] -> [clients]."""
    before, after = np.atleast_2d(np.asarray(before, dtype=float)), np.atleast_2d(np.asarray(after, dtype=float))
    if distance == "l1":
        return np.abs(after - before).sum(1)
    if distance == "l2":
        return np.linalg.norm(after - before, axis=1)
    if distance == "cosine":
        norm = np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1)
        silent = norm == 0  # a silent layer: no change if both are silent, else the largest
        cosine = np.einsum("ij,ij->i", before, after) / np.where(silent, 1.0, norm)
        return np.where(silent, (before.any(1) | after.any(1)).astype(float), 1.0 - cosine)
    if distance == "kl":
        eps = 1e-12
        p = (after + eps) / (after + eps).sum(1, keepdims=True)
        q = (before + eps) / (before + eps).sum(1, keepdims=True)
        return np.sum(p * np.log(p / q), axis=1)
    raise ValueError(f"credit distance {distance!r}; accepted: {', '.join(CREDIT_DISTANCES)}")


class SFedCA(SelectionStrategy):
    """Credit-assignment selection (see the module docstring for the rule and its sources).

    Parameters
    ----------
    candidate_fraction : float
        Share of clients that train each round (at least clients_per_round).
    credit_distance : str
        ``l1``, ``l2``, ``cosine`` or ``kl``.
    credit_layers : str
        ``output`` or ``all``.
    credit_decay : float
        beta of the moving average of credits, in (0, 1].
    explore_fraction : float
        Share of the candidate set kept for unseen clients, then the longest unseen.
    """

    STATE = ("credits", "last_seen")

    @classmethod
    def from_config(cls, cfg, clients):
        return cls(clients, cfg.clients_per_round, cfg.seed, cfg.fraction_evaluate,
                   candidate_fraction=cfg.sfedca_candidate_fraction,
                   credit_distance=cfg.sfedca_credit_distance,
                   credit_layers=cfg.sfedca_credit_layers,
                   credit_decay=cfg.sfedca_credit_decay,
                   explore_fraction=cfg.sfedca_explore_fraction)

    def __init__(self, clients, clients_per_round, seed, fraction_evaluate=0.0,
                 candidate_fraction: float = 0.5, credit_distance: str = "l1",
                 credit_layers: str = "output", credit_decay: float = 0.5,
                 explore_fraction: float = 0.3) -> None:
        super().__init__(clients, clients_per_round, seed, fraction_evaluate)
        self.candidate_fraction = candidate_fraction
        self.credit_distance = credit_distance
        self.credit_layers = credit_layers
        self.credit_decay = credit_decay
        self.explore_fraction = explore_fraction
        self.credits: dict[int, float] = {}  # partition id -> moving-average credit
        self.last_seen: dict[int, int] = {}  # partition id -> last round it reported

    def select(self, server_round: int, candidates: list[ClientInfo]) -> list[ClientInfo]:
        """The candidate set: highest stored credits, plus an exploration share."""
        size = self.cohort_size(candidates, max(self.clients_per_round,
                                                int(len(self.clients) * self.candidate_fraction)))
        seen = sorted((c for c in candidates if c.partition_id in self.credits),
                      key=lambda c: (-self.credits[c.partition_id], c.partition_id))
        unseen = [c for c in candidates if c.partition_id not in self.credits]
        n_exploit = min(len(seen), size - round(self.explore_fraction * size))
        exploit = seen[:n_exploit]
        rng = self.round_rng(server_round)
        n_new = min(len(unseen), size - n_exploit)
        explore = self.sample(rng, unseen, n_new) if n_new else []
        # the remaining slots go to the seen clients heard from longest ago
        rest = sorted(seen[n_exploit:], key=lambda c: (self.last_seen[c.partition_id], c.partition_id))
        explore += rest[:size - n_exploit - n_new]
        return sorted(exploit + explore, key=lambda c: c.partition_id)

    def statistic(self, layers: list[list[float]]) -> list[float]:
        """The credit's input from a reply's per-layer rates (input layer first)."""
        return layers[-1] if self.credit_layers == "output" else [v for layer in layers for v in layer]

    def choose_aggregated(self, server_round: int, replies: list[Message]) -> list[Message]:
        """Score this round's candidates; aggregate the k with the highest credit."""
        usable, before, after = [], [], []
        layer_keys: dict[tuple[str, ...], tuple[list[str], list[str]]] = {}  # replies share their keys
        for msg in replies:
            metrics = reply_metrics(msg)
            names = tuple(metrics)
            if names not in layer_keys:
                layer_keys[names] = (sorted(k for k in names if k.startswith(FIRING_BEFORE)),
                                     sorted(k for k in names if k.startswith(FIRING_AFTER)))
            keys_before, keys_after = layer_keys[names]
            rates_before, rates_after = [metrics[k] for k in keys_before], [metrics[k] for k in keys_after]
            if not (rates_before and rates_after):
                # logged, and not aggregated either: SFedCA aggregates by credit only
                self.has_statistics(msg, [FIRING_BEFORE, FIRING_AFTER], metrics)
                continue
            usable.append(msg)
            before.append(self.statistic(rates_before))
            after.append(self.statistic(rates_after))
        if not usable:
            self.record.scores = {}
            return []
        round_credits = credits(before, after, self.credit_distance)
        scored: dict[int, tuple[float, Message]] = {}
        for msg, c in zip(usable, round_credits.tolist()):
            pid = self.clients[msg.metadata.src_node_id].partition_id
            previous = self.credits.get(pid)
            self.credits[pid] = c if previous is None else (1 - self.credit_decay) * previous + self.credit_decay * c
            self.last_seen[pid] = server_round
            scored[pid] = (c, msg)
        self.record.scores = {pid: c for pid, (c, _) in scored.items()}
        best = sorted(scored, key=lambda pid: (-scored[pid][0], pid))[:self.clients_per_round]
        return [scored[pid][1] for pid in sorted(best)]
