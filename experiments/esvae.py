"""`spikefed esvae train`: ESVAE or an ANN VAE trained centrally, measured, with image
grids; `spikefed esvae report`: runs side by side. Training uses the `esvae` workload's
loop (the one the clients run)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from data import Split, split_of
from data.sources import cached_arrays
from models import get_workload
from models.esvae import AnnVAE
from models.fad import Autoencoder, fad, train_autoencoder
from models.fsvae import FSVAE
from models.frechet import classifier_features, frechet_distance
from models.device import model_device, torch_device
from server.config import RunConfig, load_config

MODELS = ("esvae", "fsvae", "ann")
NOISE_LEVELS = (0.0, 0.5, 1.0, 2.0)
CLASSIFIER_EPOCHS = 15
CURVE_IMAGES = 1000  # test images whose reconstruction MSE is logged after every epoch


def build_vae(model: str, cfg: RunConfig, split: Split) -> torch.nn.Module:
    if model == "esvae":
        return get_workload("esvae").build_model(cfg, split.spec)
    if model == "fsvae":
        return FSVAE(split.spec.channels, split.spec.size, cfg.esvae_latent_dim, cfg.timesteps).to(torch_device(cfg))
    return AnnVAE(split.spec.channels, split.spec.size, cfg.esvae_latent_dim).to(torch_device(cfg))


def trained_once(model: torch.nn.Module, name: str, cfg: RunConfig, split: Split,
                 train: Callable[[torch.nn.Module], object]) -> torch.nn.Module:
    """``model`` with the weights ``train(model)`` gives, kept under ``data-dir/<name>/`` (named
    by the dataset, size, training-set size and seed) so that every model of one comparison
    is measured with the same network."""
    path = (Path(cfg.data_dir) / name /
            f"{cfg.dataset}-{split.spec.size}px-{len(split.x_train)}-seed{cfg.seed}.npz")
    state = cached_arrays(path, lambda: (train(model), {k: v.cpu().numpy() for k, v in model.state_dict().items()})[1])
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    return model.eval()


def feature_classifier(cfg: RunConfig, split: Split) -> tuple[torch.nn.Module, float]:
    """The platform's spiking classifier trained centrally on the same training split
    (seeded), whose features the Frechet distance uses; returns it and its test accuracy."""
    ccfg = load_config({"dataset": cfg.dataset, "data-dir": cfg.data_dir, "test-fraction": cfg.test_fraction,
                        "num-gpus": cfg.num_gpus, "neuron-backend": cfg.neuron_backend,
                        "seed": cfg.seed, "local-epochs": CLASSIFIER_EPOCHS})
    workload = get_workload("classify")
    torch.manual_seed(cfg.seed)
    model = trained_once(workload.build_model(ccfg, split.spec), "feature-classifier", cfg, split,
                         lambda m: workload.train(m, (split.x_train, split.y_train), ccfg, cfg.seed))
    return model, workload.evaluate(model, (split.x_test, split.y_test), ccfg)["accuracy"]


def fad_autoencoder(cfg: RunConfig, split: Split) -> Autoencoder:
    """The FAD autoencoder (:mod:`models.fad`) of the training split, trained once."""
    torch.manual_seed(cfg.seed)
    return trained_once(Autoencoder(split.spec.channels, split.spec.size), "fad-autoencoder", cfg, split,
                        lambda m: train_autoencoder(m, torch.as_tensor(split.x_train), cfg.seed))


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


def measure(model: torch.nn.Module, classifier: torch.nn.Module, autoencoder: Autoencoder, split: Split,
            seed: int) -> dict:
    """Reconstruction MSE, FAD and Frechet distances on classifier features, latent-noise robustness."""
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
    mse = float((recon - x_test).pow(2).mean())
    return {
        "test_mse": mse,
        "test_mse_pm1": 4 * mse,  # on the [-1, 1] scale the papers report
        "fad_samples": fad(autoencoder, x_test, samples),
        "fad_reconstructions": fad(autoencoder, x_test, recon),
        "fad_train_vs_test": fad(autoencoder, x_test, x_train),
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
    workload = get_workload("esvae")
    curve_images = (split.x_test[:CURVE_IMAGES], split.y_test[:CURVE_IMAGES])
    history, curve, evaluating = [], [], 0.0

    def after_epoch(epoch: int, loss: float) -> None:
        nonlocal evaluating
        t0 = time.perf_counter()
        history.append(loss)
        curve.append(workload.evaluate(model, curve_images, cfg)["mse"])
        model.train()
        evaluating += time.perf_counter() - t0
        if on_epoch:
            on_epoch(epoch, loss)

    start = time.perf_counter()
    workload.train(model, (split.x_train, split.y_train), cfg, cfg.seed, on_epoch=after_epoch)
    seconds = time.perf_counter() - start - evaluating
    torch.save({"model": model_name, "config": cfg.to_mapping(), "state_dict": model.state_dict()},
               out / "checkpoint.pt")
    classifier, accuracy = feature_classifier(cfg, split)
    metrics = {
        "model": model_name, "dataset": cfg.dataset, "epochs": cfg.local_epochs, "timesteps": cfg.timesteps,
        "latent_dim": cfg.esvae_latent_dim, "seed": cfg.seed, "train_seconds": round(seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "image_size": split.spec.size, "train_images": len(split.x_train), "test_images": len(split.x_test),
        "loss_per_epoch": [round(v, 6) for v in history],
        f"test_mse_per_epoch_first_{len(curve_images[0])}": [round(v, 6) for v in curve],
        "feature_classifier_accuracy": accuracy,
        **measure(model, classifier, fad_autoencoder(cfg, split), split, cfg.seed),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    save_grids(model, split, out, cfg.seed)
    return metrics


def esvae_config(dataset: str, data_dir: str, epochs: int, timesteps: int, latent_dim: int, batch_size: int,
                 lr: float, mmd_lambda: float, mmd_kernel: str, seed: int, num_gpus: float = 0.0,
                 overrides: dict[str, str] | None = None) -> RunConfig:
    """The CLI's options (and ``--set`` overrides) as a validated run config (one place checks every value)."""
    return load_config({"workload": "esvae", "dataset": dataset, "data-dir": data_dir, "local-epochs": epochs,
                        "timesteps": timesteps, "esvae-latent-dim": latent_dim, "batch-size": batch_size,
                        "lr": lr, "esvae-mmd-lambda": mmd_lambda, "esvae-mmd-kernel": mmd_kernel, "seed": seed,
                        "num-gpus": num_gpus, **(overrides or {})})



