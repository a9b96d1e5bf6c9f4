"""An experiment: a grid of strategies x partition settings x seeds, read from TOML.

The file has four top-level keys and two tables::

    name = "sfedca_digits"          # results go to <results-dir>/<name>/ (default: file stem)
    strategies = ["all"]            # names from the registry, or "all"
    seeds = [0, 1, 2]
    metric = "accuracy"             # what is compared: accuracy (higher is better), mse or loss (lower)
    target = 0.9                    # for rounds-to-target in summary.csv

    [run]                           # run-config keys shared by every cell
    num-partitions = 50

    [partitions."dirichlet-0.1"]    # one table per partition setting: its run-config keys
    partitioner = "dirichlet"
    dirichlet-alpha = 0.1
    seeds = [0, 1, 2, 3, 4]         # optional: this setting's own seeds

    [variants.sfedca-top-credit]    # optional: a strategy under a label of its own, with its keys;
    strategy = "sfedca"             # the label can then be listed in `strategies`
    sfedca-rule = "top-credit"

Every cell's run config ({run} + {partition} + strategy + seed) is validated by
:func:`server.config.load_config`, the one place run-config keys are checked.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from models import test_metrics
from server.config import DEFAULTS, ConfigError, RunConfig, load_config
from strategies import STRATEGIES

CONFIGS = files("experiments") / "configs"  # the experiments shipped with SpikeFed (package data)
TOP_LEVEL = ("name", "strategies", "seeds", "metric", "target", "run", "partitions", "variants")


def metrics() -> dict[str, tuple[str, bool]]:
    """metric -> (rounds.csv column, whether higher is better): what the workloads declare."""
    return {name: (f"test_{name}", higher) for name, higher in test_metrics().items()}


LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Cell:
    """One simulation of the grid; ``strategy`` is a strategy's name or a variant's label."""

    strategy: str
    partition: str
    seed: int
    config: RunConfig

    @property
    def id(self) -> str:
        return f"{self.strategy}_{self.partition}_seed{self.seed}"


@dataclass(frozen=True)
class Experiment:
    name: str
    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    metric: str
    target: float
    partitions: dict[str, dict[str, Any]]
    run: dict[str, Any]
    results_dir: Path
    variants: dict[str, dict[str, Any]]

    @property
    def column(self) -> str:
        return metrics()[self.metric][0]

    @property
    def higher_is_better(self) -> bool:
        return metrics()[self.metric][1]

    @property
    def directory(self) -> Path:
        return self.results_dir / self.name

    def cells(self) -> list[Cell]:
        """All cells, partition-major (a partial run already covers whole settings)."""
        out = []
        for partition, keys in self.partitions.items():
            keys = dict(keys)
            seeds = [int(s) for s in keys.pop("seeds", self.seeds)]
            for seed in seeds:
                for strategy in self.strategies:
                    cell_id = f"{strategy}_{partition}_seed{seed}"
                    variant = self.variants.get(strategy, {"strategy": strategy})
                    cfg = load_config({**self.run, **keys, **variant, "seed": seed,
                                       "results-dir": str(self.directory / "cells"), "run-name": cell_id,
                                       "tracking-run": f"{strategy}/{partition}/seed{seed}"})
                    out.append(Cell(strategy, partition, seed, cfg))
        return out


def _list(key: str, value: Any) -> list:
    """A TOML array, or a comma-separated string from --set."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}={value!r} must be a non-empty list")
    return value


