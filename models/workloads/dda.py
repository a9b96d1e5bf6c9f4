"""The `dda` workload: federated training of a compact spiking student that DDA distilled
data-free from a teacher (`spikefed dda distill --student snn`); clients train it like
`classify`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from models.workloads.classify import ClassifyWorkload
from models.dda.distill import OPTIMIZERS
from models.dda.filtering import FILTERS
from models.dda.generator import SYNTHESES
from models.dda.networks import build_student
from models.dda.pool import AUGMENTS
from models.spiking_cnn import SpikingCNN
from models.device import torch_device
from core.config import ConfigError, Key, RunConfig, above, at_least, choice

if TYPE_CHECKING:
    from data import DatasetSpec

# Run-config keys of DDA (the workload, and the distillation of the global model, dda-distill-every).
# Defaults: the authors' choices (GitHub SLGSP/DDA) where the budget allows; the budget keys
# (images, steps, epochs) are sized for 2 CPU cores (docs/dda.md), the authors' in brackets.
KEYS = {
    "dda-student": Key("", meaning=(
        '`workload="dda"`: the spiking student checkpoint to federate (`spikefed dda distill --student snn`)')),
    "dda-pipeline": Key("", meaning=(
        "a pretrained diffusers pipeline (hub id or folder) used instead of the embedded UNet")),
    "dda-synthesis": choice("generator", SYNTHESES, meaning=(
        "how each synthetic batch is made: `generator` (a generator reset for the batch and trained with its noise; "
        "the authors' code) or `inversion` (the pixels optimised, DeepInversion)")),
    "dda-images": at_least(1024, 1, meaning=(  # [80,000]
        "synthetic images of the starting pool (made against the teacher only)")),
    "dda-synthesis-steps": at_least(50, 1, meaning=(  # [200; 500 for the starting pool]
        "optimisation steps per synthetic batch; the lowest-loss step's batch is kept")),
    "dda-synthesis-batch": at_least(128, 2, meaning="images optimised together"),  # [400]
    "dda-epoch-images": at_least(128, 0, meaning=(  # [400]
        "new synthetic images per epoch, made against the teacher and the current student (0 = the starting pool "
        "stays fixed)")),
    "dda-epochs": at_least(30, 1, meaning="epochs of synthesis + distillation (the cosine schedule's length)"),  # [200]
    "dda-student-steps": at_least(100, 1, meaning=(  # [2,000]
        "student steps per epoch, each on a `batch-size` batch of the whole pool")),
    "dda-augment": choice("crop-flip", AUGMENTS, meaning=(
        "augmentation before the teacher, in synthesis and on every pool batch: `crop-flip` (random crop after "
        "padding of size/8, horizontal flip), `crop`, `none`")),
    "dda-mixup": at_least(0.0, 0, meaning=(
        "mixup on every pool batch: each image blended with another, weight ~ Beta(alpha, alpha), the teacher labelling"
        " the blend (0 = off, the authors')")),
    "dda-bn-weight": at_least(1.0, 0, meaning="synthesis: weight of the teacher's BatchNorm-statistics loss"),
    "dda-class-weight": at_least(1.0, 0, meaning=(
        "synthesis: weight of the teacher's cross-entropy to the batch's target labels")),
    "dda-tv-weight": at_least(0.001, 0, meaning="synthesis: weight of total variation"),
    "dda-adversarial-weight": at_least(1.0, 0, meaning=(
        "synthesis: weight of minus the teacher-student KL divergence (images the student still gets wrong; 0 = off)")),
    "dda-rotation-weight": at_least(10.0, 0, meaning=(
        "synthesis: weight of minus the rotation head's loss on the student's embedding (the authors' `loss_dda`; 0 ="
        " off, and no head is trained)")),
    "dda-denoiser-epochs": at_least(30, 1, meaning="epochs of the embedded diffusion UNet on the starting pool"),
    "dda-variants": at_least(2, 1, meaning="diffusion variants per synthetic image"),
    "dda-strength": above(0.3, 0, 1, meaning="SDEdit strength in (0, 1]: how far a variant is noised before denoising"),
    "dda-denoise-steps": at_least(50, 1, meaning=(
        "DDIM steps over the whole diffusion; a variant runs about `dda-strength` x this many UNet passes")),
    "dda-filter": choice("cosine", FILTERS, meaning=(
        "which variants are kept: `cosine` (teacher-embedding cosine to the source >= `dda-threshold`, DDA's rule) or"
        " `label` (the teacher's class of the variant is still its source's)")),
    "dda-threshold": at_least(0.8, -1, 1, meaning=(
        "`dda-filter=cosine`: keep a variant when the teacher-embedding cosine to its source is >= this")),
    "dda-temperature": above(20.0, 0, meaning="KD temperature (the authors')"),
    "dda-ce-weight": at_least(1.0, 0, meaning=(
        "weight of cross-entropy to the synthetic labels (variants inherit their source's) in the student's loss")),
    "dda-feature-weight": at_least(0.0, 0, meaning=(
        "weight of the MSE between the teacher's embedding and a learned linear projection of the student's (the "
        "authors: 30; measured to cost accuracy here, docs/dda.md)")),
    "dda-optimizer": choice("sgd-cosine", OPTIMIZERS, meaning=(
        "the student's optimiser: `sgd-cosine` (SGD lr 0.1, momentum 0.9, weight decay 1e-4, cosine annealing over "
        "the epochs; the authors') or `adam` (lr 1e-3)")),
    "dda-distill-every": at_least(0, 0, meaning=(
        "server-side DDA of the global model into a compact spiking student every K rounds (0 = off)")),
}


def check(cfg: RunConfig) -> None:
    if cfg.dda_distill_every and cfg.workload not in ("classify", "dda"):
        raise ConfigError(f"dda-distill-every={cfg.dda_distill_every} distils a classifier; "
                          f"workload={cfg.workload!r} is not one; accepted: classify, dda (or dda-distill-every=0)")
    if cfg.workload == "dda" and not cfg.dda_student:
        raise ConfigError("workload='dda' needs dda-student=<student checkpoint from `spikefed dda distill`>")


def load_checkpoint(path: str, key: str) -> dict:
    """A checkpoint written by `spikefed`; ConfigError naming ``key`` and the path when unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any reason the file cannot be used
        raise ConfigError(f"{key}={path!r} is not a readable checkpoint ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None


class DDAWorkload(ClassifyWorkload):
    """The student's shape comes from :func:`build_student`; round 0 loads ``dda-student``."""

    def build_model(self, cfg: RunConfig, spec: DatasetSpec) -> SpikingCNN:
        return build_student("snn", spec.channels, spec.size, spec.num_classes, cfg.timesteps).to(torch_device(cfg))

    def initial_model(self, cfg: RunConfig, spec: DatasetSpec) -> SpikingCNN:
        state = load_checkpoint(cfg.dda_student, "dda-student")
        if state.get("student") != "snn":
            raise ConfigError(f"dda-student={cfg.dda_student!r} holds a {state.get('student')!r} student; "
                              "accepted: a spiking student (`spikefed dda distill --student snn`)")
        model = self.build_model(cfg, spec)
        try:
            model.load_state_dict(state["state_dict"])
        except RuntimeError as err:
            raise ConfigError(f"dda-student={cfg.dda_student!r} does not fit {spec}: "
                              f"{str(err).splitlines()[0]}") from None
        return model
