#!/usr/bin/env python3
"""The issue-25 table from a `spikefed compare` grid's runs.csv: per strategy, the median
rounds to target, last-10 accuracy, spiking energy and uplink+downlink bytes until the
target, each also as the median over seeds of the ratio to random on the same seed, and
the largest epsilon a client spent over the run (SFedCA's statistics under local DP).
  scripts/when-table.py results/sfedca_when_digits 0.8 > table.md
Further runs.csv files after the target fill in strategies the grid did not run, on the
grid's partitions (the same config run by another grid, e.g. random and SFedCA after):
  scripts/when-table.py results/sfedca_when_fmnist 0.65 docs/results/sfedca_fmnist/runs.csv
"""

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def per_seed(runs: pd.DataFrame, target: float) -> pd.DataFrame:
    rows = []
    for (strategy, seed), run in runs.groupby(["strategy", "seed"], sort=False):
        run = run.sort_values("round")
        reached = run.index[run["test_accuracy"] >= target]
        first = run.loc[reached[0]] if len(reached) else None
        upto = run[run["round"] <= first["round"]] if first is not None else None
        epsilon = run["dp_statistics_epsilon"].dropna() if "dp_statistics_epsilon" in run else pd.Series(dtype=float)
        rows.append({"strategy": strategy, "seed": seed,
                     "rounds": int(first["round"]) if first is not None else math.inf,
                     "last10": run["test_accuracy"].tail(10).mean(),
                     "energy": upto["energy_snn_j"].sum() if upto is not None else math.nan,
                     "bytes": (upto["uplink_bytes"] + upto["downlink_bytes"]).sum() if upto is not None else math.nan,
                     "epsilon": epsilon.iloc[-1] if len(epsilon) else math.nan})
    return pd.DataFrame(rows)


def table(seeds: pd.DataFrame) -> str:
    random = seeds[seeds["strategy"] == "random"].set_index("seed")
    lines = ["| strategy | seeds | median rounds to target (x random) | last-10 accuracy | SNN mJ to target (x random) "
             "| MB to target (x random) | epsilon spent, run |", "|:--|:--|:--|:--|:--|:--|:--|"]
    for strategy, group in seeds.groupby("strategy", sort=False):
        group = group.set_index("seed")
        common = group.index.intersection(random.index)

        def ratio(key: str) -> str:
            r = (group.loc[common, key] / random.loc[common, key]).replace([np.inf, -np.inf], np.nan).dropna()
            return f"{r.median():.2f}x" if len(r) else "-"

        def median(key: str, scale: float = 1.0, digits: int = 2) -> str:
            values = group[key].replace(np.inf, np.nan).dropna()
            return f"{values.median() * scale:.{digits}f}" if len(values) else "never"

        rounds = np.median(group["rounds"])
        lines.append(f"| {strategy} | {len(group)} | {'never' if math.isinf(rounds) else f'{rounds:g}'} ({ratio('rounds')}) "
                     f"| {group['last10'].mean():.3f} ± {group['last10'].std(ddof=0):.3f} "
                     f"| {median('energy', 1e3)} ({ratio('energy')}) | {median('bytes', 1e-6, 1)} ({ratio('bytes')}) "
                     f"| {median('epsilon', 1, 1) if group['epsilon'].notna().any() else '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    grid, target = Path(sys.argv[1]), float(sys.argv[2])
    runs = pd.read_csv(grid / "runs.csv")
    for other in map(pd.read_csv, sys.argv[3:]):
        other = other[other["partition"].isin(runs["partition"]) & ~other["strategy"].isin(runs["strategy"])]
        runs = pd.concat([other, runs], ignore_index=True)
    seeds = per_seed(runs, target)
    print(table(seeds))
    print()
    print("rounds to target per seed:", "; ".join(
        f"{s}: {'/'.join('-' if math.isinf(r) else str(int(r)) for r in g['rounds'])}"
        for s, g in seeds.groupby("strategy", sort=False)))
