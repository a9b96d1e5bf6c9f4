"""`spikefed train-teacher` and `spikefed dda distill`: DDA centrally, with its ablations."""

from __future__ import annotations

import itertools
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
from models.dda.distill import KDOptions, accuracy, distill  # noqa: E402
from models.dda.filtering import keep  # noqa: E402
from models.dda.networks import build_student, embedding  # noqa: E402
from models.dda.pipeline import MODES, DDAResult, prepare, run_dda  # noqa: E402
from models.dda.workload import load_checkpoint  # noqa: E402
from models.device import torch_device  # noqa: E402
from server.config import ConfigError, RunConfig, load_config  # noqa: E402


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


def save_student(student: torch.nn.Module, kind: str, mode: str, cfg: RunConfig, path: Path) -> None:
    """The checkpoint `workload="dda"` starts from (``dda-student``)."""
    torch.save({"student": kind, "mode": mode, "dataset": cfg.dataset, "state_dict": student.state_dict()}, path)


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
    real = (torch.as_tensor(split.x_train, device=device), torch.as_tensor(split.y_train, device=device))
    result = run_dda(teacher, student, cfg, (spec.channels, spec.size, spec.size), spec.num_classes, mode,
                     real=real, on_epoch=on_epoch)
    out.mkdir(parents=True, exist_ok=True)
    save_student(student, student_kind, mode, cfg, out / "student.pt")
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


def filter_figures(result: DDAResult, threshold: float) -> dict:
    """How the cosine filter at ``threshold`` splits the variants, against the teacher's label:
    the kept fraction, the share of variants whose teacher class stays their source's,
    among the kept and among the dropped, and the mean similarity of each group."""
    similarity, same = result.similarity.flatten(), result.same_label.flatten()
    kept = similarity >= threshold

    def mean(values: torch.Tensor) -> float | None:
        return values.float().mean().item() if len(values) else None

    return {"threshold": threshold, "kept_fraction": mean(kept), "same_label_fraction": mean(same),
            "same_label_among_kept": mean(same[kept]), "same_label_among_dropped": mean(same[~kept]),
            "similarity_same_label": mean(similarity[same]), "similarity_changed_label": mean(similarity[~same])}


