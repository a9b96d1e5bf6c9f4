#!/usr/bin/env bash
# SFedCA at 100,000 virtual clients (the scale bench's set-up, 1,000 aggregated and 2,000
# candidates per round): the process tree's resident memory as each round ends (issue 25:
# it must not grow with the candidates ever asked). CODE: a checkout whose code runs
# (default: this one), e.g. one before the candidates not chosen dropped their weights.
#   scripts/sfedca-memory.sh [CODE] > memory.json
set -euo pipefail
cd "$(dirname "$0")/.."
CODE=${1:-$PWD}
CODE="$CODE" PYTHONPATH="$PWD" .venv/bin/python - <<'PY'
import json, os
from experiments import bench  # this checkout's bench; the run itself imports CODE's modules
os.environ["PYTHONPATH"] = os.environ["CODE"]
print(json.dumps(bench.scale({"dataset": "synthetic-1m", "partitioner": "iid", "local-epochs": 1, "num-cpus": 1.0,
                              "strategy": "sfedca", "num-partitions": 100_000, "fraction-train": 0.01,
                              "num-server-rounds": 6}), indent=2))
PY
