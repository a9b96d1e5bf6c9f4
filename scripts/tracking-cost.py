#!/usr/bin/env python3
"""What the live line and tracking cost (issue 27), on the orchestration benchmark's run
(docs/benchmarks.md: synthetic, 100 clients, 10 per round, 6 rounds, one actor of 2 threads):
plain (as `--verbose`), with the live line and log.txt (the default of `spikefed run`), and
with tracking=tensorboard / mlflow on top, alternating, twice each. Per setting: the median
seconds per steady round (rounds 2-6) and the median simulated round / compute inside it
(the clients' own seconds plus the server's evaluation, from rounds.csv: drift cancels).
  .venv/bin/python scripts/tracking-cost.py > docs/benchmarks/tracking-cost.json
"""

import json
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.cli import progress  # noqa: E402
from experiments.live import RoundLine, flower_output_to  # noqa: E402
from experiments.simulation import read_rounds, resolve, simulate  # noqa: E402
from server.results import run_dir  # noqa: E402

RUN = {"dataset": "synthetic", "partitioner": "iid", "local-epochs": 1, "num-cpus": 2.0, "strategy": "random",
       "num-partitions": 100, "fraction-train": 0.1, "num-server-rounds": 6}
SETTINGS = {"plain": (False, "none"), "live": (True, "none"), "tensorboard": (True, "tensorboard"),
            "mlflow": (True, "mlflow")}

seconds = {name: [] for name in SETTINGS}
inside = {name: [] for name in SETTINGS}
with tempfile.TemporaryDirectory() as tmp:
    for repeat in range(2):
        for name, (live, tracking) in SETTINGS.items():
            launch = resolve({**RUN, "results-dir": tmp, "run-name": f"{name}{repeat}", "tracking": tracking})
            with ExitStack() as stack:
                observers = []
                if live:
                    stack.enter_context(flower_output_to(run_dir(launch.cfg) / "log.txt"))
                    bars = stack.enter_context(progress())
                    observers = [RoundLine(bars, launch.cfg)]
                rows = read_rounds(simulate(launch, observers))[1:]
            seconds[name] += [float(r["seconds"]) for r in rows]
            inside[name] += [float(r["seconds"]) / (float(r["client_seconds"]) + float(r["eval_seconds"])) for r in rows]
print(json.dumps({"run": RUN, "repeats": 2, "rounds_per_run": "2-6",
                  "s_per_round": {k: round(statistics.median(v), 3) for k, v in seconds.items()},
                  "round_over_compute": {k: round(statistics.median(v), 4) for k, v in inside.items()}}, indent=2))
