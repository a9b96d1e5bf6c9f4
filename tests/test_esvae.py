"""ESVAE: the Poisson sampler, MMD, the model on digits and larger images, the CLI and federation."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_thread_env

from data import load_split
from models import get_workload
from models.esvae import ESVAE, AnnVAE, esvae_lif
from models.fad import Autoencoder, fad, train_autoencoder
from models.frechet import frechet_distance
from models.mmd import mmd
from models.poisson import poisson_spikes
from server.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_spike_rate_matches_the_requested_rate():
    rate = torch.tensor([0.0, 0.05, 0.3, 0.5, 0.9, 1.0])
    steps = 20_000
    spikes = poisson_spikes(rate, steps, generator=torch.Generator().manual_seed(0))
    assert spikes.shape == (steps, 6) and set(spikes.unique().tolist()) <= {0.0, 1.0}
    tolerance = 4 * torch.sqrt(rate * (1 - rate) / steps) + 1e-9  # 4 standard errors
    assert ((spikes.mean(0) - rate).abs() <= tolerance).all()


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_sampler_gradient_moves_the_rate_the_loss_wants(sign):
    rate = torch.full((50,), 0.4, requires_grad=True)
    # sign -1: the loss falls with more spikes, so descent must raise the rate
    (sign * poisson_spikes(rate, 64, generator=torch.Generator().manual_seed(1)).sum()).backward()
    assert (rate.grad != 0).all()
    assert (torch.sign(rate.grad) == sign).all()


def test_mmd_is_zero_for_identical_samples_and_orders_shifts_alike():
    x = torch.rand(64, 16, generator=torch.Generator().manual_seed(0))
    near, far = (x + 0.05).clamp(0, 1), (x + 0.4).clamp(0, 1)
    for kernel in ("rbf", "linear"):
        assert mmd(x, x.clone(), kernel).item() == pytest.approx(0.0, abs=1e-6)
        assert 0 < mmd(x, near, kernel).item() < mmd(x, far, kernel).item()
    with pytest.raises(ValueError, match="accepted: rbf, linear"):
        mmd(x, x, "cubic")


def test_frechet_distance_of_gaussians_is_the_mean_shift_when_covariances_match():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    shift = np.array([1.0, -2.0, 0.5])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-4)
    assert frechet_distance(a, a + shift) == pytest.approx((shift ** 2).sum(), rel=1e-3)


def test_the_authors_lif_decays_by_a_quarter_fires_at_0_2_and_resets_to_zero():
    neuron = esvae_lif()
    neuron.step_mode = "m"
    # u = 0.25 u + I: I = 0.18 gives 0.18, then 0.225 (spike, reset to 0), 0.18, 0.225, ...
    assert neuron(torch.full((6, 1), 0.18)).flatten().tolist() == [0, 1, 0, 1, 0, 1]
    neuron.reset()
    assert neuron(torch.full((6, 1), 0.1)).sum() == 0  # settles at 0.1 / 0.75 < 0.2


def test_fad_is_zero_for_the_same_images_and_grows_with_noise():
    split = load_split("digits", "data-cache", 0.2, 0)
    torch.manual_seed(0)
    model = train_autoencoder(Autoencoder(1, 8), torch.as_tensor(split.x_train), seed=0, epochs=2)
    test, train = torch.as_tensor(split.x_test), torch.as_tensor(split.x_train)
    noisy = (test + 0.3 * torch.randn(test.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert fad(model, test, test) == pytest.approx(0.0, abs=1e-3)
    assert fad(model, test, train) < fad(model, test, noisy) < fad(model, test, torch.rand_like(test))


def test_a_measuring_network_is_trained_once_and_read_back(tmp_path):
    from experiments.esvae import trained_once

    split = load_split("digits", "data-cache", 0.2, 0)
    cfg = load_config({"dataset": "digits", "data-dir": str(tmp_path)})
    calls = []

    def train(model):
        calls.append(1)
        torch.nn.init.normal_(model.weight)

    first = trained_once(torch.nn.Linear(4, 3), "net", cfg, split, train)
    again = trained_once(torch.nn.Linear(4, 3), "net", cfg, split, train)
    assert len(calls) == 1 and torch.equal(first.weight, again.weight)
    assert list((tmp_path / "net").glob("digits-8px-*-seed0.npz"))


@pytest.mark.parametrize("channels, size", [(1, 8), (1, 28), (3, 32)])
@pytest.mark.parametrize("cls", [ESVAE, AnnVAE])
def test_shapes_follow_the_input(cls, channels, size):
    model = cls(channels, size, latent_dim=8, **({"timesteps": 2} if cls is ESVAE else {}))
    x = torch.rand(3, channels, size, size)
    loss, per_sample = model.loss(x)
    assert loss.ndim == 0 and per_sample.shape == (3,)
    assert model.reconstruct(x).shape == x.shape
    samples = model.sample(5)
    assert samples.shape == (5, channels, size, size) and 0 <= samples.min() and samples.max() <= 1


def test_esvae_firing_rates_come_from_the_encoder_ending_with_the_latent_layer():
    cfg = load_config({"workload": "esvae", "timesteps": 2, "esvae-latent-dim": 12})
    split = load_split("digits", "data-cache", 0.2, 0)
    workload = get_workload("esvae")
    rates = workload.firing_rates(workload.build_model(cfg, split.spec), (split.x_test[:20], None), cfg)
    assert list(rates)[-1] == "lif_latent" and len(rates["lif_latent"]) == 12
    assert all(0 <= r <= 1 for layer in rates.values() for r in layer)


def test_a_few_epochs_on_digits_lower_the_reconstruction_error():
    torch.manual_seed(0)
    cfg = load_config({"workload": "esvae", "timesteps": 2, "local-epochs": 3, "lr": 0.003,
                       "batch-size": 32, "esvae-latent-dim": 16})
    split = load_split("digits", "data-cache", 0.2, 0)
    workload = get_workload("esvae")
    model = workload.build_model(cfg, split.spec)
    test = (split.x_test, split.y_test)
    before = workload.evaluate(model, test, cfg)["mse"]
    losses = []
    workload.train(model, (split.x_train[:320], split.y_train[:320]), cfg, 0, on_epoch=lambda e, l: losses.append(l))
    assert losses[-1] < losses[0]
    assert workload.evaluate(model, test, cfg)["mse"] < before


@pytest.mark.slow
def test_cli_trains_fsvae_writes_checkpoint_metrics_and_grids_and_reports(tmp_path):
    out = tmp_path / "fsvae"
    proc = subprocess.run([sys.executable, "-m", "experiments", "esvae", "train", "--model", "fsvae", "--epochs", "2",
                           "--timesteps", "2", "--latent-dim", "8", "--data-dir", str(tmp_path / "data"),
                           "--set", "max-train-samples=400", "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=one_thread_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["test_mse"] < 1 and metrics["frechet_samples"] > 0
    assert metrics["test_mse_pm1"] == pytest.approx(4 * metrics["test_mse"])
    assert metrics["fad_samples"] > metrics["fad_train_vs_test"] > 0 and metrics["train_images"] == 400
    assert len(metrics["loss_per_epoch"]) == len(metrics["test_mse_per_epoch_first_360"]) == 2
    assert set(metrics["latent_noise_mse"]) == {"0.0", "0.5", "1.0", "2.0"}
    assert metrics["inception_fid"] is None or metrics["inception_fid"] >= 0
    for name in ("inputs", "reconstructions", "samples"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = torch.load(out / "checkpoint.pt")
    assert state["model"] == "fsvae" and any(k.startswith("posterior_net.") for k in state["state_dict"])
    report = subprocess.run([sys.executable, "-m", "experiments", "esvae", "report", str(out), "--out",
                             str(tmp_path / "report")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=one_thread_env())
    assert report.returncode == 0, report.stderr[-3000:]
    assert "| fsvae " in (tmp_path / "report" / "esvae.md").read_text()
    assert (tmp_path / "report" / "curves.png").stat().st_size > 0


def test_cli_refuses_a_bad_option_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "experiments", "esvae", "train", "--model", "gan"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "accepted: esvae, fsvae, ann" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_one_federated_round_of_esvae_under_sfedca_tracks_reconstruction_mse(tiny):
    from test_simulation import results_of, spikefed_run

    from experiments.simulation import read_rounds

    proc = spikefed_run({**tiny, "workload": "esvae", "strategy": "sfedca", "num-server-rounds": 1, "timesteps": 2,
                         "esvae-latent-dim": 8, "lr": 0.003, "run-name": "esvae"})
    (row,) = read_rounds(results_of(proc))
    assert 0 < float(row["test_mse"]) < 1 and float(row["test_loss"]) == float(row["test_mse"])
    assert row["test_accuracy"] == ""  # a VAE has no accuracy
    assert row["scores"]  # SFedCA's credits came from the encoder's firing rates