REPORT_COLUMNS = {  # metrics.json key -> column of the report
    "model": "model", "parameters": "parameters", "epochs": "epochs", "train_seconds": "train s",
    "test_mse_pm1": "MSE [-1, 1]", "test_mse": "MSE [0, 1]", "fad_samples": "FAD samples",
    "fad_reconstructions": "FAD recon.", "frechet_samples": "FD samples (classifier)",
    "frechet_reconstructions": "FD recon. (classifier)",
}


def report(runs: list[Path], out: Path) -> None:
    """esvae.csv (every metric of each run), esvae.md (the main columns, and the latent-noise
    MSE relative to no noise) and curves.png (training loss and test MSE per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from server.config import ConfigError

    metrics = []
    for run in runs:
        try:
            metrics.append({"run": run.name, **json.loads((run / "metrics.json").read_text())})
        except (OSError, ValueError) as err:
            raise ConfigError(f"{run}: no readable metrics.json ({type(err).__name__}); "
                              "accepted: folders written by `spikefed esvae train`") from None
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.json_normalize(metrics)
    frame.to_csv(out / "esvae.csv", index=False)
    table = frame[["run", *REPORT_COLUMNS]].rename(columns=REPORT_COLUMNS)
    for level in NOISE_LEVELS[1:]:
        table[f"MSE, latent noise {level} std"] = [
            f"{m['latent_noise_mse'][str(level)]:.4f} (+{m['latent_noise_mse'][str(level)] / m['test_mse'] - 1:.0%})"
            for m in metrics]
    (out / "esvae.md").write_text(table.to_markdown(index=False, floatfmt=".4g") + "\n")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for m in metrics:
        curve = next(v for k, v in m.items() if k.startswith("test_mse_per_epoch"))
        epochs = range(1, len(curve) + 1)
        left.plot(epochs, m["loss_per_epoch"], marker=".", label=m["run"])
        right.plot(epochs, curve, marker=".", label=m["run"])
    left.set(xlabel="epoch", ylabel="training objective", yscale="log", title="training loss")
    right.set(xlabel="epoch", ylabel="MSE [0, 1]", title=f"test reconstruction MSE ({CURVE_IMAGES} images)")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
