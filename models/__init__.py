"""Spiking networks and the workload registry (what a client trains)."""

from models.classify import ClassifyWorkload
from models.dda.workload import DDAWorkload
from models.esvae_workload import ESVAEWorkload
from models.workload import Workload

WORKLOADS: dict[str, Workload] = {"classify": ClassifyWorkload(), "esvae": ESVAEWorkload(), "dda": DDAWorkload()}


def get_workload(name: str) -> Workload:
    """The registered workload called ``name`` (names are validated in server.config)."""
    return WORKLOADS[name]


__all__ = ["WORKLOADS", "Workload", "get_workload"]
