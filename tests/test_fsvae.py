"""FSVAE: shapes, the Bernoulli pick from k spikes, where the gradient goes, training on digits, seeding."""

import pytest
import torch
from spikingjelly.activation_based import functional

from data import load_split
from models.fsvae import FSVAE, psp


def small(channels: int = 1, size: int = 8, **kw) -> FSVAE:
    torch.manual_seed(0)
    return FSVAE(channels, size, **{"latent_dim": 16, "timesteps": 4, "k": 5, **kw})


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return torch.as_tensor(load_split("digits", "data-cache", 0.2, 0).x_train[:32])


@pytest.fixture(scope="module")
def warmed(digits) -> FSVAE:
    """An untrained model in evaluation mode whose latent neurons fire: BN biases drawn from
    N(0, 1) (fresh ones are 0, and a silent z_{t-1} keeps the prior silent), BN running
    statistics those of digits (fresh ones, mean 0 and variance 1, silence the posterior)."""
    model = small()
    for bn in model.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.momentum = None  # a cumulative average: one pass sets the statistics
    for bn in [*model.posterior_net.bns.modules(), *model.prior_net.bns.modules()]:
        if isinstance(bn, torch.nn.BatchNorm1d):
            torch.nn.init.normal_(bn.bias)
    with torch.no_grad():
        model.loss(digits)
    return model.eval()


@pytest.mark.parametrize("channels, size", [(1, 8), (3, 16)])
def test_shapes_and_range_follow_the_input(channels, size):
    model = small(channels, size)
    assert not hasattr(model, "prior")  # the training loop would give a `prior` 10x the learning rate
    x = torch.rand(6, channels, size, size)
    loss, per_sample = model.loss(x)
    assert loss.ndim == 0 and per_sample.shape == (6,) and (per_sample > 0).all()
    recon, q = model(x)
    assert recon.shape == x.shape and q.shape == (4, 6, 16) and 0 <= q.min() and q.max() <= 1
    model.eval()
    for images, n in ((model.reconstruct(x), 6), (model.reconstruct(x, latent_noise=1.0), 6), (model.sample(5), 5)):
        assert images.shape == (n, *x.shape[1:]) and 0 <= images.min() and images.max() <= 1


def test_z_is_a_bernoulli_pick_of_the_posterior_probability(digits, warmed):
    """250 copies of 4 images: given the past, z_t ~ Bernoulli(q_t), so per image and latent
    neuron the sum over copies and steps of z_t - q_t stays within a few standard errors."""
    copies = 250
    with torch.no_grad():
        z, q, _ = warmed.posterior(digits[:4].repeat(copies, 1, 1, 1), torch.Generator().manual_seed(0))
    functional.reset_net(warmed)
    assert set(z.unique().tolist()) <= {0.0, 1.0} and 0.05 < q.mean() < 0.95
    gap = (z - q).view(4, copies, 4, -1).sum((0, 1))
    tolerance = 4.5 * (q * (1 - q)).view(4, copies, 4, -1).sum((0, 1)).sqrt() + 1e-6
    assert (gap.abs() <= tolerance).all()


def test_reconstruction_gradient_reaches_the_posterior_through_the_picked_spikes():
    model = small(mmd_weight=0.0)
    model.loss(torch.rand(6, 1, 8, 8))[0].backward()
    assert model.posterior_net.fcs[0].weight.grad.abs().sum() > 0 and model.encoder.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None or not p.grad.any() for p in model.prior_net.parameters())


def test_psp_is_a_first_order_synapse():
    out = psp(torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert torch.allclose(out, torch.tensor([0.5, 0.25, 0.125, 0.5625]))


def test_a_few_adam_steps_lower_the_loss_on_digits(digits):
    model = small()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    losses = []
    for _ in range(6):
        loss, _ = model.loss(digits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_the_generator_fixes_samples_and_reconstructions(digits, warmed):
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return warmed.sample(8, g), warmed.reconstruct(digits[:8], 0.5, g)

    (s1, r1), (s2, r2), (s3, r3) = run(1), run(1), run(2)
    assert torch.equal(s1, s2) and torch.equal(r1, r2)
    assert not torch.equal(s1, s3) and not torch.equal(r1, r3)
