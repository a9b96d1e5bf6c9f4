"""Flower processes on this machine (SuperLink, SuperNodes, the `flwr` CLI) for the GPU
check and the deployment tests: started in their own sessions, stopped with everything
they spawned."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def executable(name: str) -> str:
    """A console script beside this Python, else on PATH (pip --target puts them in <target>/bin)."""
    local = BIN / name
    return str(local) if local.exists() else name


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class LocalFederation:
    """Flower processes sharing one ``FLWR_HOME`` (``home``, their working folder too).

    The console scripts beside this Python come first on PATH: the SuperLink starts
    ``flower-superexec`` by name. App dependencies are not installed at run time.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], log: Path) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=self.env, cwd=self.home, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``flwr <args>`` against this federation."""
        return subprocess.run([executable("flwr"), *args], env=self.env, cwd=self.home, capture_output=True,
                              text=True, timeout=timeout)

    def stop(self) -> None:
        for proc in self.procs:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=10)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
        # SuperExec-started ServerApp/ClientApp processes, and the detached SuperLink that
        # `flwr run` starts, carry this FLWR_HOME
        killed = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and f"FLWR_HOME={self.home}".encode() in (entry / "environ").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed.append(entry)
            except (OSError, ValueError):
                continue
        # wait until they have exited: only then are their ports (Flower's fixed local ones) free
        deadline = time.time() + 30
        while time.time() < deadline and any(_running(entry) for entry in killed):
            time.sleep(0.1)


def _running(entry: Path) -> bool:
    """Whether /proc/<pid> is a live process (an exited one is gone or a zombie, with no cmdline)."""
    try:
        return bool((entry / "cmdline").read_bytes())
    except OSError:
        return False
