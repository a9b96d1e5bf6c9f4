"""The `dda` workload: federated training of a compact spiking student that DDA distilled
data-free from a teacher (`spikefed dda distill --student snn`); clients train it like
`classify`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from models.classify import ClassifyWorkload
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
    "dda-student": Key(""),
    "dda-pipeline": Key(""),
    "dda-synthesis": choice("generator", SYNTHESES),
    "dda-images": at_least(1024, 1),  # the starting pool [80,000]
    "dda-synthesis-steps": at_least(50, 1),  # per synthetic batch [200; 500 for the starting pool]
    "dda-synthesis-batch": at_least(128, 2),  # images optimised together [400]
    "dda-epoch-images": at_least(128, 0),  # new synthetic images per epoch; 0 = the starting pool stays fixed [400]
    "dda-epochs": at_least(30, 1),  # [200]
    "dda-student-steps": at_least(100, 1),  # per epoch [2,000]
    "dda-augment": choice("crop-flip", AUGMENTS),
    "dda-bn-weight": at_least(1.0, 0),
    "dda-class-weight": at_least(1.0, 0),
    "dda-tv-weight": at_least(0.001, 0),
    "dda-adversarial-weight": at_least(1.0, 0),
    "dda-rotation-weight": at_least(10.0, 0),
    "dda-denoiser-epochs": at_least(30, 1),
    "dda-variants": at_least(2, 1),
    "dda-strength": above(0.3, 0, 1),
    "dda-denoise-steps": at_least(50, 1),
    "dda-filter": choice("cosine", FILTERS),
    "dda-threshold": at_least(0.8, -1, 1),
    "dda-temperature": above(20.0, 0),
    "dda-ce-weight": at_least(1.0, 0),
    "dda-feature-weight": at_least(0.0, 0),
    "dda-optimizer": choice("sgd-cosine", OPTIMIZERS),
    "dda-distill-every": at_least(0, 0),
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
