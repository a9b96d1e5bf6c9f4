"""DDA: each stage on real parts (teacher, diffusers UNet + DDIM), the CLI and the workload."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler

from data import load_split
from models.ann_cnn import AnnCNN, train_classifier
from models.dda.augment import SDEditAugmenter, small_unet
from models.dda.distill import KDOptions, accuracy, distill
from models.dda.filtering import cosine_keep, keep, label_keep
from models.dda.generator import generate, rotations
from models.dda.networks import build_student, embedding_and_logits, logits
from models.dda.pipeline import run_dda
from models.dda.synthesis import invert
from server.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
# the module fixtures (teacher, CLI run) are built once: this file's tests share one xdist worker
pytestmark = pytest.mark.xdist_group("dda")


@pytest.fixture(scope="module")
def digits():
    split = load_split("digits", "data-cache", 0.2, 0)
    return split, torch.as_tensor(split.x_test), torch.as_tensor(split.y_test)


@pytest.fixture(scope="module")
def teacher(digits):
    split, _, _ = digits
    torch.manual_seed(0)
    model = AnnCNN(1, 8, 10)
    train_classifier(model, torch.as_tensor(split.x_train), torch.as_tensor(split.y_train), 5, 1e-3, 64, 0)
    return model.eval()


def test_inversion_matches_bn_statistics_and_the_target_labels(teacher, digits):
    _, x_test, y_test = digits
    assert accuracy(teacher, x_test, y_test) > 0.9
    labels = torch.arange(40) % 10
    images, history = invert(teacher, labels, (1, 8, 8), steps=60, generator=torch.Generator().manual_seed(0))
    assert images.shape == (40, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert history["bn"][-1] < 0.5 * history["bn"][0]
    with torch.no_grad():
        hits = (teacher(images).argmax(1) == labels).float().mean().item()
    assert hits > 0.5  # chance is 0.1


def test_generator_pool_fools_the_teacher_and_the_rotation_head_learns(teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    bank, histories = generate(teacher, 48, 10, (1, 8, 8), batch_size=24, steps=40, seed=0)
    # the teacher is frozen: weights and BatchNorm running statistics untouched
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.requires_grad for p in teacher.parameters())
    images, labels = bank.tensors()
    assert images.shape == (48, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert torch.bincount(labels, minlength=10).tolist() == [5] * 8 + [4] * 2  # balanced, like inversion
    assert len(histories) == 2 and histories[0]["rotation"][0] > 0
    first, last = histories[0], histories[-1]  # one generator across the pool's batches
    assert last["bn"][-1] < 0.5 * first["bn"][0] and last["rotation"][-1] < first["rotation"][0]
    with torch.no_grad():
        assert (teacher(images).argmax(1) == labels).float().mean() > 0.5
    assert images.std(0).mean() > 0.02  # not one image for all noise draws
    rotated, joint = rotations(images[:2], labels[:2], 10)
    assert torch.equal(rotated[2], torch.rot90(images[0], 1, (1, 2))) and joint.tolist()[2:4] == [10 + labels[0], 10 + labels[1]]


def test_distillation_options_train_with_their_extra_terms(teacher, digits):
    _, x_test, y_test = digits
    images, labels = x_test[:128], y_test[:128]
    for kind in ("snn", "ann"):  # both embeddings feed the projection; one pass gives both outputs
        torch.manual_seed(0)
        student = build_student(kind, 1, 8, 10, 2)
        features, out = embedding_and_logits(student.eval(), images[:4])
        assert torch.allclose(out, logits(student, images[:4]), atol=1e-5) and features.dim() == 2
    histories = {}
    for name, options in {"kd": KDOptions(), "authors": KDOptions(20.0, 1.0, 30.0, "sgd-cosine")}.items():
        torch.manual_seed(0)
        student = build_student("ann", 1, 8, 10, 2)
        histories[name] = distill(teacher, student, images, 6, 32, options, labels)
        assert histories[name][-1] < histories[name][0]
        assert accuracy(student, x_test, y_test) > 0.3
    assert histories["authors"][0] > histories["kd"][0]  # T^2-scaled KL + CE + 30 x MSE
    with pytest.raises(ValueError, match="labels"):
        distill(teacher, student, images, 1, options=KDOptions(ce_weight=1.0))
    with pytest.raises(ConfigError, match="dda-optimizer='sgd' is unknown; accepted: adam, sgd-cosine"):
        load_config({"dda-optimizer": "sgd"})
    with pytest.raises(ConfigError, match="dda-synthesis='gan' is unknown; accepted: inversion, generator"):
        load_config({"dda-synthesis": "gan"})


def augmenter(strength):
    torch.manual_seed(0)
    return SDEditAugmenter(small_unet(1, 8).eval(), DDIMScheduler(num_train_timesteps=1000), strength, 20)


def test_sdedit_variants_differ_more_at_higher_strength(digits):
    split, _, _ = digits
    source = torch.as_tensor(split.x_test[:16])
    distance = {}
    for strength in (0.1, 0.8):
        out = augmenter(strength)(source, variants=2, generator=torch.Generator().manual_seed(0))
        assert out.shape == (16, 2, 1, 8, 8) and 0 <= out.min() and out.max() <= 1
        assert not torch.equal(out[:, 0], out[:, 1])  # different noise, different variants
        distance[strength] = (out - source.unsqueeze(1)).abs().mean().item()
    assert 0 < distance[0.1] < distance[0.8]


def test_a_saved_diffusers_pipeline_is_loaded_into_the_same_augmenter(tmp_path, digits):
    torch.manual_seed(0)
    DDIMPipeline(unet=small_unet(1, 8), scheduler=DDIMScheduler(num_train_timesteps=100)).save_pretrained(tmp_path)
    loaded = SDEditAugmenter.from_pretrained(str(tmp_path), strength=0.5, inference_steps=10)
    assert loaded.scheduler.config.num_train_timesteps == 100
    out = loaded(torch.as_tensor(digits[0].x_test[:4]), variants=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 1, 8, 8)


def test_filter_keeps_exactly_the_variants_at_or_above_the_threshold():
    source = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    variants = torch.tensor([[[1.0, 0.1], [0.0, 1.0]],   # cos 0.995, 0
                             [[0.6, 0.8], [0.0, 2.0]]])  # cos 0.8, 1
    kept, similarity = cosine_keep(source, variants, threshold=0.8)
    assert kept.tolist() == [[True, False], [True, True]]
    assert similarity[1, 0].item() == pytest.approx(0.8)
    # the label rule ignores how far a variant moved, only whether the teacher's class changed
    source_logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    variant_logits = torch.tensor([[[1.0, 0.9], [0.0, 3.0]], [[5.0, 0.0], [0.2, 0.3]]])
    same = label_keep(source_logits, variant_logits)
    assert same.tolist() == [[True, False], [False, True]]
    assert keep("label", similarity, same, 0.99).tolist() == same.tolist()
    assert keep("cosine", similarity, same, 0.8).tolist() == kept.tolist()
    with pytest.raises(ValueError, match="accepted: cosine, label"):
        keep("auto", similarity, same, 0.8)


def test_tiny_dda_improves_the_spiking_student_over_its_initialisation(teacher, digits):
    _, x_test, y_test = digits
    cfg = load_config({"dda-images": 64, "dda-inversion-steps": 60, "dda-denoiser-epochs": 3,
                       "dda-distill-epochs": 15, "dda-variants": 2, "dda-threshold": 0.5, "timesteps": 2})
    torch.manual_seed(0)
    student = build_student("snn", 1, 8, 10, cfg.timesteps)
    before = accuracy(student, x_test, y_test)
    result = run_dda(teacher, student, cfg, (1, 8, 8), 10, "dda")
    assert result.augmented.shape == (64, 2, 1, 8, 8)
    assert result.info["training_images"] == 64 + int(result.kept.sum())
    assert result.info["kd_loss_last"] < result.info["kd_loss_first"]
    assert accuracy(student, x_test, y_test) > before + 0.1


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "experiments", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A teacher and a DDA spiking student made with the CLI, tiny sizes."""
    out = tmp_path_factory.mktemp("dda")
    proc = run("train-teacher", "--epochs", "3", "--out", str(out / "teacher"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run("dda", "distill", "--teacher", str(out / "teacher" / "teacher.pt"), "--images", "32",
               "--inversion-steps", "20", "--denoiser-epochs", "2", "--epochs", "3", "--timesteps", "2",
               "--set", "dda-synthesis=generator", "--set", "dda-filter=label", "--out", str(out / "student"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_cli_writes_teacher_student_metrics_and_grid(distilled):
    metrics = json.loads((distilled / "student" / "metrics.json").read_text())
    assert metrics["teacher_accuracy"] > 0.8 and 0 <= metrics["kept_fraction"] <= 1
    assert (metrics["synthesis"], metrics["filter"]) == ("generator", "label")
    assert metrics["kept_fraction"] == metrics["same_label_fraction"]
    assert metrics["training_images"] >= 32
    assert (distilled / "student" / "dda.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert torch.load(distilled / "student" / "student.pt")["student"] == "snn"


@pytest.mark.slow
def test_dda_workload_federates_the_student_and_the_server_distils_every_round(distilled, tiny):
    from test_simulation import results_of, spikefed_run

    from experiments.simulation import read_rounds

    proc = spikefed_run({**tiny, "workload": "dda", "timesteps": 2, "run-name": "dda",
                         "dda-student": distilled / "student" / "student.pt", "dda-distill-every": 2,
                         "dda-images": 32, "dda-inversion-steps": 10, "dda-denoiser-epochs": 1,
                         "dda-distill-epochs": 2})
    rows = read_rounds(results_of(proc))
    assert [r["student_accuracy"] == "" for r in rows] == [True, False]  # distilled at round 2 only
    assert 0 <= float(rows[1]["student_accuracy"]) <= 1 and (results_of(proc) / "student.pt").exists()


def test_a_missing_student_checkpoint_is_one_line_before_anything_starts(tmp_path):
    proc = run("run", "--set", "workload=dda", "--set", f"dda-student={tmp_path / 'none.pt'}", timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "dda-student=" in proc.stderr and "is not a readable checkpoint" in proc.stderr


@pytest.mark.slow
def test_ablation_cli_distils_every_mode_per_seed(tmp_path):
    proc = run("dda", "ablation", "--seeds", "0,1", "--student", "snn,ann", "--filters", "cosine,label",
               "--kd", "defaults", "--kd", "dda-ce-weight=1,dda-feature-weight=1,dda-optimizer=sgd-cosine",
               "--teacher-epochs", "2", "--set", "dda-images=32", "--set", "dda-inversion-steps=10",
               "--set", "dda-denoiser-epochs=1", "--set", "dda-distill-epochs=2", "--set", "timesteps=2",
               "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pandas as pd

    frame = pd.read_csv(tmp_path / "ablation.csv", keep_default_na=False)
    assert sorted(frame["seed"].unique()) == [0, 1] and len(frame) == 2 * 2 * 5 * 2  # seeds, students, runs, kd
    assert list(frame["mode"][::2][:5]) == ["real", "inversion", "no-filter", "dda", "dda"]
    by_mode = frame[(frame["seed"] == 0) & (frame["student"] == "ann") & (frame["kd"] == "")].set_index(["mode", "filter"])
    assert by_mode.loc[("real", ""), "training_images"] > by_mode.loc[("no-filter", ""), "training_images"] == 32 * 3
    assert 32 <= by_mode.loc[("dda", "cosine"), "training_images"] <= 96
    assert 32 <= by_mode.loc[("dda", "label"), "training_images"] <= 96
    # the filter analysis: per seed, the cosine filter's verdict against the teacher's label
    figures = pd.read_csv(tmp_path / "filter.csv")
    assert list(figures["seed"]) == [0, 1] and figures["kept_fraction"].between(0, 1).all()
    assert (tmp_path / "filter.png").read_bytes()[:4] == b"\x89PNG"
    assert torch.load(tmp_path / "students" / "snn-dda-label-seed1.pt")["student"] == "snn"
    table = (tmp_path / "ablation.md").read_text()
    assert "(d) DDA, filter: teacher label kept" in table and "dda-optimizer=sgd-cosine" in table
