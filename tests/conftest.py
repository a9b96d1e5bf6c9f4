import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from experiments.processes import free_port

# One torch thread in each xdist worker, and in the DDA and ESVAE commands the tests start
# (one_thread_env): two workers on 2 cores, each with torch's default of a thread per core,
# ran DDA's distillation 6-40x slower than one thread does (docs/demo.md, "Threads"). The
# simulations' own processes (Flower, Ray) keep their defaults.
torch.set_num_threads(1)


def one_thread_env() -> dict[str, str]:
    """This process's environment (RAY_ADDRESS included, once set) with one torch thread."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


BIN = Path(sys.executable).parent


def failure_tail(output: str, size: int = 3000) -> str:
    """The end of a failed command's output, for an assertion's message, less the stack frames
    that a C-level abort (a Ray check) prints after its message and that would fill the tail."""
    return output.split("*** StackTrace Information ***")[0][-size:]


class RayCluster:
    """Ray nodes on 127.0.0.1 started with `ray start --block`, each its own handle:
    terminating one stops its processes. The cluster's own --temp-dir keeps its address
    file away from /tmp/ray, where a later `ray.init()` without an address would find it
    and try to join the stopped cluster."""

    def __init__(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
        self.address = f"127.0.0.1:{free_port()}"
        self.nodes: list[subprocess.Popen] = []

    def add_node(self, num_cpus: int) -> None:
        """The head first, then nodes that join it. Every node takes free ports of its own,
        workers' included: `ray start` hands out worker ports 10002-19999 in order, so the
        two xdist workers' clusters on this host gave the same port to two processes, and
        the one that could not bind it aborted ("Failed to start the grpc server",
        docs/demo.md, "The quickstart's missed heartbeat")."""
        if not self.nodes:
            where = ["--head", f"--port={self.address.split(':')[1]}", "--include-dashboard=false",
                     f"--ray-client-server-port={free_port()}"]
        else:
            where = [f"--address={self.address}"]
        where += [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                  f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                  f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                  "--min-worker-port=0", "--max-worker-port=0"]
        self.nodes.append(subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", *where, f"--temp-dir={self.temp_dir}",
             f"--num-cpus={num_cpus}", "--disable-usage-stats", f"--object-store-memory={1 << 29}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        deadline = time.time() + 120
        while self.alive_nodes() < len(self.nodes):
            assert all(n.poll() is None for n in self.nodes) and time.time() < deadline, "a Ray node did not start"
            time.sleep(0.5)

    def alive_nodes(self) -> int:
        status = subprocess.run([str(BIN / "ray"), "status", f"--address={self.address}"], capture_output=True,
                                text=True)
        return status.stdout.count(" node_") if status.returncode == 0 else 0

    def newest_driver_log(self) -> str:
        """The last lines of the log of the Ray driver that joined this cluster last."""
        logs = sorted(Path(self.temp_dir).glob("session_latest/logs/python-core-driver-*.log"), key=os.path.getmtime)
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-15:]) if logs else "(no driver log)"

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.terminate()
            node.wait(timeout=60)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def shared_ray_cluster(request):
    """One local Ray cluster for every simulation of the session: runs join it through
    RAY_ADDRESS, which `ray.init` reads, instead of starting and stopping a Ray of their own
    (about 15 s each on 2 cores). Started only when slow tests are selected; yields the
    RayCluster (its logs are under its temp_dir)."""
    if not any(item.get_closest_marker("slow") for item in request.session.items):
        yield None
        return
    cluster = RayCluster()
    cluster.add_node(num_cpus=os.cpu_count())
    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = cluster.address  # inherited by every subprocess the tests start
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = previous
        cluster.stop()


@pytest.fixture
def tiny(tmp_path):
    """Overrides for a small, quick run writing under tmp_path."""
    return {
        "num-partitions": 4,
        "num-server-rounds": 2,
        "local-epochs": 1,
        "fraction-train": 0.5,
        "results-dir": str(tmp_path / "results"),
    }


@pytest.fixture
def task_identity(monkeypatch):
    """What Flower's runtime sets before a ServerApp or ClientApp builds messages."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)

