"""`spikefed train-teacher` and `spikefed dda distill`: DDA centrally, with its ablations."""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from data import split_of  # noqa: E402
from models.ann_cnn import AnnCNN, train_classifier  # noqa: E402
from models.dda.distill import accuracy, distill  # noqa: E402
from models.dda.networks import build_student  # noqa: E402
from models.dda.pipeline import MODES, DDAResult, prepare, run_dda  # noqa: E402
from models.dda.workload import load_checkpoint  # noqa: E402
from models.device import torch_device  # noqa: E402
from server.config import ConfigError, RunConfig  # noqa: E402


def train_teacher(cfg: RunConfig, out: Path, epochs: int) -> tuple[AnnCNN, dict]:
    """An :class:`AnnCNN` teacher trained on the whole training split (written to teacher.pt),
    and its figures."""
    split = split_of(cfg)
    device = torch_device(cfg)
    torch.manual_seed(cfg.seed)
    spec = split.spec
    teacher = AnnCNN(spec.channels, spec.size, spec.num_classes).to(device)
    x, y = torch.as_tensor(split.x_train, device=device), torch.as_tensor(split.y_train, device=device)
    history = train_classifier(teacher, x, y, epochs, 1e-3, cfg.batch_size, cfg.seed)
    acc = accuracy(teacher, torch.as_tensor(split.x_test, device=device), torch.as_tensor(split.y_test, device=device))
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"teacher": "ann", "dataset": cfg.dataset, "seed": cfg.seed, "accuracy": acc,
                "state_dict": teacher.state_dict()}, out / "teacher.pt")
    return teacher.eval(), {"dataset": cfg.dataset, "epochs": epochs, "seed": cfg.seed, "test_accuracy": acc,
                            "loss_per_epoch": [round(v, 5) for v in history]}


def load_teacher(path: str, cfg: RunConfig) -> AnnCNN:
    state = load_checkpoint(path, "--teacher")
    if state.get("teacher") != "ann" or state.get("dataset") != cfg.dataset:
        raise ConfigError(f"--teacher {path!r} is a {state.get('teacher')!r} teacher for {state.get('dataset')!r}; "
                          f"accepted: a teacher from `spikefed train-teacher --dataset {cfg.dataset}`")
    spec = split_of(cfg).spec
    teacher = AnnCNN(spec.channels, spec.size, spec.num_classes)
    teacher.load_state_dict(state["state_dict"])
    return teacher.to(torch_device(cfg)).eval()


def distill_student(teacher: AnnCNN, student_kind: str, mode: str, cfg: RunConfig, out: Path,
                    on_epoch=None) -> dict:
    """Distil a fresh student with ``mode``; writes student.pt, metrics.json and dda.png."""
    split = split_of(cfg)
    spec, device = split.spec, torch_device(cfg)
    x_test = torch.as_tensor(split.x_test, device=device)
    y_test = torch.as_tensor(split.y_test, device=device)
    torch.manual_seed(cfg.seed)
    student = build_student(student_kind, spec.channels, spec.size, spec.num_classes, cfg.timesteps).to(device)
    before = accuracy(student, x_test, y_test)
    result = run_dda(teacher, student, cfg, (spec.channels, spec.size, spec.size), spec.num_classes, mode,
                     real_images=torch.as_tensor(split.x_train, device=device), on_epoch=on_epoch)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"student": student_kind, "mode": mode, "dataset": cfg.dataset, "state_dict": student.state_dict()},
               out / "student.pt")
    metrics = {"dataset": cfg.dataset, "student": student_kind, "seed": cfg.seed,
               "teacher_accuracy": accuracy(teacher, x_test, y_test), "student_accuracy_at_init": before,
               "student_accuracy": accuracy(student, x_test, y_test), **result.info}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if result.synthetic is not None:
        save_grid(result, out / "dda.png")
    return metrics


