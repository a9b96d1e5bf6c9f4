"""What `spikefed run` shows while a federation runs: Flower's and Ray's INFO output goes to
the run's ``log.txt`` and the console keeps warnings and errors; one live line follows the
rounds, fed by the strategy's round records (a :class:`rich.progress.Progress` task)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flwr.app import ArrayRecord
from rich.progress import Progress

from server.config import RunConfig
from server.progress import summary
from strategies.accounting import RoundRecord


# Flower's simulation backend logs a ClientApp's exception as three ERROR records with the
# (Ray) tracebacks; the strategy says the same in one line when it rejects the reply.
BACKEND_ERRORS = "/flwr/server/superlink/fleet/vce/"


class FirstLine(logging.Formatter):
    """Another formatter's output cut to its first line; a ClientApp's traceback from the
    simulation backend is left to the log file."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return (self.inner.format(record).splitlines() or [""])[0]


def console_line(record: logging.LogRecord) -> bool:
    return BACKEND_ERRORS not in record.pathname.replace("\\", "/")


@contextmanager
def flower_output_to(log_file: Path) -> Iterator[None]:
    """Inside, the ``flwr`` logger writes its INFO records and above to ``log_file``, and its
    console handler only warnings and errors, one line each."""
    logger = logging.getLogger("flwr")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file)
    to_file.setLevel(logging.INFO)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    consoles = [(h, h.level, h.formatter) for h in logger.handlers]
    for handler, level, formatter in consoles:
        handler.setLevel(max(logging.WARNING, level))
        handler.setFormatter(FirstLine(formatter))
        handler.addFilter(console_line)
    logger.addHandler(to_file)
    try:
        yield
    finally:
        logger.removeHandler(to_file)
        to_file.close()
        for handler, level, formatter in consoles:
            handler.setLevel(level)
            handler.setFormatter(formatter)
            handler.removeFilter(console_line)


class RoundLine:
    """A strategy observer that moves one progress line per run: round i/N, the headline
    metric, clients aggregated and trained, seconds of the round (the bar's own columns give
    elapsed time and time left).

    Parameters
    ----------
    progress : the display holding the line.
    cfg : the run's config (rounds, workload).
    done : rounds run before (a resumed run).
    """

    def __init__(self, progress: Progress, cfg: RunConfig, done: int = 0) -> None:
        self.progress, self.cfg = progress, cfg
        self.task = progress.add_task("round", total=cfg.num_server_rounds, completed=done, info="starting")

    def __call__(self, record: RoundRecord, arrays: ArrayRecord) -> None:
        self.progress.update(self.task, completed=record.server_round, info=summary(record, self.cfg))
