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
from models.dda.distill import accuracy
from models.dda.filtering import cosine_keep
from models.dda.networks import build_student
from models.dda.pipeline import run_dda
from models.dda.synthesis import invert
from server.config import load_config

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
    keep, similarity = cosine_keep(source, variants, threshold=0.8)
    assert keep.tolist() == [[True, False], [True, True]]
    assert similarity[1, 0].item() == pytest.approx(0.8)


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
               "--out", str(out / "student"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_cli_writes_teacher_student_metrics_and_grid(distilled):
    metrics = json.loads((distilled / "student" / "metrics.json").read_text())
    assert metrics["teacher_accuracy"] > 0.8 and 0 <= metrics["kept_fraction"] <= 1
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
    proc = run("dda", "ablation", "--seeds", "0,1", "--teacher-epochs", "2", "--set", "dda-images=32",
               "--set", "dda-inversion-steps=10", "--set", "dda-denoiser-epochs=1", "--set", "dda-distill-epochs=2",
               "--set", "timesteps=2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pandas as pd

    frame = pd.read_csv(tmp_path / "ablation.csv")
    assert sorted(frame["seed"].unique()) == [0, 1] and list(frame["mode"][:4]) == ["real", "inversion", "no-filter", "dda"]
    by_mode = frame[frame["seed"] == 0].set_index("mode")
    assert by_mode.loc["real", "training_images"] > by_mode.loc["no-filter", "training_images"] == 32 * 3
    assert 32 <= by_mode.loc["dda", "training_images"] <= 96
    assert "(d) DDA" in (tmp_path / "ablation.md").read_text()
