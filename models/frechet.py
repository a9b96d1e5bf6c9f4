"""Frechet distance between image sets, on the features of a classifier trained here.

The Inception-based FID needs Inception weights that cannot be downloaded here; the
same Frechet distance on the penultimate features of the platform's own spiking
classifier (trained on the same dataset) is what this module measures. It ranks
generators on one dataset; its values are not comparable with published FIDs.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from spikingjelly.activation_based import functional

from models.spiking_cnn import SpikingCNN


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to [N, D] features.

    ``eps`` is added to the covariances' diagonals: silent neurons give singular ones.
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    ridge = eps * np.eye(a.shape[1])
    s_a, s_b = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
    root = linalg.sqrtm(s_a @ s_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root.real))


@torch.no_grad()
def classifier_features(model: SpikingCNN, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Firing rates of the layer before the classifier's readout, [N, D], for images in [0, 1]."""
    body = model.net[:-2]  # everything up to (and including) flatten
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        out.append(body(xb.unsqueeze(0).repeat(model.timesteps, *([1] * xb.dim()))).mean(0).cpu())
        functional.reset_net(model)
    return torch.cat(out).double().numpy()
