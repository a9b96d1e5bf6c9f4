import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, neuron

from data import load_split
from models import get_workload
from models.spiking_cnn import SpikingCNN
from server.config import load_config


def digits_batch(n=32):
    split = load_split("digits", "data-cache", 0.2, 0)
    return torch.as_tensor(split.x_train[:n]), torch.as_tensor(split.y_train[:n])


def test_output_is_a_spike_train_per_class():
    torch.manual_seed(0)
    model = SpikingCNN(1, 8, 10, timesteps=4)
    x, _ = digits_batch()
    out = model(x)
    assert out.shape == (4, 32, 10)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert all(isinstance(m, neuron.LIFNode) and m.step_mode == "m"
               for m in model.modules() if isinstance(m, neuron.BaseNode))


def test_surrogate_gradients_reach_the_first_layer():
    torch.manual_seed(0)
    model = SpikingCNN(1, 8, 10, timesteps=4)
    x, y = digits_batch()
    loss = torch.nn.functional.mse_loss(model(x).mean(0), torch.nn.functional.one_hot(y, 10).float())
    loss.backward()
    grad = model.net.conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_reset_net_clears_membrane_state_between_batches():
    torch.manual_seed(0)
    model = SpikingCNN(1, 8, 10, timesteps=4).eval()
    x, _ = digits_batch()
    model(x)
    v_first = model.net.lif1.v.clone()
    model(x)  # without a reset the membrane potential carries over
    assert not torch.equal(model.net.lif1.v, v_first)
    functional.reset_net(model)
    assert isinstance(model.net.lif1.v, float) and model.net.lif1.v == 0.0
    model(x)
    assert torch.equal(model.net.lif1.v, v_first)


def test_training_raises_firing_and_firing_rates_are_rates():
    cfg = load_config({"local-epochs": 3})
    workload = get_workload("classify")
    split = load_split("digits", cfg.data_dir, cfg.test_fraction, cfg.seed)
    torch.manual_seed(0)
    model = workload.build_model(cfg, split.spec)
    data = (split.x_train[:300], split.y_train[:300])
    before = workload.firing_rates(model, data, cfg)
    metrics = workload.train(model, data, cfg, seed=0)
    after = workload.firing_rates(model, data, cfg)
    assert list(after) == ["net.lif1", "net.lif2", "net.lif_out"]
    assert len(after["net.lif1"]) == 16 and len(after["net.lif_out"]) == 10
    for rates in (*before.values(), *after.values()):
        assert all(0.0 <= r <= 1.0 for r in rates)
    assert np.mean(after["net.lif_out"]) > 0 and np.mean(after["net.lif1"]) > 0
    assert np.isfinite(metrics["train-loss"])
    assert workload.evaluate(model, (split.x_test, split.y_test), cfg)["accuracy"] > 0.5


def test_no_dead_start_one_small_local_update_leaves_an_output_layer_that_fires():
    """The demo's first round: one client's 2 epochs on its few samples. Without the
    BatchNorm recalibration the evaluated model's output layer stays silent (10% accuracy)."""
    cfg = load_config({})
    workload = get_workload("classify")
    split = load_split("digits", cfg.data_dir, cfg.test_fraction, cfg.seed)
    torch.manual_seed(0)
    model = workload.build_model(cfg, split.spec)
    assert np.mean(workload.firing_rates(model, (split.x_test, split.y_test), cfg)["net.lif_out"]) == 0.0
    workload.train(model, (split.x_train[:60], split.y_train[:60]), cfg, seed=0)
    rates = workload.firing_rates(model, (split.x_test, split.y_test), cfg)["net.lif_out"]
    assert min(rates) > 0  # every output neuron fires on the test split
    assert workload.evaluate(model, (split.x_test, split.y_test), cfg)["accuracy"] > 0.2


def test_energy_counts_accumulates_on_spikes_and_macs_on_analog_input():
    from spikingjelly.activation_based import layer

    from models.energy import E_AC, E_MAC, operation_counts

    class TwoLayers(torch.nn.Module):  # analog input -> Linear -> spikes -> Linear, over T=2
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = layer.Linear(4, 3, bias=False), layer.Linear(3, 2, bias=False)
            functional.set_step_mode(self, "m")

        def forward(self, x):
            spikes = (self.fc1(x.unsqueeze(0).repeat(2, 1, 1)) > 0).float()
            spikes[..., 1:] = 0  # one of the 3 hidden neurons may spike, the others never do
            return self.fc2(spikes)

    model = TwoLayers()
    with torch.no_grad():
        model.fc1.weight.fill_(1.0)
    counts = operation_counts(model, torch.rand(5, 4) + 0.1, timesteps=2)  # positive input: neuron 0 spikes
    assert counts.dense_macs == 2 * 4 * 3  # fc1: 12 MACs per step, 2 steps
    assert counts.synaptic_ops == pytest.approx(2 * 3 * 2 / 3)  # fc2: 6 MACs per step x rate 1/3
    assert counts.ann_macs == 4 * 3 + 3 * 2  # the ANN runs each layer once
    assert counts.snn_joules(10) == pytest.approx(10 * (24 * E_MAC + 4 * E_AC))
    assert counts.ann_joules(10) == pytest.approx(10 * 18 * E_MAC)
