"""What the spiking readout costs the students of `scripts/dda-measure.sh main` (docs/dda.md):
per seed and student, the accuracy by output spike rates (the federation's readout), the share
of test images whose top rate is tied, the accuracy with ties broken by the readout currents
and by the currents alone, the agreement with the teacher and the per-class accuracy.
    .venv/bin/python scripts/dda-readout.py results/dda-fmnist/main OUT.csv"""

import sys
from pathlib import Path

import pandas as pd
import torch
from spikingjelly.activation_based import functional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data import split_of  # noqa: E402
from experiments.dda import load_teacher  # noqa: E402
from models.dda.networks import build_student, logits  # noqa: E402
from server.config import load_config  # noqa: E402

root, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for seed_dir in sorted(root.glob("seed*")):
    seed = int(seed_dir.name.removeprefix("seed"))
    cfg = load_config({"dataset": "fashion-mnist", "image-size": 14, "max-train-samples": 5000,
                       "max-test-samples": 2000, "seed": seed})
    split = split_of(cfg)
    x, y = torch.as_tensor(split.x_test), torch.as_tensor(split.y_test)
    teacher = load_teacher(str(seed_dir / f"teacher-seed{seed}" / "teacher.pt"), cfg)
    with torch.no_grad():
        teacher_class = teacher(x).argmax(1)
    for path in sorted((seed_dir / "students").glob("*/student.pt")):
        student = build_student("snn", 1, 14, 10, 4)
        student.load_state_dict(torch.load(path)["state_dict"])
        student.eval()
        with torch.no_grad():
            rates = logits(student, x)
            currents = student.net.fc(student.net[:-2](x.unsqueeze(0).repeat(4, 1, 1, 1, 1))).mean(0)
            functional.reset_net(student)
        top = rates == rates.max(1, keepdim=True).values
        broken = torch.where(top, currents, torch.full_like(currents, -1e9)).argmax(1)
        row = {"seed": seed, "student": path.parent.name.removesuffix(f"-seed{seed}"),
               "accuracy_rates": (rates.argmax(1) == y).float().mean().item(),
               "tied_share": (top.sum(1) > 1).float().mean().item(),
               "accuracy_ties_by_current": (broken == y).float().mean().item(),
               "accuracy_currents": (currents.argmax(1) == y).float().mean().item(),
               "agreement_with_teacher": (rates.argmax(1) == teacher_class).float().mean().item(),
               "teacher_accuracy": (teacher_class == y).float().mean().item()}
        for c in range(10):
            row[f"class{c}"] = ((rates.argmax(1) == y) & (y == c)).sum().item() / (y == c).sum().item()
            row[f"teacher_class{c}"] = ((teacher_class == y) & (y == c)).sum().item() / (y == c).sum().item()
        rows.append(row)
pd.DataFrame(rows).round(4).to_csv(out, index=False)
print(pd.DataFrame(rows).round(3).to_string())
