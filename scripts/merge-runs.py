#!/usr/bin/env python3
"""One runs.csv from several of the same experiment (e.g. seeds run in different stops): the
rows of each (strategy, partition, seed) come from the last file that has them.
  scripts/merge-runs.py OUT.csv A/runs.csv B/runs.csv ...
"""

import sys

import pandas as pd

KEY = ["strategy", "partition", "seed"]


def main(out: str, inputs: list[str]) -> None:
    frames = [pd.read_csv(path, dtype={"selected_clients": str, "rejected_clients": str}) for path in inputs]
    columns = list(frames[0].columns)
    for path, frame in zip(inputs[1:], frames[1:]):
        if list(frame.columns) != columns:
            sys.exit(f"error: {path} has columns {sorted(set(frame.columns) ^ set(columns))} that {inputs[0]} "
                     "does not share; accepted: runs.csv files with the same columns")
    merged = pd.DataFrame(columns=columns)
    for frame in frames:
        cells = frame[KEY].drop_duplicates()
        kept = merged.merge(cells, on=KEY, how="left", indicator=True)["_merge"] == "left_only"
        merged = pd.concat([merged[kept.to_numpy()], frame], ignore_index=True)
    merged.to_csv(out, index=False)  # in the order of the files: the tables keep the grid's order
    counts = merged.groupby("seed")["strategy"].nunique()
    print(f"{out}: {len(merged)} rows; strategies per seed: {counts.to_dict()}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
