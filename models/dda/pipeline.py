"""DDA's stages interleaved as the authors train (GitHub SLGSP/DDA ``datafree_kd.py``):
a starting pool, then every epoch one new synthetic batch made against the teacher and
the current student, its diffusion variants that pass the filter, and
``dda-student-steps`` student steps on augmented batches of the whole pool.

Modes: ``real`` = the same schedule on the real training images (the upper bound, not
data-free); ``synthetic`` = the synthetic pool only; ``no-filter`` = pool + every
diffusion variant; ``dda`` = pool + the variants the filter (``dda-filter``) keeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import INFO
from pathlib import Path

import torch
from flwr.common import log
from torch import nn

from models.dda.augment import SDEditAugmenter, small_unet, train_denoiser
from models.dda.distill import Distiller, KDOptions, accuracy
from models.dda.filtering import cosine_keep, keep, label_keep
from models.dda.networks import build_student, embedding, embedding_and_logits
from models.dda.pool import Pool, mixup
from models.dda.rotation import RotationHead
from models.dda.synthesis import Opponent, SynthesisWeights, synthesize_batch

MODES = ("real", "synthetic", "no-filter", "dda")


@dataclass
class Variants:
    """Diffusion variants of a batch and the filter's view of them."""

    images: torch.Tensor  # [N, V, C, H, W]
    kept: torch.Tensor  # [N, V] bool: the filter's verdict
    similarity: torch.Tensor  # [N, V] cosine of the teacher's embeddings, variant vs source
    same_label: torch.Tensor  # [N, V] bool: the teacher's class of the variant is its source's


@dataclass
class DDAResult:
    """What a run produced: the pool, the starting pool's synthetic images and their
    variants (for the figures), one row per epoch, and the run's figures."""

    pool: Pool = field(default_factory=Pool)
    synthetic: torch.Tensor | None = None  # the starting pool's synthetic images
    labels: torch.Tensor | None = None
    variants: Variants | None = None  # of the starting pool
    epochs: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def augmenter_for(cfg, synthetic: torch.Tensor, shape: tuple[int, int, int], device) -> SDEditAugmenter:
    """The user's pretrained pipeline (``dda-pipeline``), else a small UNet trained on the
    synthetic images (so the augmenter stays data-free)."""
    if cfg.dda_pipeline:
        return SDEditAugmenter.from_pretrained(cfg.dda_pipeline, cfg.dda_strength, cfg.dda_denoise_steps, device)
    unet = small_unet(shape[0], shape[1]).to(device)
    scheduler, _ = train_denoiser(unet, synthetic, cfg.dda_denoiser_epochs, seed=cfg.seed)
    return SDEditAugmenter(unet, scheduler, cfg.dda_strength, cfg.dda_denoise_steps)


@torch.no_grad()
def diffuse(augmenter: SDEditAugmenter, teacher: nn.Module, images: torch.Tensor, cfg,
            generator: torch.Generator) -> Variants:
    """``dda-variants`` variants of each image and the verdict of ``dda-filter``."""
    out = augmenter(images, cfg.dda_variants, generator)
    teacher.eval()
    source, source_logits = embedding_and_logits(teacher, images)
    pairs = [embedding_and_logits(teacher, chunk) for chunk in out.flatten(0, 1).split(256)]
    n, v = out.shape[:2]
    _, similarity = cosine_keep(source, torch.cat([p[0] for p in pairs]).view(n, v, -1), cfg.dda_threshold)
    same_label = label_keep(source_logits, torch.cat([p[1] for p in pairs]).view(n, v, -1))
    return Variants(out, keep(cfg.dda_filter, similarity, same_label, cfg.dda_threshold), similarity, same_label)


