"""The run configuration: defaults, types and validation, all in one place.

Flower hands the ServerApp a flat mapping with dashed keys (``[tool.flwr.app.config]``
plus ``--run-config`` overrides). :func:`load_config` turns it into a :class:`RunConfig`
or raises :class:`ConfigError` with one line naming the bad key and what is accepted.
The ServerApp sends the resolved mapping to the clients in every message's config record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A run-config value that cannot be used; the message is one line for the user."""


# Same values as [tool.flwr.app.config] in pyproject.toml (a test keeps them equal).
DEFAULTS: dict[str, Any] = {
    "strategy": "random",
    "workload": "classify",
    "dataset": "digits",
    "data-dir": "data-cache",
    "test-fraction": 0.2,
    "image-size": 0,
    "max-train-samples": 0,
    "max-test-samples": 0,
    "partitioner": "dirichlet",
    "dirichlet-alpha": 0.5,
    "min-partition-size": 5,
    "classes-per-client": 2,
    "shards-per-client": 2,
    "num-partitions": 20,
    "num-server-rounds": 30,
    "fraction-train": 0.25,
    "min-train-nodes": 2,
    "fraction-evaluate": 0.0,
    "server-eval": True,
    "local-epochs": 2,
    "batch-size": 32,
    "lr": 0.01,
    "timesteps": 4,
    "seed": 0,
    "results-dir": "results",
    "run-name": "",
    "num-cpus": 1.0,
    "num-gpus": 0.0,
    "poc-candidate-factor": 2.0,
    "oort-explore-fraction": 0.9,
    "oort-explore-decay": 0.98,
    "oort-explore-min": 0.2,
    "sfedca-candidate-factor": 2.0,
    "sfedca-statistic": "output",
    "sfedca-rule": "balance",
    "esvae-latent-dim": 32,
    "esvae-mmd-lambda": 0.001,
    "esvae-mmd-kernel": "rbf",
    "dda-student": "",
    "dda-pipeline": "",
    "dda-images": 512,
    "dda-inversion-steps": 200,
    "dda-denoiser-epochs": 30,
    "dda-variants": 2,
    "dda-strength": 0.3,
    "dda-threshold": 0.8,
    "dda-temperature": 4.0,
    "dda-distill-epochs": 30,
    "dda-distill-every": 0,
    "round-timeout": 600.0,
    "min-valid-replies": 1,
    "fault-crash": 0.0,
    "fault-straggle": 0.0,
    "fault-corrupt": 0.0,
    "resume": "",
}

