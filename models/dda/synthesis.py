"""Stage 1, synthesis: a batch of images made from the teacher, hard for the current student.

Each batch starts afresh (new pixels, or a generator reset with its noise) and is
optimised for ``dda-synthesis-steps`` steps; the batch of the lowest loss is kept (the
authors' ``best_cost``, GitHub SLGSP/DDA ``datafree/synthesis/dda.py``). The loss, on the
images after the pool's crop/flip (as the teacher sees them when the student samples):

- ``bn`` x the distance of every teacher BatchNorm layer's input statistics to its
  running statistics (DeepInversion, Yin et al. 2020);
- ``ce`` x the teacher's cross-entropy to the batch's target labels;
- ``tv`` x total variation (an image prior);
- ``adversarial`` x minus the teacher-student KL divergence: images on which the
  student still disagrees with the teacher (DFAD, Fast, NAYER; weight 0.5-1.3 there);
- ``rotation`` x minus the rotation head's loss on the student's embedding
  (:mod:`models.dda.rotation`; the authors' ``loss_dda``, weight 10).

The last two need the current student, so a pool's first batches (no student yet) are
made with them off, as the authors' ``initBank`` script does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from models.dda.generator import Generator
from models.dda.networks import logits
from models.dda.pool import crop_flip
from models.dda.rotation import RotationHead


class BNStatistics:
    """Forward hooks on every BatchNorm of ``model``: after a forward pass, :attr:`loss`
    is the sum over layers of ||mean - running_mean||_2 + ||var - running_var||_2 of the
    layer's input batch (over [T x] N and the spatial positions)."""

    def __init__(self, model: nn.Module) -> None:
        self.terms: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _hook(self, module: nn.modules.batchnorm._BatchNorm, inputs, _output) -> None:
        x = inputs[0]
        if getattr(module, "step_mode", "s") == "m":  # spikingjelly multi-step BN: [T, N, C, ...]
            x = x.flatten(0, 1)
        dims = [d for d in range(x.dim()) if d != 1]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        self.terms.append(torch.norm(mean - module.running_mean, 2) + torch.norm(var - module.running_var, 2))

    @property
    def loss(self) -> torch.Tensor:
        return torch.stack(self.terms).sum()

    def clear(self) -> None:
        self.terms = []

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextmanager
def fixed(*models: nn.Module | None) -> Iterator[None]:
    """``models`` (None skipped) in eval mode with their parameters' gradients off; restored on exit."""
    models = [m for m in models if m is not None]
    modes = [m.training for m in models]
    for m in models:
        m.eval().requires_grad_(False)
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.requires_grad_(True).train(mode)


@contextmanager
def frozen(teacher: nn.Module) -> Iterator[BNStatistics]:
    """``teacher`` :func:`fixed`, with BatchNorm hooks on it (removed on exit)."""
    with fixed(teacher):
        stats = BNStatistics(teacher)
        try:
            yield stats
        finally:
            stats.remove()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@dataclass(frozen=True)
class SynthesisWeights:
    """Weights of the synthesis loss terms (see the module docstring); defaults: the
    published ones (BN 10, CE 1, TV 0.001 of ADI/Fast; disagreement 1; rotation 10, DDA's)."""

    bn: float = 1.0
    ce: float = 1.0
    tv: float = 0.001
    adversarial: float = 1.0
    rotation: float = 10.0

    @classmethod
    def of(cls, cfg) -> SynthesisWeights:
        return cls(cfg.dda_bn_weight, cfg.dda_class_weight, cfg.dda_tv_weight, cfg.dda_adversarial_weight,
                   cfg.dda_rotation_weight)

    def without_student(self) -> SynthesisWeights:
        return replace(self, adversarial=0.0, rotation=0.0)


@dataclass
class Opponent:
    """The current student as the synthesis sees it: ``logits`` = its (scaled) class
    scores, ``head`` = the rotation head on its embedding."""

    student: nn.Module
    logits: object  # Callable[[Tensor], Tensor]
    head: RotationHead | None


def synthesize_batch(teacher: nn.Module, targets: torch.Tensor, num_classes: int, shape: tuple[int, int, int],
                     steps: int, weights: SynthesisWeights, augment: str, generator: torch.Generator,
                     synthesis: str = "generator", opponent: Opponent | None = None, nz: int = 256
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """Images [N, *shape] in [0, 1] for ``targets`` [N]: ``synthesis`` = ``generator`` (a
    reset :class:`Generator` and its noise, Adam 1e-3, betas 0.5/0.999) or ``inversion``
    (the pixels, through a sigmoid, Adam 0.1); the lowest-loss step's batch, and the
    figures of the last step (``bn``, ``ce``, ``adversarial``, ``rotation``,
    ``accuracy`` of the teacher)."""
    device = targets.device
    if opponent is None:
        weights = weights.without_student()
    if synthesis == "generator":
        net = Generator(nz, num_classes, shape).to(device)
        z = torch.randn((len(targets), nz), generator=generator).to(device).requires_grad_(True)
        optimizer = torch.optim.Adam([*net.parameters(), z], lr=1e-3, betas=(0.5, 0.999))
        make = lambda: net(z, targets)  # noqa: E731
    else:
        z = torch.randn((len(targets), *shape), generator=generator).to(device).requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=0.1)
        make = lambda: torch.sigmoid(z)  # noqa: E731
    best, best_loss, figures = None, float("inf"), {}
    student, head = (opponent.student, opponent.head) if opponent else (None, None)
    with frozen(teacher) as stats, fixed(student, head):
        for _ in range(steps):
            images = make()
            x = crop_flip(images, augment, generator)
            stats.clear()
            out = logits(teacher, x)
            terms = {"bn": stats.loss, "ce": F.cross_entropy(out, targets), "tv": total_variation(x)}
            if weights.adversarial:
                disagreement = F.kl_div(F.log_softmax(opponent.logits(x), 1), F.softmax(out, 1), reduction="batchmean")
                terms["adversarial"] = -disagreement
            if weights.rotation and head is not None:
                terms["rotation"] = -head.loss(student, x, targets)
            loss = sum(getattr(weights, name) * term for name, term in terms.items())
            if loss.item() < best_loss:
                best, best_loss = images.detach().clone(), loss.item()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    figures = {name: term.item() for name, term in terms.items()}
    figures["accuracy"] = (out.argmax(1) == targets).float().mean().item()
    return best, figures