def balanced_labels(n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    labels = torch.arange(n) % num_classes
    return labels[torch.randperm(n, generator=generator)]


def run_dda(teacher: nn.Module, student: nn.Module, cfg, shape: tuple[int, int, int], num_classes: int,
            mode: str = "dda", real: tuple[torch.Tensor, torch.Tensor] | None = None,
            test: tuple[torch.Tensor, torch.Tensor] | None = None,
            on_epoch: Callable[[dict], None] | None = None) -> DDAResult:
    """Distil ``teacher`` into ``student`` (in place) in ``mode`` with the ``dda-*`` keys;
    ``real`` = the real training images and labels (mode ``real``); ``test`` = images and
    labels to score the student on after every epoch (best and final accuracy); returns
    what the run produced. ``on_epoch`` gets each epoch's row."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; accepted: {', '.join(MODES)}")
    device = next(teacher.parameters()).device
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    result, seconds = DDAResult(), {"synthesis": 0.0, "diffusion": 0.0, "distillation": 0.0}
    pool = result.pool
    data_free, diffusion = mode != "real", mode in ("no-filter", "dda")
    weights = SynthesisWeights.of(cfg)
    example = torch.zeros((2, *shape), device=device)
    distiller = Distiller(teacher, student, KDOptions.of(cfg), cfg.dda_epochs, example)
    head = None
    if data_free and weights.rotation and cfg.dda_epoch_images:  # the head serves the epochs' synthesis only
        with torch.no_grad():
            head = RotationHead(embedding(student.eval(), example).shape[1], num_classes).to(device)
    opponent = Opponent(student, distiller.logits, head)
    augmenter, kept, offered = None, 0, 0

    def synthesize(n: int, against: Opponent | None) -> None:
        for targets in balanced_labels(n, num_classes, generator).to(device).split(cfg.dda_synthesis_batch):
            t0 = time.perf_counter()
            images, figures = synthesize_batch(teacher, targets, num_classes, shape, cfg.dda_synthesis_steps,
                                               weights, cfg.dda_augment, generator, cfg.dda_synthesis, against)
            pool.add(images, targets)
            result.info["synthesis_last"] = {k: round(v, 4) for k, v in figures.items()}
            seconds["synthesis"] += time.perf_counter() - t0
            if augmenter is not None:
                add_variants(images, targets)

    def add_variants(images: torch.Tensor, targets: torch.Tensor) -> Variants:
        nonlocal kept, offered
        t0 = time.perf_counter()
        variants = diffuse(augmenter, teacher, images, cfg, generator)
        mask = variants.kept if mode == "dda" else torch.ones_like(variants.kept)
        pool.add(variants.images[mask], targets.unsqueeze(1).expand_as(mask)[mask])
        kept, offered = kept + int(mask.sum()), offered + mask.numel()
        seconds["diffusion"] += time.perf_counter() - t0
        return variants

    if data_free:
        synthesize(cfg.dda_images, None)  # the starting pool: no student to oppose yet
        result.synthetic, result.labels = pool.tensors()
        if diffusion:
            t0 = time.perf_counter()
            augmenter = augmenter_for(cfg, result.synthetic, shape, device)
            seconds["diffusion"] += time.perf_counter() - t0
            result.variants = add_variants(result.synthetic, result.labels)
    else:
        pool.add(*real)

    for epoch in range(cfg.dda_epochs):
        if data_free and cfg.dda_epoch_images:
            synthesize(cfg.dda_epoch_images, opponent)
            if head is not None:
                head.reset()
        t0 = time.perf_counter()
        losses = []
        for _ in range(cfg.dda_student_steps):
            images, labels = pool.sample(cfg.batch_size, cfg.dda_augment, generator)
            targets = labels
            if cfg.dda_mixup:
                images, targets = mixup(images, labels, cfg.dda_mixup, num_classes, generator)
                labels = targets.argmax(1)  # the rotation head's: the image's larger share
            losses.append(distiller.step(images, targets))
            if head is not None:
                head.train_step(student, images, labels)
        distiller.end_epoch()
        seconds["distillation"] += time.perf_counter() - t0
        row = {"epoch": epoch + 1, "loss": sum(losses) / len(losses), "pool": len(pool),
               "accuracy": accuracy(student, *test) if test is not None else None,
               "seconds": round(time.perf_counter() - start, 1)}
        result.epochs.append(row)
        if on_epoch:
            on_epoch(row)

    scores = [row["accuracy"] for row in result.epochs if row["accuracy"] is not None]
    result.info |= {"mode": mode, "synthesis": cfg.dda_synthesis if data_free else "", "pool": len(pool),
                    "student_steps": cfg.dda_epochs * cfg.dda_student_steps,
                    "kd_loss_first": result.epochs[0]["loss"], "kd_loss_last": result.epochs[-1]["loss"],
                    "seconds": {k: round(v, 1) for k, v in seconds.items()},
                    "total_seconds": round(time.perf_counter() - start, 1)}
    if diffusion:
        result.info |= {"filter": cfg.dda_filter, "kept_fraction": kept / offered}
    if scores:
        best = max(range(len(scores)), key=scores.__getitem__)
        result.info |= {"final_accuracy": scores[-1], "best_accuracy": scores[best], "best_epoch": best + 1}
    return result


def distill_global_student(model: nn.Module, cfg, split, server_round: int, directory: Path) -> float:
    """The server-side option (``dda-distill-every``): the global model is the teacher of a
    fresh spiking student, distilled by DDA without any client data; saves it as
    ``directory``/student.pt and returns its test accuracy."""
    spec = split.spec
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    student = build_student("snn", spec.channels, spec.size, spec.num_classes, cfg.timesteps).to(device)
    result = run_dda(model, student, cfg, (spec.channels, spec.size, spec.size), spec.num_classes)
    score = accuracy(student, torch.as_tensor(split.x_test, device=device), torch.as_tensor(split.y_test, device=device))
    torch.save({"student": "snn", "round": server_round, "state_dict": student.state_dict()}, directory / "student.pt")
    log(INFO, "round %d: DDA student accuracy %.4f (kept %.0f%% of augmentations)", server_round, score,
        100 * result.info["kept_fraction"])
    return score
