import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from server.config import DEFAULTS, ConfigError, clients_per_round, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_run_config_matches_defaults():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["flwr"]["app"]["config"] == DEFAULTS


def test_written_copies_of_the_keys_are_generated_from_their_declarations():
    from experiments.keys import GROUPS, rendered
    from server.config import KEYS

    grouped = [name for keys in GROUPS.values() for name in keys]
    assert sorted(grouped) == sorted(KEYS) and len(grouped) == len(KEYS)
    assert [name for name, key in KEYS.items() if not key.meaning] == []
    stale = [str(path.relative_to(ROOT)) for path, text in rendered().items() if path.read_text() != text]
    assert stale == [], "run `spikefed config --write`"


def test_defaults_are_the_demo_settings():
    cfg = load_config({})
    assert (cfg.dataset, cfg.num_partitions, cfg.partitioner, cfg.dirichlet_alpha) == ("digits", 20, "dirichlet", 0.5)
    assert (cfg.strategy, clients_per_round(cfg), cfg.timesteps, cfg.seed) == ("random", 5, 4, 0)


def test_values_are_typed_from_strings():
    cfg = load_config({"lr": "0.1", "num-partitions": "8", "server-eval": "false", "fraction-evaluate": "1"})
    assert (cfg.lr, cfg.num_partitions, cfg.server_eval) == (0.1, 8, False)


@pytest.mark.parametrize(
    "values, key, accepted",
    [
        ({"dataset": "imagenet"}, "dataset", "digits"),
        ({"strategy": "best"}, "strategy", "random"),
        ({"dirichlet-alpha": 0}, "dirichlet-alpha", "(0"),
        ({"dirichlet-alpha": -1}, "dirichlet-alpha", "(0"),
        ({"fraction-train": 0}, "fraction-train", "(0, 1]"),
        ({"fraction-train": 1.5}, "fraction-train", "(0, 1]"),
        ({"min-train-nodes": 30}, "min-train-nodes", "1..20"),
        ({"num-partitions": "many"}, "num-partitions", "integer"),
        ({"learning-rate": 0.1}, "learning-rate", "accepted keys"),
    ],
)
def test_bad_values_name_the_key(values, key, accepted):
    with pytest.raises(ConfigError) as err:
        load_config(values)
    message = str(err.value)
    assert key in message and accepted in message and "\n" not in message


@pytest.mark.parametrize(
    "setting, key",
    [
        ("dataset=imagenet", "dataset"),
        ("strategy=best", "strategy"),
        ("dirichlet-alpha=0", "dirichlet-alpha"),
        ("fraction-train=2", "fraction-train"),
        ("min-train-nodes=50", "min-train-nodes"),
        ("sfedca-dp-epsilon=0", "sfedca-dp-epsilon"),
    ],
)
def test_cli_reports_bad_config_in_one_line(setting, key):
    # in this process (a subprocess costs 8 s of the suite each): the same command; the
    # exit code and one line of a real process are held by the first case
    if setting.startswith("dataset="):
        proc = subprocess.run([sys.executable, "-m", "experiments", "run", "--set", setting],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
        code, stderr, stdout = proc.returncode, proc.stderr, proc.stdout
    else:
        from typer.testing import CliRunner

        from experiments.cli import app

        result = CliRunner().invoke(app, ["run", "--set", setting])
        assert isinstance(result.exception, SystemExit), result.exception  # no exception escaped
        code, stderr, stdout = result.exit_code, result.stderr, result.stdout
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:") and key in lines[0]
    assert "Traceback" not in stderr + stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_asking_for_a_gpu_without_one_is_refused_before_ray_waits_for_it():
    from experiments.simulation import resolve

    with pytest.raises(ConfigError, match=r"num-gpus=0.5 but torch sees no GPU here; accepted: num-gpus=0"):
        resolve({"num-gpus": 0.5})


@pytest.mark.parametrize("values, message", [
    ({"workload": "dda"}, "workload='dda' needs dda-student="),
    ({"workload": "esvae", "dda-distill-every": 2}, "accepted: classify, dda"),
    ({"esvae-mmd-kernel": "cubic"}, "accepted: rbf, linear"),
    ({"dda-strength": 0}, "dda-strength=0.0 is out of range"),
    ({"dda-threshold": 1.5}, "dda-threshold=1.5 is out of range"),
])
def test_workload_keys_are_checked(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(values)


def bad_run_folder(tmp_path, checkpoint: bytes | None) -> str:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text('{"num-partitions": 20}')
    if checkpoint is not None:
        (folder / "checkpoint.pt").write_bytes(checkpoint)
    return str(folder)


# every command: (arguments, what the one-line message must name); {run} is a run folder
BAD_COMMANDS = [
    (["run", "--set", "num-partitions=many"], "num-partitions='many' is not an integer"),
    (["run", "--set", "round-timeout=0"], "round-timeout=0.0 is out of range"),
    (["run", "--set", "fault-crash=0.8", "--set", "fault-corrupt=0.5"], "fault-crash + fault-straggle + fault-corrupt"),
    (["run", "--set", "min-valid-replies=9"], "min-valid-replies=9 is out of range"),
    (["run", "--set", "learning-rate=0.1"], "unknown config key 'learning-rate'"),
    (["run", "--set", "strategy=best"], "strategy='best' is unknown; accepted:"),
    (["run", "--set", "workload=gan"], "workload='gan' is unknown; accepted:"),
    (["run", "--set", "dataset=imagenet"], "dataset='imagenet' is unknown; accepted:"),
    (["run", "--set", "dataset=mnist", "--set", "data-dir=/nonexistent"], "no MNIST IDX files"),
    (["run", "--set", "workload=dda", "--set", "dda-student=/nonexistent/student.pt"], "/nonexistent/student.pt"),
    (["run", "--set", "resume=/nonexistent/run"], "resume='/nonexistent/run' holds no checkpoint.pt"),
    (["run", "--set", "noequals"], "--set 'noequals' is not key=value"),
    (["resume", "/nonexistent/run"], "'/nonexistent/run' holds no config.json"),
    (["resume", "{empty}"], "holds no checkpoint.pt"),
    (["resume", "{garbage}"], "checkpoint.pt cannot be read"),
    (["compare", "/nonexistent.toml"], "/nonexistent.toml"),
    (["esvae", "train", "--model", "gan"], "--model 'gan' is unknown; accepted:"),
    (["train-teacher", "--dataset", "imagenet"], "imagenet"),
    (["dda", "distill", "--teacher", "/nonexistent/teacher.pt"], "/nonexistent/teacher.pt"),
]


@pytest.mark.parametrize("args, message", BAD_COMMANDS, ids=[" ".join(a) for a, _ in BAD_COMMANDS])
def test_every_command_answers_bad_input_in_one_line(tmp_path, args, message):
    from typer.testing import CliRunner

    from experiments.cli import app

    folders = {"{empty}": lambda: bad_run_folder(tmp_path, None),
               "{garbage}": lambda: bad_run_folder(tmp_path, b"not a checkpoint")}
    args = [folders[a]() if a in folders else a for a in args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
    assert "Traceback" not in result.output
