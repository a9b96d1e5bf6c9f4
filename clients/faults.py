"""What a ClientApp does with the fault the server assigned it (:mod:`core.faults`):
crash, sleep past the round timeout, or corrupt its reply."""

from __future__ import annotations

import time

import torch

from core.protocol import FIRING_AFTER


class InjectedCrash(RuntimeError):
    """Raised by a ClientApp told to crash."""


def before_training(fault: str, round_timeout: float) -> None:
    """Crash, or straggle: sleep until the server has stopped waiting for this reply."""
    if fault == "crash":
        raise InjectedCrash("injected crash (fault-crash)")
    if fault == "straggle":
        time.sleep(round_timeout + 2)


def corrupt(fault: str, arrays: dict[str, torch.Tensor], metrics: dict) -> None:
    """Apply ``corrupt:<kind>`` to the reply's arrays and metrics, in place."""
    kind = fault.removeprefix("corrupt:")
    first = next(k for k, v in arrays.items() if v.is_floating_point())
    if kind == "nan":
        arrays[first] = torch.full_like(arrays[first], float("nan"))
    elif kind == "inf":
        arrays[first] = arrays[first].clone().fill_(float("inf"))
    elif kind == "shape":
        arrays[first] = torch.zeros(arrays[first].numel() + 1)
    elif kind == "dtype":
        arrays[first] = arrays[first].double()
    elif kind == "missing-key":
        del arrays[first]
    elif kind == "firing-rate":
        key = next(k for k in metrics if k.startswith(FIRING_AFTER))
        metrics[key] = [1.5 for _ in metrics[key]]
    elif kind == "num-examples":
        metrics["num-examples"] = 0
