"""Where a workload runs: the CPU, or CUDA when the run asks for a GPU and one is visible.

``num-gpus`` (the GPU share each client gets, as in Flower's client resources) selects
CUDA; ``neuron-backend`` picks spikingjelly's LIF implementation on CUDA: ``auto`` (its own
order: the native CUDA kernels, then Triton, then PyTorch), ``cuda``, ``triton`` or
``torch``. spikingjelly reads that choice once per process, when the first LIF layer runs
(its ``SJ_LIF_CUDA_IMPLEMENTATION`` variable); on the CPU it always runs PyTorch.
"""

from __future__ import annotations

import os
import sys
from logging import WARNING
from typing import TYPE_CHECKING

import torch
from flwr.common import log

from core.config import choice

if TYPE_CHECKING:
    from core.config import RunConfig

NEURON_BACKENDS = ("auto", "cuda", "triton", "torch")
KEYS = {"neuron-backend": choice("auto", NEURON_BACKENDS, meaning=(
    "spikingjelly's LIF implementation on CUDA: `auto`, `cuda`, `triton` or `torch` "
    "([cluster-and-gpu.md](cluster-and-gpu.md#the-neuron-backend))"))}
LIF_BACKEND_VARIABLE = "SJ_LIF_CUDA_IMPLEMENTATION"

_said: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log(WARNING, message)


def use_neuron_backend(backend: str) -> None:
    """Ask spikingjelly for ``backend`` (one of NEURON_BACKENDS) in this process."""
    chosen = sys.modules.get("spikingjelly._ops.lif")
    if chosen is not None and chosen._selection._requested != backend:
        _say_once(f"neuron-backend={backend} asked after spikingjelly chose "
                  f"{chosen._selection._requested!r} in this process; it keeps that one")
        return
    os.environ[LIF_BACKEND_VARIABLE] = backend


def torch_device(cfg: RunConfig) -> torch.device:
    """CUDA when ``cfg.num_gpus > 0`` and torch sees a GPU, else the CPU (said once, in one
    line, when a GPU was asked for and none is visible)."""
    if cfg.num_gpus > 0:
        if torch.cuda.is_available():
            use_neuron_backend(cfg.neuron_backend)
            return torch.device("cuda")
        _say_once(f"num-gpus={cfg.num_gpus:g} but torch sees no GPU on this host; running on the CPU")
    return torch.device("cpu")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device ``model``'s parameters are on (where its inputs must go)."""
    return next(model.parameters()).device