def save_filter_figure(result: DDAResult, teacher: torch.nn.Module, threshold: float, path: Path) -> None:
    """Left: histogram of the cosine similarities (variant vs source), split by whether the
    teacher's class of the variant is still its source's, with the threshold. Right: the
    teacher's embeddings of sources and variants in the sources' first two principal
    components, variants marked by the filter's verdict at ``threshold``."""
    similarity, same = result.similarity.flatten().cpu(), result.same_label.flatten().cpu()
    with torch.no_grad():
        source = embedding(teacher, result.synthetic).cpu()
        variants = torch.cat([embedding(teacher, c) for c in result.augmented.flatten(0, 1).split(256)]).cpu()
    mean = source.mean(0)
    _, _, basis = torch.pca_lowrank(source - mean, q=2, center=False)
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    bins = torch.linspace(float(similarity.min()), 1, 31).numpy()
    left.hist(similarity[same].numpy(), bins, alpha=0.6, label="teacher class kept", color="tab:blue")
    left.hist(similarity[~same].numpy(), bins, alpha=0.6, label="teacher class changed", color="tab:orange")
    left.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    left.set(xlabel="cosine(teacher emb. of variant, of source)", ylabel="variants")
    left.legend(fontsize=7)
    kept = similarity >= threshold
    pts_source, pts_variant = ((source - mean) @ basis).numpy(), ((variants - mean) @ basis).numpy()
    classes = result.labels.cpu().numpy()
    right.scatter(pts_source[:, 0], pts_source[:, 1], c=classes, cmap="tab10", s=6, marker="o", label="synthetic")
    right.scatter(pts_variant[kept, 0], pts_variant[kept, 1], s=5, marker="+", color="tab:green", alpha=0.5,
                  label="variant kept")
    right.scatter(pts_variant[~kept, 0], pts_variant[~kept, 1], s=5, marker="x", color="tab:red", alpha=0.5,
                  label="variant dropped")
    right.set(xlabel="PC 1 of the teacher's embedding", ylabel="PC 2")
    right.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def ablation(cfg: RunConfig, seeds: list[int], students: list[str], teacher_epochs: int, out: Path,
             modes: tuple[str, ...] = MODES, filters: tuple[str, ...] = (), kd: tuple[dict[str, str], ...] = ({},),
             advance=lambda: None) -> pd.DataFrame:
    """Per seed: a teacher, one synthesis + augmentation, and each student distilled in each
    of ``modes`` from the same images; mode ``dda`` once per rule in ``filters`` (default:
    ``dda-filter``), and everything once per distillation variant in ``kd`` (dda-* keys
    over ``cfg``'s, e.g. ``{"dda-temperature": "20"}``; ``{}`` = ``cfg``'s). Writes
    ablation.csv, ablation.md, filter.csv (the cosine filter against the teacher's labels,
    per seed), dda.png and filter.png (first seed), and every student under students/. ``advance()`` is called after each
    student."""
    (out / "students").mkdir(parents=True, exist_ok=True)
    device = torch_device(cfg)
    variants = [(",".join(f"{k}={v}" for k, v in changes.items()), load_config({**cfg.to_mapping(), **changes}))
                for changes in kd]
    rows, filter_rows = [], []
    for seed in seeds:
        scfg = cfg.replace(seed=seed)
        split = split_of(scfg)  # the seed's split (and subsets): the one its teacher trains on
        spec = split.spec
        x_test = torch.as_tensor(split.x_test, device=device)
        y_test = torch.as_tensor(split.y_test, device=device)
        real = (torch.as_tensor(split.x_train, device=device), torch.as_tensor(split.y_train, device=device))
        teacher, figures = train_teacher(scfg, out / f"teacher-seed{seed}", teacher_epochs)
        teacher_acc = figures["test_accuracy"]
        augment = any(m in ("no-filter", "dda") for m in modes)
        prepared = (prepare(teacher, scfg, (spec.channels, spec.size, spec.size), spec.num_classes, augment)
                    if set(modes) - {"real"} else DDAResult())
        if augment:
            filter_rows.append({"seed": seed, **filter_figures(prepared, cfg.dda_threshold)})
            if seed == seeds[0]:
                save_grid(prepared, out / "dda.png")
                save_filter_figure(prepared, teacher, cfg.dda_threshold, out / "filter.png")
        stage = prepared.info.get("seconds", {})
        runs = [(m, r) for m in modes for r in ((filters or (cfg.dda_filter,)) if m == "dda" else ("",))]
        for student_kind, (mode, rule), (kd_name, kcfg) in itertools.product(students, runs, variants):
            torch.manual_seed(seed)
            student = build_student(student_kind, spec.channels, spec.size, spec.num_classes,
                                    cfg.timesteps).to(device)
            kept = keep(rule, prepared.similarity, prepared.same_label, cfg.dda_threshold) if rule else None
            images, labels = prepared.training_set(mode, real, kept)
            t0 = time.perf_counter()
            distill(teacher, student, images, kcfg.dda_distill_epochs, cfg.batch_size, KDOptions.of(kcfg), labels,
                    seed=seed)
            seconds = time.perf_counter() - t0 + {"real": 0.0, "inversion": stage["synthesis"]}.get(
                mode, sum(stage.values()))
            name = "-".join(filter(None, (student_kind, mode, rule, kd_name.replace("=", "").replace(",", "-"))))
            save_student(student, student_kind, mode, scfg, out / "students" / f"{name}-seed{seed}.pt")
            rows.append({"seed": seed, "student": student_kind, "mode": mode, "filter": rule, "kd": kd_name,
                         "teacher_accuracy": teacher_acc,
                         "student_accuracy": accuracy(student, x_test, y_test), "training_images": len(images),
                         "kept_fraction": kept.float().mean().item() if rule else
                         (1.0 if mode == "no-filter" else None),
                         "seconds": round(seconds, 1)})
            advance()
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "ablation.csv", index=False)
    if filter_rows:
        pd.DataFrame(filter_rows).to_csv(out / "filter.csv", index=False)
    (out / "ablation.md").write_text(ablation_table(frame, cfg.dda_threshold) + "\n")
    return frame


def ablation_table(frame: pd.DataFrame, threshold: float) -> str:
    """Mean ± std over seeds per student, mode, filter and distillation variant, as Markdown."""
    def pm(values: pd.Series, digits: int) -> str:
        values = values.dropna()
        return "" if values.empty else f"{values.mean():.{digits}f} ± {values.std(ddof=0):.{digits}f}"

    labels = {"real": "(a) KD on real training data (upper bound)", "inversion": "(b) synthetic images only",
              "no-filter": "(c) inversion + diffusion, no filter"}
    filters = {"cosine": f"cosine >= {threshold}", "label": "teacher label kept"}
    table = pd.DataFrame([{
        "student": student,
        "mode": labels.get(mode) or f"(d) DDA, filter: {filters[rule]}",
        "distillation": kd or "defaults",
        "student accuracy": pm(group["student_accuracy"], 3),
        "teacher accuracy": pm(group["teacher_accuracy"], 3),
        "training images": pm(group["training_images"].astype(float), 0),
        "kept fraction": pm(group["kept_fraction"].astype(float), 3),
        "wall s": pm(group["seconds"], 1),
    } for (student, mode, rule, kd), group in frame.fillna({"filter": "", "kd": ""}).groupby(
        ["student", "mode", "filter", "kd"], sort=False)])
    return table.to_markdown(index=False)
