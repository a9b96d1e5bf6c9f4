"""The run-config keys every strategy reads, the checks across them, what the server knows of
a client, and the round's reliability settings (how few valid replies it aggregates, which
faults it injects)."""

from __future__ import annotations

from dataclasses import dataclass

from core.config import (
    ConfigError,
    RunConfig,
    above,
    at_least,
    check_range,
    choice,
    share,
)


@dataclass(frozen=True)
class ClientInfo:
    """What the server knows about a SuperNode: its client id (the partition id with
    SpikeFed's discovery, else the node id) and its data size (without discovery: from
    its last reply, 1 before)."""

    node_id: int
    partition_id: int
    num_examples: int


# Run-config keys every strategy reads (each strategy declares its own in its KEYS).
KEYS = {
    "fraction-train": above(0.25, 0, 1, meaning="share of clients trained per round, in (0, 1]"),
    "min-train-nodes": at_least(2, 1, meaning="at least this many clients per round (<= `num-partitions`)"),
    "fraction-evaluate": at_least(0.0, 0, 1, meaning="share of clients for federated evaluation (0 = off)"),
    "round-timeout": above(600.0, 0, meaning=(
        "seconds a round waits for train (and query, evaluate) replies; later ones count as `timeout`"),
        client=True),  # a straggler sleeps past it
    "min-valid-replies": at_least(1, 1, meaning=(
        "fewest valid replies a round aggregates; with fewer the global model stays as it was")),
    "fault-crash": share(0.0, meaning=(
        "share of each round's selected clients whose ClientApp raises (fault injection)")),
    "fault-straggle": share(0.0, meaning="share that sleeps past `round-timeout`"),
    "fault-corrupt": share(0.0, meaning=(
        "share that returns a corrupted reply (NaN/Inf weights, wrong shape or dtype, missing array, firing rate > 1,"
        " num-examples 0)")),
    # Flower's fixed-clipping DP around any strategy (strategies/privacy.py); 0: off
    "dp-noise-multiplier": at_least(0.0, 0, meaning=(
        "Flower's fixed-clipping DP of the model updates around any strategy ([privacy.md](privacy.md)): std of the "
        "Gaussian noise on the aggregate, as a multiple of `dp-clipping-norm` / n (n = the number aggregated); 0 = "
        "off")),
    "dp-clipping-norm": above(1.0, 0, meaning=(
        "L2 norm each aggregated update is clipped to (`dp-noise-multiplier` > 0)")),
    "dp-clipping": choice("server", ("server", "client"), meaning=(
        "where updates are clipped: `server` (Flower's server-side fixed clipping) or `client` (its client-side "
        "wrapper and clipping mod, SFedCA's uploads included)")),
    "dp-delta": above(1e-5, 0, 0.1, meaning=(
        "delta at which Flower's RDP accountant reports the model's epsilon (`dp_model_epsilon` in `rounds.csv`)")),
}


def clients_per_round(num_clients: int, fraction_train: float, min_train_nodes: int) -> int:
    """Flower's FedAvg rule: max(int(fraction x N), minimum)."""
    return max(int(num_clients * fraction_train), min_train_nodes)


def check(cfg: RunConfig) -> None:
    """The strategy keys that depend on each other or on the federation's size."""
    check_range("min-valid-replies", cfg.min_valid_replies, 1,
                clients_per_round(cfg.num_partitions, cfg.fraction_train, cfg.min_train_nodes))
    faulty = cfg.fault_crash + cfg.fault_straggle + cfg.fault_corrupt
    if faulty > 1:
        raise ConfigError(f"fault-crash + fault-straggle + fault-corrupt = {faulty:g} is more than every "
                          "selected client; accepted: a sum in [0, 1]")
    if cfg.min_train_nodes > cfg.num_partitions:
        raise ConfigError(f"min-train-nodes={cfg.min_train_nodes} is more clients per round than "
                          f"num-partitions={cfg.num_partitions}; accepted: 1..{cfg.num_partitions}")


@dataclass(frozen=True)
class Reliability:
    """How few valid replies a round aggregates, which faults it injects (SpikeFed's tests)."""

    min_valid_replies: int = 1
    fault_crash: float = 0.0
    fault_straggle: float = 0.0
    fault_corrupt: float = 0.0

    @classmethod
    def from_config(cls, cfg: RunConfig) -> Reliability:
        return cls(cfg.min_valid_replies, cfg.fault_crash, cfg.fault_straggle, cfg.fault_corrupt)

    @property
    def injects_faults(self) -> bool:
        return self.fault_crash + self.fault_straggle + self.fault_corrupt > 0
