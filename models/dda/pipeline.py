"""The four DDA stages in order, and the ablations the docs report.

Modes: ``real`` = KD on the real training images (the upper bound, not data-free);
``inversion`` = KD on the synthetic bank only; ``no-filter`` = bank + every diffusion
variant; ``dda`` = bank + the variants the filter (``dda-filter``) keeps (the method).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from models.dda.augment import SDEditAugmenter, small_unet, train_denoiser
from models.dda.distill import KDOptions, accuracy, distill
from models.dda.filtering import cosine_keep, keep, label_keep
from models.dda.generator import SYNTHESES, generate
from models.dda.networks import build_student, embedding_and_logits
from models.dda.synthesis import synthesize

MODES = ("real", "inversion", "no-filter", "dda")


@dataclass
class DDAResult:
    """What the data-free stages produced, and their figures."""

    synthetic: torch.Tensor | None = None
    labels: torch.Tensor | None = None  # [N] the synthetic images' target labels
    augmented: torch.Tensor | None = None  # [N, V, C, H, W]
    kept: torch.Tensor | None = None  # [N, V] bool: the filter's verdict
    similarity: torch.Tensor | None = None  # [N, V] cosine of the teacher's embeddings, variant vs source
    same_label: torch.Tensor | None = None  # [N, V] bool: the teacher's class of the variant is its source's
    info: dict = field(default_factory=dict)

    def training_set(self, mode: str, real: tuple[torch.Tensor, torch.Tensor] | None = None,
                     kept: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The images a student distils on in ``mode`` and their labels (variants inherit
        their source's); ``real`` = (images, labels) for mode ``real``; ``kept`` replaces
        the filter's verdict (another rule's mask, for ablations)."""
        if mode == "real":
            return real
        if mode == "inversion":
            return self.synthetic, self.labels
        variants = self.augmented.shape[1]
        flat, flat_labels = self.augmented.flatten(0, 1), self.labels.repeat_interleave(variants)
        if mode == "dda":
            mask = (self.kept if kept is None else kept).flatten()
            flat, flat_labels = flat[mask], flat_labels[mask]
        return torch.cat([self.synthetic, flat]), torch.cat([self.labels, flat_labels])


def augmenter_for(cfg, synthetic: torch.Tensor, shape: tuple[int, int, int], device) -> SDEditAugmenter:
    """The user's pretrained pipeline (``dda-pipeline``), else a small UNet trained on the bank."""
    if cfg.dda_pipeline:
        return SDEditAugmenter.from_pretrained(cfg.dda_pipeline, cfg.dda_strength, device=device)
    unet = small_unet(shape[0], shape[1]).to(device)
    scheduler, _ = train_denoiser(unet, synthetic, cfg.dda_denoiser_epochs, seed=cfg.seed)
    return SDEditAugmenter(unet, scheduler, cfg.dda_strength)


def synthetic_bank(teacher: nn.Module, cfg, shape: tuple[int, int, int], num_classes: int, device):
    """The bank of ``dda-images`` images by ``dda-synthesis``: per-batch inversion or the
    generator (``dda-inversion-steps`` steps per batch of 128 either way)."""
    if cfg.dda_synthesis == "generator":
        return generate(teacher, cfg.dda_images, num_classes, shape, steps=cfg.dda_inversion_steps,
                        rotation_weight=cfg.dda_rotation_weight, seed=cfg.seed, device=device)
    return synthesize(teacher, cfg.dda_images, num_classes, shape, steps=cfg.dda_inversion_steps,
                      seed=cfg.seed, device=device)


def prepare(teacher: nn.Module, cfg, shape: tuple[int, int, int], num_classes: int,
            augment: bool = True) -> DDAResult:
    """Synthesis, then (``augment``) diffusion augmentation and filtering, with the ``dda-*`` keys."""
    device = next(teacher.parameters()).device
    result, times = DDAResult(), {}
    t0 = time.perf_counter()
    bank, histories = synthetic_bank(teacher, cfg, shape, num_classes, device)
    result.synthetic, result.labels = bank.tensors()
    result.info |= {"synthetic": len(result.synthetic), "synthesis": cfg.dda_synthesis,
                    "inversion_bn_loss_first": histories[0]["bn"][0], "inversion_bn_loss_last": histories[0]["bn"][-1],
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
            source, source_logits = embedding_and_logits(teacher, result.synthetic)
            pairs = [embedding_and_logits(teacher, c) for c in result.augmented.flatten(0, 1).split(256)]
        n, v = result.augmented.shape[:2]
        _, result.similarity = cosine_keep(source, torch.cat([p[0] for p in pairs]).view(n, v, -1), cfg.dda_threshold)
        result.same_label = label_keep(source_logits, torch.cat([p[1] for p in pairs]).view(n, v, -1))
        result.kept = keep(cfg.dda_filter, result.similarity, result.same_label, cfg.dda_threshold)
        result.info |= {"augmented": result.kept.numel(), "filter": cfg.dda_filter,
                        "kept_fraction": result.kept.float().mean().item(),
                        "similarity_mean": result.similarity.mean().item(),
                        "same_label_fraction": result.same_label.float().mean().item()}
        times["augmentation_and_filter"] = time.perf_counter() - t0
    result.info["seconds"] = {k: round(v, 1) for k, v in times.items()}
    return result


def run_dda(teacher: nn.Module, student: nn.Module, cfg, shape: tuple[int, int, int], num_classes: int,
            mode: str = "dda", real: tuple[torch.Tensor, torch.Tensor] | None = None, on_epoch=None) -> DDAResult:
    """Distil ``teacher`` into ``student`` (in place) in ``mode`` (``real`` = the real
    training images and labels, for mode ``real``); returns the stages' output."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; accepted: {', '.join(MODES)}")
    start = time.perf_counter()
    result = DDAResult() if mode == "real" else prepare(teacher, cfg, shape, num_classes, mode != "inversion")
    images, labels = result.training_set(mode, real)
    t0 = time.perf_counter()
    history = distill(teacher, student, images, cfg.dda_distill_epochs, cfg.batch_size, KDOptions.of(cfg), labels,
                      seed=cfg.seed, on_epoch=on_epoch)
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
