"""Maximum mean discrepancy between two samples (ESVAE's prior-matching term)."""

from __future__ import annotations

import torch

KERNELS = ("rbf", "linear")


def mmd(x: torch.Tensor, y: torch.Tensor, kernel: str = "rbf",
        bandwidths: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0)) -> torch.Tensor:
    """Squared MMD (biased V-statistic, so it is exactly 0 for identical samples).

    Parameters
    ----------
    x, y : [N, D] and [M, D] samples.
    kernel : ``rbf`` = sum over ``bandwidths`` s of exp(-||a - b||^2 / (2 s^2 D)) (the
        distance is divided by D so one set of bandwidths suits any latent size);
        ``linear`` = a . b, whose MMD is ||mean(x) - mean(y)||^2.
    """
    if kernel == "linear":
        return (x.mean(0) - y.mean(0)).pow(2).sum()
    if kernel != "rbf":
        raise ValueError(f"kernel={kernel!r}; accepted: {', '.join(KERNELS)}")
    xy = torch.cat([x, y])
    squared = torch.cdist(xy, xy).pow(2) / x.shape[1]
    k = sum(torch.exp(-squared / (2 * s * s)) for s in bandwidths)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()