def load_experiment(path: Path, sets: dict[str, str] | None = None) -> Experiment:
    """Read and validate an experiment file; ``sets`` (from ``--set key=value``) override its
    top-level keys or, for any other key, the shared ``[run]`` table."""
    path = Path(path)
    if not path.exists() and path.name == str(path) and (CONFIGS / f"{path.stem}.toml").is_file():
        path = Path(str(CONFIGS / f"{path.stem}.toml"))  # a bare name: a shipped experiment (with the wheel too)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        shipped = ", ".join(sorted(p.stem for p in CONFIGS.iterdir() if p.name.endswith(".toml")))
        raise ConfigError(f"experiment file {str(path)!r} does not exist; accepted: a TOML file, or the name of a "
                          f"shipped experiment: {shipped}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"experiment file {str(path)!r} is not valid TOML: {err}") from None
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {path.name}; accepted: {', '.join(TOP_LEVEL)}")
    run = dict(data.get("run", {}))
    for key, value in (sets or {}).items():
        if key in ("run", "partitions"):
            raise ConfigError(f"--set {key}=... is not supported; edit the [{key}] table of {path.name}")
        if key in TOP_LEVEL:
            data[key] = value
        else:
            run[key] = value

    name = str(data.get("name", path.stem))
    if not LABEL.match(name):
        raise ConfigError(f"name={name!r} must be letters, digits, '.', '_' or '-'")
    variants = data.get("variants") or {}
    for label, keys in variants.items():
        if not LABEL.match(label) or not isinstance(keys, dict) or keys.get("strategy") not in STRATEGIES:
            raise ConfigError(f"[variants.{label}] must set strategy to one of {', '.join(STRATEGIES)}")
        fixed = sorted(set(keys) & {"seed", "results-dir", "run-name"})
        if fixed:
            raise ConfigError(f"[variants.{label}] sets {fixed[0]!r}, which the grid sets per cell")
    strategies = [str(s) for s in _list("strategies", data.get("strategies", ["all"]))]
    if strategies == ["all"]:
        strategies = list(STRATEGIES)
    for s in strategies:
        if s not in STRATEGIES and s not in variants:
            raise ConfigError(f"strategies: {s!r} is not a strategy or variant; accepted: all, "
                              f"{', '.join([*STRATEGIES, *variants])}")
    seeds = _list("seeds", data.get("seeds", [0]))
    try:
        seeds = [int(s) for s in seeds]
    except ValueError:
        raise ConfigError(f"seeds={data['seeds']!r} must be integers") from None
    metric = str(data.get("metric", "accuracy"))
    if metric not in metrics():
        raise ConfigError(f"metric={metric!r} is unknown; accepted: {', '.join(metrics())}")
    try:
        target = float(data.get("target", 0.9))
    except ValueError:
        raise ConfigError(f"target={data['target']!r} is not a number") from None
    if metric == "accuracy" and not 0 < target <= 1:
        raise ConfigError(f"target={target} is out of range for metric accuracy; accepted: (0, 1]")
    partitions = data.get("partitions") or {"default": {}}
    for label, keys in partitions.items():
        if not LABEL.match(label) or not isinstance(keys, dict):
            raise ConfigError(f"[partitions.{label}] must be a table named with letters, digits, '.', '_' or '-'")
        nested = [k for k, v in keys.items() if isinstance(v, dict)]
        if nested:  # [partitions.dirichlet-0.5] is read as dirichlet-0 -> 5
            raise ConfigError(f"[partitions.{label}.{nested[0]}] is a nested table; quote labels that "
                              f'contain dots, e.g. [partitions."{label}.{nested[0]}"]')
        fixed = sorted(set(keys) & {"strategy", "seed", "results-dir", "run-name"})
        if fixed:
            raise ConfigError(f"[partitions.{label}] sets {fixed[0]!r}, which the grid sets per cell")
        if "seeds" in keys:
            keys["seeds"] = _list(f"[partitions.{label}] seeds", keys["seeds"])
            try:
                [int(s) for s in keys["seeds"]]
            except ValueError:
                raise ConfigError(f"[partitions.{label}] seeds={keys['seeds']!r} must be integers") from None
    for key in ("strategy", "seed", "run-name"):
        if key in run:
            raise ConfigError(f"[run] sets {key!r}, which the grid sets per cell; use the top-level keys")
    results_dir = Path(str(run.pop("results-dir", DEFAULTS["results-dir"])))
    experiment = Experiment(name, tuple(dict.fromkeys(strategies)), tuple(dict.fromkeys(seeds)),
                            metric, target, partitions, run, results_dir, variants)
    experiment.cells()  # validates every cell's run config now, before anything runs
    return experiment
