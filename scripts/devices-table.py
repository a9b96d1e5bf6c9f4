#!/usr/bin/env python3
"""The issue-28 table from a `spikefed compare` grid's runs.csv with devices on: per strategy,
the median over seeds of the rounds, the simulated seconds and the clients' spiking energy
until the target (each also as the median over seeds of the ratio to random on the same
seed), the last-10 accuracy, and the median simulated round.
  scripts/devices-table.py docs/results/devices_fmnist/runs.csv 0.65 > table.md
"""

import math
import sys

import numpy as np
import pandas as pd


def per_seed(runs: pd.DataFrame, target: float) -> pd.DataFrame:
    rows = []
    for (strategy, seed), run in runs.groupby(["strategy", "seed"], sort=False):
        run = run.sort_values("round")
        reached = run.index[run["test_accuracy"] >= target]
        upto = run.loc[:reached[0]] if len(reached) else None
        rows.append({"strategy": strategy, "seed": seed,
                     "rounds": len(upto) if upto is not None else math.inf,
                     "seconds": upto["sim_seconds"].sum() if upto is not None else math.inf,
                     "energy": upto["energy_snn_j"].sum() if upto is not None else math.inf,
                     "last10": run["test_accuracy"].tail(10).mean(),
                     "round": run["sim_seconds"].median()})
    return pd.DataFrame(rows)


def table(seeds: pd.DataFrame) -> str:
    random = seeds[seeds["strategy"] == "random"].set_index("seed")
    lines = ["| strategy | seeds | median rounds to target (x random) | median simulated s to target (x random) "
             "| SNN mJ to target (x random) | last-10 accuracy | median simulated s per round |",
             "|:--|:--|:--|:--|:--|:--|:--|"]
    for strategy, group in seeds.groupby("strategy", sort=False):
        group = group.set_index("seed")
        common = group.index.intersection(random.index)

        def cell(key: str, scale: float = 1.0, digits: int = 0) -> str:
            value = np.median(group[key]) * scale
            ratios = (group.loc[common, key] / random.loc[common, key]).replace([np.inf, -np.inf], np.nan).dropna()
            shown = "never" if math.isinf(value) else f"{value:.{digits}f}"
            return f"{shown} ({ratios.median():.2f}x)" if len(ratios) else shown

        lines.append(f"| {strategy} | {len(group)} | {cell('rounds')} | {cell('seconds')} | {cell('energy', 1e3, 1)} "
                     f"| {group['last10'].mean():.3f} ± {group['last10'].std(ddof=0):.3f} "
                     f"| {group['round'].median():.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    runs = pd.read_csv(sys.argv[1])
    seeds = per_seed(runs, float(sys.argv[2]))
    print(table(seeds))
    print()
    for strategy, group in seeds.groupby("strategy", sort=False):
        print(f"- {strategy}: rounds / simulated s to target per seed: "
              + ", ".join(f"{r:g} / {s:.0f}" if math.isfinite(r) else "never" for r, s in
                          zip(group["rounds"], group["seconds"])))