def save_grid(result: DDAResult, path: Path, columns: int = 12) -> None:
    """Row 1: synthetic images; then one row per diffusion variant, framed green when the
    filter kept it and red when it dropped it."""
    variants = 0 if result.augmented is None else result.augmented.shape[1]
    n = min(columns, len(result.synthetic))
    fig, axes = plt.subplots(1 + variants, n, figsize=(n * 0.9, (1 + variants) * 1.0), squeeze=False)
    for j in range(n):
        cells = [(result.synthetic[j], None)] + [(result.augmented[j, v], bool(result.kept[j, v]))
                                                 for v in range(variants)]
        for i, (image, kept) in enumerate(cells):
            ax = axes[i, j]
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if kept is not None:
                for spine in ax.spines.values():
                    spine.set(color="tab:green" if kept else "tab:red", linewidth=2.5)
    axes[0, 0].set_ylabel("synthetic", fontsize=7)
    for v in range(variants):
        axes[1 + v, 0].set_ylabel(f"variant {v + 1}", fontsize=7)
    fig.suptitle("DDA: synthetic images and diffusion variants (green kept, red dropped)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ablation(cfg: RunConfig, seeds: list[int], student_kind: str, teacher_epochs: int, out: Path,
             advance=lambda: None) -> pd.DataFrame:
    """Per seed: a teacher, one synthesis + augmentation, and a student distilled in each
    mode (real, inversion, no-filter, dda) from the same images; writes ablation.csv,
    ablation.md and dda.png (first seed). ``advance()`` is called after each student."""
    out.mkdir(parents=True, exist_ok=True)
    split = split_of(cfg)
    spec, device = split.spec, torch_device(cfg)
    x_test = torch.as_tensor(split.x_test, device=device)
    y_test = torch.as_tensor(split.y_test, device=device)
    rows = []
    for seed in seeds:
        scfg = cfg.replace(seed=seed)
        teacher, figures = train_teacher(scfg, out / f"teacher-seed{seed}", teacher_epochs)
        teacher_acc = figures["test_accuracy"]
        prepared = prepare(teacher, scfg, (spec.channels, spec.size, spec.size), spec.num_classes)
        if seed == seeds[0]:
            save_grid(prepared, out / "dda.png")
        stage = prepared.info["seconds"]
        for mode in MODES:
            torch.manual_seed(seed)
            student = build_student(student_kind, spec.channels, spec.size, spec.num_classes,
                                    cfg.timesteps).to(device)
            images = prepared.training_images(mode, torch.as_tensor(split.x_train, device=device))
            t0 = time.perf_counter()
            distill(teacher, student, images, cfg.dda_distill_epochs, cfg.batch_size, temperature=cfg.dda_temperature,
                    seed=seed)
            seconds = time.perf_counter() - t0 + {"real": 0.0, "inversion": stage["synthesis"]}.get(
                mode, sum(stage.values()))
            rows.append({"seed": seed, "mode": mode, "teacher_accuracy": teacher_acc,
                         "student_accuracy": accuracy(student, x_test, y_test), "training_images": len(images),
                         "kept_fraction": prepared.info["kept_fraction"] if mode == "dda" else
                         (1.0 if mode == "no-filter" else None),
                         "seconds": round(seconds, 1)})
            advance()
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "ablation.csv", index=False)
    (out / "ablation.md").write_text(ablation_table(frame) + "\n")
    return frame


def ablation_table(frame: pd.DataFrame) -> str:
    """Mean ± std over seeds per mode, as Markdown."""
    def pm(values: pd.Series, digits: int) -> str:
        values = values.dropna()
        return "" if values.empty else f"{values.mean():.{digits}f} ± {values.std(ddof=0):.{digits}f}"

    labels = {"real": "(a) KD on real training data (upper bound)", "inversion": "(b) inversion only",
              "no-filter": "(c) inversion + diffusion, no filter", "dda": "(d) DDA (inversion + diffusion + filter)"}
    table = pd.DataFrame([{
        "mode": labels[mode],
        "student accuracy": pm(group["student_accuracy"], 3),
        "teacher accuracy": pm(group["teacher_accuracy"], 3),
        "training images": pm(group["training_images"].astype(float), 0),
        "kept fraction": pm(group["kept_fraction"].astype(float), 3),
        "wall s": pm(group["seconds"], 1),
    } for mode, group in frame.groupby("mode", sort=False)])
    return table.to_markdown(index=False)