# Keys the server adds to a message's config record (not run-config keys).
MESSAGE_KEYS = {"server-round", "fault", "two-phase"}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Validated run configuration; field names are the dashed keys with underscores."""

    strategy: str
    workload: str
    dataset: str
    data_dir: str
    test_fraction: float
    image_size: int
    max_train_samples: int
    max_test_samples: int
    partitioner: str
    dirichlet_alpha: float
    min_partition_size: int
    classes_per_client: int
    shards_per_client: int
    num_partitions: int
    num_server_rounds: int
    fraction_train: float
    min_train_nodes: int
    fraction_evaluate: float
    server_eval: bool
    local_epochs: int
    batch_size: int
    lr: float
    timesteps: int
    seed: int
    results_dir: str
    run_name: str
    num_cpus: float
    num_gpus: float
    poc_candidate_factor: float
    oort_explore_fraction: float
    oort_explore_decay: float
    oort_explore_min: float
    sfedca_candidate_factor: float
    sfedca_statistic: str
    sfedca_rule: str
    esvae_latent_dim: int
    esvae_mmd_lambda: float
    esvae_mmd_kernel: str
    dda_student: str
    dda_pipeline: str
    dda_images: int
    dda_inversion_steps: int
    dda_denoiser_epochs: int
    dda_variants: int
    dda_strength: float
    dda_threshold: float
    dda_temperature: float
    dda_distill_epochs: int
    dda_distill_every: int
    round_timeout: float
    min_valid_replies: int
    fault_crash: float
    fault_straggle: float
    fault_corrupt: float
    resume: str

    @property
    def clients_per_round(self) -> int:
        """Clients trained each round: Flower's rule, max(fraction * N, minimum)."""
        return max(int(self.num_partitions * self.fraction_train), self.min_train_nodes)

    def to_mapping(self) -> dict[str, Any]:
        """The dashed-key mapping (what Flower's run config and ConfigRecord hold)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert ``value`` to the type of ``default`` (TOML and CLI give str/int/float/bool)."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}={value!r} is not a boolean; accepted: true or false")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{key}={value!r} is not an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} is not an integer") from None
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} is not a number") from None
    return str(value)


def _check_choice(key: str, value: str, accepted: list[str]) -> None:
    if value not in accepted:
        raise ConfigError(f"{key}={value!r} is unknown; accepted: {', '.join(accepted)}")


def _check_range(key: str, value: float, low: float, high: float | None, low_open: bool) -> None:
    too_low = value <= low if low_open else value < low
    too_high = high is not None and value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = f"{high}]" if high is not None else "inf)"
        raise ConfigError(f"{key}={value} is out of range; accepted: {left}{low}, {right}")


def load_config(values: Mapping[str, Any]) -> RunConfig:
    """Merge ``values`` over :data:`DEFAULTS`, check every key, return a RunConfig.

    The server's own message-config keys (:data:`MESSAGE_KEYS`) are ignored.
    """
    # Imported here: the registries import this module.
    from data import DATASETS, PARTITIONERS
    from models import WORKLOADS
    from models.mmd import KERNELS
    from strategies import STRATEGIES
    from strategies.sfedca import RULES, STATISTICS

    unknown = sorted(set(values) - set(DEFAULTS) - MESSAGE_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown config key {unknown[0]!r}; accepted keys: {', '.join(sorted(DEFAULTS))}"
        )
    merged = {k: _coerce(k, values.get(k, d), d) for k, d in DEFAULTS.items()}
    cfg = RunConfig(**{k.replace("-", "_"): v for k, v in merged.items()})

    _check_choice("strategy", cfg.strategy, sorted(STRATEGIES))
    _check_choice("workload", cfg.workload, sorted(WORKLOADS))
    _check_choice("dataset", cfg.dataset, sorted(DATASETS))
    _check_choice("partitioner", cfg.partitioner, sorted(PARTITIONERS))
    _check_range("dirichlet-alpha", cfg.dirichlet_alpha, 0, None, low_open=True)
    _check_range("test-fraction", cfg.test_fraction, 0, 0.9, low_open=True)
    _check_range("fraction-train", cfg.fraction_train, 0, 1, low_open=True)
    _check_range("fraction-evaluate", cfg.fraction_evaluate, 0, 1, low_open=False)
    _check_range("lr", cfg.lr, 0, None, low_open=True)
    _check_range("num-gpus", cfg.num_gpus, 0, None, low_open=False)
    _check_range("num-cpus", cfg.num_cpus, 0, None, low_open=True)
    _check_range("poc-candidate-factor", cfg.poc_candidate_factor, 1, None, low_open=False)
    for key in ("oort-explore-fraction", "oort-explore-decay", "oort-explore-min"):
        _check_range(key, merged[key], 0, 1, low_open=False)
    _check_range("sfedca-candidate-factor", cfg.sfedca_candidate_factor, 1, None, low_open=False)
    _check_choice("sfedca-statistic", cfg.sfedca_statistic, list(STATISTICS))
    _check_choice("sfedca-rule", cfg.sfedca_rule, list(RULES))
    _check_choice("esvae-mmd-kernel", cfg.esvae_mmd_kernel, list(KERNELS))
    _check_range("esvae-mmd-lambda", cfg.esvae_mmd_lambda, 0, None, low_open=False)
    _check_range("dda-strength", cfg.dda_strength, 0, 1, low_open=True)
    _check_range("dda-threshold", cfg.dda_threshold, -1, 1, low_open=False)
    _check_range("dda-temperature", cfg.dda_temperature, 0, None, low_open=True)
    _check_range("dda-distill-every", cfg.dda_distill_every, 0, None, low_open=False)
    if cfg.dda_distill_every and cfg.workload not in ("classify", "dda"):
        raise ConfigError(f"dda-distill-every={cfg.dda_distill_every} distils a classifier; "
                          f"workload={cfg.workload!r} is not one; accepted: classify, dda (or dda-distill-every=0)")
    if cfg.workload == "dda" and not cfg.dda_student:
        raise ConfigError("workload='dda' needs dda-student=<student checkpoint from `spikefed dda distill`>")
    for key in ("num-partitions", "num-server-rounds", "local-epochs", "batch-size", "esvae-latent-dim",
                "dda-images", "dda-inversion-steps", "dda-denoiser-epochs", "dda-variants", "dda-distill-epochs",
                "timesteps", "min-train-nodes", "classes-per-client", "shards-per-client"):
        _check_range(key, merged[key], 1, None, low_open=False)
    for key in ("min-partition-size", "image-size", "max-train-samples", "max-test-samples"):
        _check_range(key, merged[key], 0, None, low_open=False)
    _check_range("round-timeout", cfg.round_timeout, 0, None, low_open=True)
    _check_range("min-valid-replies", cfg.min_valid_replies, 1, cfg.clients_per_round, low_open=False)
    for key in ("fault-crash", "fault-straggle", "fault-corrupt"):
        _check_range(key, merged[key], 0, 1, low_open=False)
    if cfg.fault_crash + cfg.fault_straggle + cfg.fault_corrupt > 1:
        raise ConfigError(f"fault-crash + fault-straggle + fault-corrupt = "
                          f"{cfg.fault_crash + cfg.fault_straggle + cfg.fault_corrupt:g} is more than every "
                          "selected client; accepted: a sum in [0, 1]")
    if cfg.min_train_nodes > cfg.num_partitions:
        raise ConfigError(
            f"min-train-nodes={cfg.min_train_nodes} is more clients per round than "
            f"num-partitions={cfg.num_partitions}; accepted: 1..{cfg.num_partitions}"
        )
    if not cfg.server_eval and cfg.fraction_evaluate == 0:
        raise ConfigError(
            "server-eval=false with fraction-evaluate=0 evaluates nothing; "
            "accepted: server-eval=true or fraction-evaluate in (0, 1]"
        )
    return cfg
