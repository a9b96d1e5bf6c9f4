"""The GPU check (`scripts/gpu-check.sh`): the `gpu` tests, a real SuperLink and two
SuperNodes whose ClientApps share the GPU (3 rounds of SFedCA on Fashion-MNIST), and the
spiking-vs-ANN training step at T = 4, 8, 16 (classifier) and ESVAE at 32x32, T = 16, per
spikingjelly neuron backend. Every figure goes to one JSON file. With ``--dda``: DDA at
paper scale instead (its own JSON file). Without CUDA the CUDA
parts are skipped, saying so, and the federation runs on the CPU (proving the script).

    python -m experiments.gpu_check OUT_DIR [--data-dir DIR] [--dda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from experiments.processes import LocalFederation, executable, free_port, listening
from experiments.simulation import read_rounds

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch", "triton", "cuda")  # spikingjelly's LIF implementations on CUDA ("auto" picks the first that loads)


def gpu_tests(out: Path) -> dict:
    """`pytest -m gpu`: counts of passed / skipped / failed, with the skip reasons."""
    report = out / "gpu-tests.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
                           f"--junitxml={report}", "tests/test_device.py"], cwd=ROOT, capture_output=True, text=True)
    import xml.etree.ElementTree as ET

    suite = ET.parse(report).getroot().find("testsuite") if report.exists() else None
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} if suite is not None else {}
    skips = sorted({line.split(": ", 1)[-1] for line in proc.stdout.splitlines() if line.startswith("SKIPPED")})
    return {"exit_code": proc.returncode, **counts, "skip_reasons": skips, "tail": proc.stdout[-1500:]}


def federation(out: Path, data_dir: str, rounds: int = 3) -> dict:
    """A SuperLink and two SuperNodes as processes on 127.0.0.1 (insecure: one machine), SFedCA on
    Fashion-MNIST with num-gpus=0.5 per client, submitted with `flwr run`."""
    logs, results = out / "federation-logs", out / "federation-results"
    logs.mkdir(parents=True, exist_ok=True)
    fed = LocalFederation(Path(tempfile.mkdtemp(prefix="flwr-home-")))
    port = free_port()
    (fed.home / "config.toml").write_text(f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
                                          f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    started = time.perf_counter()
    try:
        superlink = fed.start([executable("flower-superlink"), "--insecure", "--port", str(port)],
                              logs / "superlink.log")
        deadline = time.time() + 60
        while not listening(port):
            if time.time() > deadline or superlink.poll() is not None:
                return {"error": "the SuperLink did not start", "log": (logs / "superlink.log").read_text()[-1500:]}
            time.sleep(0.5)
        for i in (0, 1):
            fed.start([executable("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                       "--node-config", f"partition-id={i} num-partitions=2", "--port", str(free_port())],
                      logs / f"supernode-{i}.log")
        run_config = (f'num-server-rounds={rounds} num-partitions=2 strategy="sfedca" dataset="fashion-mnist" '
                      f'data-dir="{data_dir}" max-train-samples=6000 max-test-samples=2000 partitioner="iid" '
                      f'local-epochs=1 fraction-train=0.5 min-train-nodes=1 num-gpus=0.5 results-dir="{results}"')
        proc = fed.cli("run", str(ROOT), "local", "--stream", "--run-config", run_config, timeout=420)
        seconds = time.perf_counter() - started
        runs = sorted(results.glob("*/rounds.csv"))
        if not runs:
            return {"error": "no rounds.csv", "seconds": seconds, "tail": (proc.stdout + proc.stderr)[-2500:]}
        rows = read_rounds(runs[-1].parent)
        return {"seconds": round(seconds, 1), "rounds": len(rows),
                "test_accuracy": [float(r["test_accuracy"]) for r in rows],
                "round_seconds": [float(r["seconds"]) for r in rows],
                "executors": [r["executors"] for r in rows]}
    finally:
        fed.stop()


def steps(backend: str) -> list[dict]:
    """Median ms per training step on CUDA with ``backend`` (this process only: spikingjelly
    reads it once): the spiking CNN at T = 4, 8, 16 beside its same-shape ANN (28x28,
    batch 128), and ESVAE (32x32, T = 16, latent 32) beside the same-shape ANN VAE (batch 256)."""
    from experiments.bench import spiking, vae_steps
    from models.device import use_neuron_backend

    use_neuron_backend(backend)
    device = torch.device("cuda")
    rows = spiking([4, 8, 16], batch_size=128, image_size=28, repeats=20, device=device)
    rows += vae_steps(timesteps=16, batch_size=256, image_size=32, repeats=10, device=device)
    from spikingjelly.activation_based.functional.neuron import neuron_implementation

    chosen = neuron_implementation("lif", device)["implementation"]
    return [{**row, "backend": backend, "implementation": chosen} for row in rows]


DDA_PAPER_SCALE = {  # sized for about 5 minutes of an H100; the authors' values in docs/dda.md
    "dataset": "fashion-mnist", "image-size": 0, "num-gpus": 1.0, "batch-size": 128, "dda-images": 8192,
    "dda-synthesis-steps": 200, "dda-synthesis-batch": 256, "dda-epoch-images": 400, "dda-epochs": 20,
    "dda-student-steps": 500, "dda-denoiser-epochs": 10}


def dda_paper_scale(out: Path, data_dir: str) -> dict:
    """DDA at the paper's scale as far as offline data allows: 28x28 Fashion-MNIST (what
    data-dir holds: 30,000 / 10,000 images from scripts/gpu-wheels.sh), an AnnResNet-14 teacher, the spiking student data-free (mode dda) and on the
    real data with the same schedule; ablation.csv under OUT/dda-paper-scale."""
    from experiments.dda import ablation
    from server.config import load_config

    started = time.perf_counter()
    cfg = load_config({**DDA_PAPER_SCALE, "data-dir": data_dir})
    frame = ablation(cfg, [0], 10, out / "dda-paper-scale", (("defaults", "dda", {}), ("mode=real", "real", {})),
                     teacher_kind="resnet")
    return {"config": DDA_PAPER_SCALE, "rows": frame.to_dict("records"), "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data-dir", default="data-cache", help="holds FashionMNIST/raw (or Debian's files are used)")
    parser.add_argument("--steps-backend", help=argparse.SUPPRESS)  # internal: one backend per process
    parser.add_argument("--dda", action="store_true", help="only DDA at paper scale (CUDA), to OUT/dda-paper-scale.json")
    args = parser.parse_args()
    if args.steps_backend:
        print(json.dumps(steps(args.steps_backend)))
        return
    if args.dda:
        args.out.mkdir(parents=True, exist_ok=True)
        report = (dda_paper_scale(args.out, args.data_dir) if torch.cuda.is_available() else
                  {"skipped": "torch sees no CUDA device: DDA at paper scale is sized for a GPU"})
        (args.out / "dda-paper-scale.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.out / 'dda-paper-scale.json'}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    report: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
                    "cpus": os.cpu_count()},
    }
    t = time.perf_counter()
    report["gpu_tests"] = gpu_tests(args.out)
    report["gpu_tests"]["seconds"] = round(time.perf_counter() - t, 1)
    report["federation"] = federation(args.out, args.data_dir)
    if cuda:
        report["steps"] = []
        for backend in BACKENDS:
            proc = subprocess.run([sys.executable, "-m", "experiments.gpu_check", str(args.out), "--steps-backend",
                                   backend], cwd=ROOT, capture_output=True, text=True, timeout=240)
            if proc.returncode == 0:
                report["steps"] += json.loads(proc.stdout.splitlines()[-1])
            else:
                report["steps"].append({"backend": backend, "error": proc.stderr.strip().splitlines()[-1:]})
    else:
        report["steps"] = {"skipped": "torch sees no CUDA device: the step timings are for a GPU"}
    path = args.out / "gpu-check.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
