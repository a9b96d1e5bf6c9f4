"""The four DDA stages in order, and the ablations the docs report.

Modes: ``real`` = KD on the real training images (the upper bound, not data-free);
``inversion`` = KD on the synthetic bank only; ``no-filter`` = bank + every diffusion
variant; ``dda`` = bank + the variants the cosine filter keeps (the method).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from models.dda.augment import SDEditAugmenter, small_unet, train_denoiser
from models.dda.distill import accuracy, distill
from models.dda.filtering import cosine_keep
from models.dda.networks import build_student, embedding
from models.dda.synthesis import synthesize

MODES = ("real", "inversion", "no-filter", "dda")


@dataclass
class DDAResult:
    """What the data-free stages produced, and their figures."""

    synthetic: torch.Tensor | None = None
    augmented: torch.Tensor | None = None  # [N, V, C, H, W]
    kept: torch.Tensor | None = None  # [N, V] bool: the filter's verdict
    info: dict = field(default_factory=dict)

    def training_images(self, mode: str, real_images: torch.Tensor | None = None) -> torch.Tensor:
        """The images a student distils on in ``mode``."""
        if mode == "real":
            return real_images
        if mode == "inversion":
            return self.synthetic
        flat = self.augmented.flatten(0, 1)
        chosen = flat if mode == "no-filter" else flat[self.kept.flatten()]
        return torch.cat([self.synthetic, chosen])


def augmenter_for(cfg, synthetic: torch.Tensor, shape: tuple[int, int, int], device) -> SDEditAugmenter:
    """The user's pretrained pipeline (``dda-pipeline``), else a small UNet trained on the bank."""
    if cfg.dda_pipeline:
        return SDEditAugmenter.from_pretrained(cfg.dda_pipeline, cfg.dda_strength, device=device)
    unet = small_unet(shape[0], shape[1]).to(device)
    scheduler, _ = train_denoiser(unet, synthetic, cfg.dda_denoiser_epochs, seed=cfg.seed)
    return SDEditAugmenter(unet, scheduler, cfg.dda_strength)


def prepare(teacher: nn.Module, cfg, shape: tuple[int, int, int], num_classes: int,
            augment: bool = True) -> DDAResult:
    """Synthesis, then (``augment``) diffusion augmentation and filtering, with the ``dda-*`` keys."""
    device = next(teacher.parameters()).device
    result, times = DDAResult(), {}
    t0 = time.perf_counter()
    bank, histories = synthesize(teacher, cfg.dda_images, num_classes, shape, steps=cfg.dda_inversion_steps,
                                 seed=cfg.seed, device=device)
    result.synthetic, _ = bank.tensors()
    result.info |= {"synthetic": len(result.synthetic), "inversion_bn_loss_first": histories[0]["bn"][0],
                    "inversion_bn_loss_last": histories[0]["bn"][-1],
                    "inversion_teacher_accuracy": sum(h["accuracy"][-1] for h in histories) / len(histories)}
    times["synthesis"] = time.perf_counter() - t0
    if augment:
        t0 = time.perf_counter()
        augmenter = augmenter_for(cfg, result.synthetic, shape, device)
        times["denoiser"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        result.augmented = augmenter(result.synthetic, cfg.dda_variants, torch.Generator().manual_seed(cfg.seed))
        with torch.no_grad():
            teacher.eval()
            source = embedding(teacher, result.synthetic)
            variants = torch.cat([embedding(teacher, c) for c in result.augmented.flatten(0, 1).split(256)])
        result.kept, similarity = cosine_keep(source, variants.view(len(source), cfg.dda_variants, -1),
                                              cfg.dda_threshold)
        result.info |= {"augmented": result.kept.numel(), "kept_fraction": result.kept.float().mean().item(),
                        "similarity_mean": similarity.mean().item()}
        times["augmentation_and_filter"] = time.perf_counter() - t0
    result.info["seconds"] = {k: round(v, 1) for k, v in times.items()}
    return result


def run_dda(teacher: nn.Module, student: nn.Module, cfg, shape: tuple[int, int, int], num_classes: int,
            mode: str = "dda", real_images: torch.Tensor | None = None, on_epoch=None) -> DDAResult:
    """Distil ``teacher`` into ``student`` (in place) in ``mode``; returns the stages' output."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; accepted: {', '.join(MODES)}")
    start = time.perf_counter()
    result = DDAResult() if mode == "real" else prepare(teacher, cfg, shape, num_classes, mode != "inversion")
    images = result.training_images(mode, real_images)
    t0 = time.perf_counter()
    history = distill(teacher, student, images, cfg.dda_distill_epochs, cfg.batch_size, lr=1e-3,
                      temperature=cfg.dda_temperature, seed=cfg.seed, on_epoch=on_epoch)
    result.info.setdefault("seconds", {})["distillation"] = round(time.perf_counter() - t0, 1)
    result.info |= {"mode": mode, "training_images": len(images), "kd_loss_first": history[0],
                    "kd_loss_last": history[-1], "total_seconds": round(time.perf_counter() - start, 1)}
    return result


def distil_global(model: nn.Module, cfg, spec, test_images: torch.Tensor, test_labels: torch.Tensor
                  ) -> tuple[nn.Module, dict]:
    """The server-side option: the global model is the teacher of a compact spiking student,
    distilled by DDA without any client data; returns the student and its figures."""
    student = build_student("snn", spec.channels, spec.size, spec.num_classes, cfg.timesteps)
    student = student.to(next(model.parameters()).device)
    torch.manual_seed(cfg.seed)
    result = run_dda(model, student, cfg, (spec.channels, spec.size, spec.size), spec.num_classes)
    return student, {**result.info, "student_accuracy": accuracy(student, test_images, test_labels)}
