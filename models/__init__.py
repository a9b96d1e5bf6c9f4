"""Spiking networks and the workload registry (what a client trains: `workloads/`)."""

from core.config import choice, read_by_clients
from models import device
# Aliased: `models.dda` and `models.esvae` are the networks' modules.
from models.workloads import base as workload_base, dda as dda_workload, esvae as esvae_workload
from models.workloads.base import Workload
from models.workloads.classify import ClassifyWorkload
from models.workloads.dda import DDAWorkload
from models.workloads.esvae import ESVAEWorkload

WORKLOADS: dict[str, Workload] = {"classify": ClassifyWorkload(), "esvae": ESVAEWorkload(), "dda": DDAWorkload()}

# The run-config keys of models/ and their cross-key checks.
# Every key but DDA's is read by the clients; DDA's serve the server-side distillation and the
# starting student, which the ServerApp loads.
KEYS = {**read_by_clients({"workload": choice("classify", tuple(sorted(WORKLOADS)),
                                               meaning="what clients train (registry in `models/`)"),
                           **workload_base.KEYS, **device.KEYS, **esvae_workload.KEYS}),
        **dda_workload.KEYS}
CHECKS = (dda_workload.check,)


def test_metrics() -> dict[str, bool]:
    """Every workload's declared test metrics (name -> higher is better), in registry order."""
    metrics: dict[str, bool] = {}
    for declared in WORKLOADS.values():
        for name, higher in declared.METRICS.items():
            metrics.setdefault(name, higher)
    return metrics


def get_workload(name: str) -> Workload:
    """The registered workload called ``name`` (the run config's ``workload``)."""
    return WORKLOADS[name]


__all__ = ["CHECKS", "KEYS", "WORKLOADS", "Workload", "get_workload"]
