"""A real deployment on 127.0.0.1: a SuperLink and SuperNodes as separate processes, TLS and
SuperNode authentication on, the app submitted with `flwr run` (Flower 1.42: the SuperLink
serves the Fleet, Control and ServerAppIo APIs over HTTPS on one port)."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.processes import LocalFederation, free_port, listening
from experiments.simulation import read_rounds

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("ssh-keygen")),
                       reason="scripts/make-certs.sh needs openssl and ssh-keygen"),
]


@pytest.fixture
def federation(tmp_path):
    home = tmp_path / "flwr-home"
    home.mkdir()
    fed = LocalFederation(home)
    yield fed
    fed.stop()


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_tls_and_supernode_auth_run_sfedca_and_refuse_an_unregistered_node(federation, tmp_path):
    certs, logs, results = tmp_path / "certs", tmp_path / "logs", tmp_path / "results"
    logs.mkdir()
    subprocess.run(["bash", str(ROOT / "scripts" / "make-certs.sh"), str(certs), "3"], check=True,
                   capture_output=True, timeout=60)
    port = free_port()
    (federation.home / "config.toml").write_text(
        f'[superlink]\ndefault = "local-tls"\n\n[superlink.local-tls]\naddress = "127.0.0.1:{port}"\n'
        f'root-certificates = "{certs / "ca.crt"}"\n')
    federation.start([str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(certs / "ca.crt"),
                      "--ssl-certfile", str(certs / "server.pem"), "--ssl-keyfile", str(certs / "server.key"),
                      "--enable-supernode-auth", "--port", str(port)], logs / "superlink.log")

    wait_for(lambda: listening(port), 60, "the SuperLink")
    for i in (0, 1):
        reg = federation.cli("supernode", "register", str(certs / f"supernode-{i}.pub"), "local-tls")
        assert reg.returncode == 0, reg.stdout + reg.stderr

    def supernode(i: int, key: str, partition: int, *extra: str) -> subprocess.Popen:
        return federation.start([str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{port}",
                                 "--root-certificates", str(certs / "ca.crt"),
                                 "--auth-supernode-private-key", str(certs / key),
                                 "--node-config", f"partition-id={partition} num-partitions=2",
                                 "--port", str(free_port()), *extra], logs / f"supernode-{i}.log")

    for i in (0, 1):
        supernode(i, f"supernode-{i}", i)
    run = federation.cli("run", str(ROOT), "local-tls", "--stream", "--run-config",
                         'num-server-rounds=1 num-partitions=2 strategy="sfedca" local-epochs=1 '
                         f'fraction-train=0.5 min-train-nodes=1 results-dir="{results}"', timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (directory,) = results.iterdir()
    rows = read_rounds(directory)
    assert [r["round"] for r in rows] == ["1"] and all(r["test_accuracy"] for r in rows)

    # a SuperNode whose key was never registered is refused; the federation is unaffected
    intruder = supernode(2, "supernode-2", 0, "--max-retries", "2")
    assert intruder.wait(timeout=120) != 0
    log = (logs / "supernode-2.log").read_text()
    assert "Failed to activate SuperNode" in log or "2004" in log, log[-2000:]
    listing = federation.cli("supernode", "list", "local-tls")
    assert listing.returncode == 0 and listing.stdout.count("online") >= 2, listing.stdout
