import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session", autouse=True)
def shared_ray_cluster(request):
    """One local Ray cluster (on 127.0.0.1) for every simulation of the session: runs join it
    through RAY_ADDRESS, which `ray.init` reads, instead of starting and stopping a Ray of
    their own (about 15 s each on 2 cores). Started only when slow tests are selected;
    `ray start --block` is its handle: terminating it stops the cluster's processes. Its own
    --temp-dir keeps its address file away from /tmp/ray, where a later `ray.init()` without
    an address would find it and try to join the stopped cluster."""
    if not any(item.get_closest_marker("slow") for item in request.session.items):
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                             f"--port={port}", f"--temp-dir={temp_dir}", f"--num-cpus={os.cpu_count()}", "--include-dashboard=false",
                             "--disable-usage-stats", f"--object-store-memory={1 << 30}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while subprocess.run([str(BIN / "ray"), "status", f"--address={address}"], capture_output=True).returncode:
        assert head.poll() is None and time.time() < deadline, "the shared Ray cluster did not start"
        time.sleep(0.5)
    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = address  # inherited by every subprocess the tests start
    try:
        yield address
    finally:
        if previous is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = previous
        head.terminate()
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


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
