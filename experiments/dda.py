"""`spikefed train-teacher` and `spikefed dda distill`: DDA centrally, with its ablations."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from data import split_of  # noqa: E402
from models.ann_cnn import AnnCNN, train_classifier  # noqa: E402
from models.ann_resnet import AnnResNet  # noqa: E402
from models.dda.distill import accuracy  # noqa: E402
from models.dda.networks import build_student  # noqa: E402
from models.dda.pipeline import DDAResult, run_dda  # noqa: E402
from models.workloads.dda import load_checkpoint  # noqa: E402
from models.device import torch_device  # noqa: E402
from server.config import ConfigError, RunConfig, load_config  # noqa: E402


TEACHERS = {"ann": AnnCNN, "resnet": AnnResNet}  # train-teacher --kind


def train_teacher(cfg: RunConfig, out: Path, epochs: int, kind: str = "ann") -> tuple[AnnCNN, dict]:
    """A teacher of ``kind`` (:data:`TEACHERS`) trained on the whole training split (written
    to teacher.pt), and its figures."""
    split = split_of(cfg)
    device = torch_device(cfg)
    torch.manual_seed(cfg.seed)
    spec = split.spec
    teacher = TEACHERS[kind](spec.channels, spec.size, spec.num_classes).to(device)
    x, y = torch.as_tensor(split.x_train, device=device), torch.as_tensor(split.y_train, device=device)
    history = train_classifier(teacher, x, y, epochs, 1e-3, cfg.batch_size, cfg.seed)
    acc = accuracy(teacher, torch.as_tensor(split.x_test, device=device), torch.as_tensor(split.y_test, device=device))
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"teacher": kind, "dataset": cfg.dataset, "image_size": spec.size, "seed": cfg.seed,
                "accuracy": acc, "state_dict": teacher.state_dict()}, out / "teacher.pt")
    return teacher.eval(), {"dataset": cfg.dataset, "epochs": epochs, "seed": cfg.seed, "test_accuracy": acc,
                            "loss_per_epoch": [round(v, 5) for v in history]}


def load_teacher(path: str, cfg: RunConfig) -> AnnCNN:
    state = load_checkpoint(path, "--teacher")
    if state.get("teacher") not in TEACHERS or state.get("dataset") != cfg.dataset:
        raise ConfigError(f"--teacher {path!r} is a {state.get('teacher')!r} teacher for {state.get('dataset')!r}; "
                          f"accepted: a teacher from `spikefed train-teacher --dataset {cfg.dataset}`")
    spec = split_of(cfg).spec
    teacher = TEACHERS[state["teacher"]](spec.channels, spec.size, spec.num_classes)
    try:
        teacher.load_state_dict(state["state_dict"])
    except RuntimeError:
        raise ConfigError(f"--teacher {path!r} was trained on {state.get('image_size', 'other')} px images, "
                          f"the data here are {spec.size} px; accepted: the teacher's image-size") from None
    return teacher.to(torch_device(cfg)).eval()


def save_student(student: torch.nn.Module, kind: str, mode: str, cfg: RunConfig, path: Path) -> None:
    """The checkpoint `workload="dda"` starts from (``dda-student``)."""
    torch.save({"student": kind, "mode": mode, "dataset": cfg.dataset, "state_dict": student.state_dict()}, path)


def distill_student(teacher: AnnCNN, student_kind: str, mode: str, cfg: RunConfig, out: Path,
                    on_epoch=None) -> dict:
    """Distil a fresh student with ``mode``, scored on the test split after every epoch;
    writes student.pt, metrics.json, epochs.csv and (with diffusion) dda.png."""
    split = split_of(cfg)
    spec, device = split.spec, torch_device(cfg)
    test = (torch.as_tensor(split.x_test, device=device), torch.as_tensor(split.y_test, device=device))
    torch.manual_seed(cfg.seed)
    student = build_student(student_kind, spec.channels, spec.size, spec.num_classes, cfg.timesteps).to(device)
    before = accuracy(student, *test)
    real = (torch.as_tensor(split.x_train, device=device), torch.as_tensor(split.y_train, device=device))
    out.mkdir(parents=True, exist_ok=True)
    curve = out / "epochs.csv"
    curve.unlink(missing_ok=True)

    def epoch_done(row: dict) -> None:  # the curve grows while the run goes on (the longest command SpikeFed has)
        pd.DataFrame([row]).to_csv(curve, mode="a", header=not curve.exists(), index=False)
        if on_epoch:
            on_epoch(row)

    result = run_dda(teacher, student, cfg, (spec.channels, spec.size, spec.size), spec.num_classes, mode,
                     real=real, test=test, on_epoch=epoch_done)
    save_student(student, student_kind, mode, cfg, out / "student.pt")
    metrics = {"dataset": cfg.dataset, "student": student_kind, "seed": cfg.seed,
               "teacher_accuracy": accuracy(teacher, *test), "student_accuracy_at_init": before,
               "student_accuracy": result.info["final_accuracy"], **result.info,
               "config": {k: v for k, v in cfg.to_mapping().items() if k.startswith("dda-") or k in RUN_KEYS}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if result.variants is not None:
        save_grid(result, out / "dda.png")
    return metrics


RUN_KEYS = ("dataset", "image-size", "max-train-samples", "max-test-samples", "timesteps", "batch-size", "seed")


def save_grid(result: DDAResult, path: Path, columns: int = 12) -> None:
    """Row 1: synthetic images of the starting pool; then one row per diffusion variant,
    framed green when the filter kept it and red when it dropped it."""
    variants = result.variants
    n = min(columns, len(result.synthetic))
    fig, axes = plt.subplots(1 + variants.images.shape[1], n, figsize=(n * 0.9, (1 + variants.images.shape[1]) * 1.0),
                             squeeze=False)
    for j in range(n):
        cells = [(result.synthetic[j], None)] + [(variants.images[j, v], bool(variants.kept[j, v]))
                                                 for v in range(variants.images.shape[1])]
        for i, (image, kept) in enumerate(cells):
            ax = axes[i, j]
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if kept is not None:
                for spine in ax.spines.values():
                    spine.set(color="tab:green" if kept else "tab:red", linewidth=2.5)
    axes[0, 0].set_ylabel("synthetic", fontsize=7)
    for v in range(variants.images.shape[1]):
        axes[1 + v, 0].set_ylabel(f"variant {v + 1}", fontsize=7)
    fig.suptitle("DDA: synthetic images and diffusion variants (green kept, red dropped)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ablation(cfg: RunConfig, seeds: list[int], teacher_epochs: int, out: Path,
             variants: tuple[tuple[str, str, dict[str, str]], ...], advance=lambda: None,
             teacher_kind: str = "ann") -> pd.DataFrame:
    """Per seed: a teacher of ``teacher_kind``, then one spiking student per variant ``(name, mode, dda-* keys
    over cfg's)``, each distilled from scratch. Writes ablation.csv (one row per seed and
    variant), ablation.md (mean ± std, and each variant's gain over the first one), curves.csv
    and curves.png (accuracy per epoch) and every student under students/; ``advance()`` is called after each student."""
    (out / "students").mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        scfg = cfg.replace(seed=seed)
        teacher, figures = train_teacher(scfg, out / f"teacher-seed{seed}", teacher_epochs, teacher_kind)
        for name, mode, changes in variants:
            vcfg = load_config({**scfg.to_mapping(), **changes})
            folder = out / "students" / f"{name_of(name)}-seed{seed}"
            metrics = distill_student(teacher, "snn", mode, vcfg, folder)
            rows.append({"seed": seed, "variant": name, "mode": mode, "teacher_accuracy": figures["test_accuracy"],
                         "final_accuracy": metrics["final_accuracy"], "best_accuracy": metrics["best_accuracy"],
                         "pool": metrics["pool"], "kept_fraction": metrics.get("kept_fraction"),
                         "seconds": metrics["total_seconds"]})
            advance()
    frame = pd.DataFrame(rows)
    curves = pd.concat([pd.read_csv(out / "students" / f"{name_of(name)}-seed{seed}" / "epochs.csv")
                        .assign(seed=seed, variant=name) for seed in seeds for name, _, _ in variants])
    write_tables(frame, curves, out)
    return frame


def write_tables(frame: pd.DataFrame, curves: pd.DataFrame, out: Path) -> None:
    """ablation.csv, ablation.md, curves.csv (accuracy per epoch) and curves.png."""
    frame.to_csv(out / "ablation.csv", index=False)
    (out / "ablation.md").write_text(ablation_table(frame) + "\n")
    curves.to_csv(out / "curves.csv", index=False)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (name, group) in enumerate(curves.groupby("variant", sort=False)):
        for j, (_, run) in enumerate(group.groupby("seed")):
            ax.plot(run["epoch"], run["accuracy"], color=f"C{i}", alpha=0.8, label=name if j == 0 else None)
    ax.set(xlabel="epoch", ylabel="test accuracy (output spike rates)", title="spiking student per epoch, one line per seed")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)


def merge_ablations(folders: list[Path], out: Path) -> pd.DataFrame:
    """The tables of ``folders`` (e.g. one per seed, run side by side) as one set in ``out``
    (:func:`write_tables`), variants in first-seen order."""
    frame = pd.concat([pd.read_csv(folder / "ablation.csv") for folder in folders], ignore_index=True)
    curves = pd.concat([pd.read_csv(folder / "curves.csv") for folder in folders], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    write_tables(frame.sort_values("seed", kind="stable"), curves.sort_values("seed", kind="stable"), out)
    return frame


def name_of(variant: str) -> str:
    """A file-name form of a variant's name."""
    return variant.replace("=", "").replace(",", "-").replace(" ", "")


def ablation_table(frame: pd.DataFrame) -> str:
    """Mean ± std over seeds per variant, and the mean per-seed difference of its final
    accuracy to the first variant's (the reference), as Markdown."""
    def pm(values: pd.Series, digits: int) -> str:
        values = values.dropna().astype(float)
        return "" if values.empty else f"{values.mean():.{digits}f} ± {values.std(ddof=0):.{digits}f}"

    reference = frame[frame["variant"] == frame["variant"].iloc[0]].set_index("seed")["final_accuracy"]
    table = pd.DataFrame([{
        "variant": name,
        "final accuracy": pm(group["final_accuracy"], 3),
        "median final": f"{group['final_accuracy'].median():.3f}",
        "final / teacher (median)": f"{(group['final_accuracy'] / group['teacher_accuracy']).median():.3f}",
        "best accuracy (any epoch)": pm(group["best_accuracy"], 3),
        "vs first row, final": f"{(group.set_index('seed')['final_accuracy'] - reference).mean():+.3f}",
        "teacher accuracy": pm(group["teacher_accuracy"], 3),
        "pool images": pm(group["pool"], 0),
        "kept fraction": pm(group["kept_fraction"], 3),
        "wall s": pm(group["seconds"], 0),
    } for name, group in frame.groupby("variant", sort=False)])
    return table.to_markdown(index=False, disable_numparse=True)
