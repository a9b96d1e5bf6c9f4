"""Spiking networks and the workload registry (what a client trains)."""

from core.config import choice, read_by_clients
from models import device, esvae_workload, workload
from models.classify import ClassifyWorkload
from models.dda import workload as dda_workload
from models.dda.workload import DDAWorkload
from models.esvae_workload import ESVAEWorkload
from models.workload import Workload

WORKLOADS: dict[str, Workload] = {"classify": ClassifyWorkload(), "esvae": ESVAEWorkload(), "dda": DDAWorkload()}

# The run-config keys of models/ and their cross-key checks.
# Every key but DDA's is read by the clients; DDA's serve the server-side distillation and the
# starting student, which the ServerApp loads.
KEYS = {**read_by_clients({"workload": choice("classify", tuple(sorted(WORKLOADS)),
                                               meaning="what clients train (registry in `models/`)"),
                           **workload.KEYS, **device.KEYS, **esvae_workload.KEYS}),
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
