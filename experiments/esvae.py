"""`spikefed esvae train`: ESVAE or the same-shape ANN VAE trained centrally, measured,
with image grids. Training uses the `esvae` workload's loop (the one the clients run)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from data import Split, split_of
from models import get_workload
from models.esvae import AnnVAE
from models.frechet import classifier_features, frechet_distance
from models.device import model_device, torch_device
from server.config import RunConfig, load_config

MODELS = ("esvae", "ann")
NOISE_LEVELS = (0.0, 0.5, 1.0, 2.0)
CLASSIFIER_EPOCHS = 15


def build_vae(model: str, cfg: RunConfig, split: Split) -> torch.nn.Module:
    if model == "esvae":
        return get_workload("esvae").build_model(cfg, split.spec)
    return AnnVAE(split.spec.channels, split.spec.size, cfg.esvae_latent_dim).to(torch_device(cfg))


def feature_classifier(cfg: RunConfig, split: Split) -> tuple[torch.nn.Module, float]:
    """The platform's spiking classifier trained centrally on the same training split
    (seeded), whose features the Frechet distance uses; returns it and its test accuracy."""
    ccfg = load_config({"dataset": cfg.dataset, "data-dir": cfg.data_dir, "test-fraction": cfg.test_fraction,
                        "num-gpus": cfg.num_gpus, "neuron-backend": cfg.neuron_backend,
                        "seed": cfg.seed, "local-epochs": CLASSIFIER_EPOCHS})
    workload = get_workload("classify")
    torch.manual_seed(cfg.seed)
    model = workload.build_model(ccfg, split.spec)
    workload.train(model, (split.x_train, split.y_train), ccfg, cfg.seed)
    return model, workload.evaluate(model, (split.x_test, split.y_test), ccfg)["accuracy"]


def inception_fid(real: torch.Tensor, fake: torch.Tensor) -> tuple[float | None, str]:
    """The Inception FID when torchmetrics and its Inception weights are available locally."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        return None, "not measured: torchmetrics is not installed (Inception FID needs it and its weights)"
    try:
        fid = FrechetInceptionDistance(normalize=True)
    except Exception as err:  # noqa: BLE001 - any failure to load the weights offline
        return None, f"not measured: Inception weights unavailable ({str(err).splitlines()[0]})"
    to_rgb = lambda x: x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # noqa: E731
    fid.update(to_rgb(real).cpu(), real=True)
    fid.update(to_rgb(fake).cpu(), real=False)
    return float(fid.compute()), "torchmetrics FrechetInceptionDistance"


def measure(model: torch.nn.Module, classifier: torch.nn.Module, split: Split, seed: int) -> dict:
    """Reconstruction MSE, Frechet distances on classifier features, latent-noise robustness."""
    device = model_device(model)
    x_test = torch.as_tensor(split.x_test, device=device)
    x_train = torch.as_tensor(split.x_train, device=device)
    gen = lambda: torch.Generator(device=device).manual_seed(seed)  # noqa: E731 - same draws per call
    model.eval()
    recon = model.reconstruct(x_test, generator=gen())
    samples = model.sample(len(x_test), generator=gen())
    feats = {name: classifier_features(classifier, images) for name, images in
             (("test", x_test), ("train", x_train), ("recon", recon), ("samples", samples))}
    fid, fid_note = inception_fid(x_test, samples)
    return {
        "test_mse": float((recon - x_test).pow(2).mean()),
        "frechet_samples": frechet_distance(feats["samples"], feats["test"]),
        "frechet_reconstructions": frechet_distance(feats["recon"], feats["test"]),
        "frechet_train_vs_test": frechet_distance(feats["train"], feats["test"]),
        "latent_noise_mse": {str(level): float((model.reconstruct(x_test, level, generator=gen()) - x_test).pow(2).mean())
                             for level in NOISE_LEVELS},
        "inception_fid": fid,
        "inception_fid_note": fid_note,
    }


def save_grids(model: torch.nn.Module, split: Split, out: Path, seed: int, n: int = 64) -> list[Path]:
    """inputs.png, reconstructions.png and samples.png (small images upscaled to >= 32 px)."""
    device = model_device(model)
    x = torch.as_tensor(split.x_test[:n], device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    images = {"inputs": x, "reconstructions": model.reconstruct(x, generator=generator),
              "samples": model.sample(n, generator=generator)}
    scale = max(1, 32 // split.spec.size)
    paths = []
    for name, batch in images.items():
        path = out / f"{name}.png"
        save_image(F.interpolate(batch.clamp(0, 1), scale_factor=scale, mode="nearest"), path, nrow=8, padding=2)
        paths.append(path)
    return paths


def train_central(model_name: str, cfg: RunConfig, out: Path,
                  on_epoch: Callable[[int, float], None] | None = None) -> dict:
    """Train ``model_name`` for ``cfg.local_epochs`` on the whole training split; write
    checkpoint.pt, metrics.json and the grids to ``out``; returns the metrics."""
    out.mkdir(parents=True, exist_ok=True)
    split = split_of(cfg)
    torch.manual_seed(cfg.seed)
    model = build_vae(model_name, cfg, split)
    start = time.perf_counter()
    history = []
    get_workload("esvae").train(model, (split.x_train, split.y_train), cfg, cfg.seed,
                                on_epoch=lambda e, loss: (history.append(loss), on_epoch and on_epoch(e, loss)))
    seconds = time.perf_counter() - start
    torch.save({"model": model_name, "config": cfg.to_mapping(), "state_dict": model.state_dict()},
               out / "checkpoint.pt")
    classifier, accuracy = feature_classifier(cfg, split)
    metrics = {
        "model": model_name, "dataset": cfg.dataset, "epochs": cfg.local_epochs, "timesteps": cfg.timesteps,
        "latent_dim": cfg.esvae_latent_dim, "seed": cfg.seed, "train_seconds": round(seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "loss_per_epoch": [round(v, 6) for v in history],
        "feature_classifier_accuracy": accuracy,
        **measure(model, classifier, split, cfg.seed),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    save_grids(model, split, out, cfg.seed)
    return metrics


def esvae_config(dataset: str, data_dir: str, epochs: int, timesteps: int, latent_dim: int, batch_size: int,
                 lr: float, mmd_lambda: float, mmd_kernel: str, seed: int, num_gpus: float = 0.0) -> RunConfig:
    """The CLI's options as a validated run config (one place checks every value)."""
    return load_config({"workload": "esvae", "dataset": dataset, "data-dir": data_dir, "local-epochs": epochs,
                        "timesteps": timesteps, "esvae-latent-dim": latent_dim, "batch-size": batch_size,
                        "lr": lr, "esvae-mmd-lambda": mmd_lambda, "esvae-mmd-kernel": mmd_kernel, "seed": seed,
                        "num-gpus": num_gpus})

