"""DDA: each stage on real parts (teacher, diffusers UNet + DDIM), the CLI and the workload."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import one_thread_env
from diffusers import DDIMPipeline, DDIMScheduler

from data import load_split
from models.ann_cnn import AnnCNN, train_classifier
from models.dda.augment import SDEditAugmenter, small_unet
from models.workloads.classify import ClassifyWorkload
from models.dda.distill import Distiller, KDOptions, accuracy
from models.dda.filtering import cosine_keep, keep, label_keep
from models.dda.networks import build_student, logits
from models.dda.pipeline import run_dda
from models.dda.pool import Pool, crop_flip, mixup
from models.dda.rotation import RotationHead, rotations
from models.dda.synthesis import Opponent, SynthesisWeights, synthesize_batch
from server.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
# the fixtures (teacher, CLI run) are built once per xdist worker: the tests of each share one
# worker (its group), and the fixtures live for its session (a module-scoped one is rebuilt when
# the worker runs another module's test in between: measured, the CLI run twice); the other tests
# go to whichever worker is free
TEACHER = pytest.mark.xdist_group("dda-teacher")
CLI = pytest.mark.xdist_group("dda-cli")


@pytest.fixture(scope="session")
def digits():
    split = load_split("digits", "data-cache", 0.2, 0)
    return split, torch.as_tensor(split.x_test), torch.as_tensor(split.y_test)


@pytest.fixture(scope="session")
def teacher(digits):
    split, _, _ = digits
    torch.manual_seed(0)
    model = AnnCNN(1, 8, 10)
    train_classifier(model, torch.as_tensor(split.x_train), torch.as_tensor(split.y_train), 5, 1e-3, 64, 0)
    return model.eval()


@TEACHER
@pytest.mark.parametrize("synthesis", ["generator", "inversion"])
def test_a_synthetic_batch_takes_the_teachers_labels_and_leaves_the_teacher_untouched(teacher, synthesis):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    targets = torch.arange(40) % 10
    images, figures = synthesize_batch(teacher, targets, 10, (1, 8, 8), 40, SynthesisWeights(), "none",
                                       torch.Generator().manual_seed(0), synthesis)
    assert images.shape == (40, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert "adversarial" not in figures and "rotation" not in figures  # no student to oppose: both off
    with torch.no_grad():
        hits = (teacher(images).argmax(1) == targets).float().mean().item()
    assert hits > 0.5  # chance is 0.1
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.requires_grad for p in teacher.parameters())


@TEACHER
def test_the_disagreement_term_makes_images_on_which_the_student_disagrees_more(teacher):
    torch.manual_seed(0)
    student = build_student("snn", 1, 8, 10, timesteps=2)
    distiller = Distiller(teacher, student, KDOptions(), 1, torch.zeros(2, 1, 8, 8))
    targets = torch.arange(64) % 10

    def disagreement(weight: float) -> float:
        weights = SynthesisWeights(adversarial=weight, rotation=0.0)
        images, _ = synthesize_batch(teacher, targets, 10, (1, 8, 8), 30, weights, "none",
                                     torch.Generator().manual_seed(0), "inversion",
                                     Opponent(student, distiller.logits, None))
        with torch.no_grad():
            return torch.nn.functional.kl_div(torch.log_softmax(distiller.logits(images), 1),
                                              torch.softmax(teacher(images), 1), reduction="batchmean").item()

    assert disagreement(5.0) > disagreement(0.0)
    assert all(p.requires_grad for p in student.parameters()) and student.training  # restored


def test_crop_flip_draws_per_image_and_keeps_the_gradient():
    x = torch.arange(2 * 8 * 8, dtype=torch.float).view(2, 1, 8, 8).repeat(32, 1, 1, 1).requires_grad_(True)
    out = crop_flip(x, "crop-flip", torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert len({tuple(o.flatten().tolist()) for o in out[::2]}) > 5  # the same image, different crops
    out.sum().backward()
    assert x.grad is not None and x.grad.sum() > 0
    assert torch.equal(crop_flip(x, "none", torch.Generator()), x)
    same_seed = [crop_flip(x.detach(), "crop", torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*same_seed)


@TEACHER
def test_the_rotation_head_learns_the_rotations_of_the_pool(teacher, digits):
    split, _, _ = digits
    torch.manual_seed(0)
    student = build_student("snn", 1, 8, 10, timesteps=2)
    images, labels = torch.as_tensor(split.x_train[:64]), torch.as_tensor(split.y_train[:64])
    rotated, joint = rotations(images, labels, 10)
    assert rotated.shape == (256, 1, 8, 8) and torch.equal(joint[64:128], labels + 10)
    head = RotationHead(student.net.fc.in_features, 10)
    losses = [head.train_step(student, images, labels) for _ in range(30)]
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in student.parameters())  # the head trains, the student does not


@TEACHER
def test_the_distiller_learns_with_every_loss_term_and_rejects_unknown_options(teacher, digits):
    _, x_test, y_test = digits
    images, labels = x_test[:128], y_test[:128]
    for kind in ("snn", "ann"):
        for options in (KDOptions(), KDOptions(feature_weight=30.0, optimizer="adam")):
            torch.manual_seed(0)
            student = build_student(kind, 1, 8, 10, 2)
            distiller = Distiller(teacher, student, options, 3, images[:2])
            losses = [distiller.step(images, labels) for _ in range(15)]
            assert losses[-1] < losses[0], (kind, options)
    assert distiller.projection is not None and distiller.log_scale is None  # an ANN student needs no scale
    with pytest.raises(ConfigError, match="dda-optimizer='sgd' is unknown; accepted: sgd-cosine, adam"):
        load_config({"dda-optimizer": "sgd"})
    with pytest.raises(ConfigError, match="dda-augment='rotate' is unknown; accepted: crop-flip, crop, none"):
        load_config({"dda-augment": "rotate"})
    with pytest.raises(ConfigError, match="dda-images=0 is out of range"):
        load_config({"dda-images": 0})


def test_the_spiking_students_accuracy_is_the_federations_readout(digits):
    split, x_test, y_test = digits
    torch.manual_seed(0)
    student = build_student("snn", 1, 8, 10, timesteps=4)
    ClassifyWorkload().train(student, (split.x_train, split.y_train), load_config({"local-epochs": 1}), 0)
    federated = ClassifyWorkload().evaluate(student, (split.x_test, split.y_test), load_config({}))
    assert accuracy(student, x_test, y_test) == federated["accuracy"] > 0.3
    assert logits(student, x_test[:5]).min() >= 0 and logits(student, x_test[:5]).max() <= 1  # firing rates


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


def tiny_keys(**changes):
    return load_config({"dda-images": 40, "dda-synthesis-batch": 20, "dda-synthesis-steps": 20,
                        "dda-epoch-images": 20, "dda-epochs": 4, "dda-student-steps": 20, "batch-size": 32,
                        "dda-denoiser-epochs": 2, "dda-variants": 2, "timesteps": 2, **changes})


@TEACHER
def test_the_pool_grows_every_epoch_and_the_student_beats_its_initialisation(teacher, digits):
    _, x_test, y_test = digits
    cfg = tiny_keys()
    torch.manual_seed(0)
    student = build_student("snn", 1, 8, 10, cfg.timesteps)
    before = accuracy(student, x_test, y_test)
    result = run_dda(teacher, student, cfg, (1, 8, 8), 10, "no-filter", test=(x_test, y_test))
    # every synthetic batch brings its 2 variants along: (40 + 4 epochs x 20) x 3
    assert [row["pool"] for row in result.epochs] == [(40 + 20 * e) * 3 for e in range(1, 5)]
    assert result.variants.images.shape == (40, 2, 1, 8, 8) and result.info["kept_fraction"] == 1.0
    assert {"adversarial", "rotation"} <= set(result.info["synthesis_last"])  # the epochs oppose the student
    assert result.info["final_accuracy"] == result.epochs[-1]["accuracy"] == accuracy(student, x_test, y_test)
    assert result.info["best_accuracy"] == max(row["accuracy"] for row in result.epochs)
    assert result.info["final_accuracy"] > before + 0.1


@TEACHER
def test_a_fixed_pool_and_real_data_follow_the_same_schedule(teacher, digits):
    split, x_test, y_test = digits
    real = (torch.as_tensor(split.x_train), torch.as_tensor(split.y_train))
    for mode, changes, pool in (("synthetic", {"dda-epoch-images": 0}, 40), ("real", {}, len(split.x_train))):
        torch.manual_seed(0)
        student = build_student("snn", 1, 8, 10, 2)
        result = run_dda(teacher, student, tiny_keys(**changes), (1, 8, 8), 10, mode, real=real)
        assert [row["pool"] for row in result.epochs] == [pool] * 4 and result.info["student_steps"] == 80


@TEACHER
def test_the_same_seed_distils_the_same_student(teacher):
    states = []
    for _ in range(2):
        torch.manual_seed(123)  # the run seeds itself: what came before does not matter
        student = build_student("snn", 1, 8, 10, 2)
        run_dda(teacher, student, tiny_keys(**{"dda-epochs": 2, "dda-student-steps": 5}), (1, 8, 8), 10, "synthetic")
        states.append(student.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_the_pool_samples_augmented_batches_of_its_images():
    pool = Pool()
    pool.add(torch.rand(10, 1, 8, 8), torch.arange(10))
    pool.add(torch.rand(5, 1, 8, 8), torch.arange(5))
    images, labels = pool.sample(12, "crop-flip", torch.Generator().manual_seed(0))
    assert len(pool) == 15 and images.shape == (12, 1, 8, 8) and labels.max() < 10


@TEACHER
def test_mixup_blends_each_image_with_another_and_their_labels_by_the_same_weight(teacher, digits):
    x, labels = torch.rand(64, 1, 8, 8), torch.arange(64) % 10
    mixed, targets = mixup(x, labels, 0.4, 10, torch.Generator().manual_seed(0))
    assert torch.allclose(targets.sum(1), torch.ones(64)) and (targets >= 0).all()
    own = targets[torch.arange(64), labels]  # lam, plus 1 - lam where the partner has the same label
    blended = 0
    for i in range(64):
        partners = [j for j in range(64) if torch.allclose(mixed[i], own[i] * x[i] + (1 - own[i]) * x[j], atol=1e-6)]
        blended += bool(partners) and own[i] < 1 - 1e-3
    assert blended >= 50  # nearly every image is a true blend (Beta(0.4, 0.4) puts some lam near 0 or 1)
    distiller = Distiller(teacher, build_student("snn", 1, 8, 10, 2), KDOptions(), 1, x[:2])
    assert torch.isfinite(torch.tensor(distiller.step(mixed, targets)))  # the CE term takes the blended targets


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "experiments", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=one_thread_env())


TINY_SETS = ["--set", "dda-images=32", "--set", "dda-synthesis-batch=16", "--set", "dda-synthesis-steps=10",
             "--set", "dda-epoch-images=16", "--set", "dda-epochs=2", "--set", "dda-student-steps=5",
             "--set", "dda-denoiser-epochs=2", "--set", "batch-size=32", "--set", "timesteps=2"]


@pytest.fixture(scope="session")
def distilled(tmp_path_factory):
    """A teacher and a DDA spiking student made with the CLI, tiny sizes."""
    out = tmp_path_factory.mktemp("dda")
    proc = run("train-teacher", "--epochs", "3", "--out", str(out / "teacher"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run("dda", "distill", "--teacher", str(out / "teacher" / "teacher.pt"), *TINY_SETS,
               "--set", "dda-filter=label", "--out", str(out / "student"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@CLI
@pytest.mark.slow
def test_cli_writes_teacher_student_metrics_curve_and_grid(distilled):
    import pandas as pd

    metrics = json.loads((distilled / "student" / "metrics.json").read_text())
    assert metrics["teacher_accuracy"] > 0.8 and 0 <= metrics["kept_fraction"] <= 1
    assert (metrics["synthesis"], metrics["filter"], metrics["config"]["dda-epochs"]) == ("generator", "label", 2)
    assert metrics["pool"] >= 32 + 2 * 16 and metrics["student_accuracy"] == metrics["final_accuracy"]
    epochs = pd.read_csv(distilled / "student" / "epochs.csv")
    assert list(epochs["epoch"]) == [1, 2] and epochs["accuracy"].max() == metrics["best_accuracy"]
    assert (distilled / "student" / "dda.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert torch.load(distilled / "student" / "student.pt")["student"] == "snn"


@CLI
@pytest.mark.slow
def test_dda_workload_federates_the_student_and_the_server_distils_every_round(distilled, tiny):
    from test_simulation import results_of, spikefed_run

    from experiments.simulation import read_rounds

    proc = spikefed_run({**tiny, "workload": "dda", "timesteps": 2, "run-name": "dda",
                         "dda-student": distilled / "student" / "student.pt", "dda-distill-every": 2,
                         "dda-images": 16, "dda-synthesis-batch": 16, "dda-synthesis-steps": 5,
                         "dda-epoch-images": 16, "dda-epochs": 1, "dda-student-steps": 2, "dda-denoiser-epochs": 1})
    rows = read_rounds(results_of(proc))
    assert [r["student_accuracy"] == "" for r in rows] == [True, False]  # distilled at round 2 only
    assert 0 <= float(rows[1]["student_accuracy"]) <= 1 and (results_of(proc) / "student.pt").exists()


def test_a_missing_student_checkpoint_is_one_line_before_anything_starts(tmp_path):
    proc = run("run", "--set", "workload=dda", "--set", f"dda-student={tmp_path / 'none.pt'}", timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "dda-student=" in proc.stderr and "is not a readable checkpoint" in proc.stderr


@CLI
@pytest.mark.slow
@pytest.mark.parametrize("sets, message", [
    (["--set", "image-size=4"], "was trained on 8 px images, the data here are 4 px"),
    (["--set", "dda-images=0"], "dda-images=0 is out of range"),
    (["--dataset", "synthetic"], "is a 'ann' teacher for 'digits'"),
])
def test_a_teacher_that_does_not_fit_or_no_image_budget_is_one_line_and_writes_nothing(distilled, tmp_path, sets,
                                                                                      message):
    proc = run("dda", "distill", "--teacher", str(distilled / "teacher" / "teacher.pt"), *sets,
               "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ablation_cli_distils_every_variant_per_seed(tmp_path):
    import pandas as pd

    # the diffusion stage (mode dda) is the CLI fixture's and the pipeline tests': not run again here
    proc = run("dda", "ablation", "--seeds", "1", "--variant", "mode=real",
               "--variant", "mode=synthetic,dda-rotation-weight=0", "--teacher-epochs", "1", "--teacher-kind", "resnet",
               *TINY_SETS,
               "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pd.read_csv(tmp_path / "ablation.csv", keep_default_na=False)
    assert list(frame["seed"]) == [1, 1]
    assert list(frame["variant"]) == ["mode=real", "mode=synthetic,dda-rotation-weight=0"]
    by_variant = frame.set_index("mode")
    assert by_variant.loc["synthetic", "pool"] == 32 + 2 * 16
    assert by_variant.loc["real", "pool"] > 1000 and by_variant.loc["real", "kept_fraction"] == ""
    assert (tmp_path / "students" / "modesynthetic-dda-rotation-weight0-seed1" / "student.pt").exists()
    assert torch.load(tmp_path / "teacher-seed1" / "teacher.pt")["teacher"] == "resnet"
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert len(curves) == 2 * 2 and (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"  # 2 epochs per run
    proc = run("dda", "merge", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "merged"))
    assert proc.returncode == 0 and len(pd.read_csv(tmp_path / "merged" / "ablation.csv")) == 4
    table = (tmp_path / "ablation.md").read_text()
    assert "vs first row, final" in table and "+0.000" in table  # the reference row against itself


def test_a_resnet_teacher_serves_synthesis_filter_and_distillation(digits):
    from models.ann_resnet import AnnResNet

    split, x_test, y_test = digits
    torch.manual_seed(0)
    resnet = AnnResNet(1, 8, 10, widths=(8, 16, 16), blocks=1)
    train_classifier(resnet, torch.as_tensor(split.x_train), torch.as_tensor(split.y_train), 3, 1e-3, 64, 0)
    assert accuracy(resnet.eval(), x_test, y_test) > 0.5
    student = build_student("snn", 1, 8, 10, 2)
    result = run_dda(resnet, student, tiny_keys(**{"dda-epochs": 1}), (1, 8, 8), 10, "dda", test=(x_test, y_test))
    assert result.variants.similarity.shape == (40, 2) and result.info["pool"] >= 60
