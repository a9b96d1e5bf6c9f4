"""Run an experiment's cells, each a `spikefed run` in its own process, resumably.

A cell runs as a child process (its own Ray instance and process group), so a crash
or Ctrl-C loses at most the cell in flight. A cell is complete once ``cell.json`` is
written next to its ``rounds.csv`` and its ``config.json`` still matches the grid; a
re-run skips complete cells and starts the others again from round 1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from experiments.grid import Cell, Experiment
from server.config import DEFAULTS, NOT_RESULTS, load_config

DONE = "cell.json"


def cell_dir(cell: Cell) -> Path:
    return Path(cell.config.results_dir) / cell.config.run_name


def is_complete(cell: Cell) -> bool:
    """Finished, with the same run config (where the results go and what tracks them aside):
    a cell whose settings changed since it ran is run again."""
    directory = cell_dir(cell)
    if not (directory / DONE).exists():
        return False
    recorded = json.loads((directory / "config.json").read_text())
    # keys added to the platform since the cell ran take their defaults, as they did then
    ran = load_config({k: v for k, v in recorded.items() if k in DEFAULTS}).to_mapping()
    return {k: v for k, v in ran.items() if k not in NOT_RESULTS} == {
        k: v for k, v in cell.config.to_mapping().items() if k not in NOT_RESULTS}


def rounds_written(directory: Path) -> int:
    """Rows in a running cell's rounds.csv (the server appends one per finished round)."""
    try:
        with (directory / "rounds.csv").open() as f:
            return max(sum(1 for _ in f) - 1, 0)
    except FileNotFoundError:
        return 0


class CellFailed(RuntimeError):
    """A cell's process exited with an error; the message names its log."""


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the cell's process group, then SIGKILL if it is still there after ``grace`` s
    (a simulation can hang in its shutdown)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_cell(cell: Cell, on_round: Callable[[int], None] = lambda n: None, poll: float = 0.5) -> float:
    """Run one cell to completion; returns its wall time in seconds (Ray start-up included).

    ``on_round(n)`` is called with the number of finished rounds as they appear.
    """
    directory = cell_dir(cell)
    shutil.rmtree(directory, ignore_errors=True)  # an incomplete earlier attempt
    directory.mkdir(parents=True)
    args = [sys.executable, "-m", "experiments", "run", "--verbose"]  # Flower's output to the cell's log.txt
    for key, value in cell.config.to_mapping().items():
        args += ["--set", f"{key}={value}"]
    start = time.perf_counter()
    with (directory / "log.txt").open("w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while proc.poll() is None:
                time.sleep(poll)
                on_round(rounds_written(directory))
        except BaseException:  # Ctrl-C or an error here: stop the cell's whole process tree
            stop(proc)
            raise
    seconds = time.perf_counter() - start
    rounds = rounds_written(directory)
    on_round(rounds)
    if proc.returncode != 0 or rounds != cell.config.num_server_rounds:
        raise CellFailed(f"cell {cell.id} exited with code {proc.returncode} after {rounds} of "
                         f"{cell.config.num_server_rounds} rounds; see {directory / 'log.txt'}")
    (directory / DONE).write_text(json.dumps({"cell": cell.id, "wall_seconds": round(seconds, 3)}) + "\n")
    return seconds


def run_experiment(experiment: Experiment, progress=None) -> list[str]:
    """Run every incomplete cell; returns the failures (one line each), the rest go on.

    ``progress`` is a rich ``Progress`` (or None) that shows cells and rounds.
    """
    cells = experiment.cells()
    todo = [c for c in cells if not is_complete(c)]
    failures = []
    overall = progress.add_task("cells", total=len(cells), completed=len(cells) - len(todo)) if progress else None
    for cell in todo:
        task = progress.add_task(cell.id, total=cell.config.num_server_rounds) if progress else None

        def on_round(n: int, task=task) -> None:
            if progress:
                progress.update(task, completed=n)

        try:
            run_cell(cell, on_round)
        except CellFailed as err:
            failures.append(str(err))
        if progress:
            progress.remove_task(task)
            progress.advance(overall)
    return failures
