"""The `spikefed` command line."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from server.config import DEFAULTS, ConfigError

app = typer.Typer(help="SpikeFed: federated learning for spiking neural networks on Flower.",
                  no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


def say(label: str, message: str) -> None:
    """One red-labelled line on stderr; the message is printed as is (no rich markup)."""
    console.print(f"[red]{label}:[/red] {escape(message)}", highlight=False, soft_wrap=True)


@contextmanager
def config_errors() -> Iterator[None]:
    """A ConfigError inside becomes one red line on stderr and exit code 2, no traceback."""
    try:
        yield
    except ConfigError as err:
        say("error", str(err))
        raise typer.Exit(2) from None


def check_option(option: str, value: str, accepted: Sequence[str]) -> None:
    if value not in accepted:
        raise ConfigError(f"{option} {value!r} is unknown; accepted: {', '.join(accepted)}")


def check_data(cfg) -> None:
    """The dataset's files are readable (ConfigError naming data-dir if not)."""
    from data import split_of

    split_of(cfg)


def progress(*extra_columns):
    """A rich progress display on stderr: description, bar, n/total, elapsed time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    *extra_columns, console=console)


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """``["key=value", ...]`` -> dict; values are typed later by the config loader."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r} is not key=value")
        out[key.strip()] = value.strip().strip('"')
    return out


Verbose = Annotated[bool, typer.Option("--verbose", help="Flower's and Ray's output on the console, not in the run's "
                                       "log.txt")]


@app.callback()
def main() -> None:
    """SpikeFed commands."""


@app.command()
def run(
    set_: Annotated[list[str], typer.Option("--set", help="Override a run-config key (`spikefed config` lists them): "
                                            "--set key=value")] = [],
    verbose: Verbose = False,
) -> None:
    """Run one federated simulation (Flower + Ray) and print where its results are."""
    with config_errors():
        overrides = parse_sets(set_)
    simulate_and_report(overrides, verbose)


@app.command()
def resume(
    run_folder: Annotated[Path, typer.Argument(help="A run's results folder, e.g. results/<run>")],
    set_: Annotated[list[str], typer.Option("--set", help="num-server-rounds=N to run longer")] = [],
    verbose: Verbose = False,
) -> None:
    """Continue a simulation from its last checkpoint (after a crash, kill or Ctrl-C): the
    same config, from the round after the last complete one."""
    with config_errors():
        recorded = run_folder / "config.json"
        if not recorded.is_file():
            raise ConfigError(f"{str(run_folder)!r} holds no config.json; accepted: a run folder under results/")
        overrides = {**json.loads(recorded.read_text()), **parse_sets(set_), "resume": str(run_folder)}
    simulate_and_report(overrides, verbose)


@app.command()
def config(
    write: Annotated[bool, typer.Option("--write", help="Regenerate pyproject.toml's [tool.flwr.app.config] and the "
                                        "key table of docs/configuration.md from the declarations")] = False,
) -> None:
    """List every run-config key: its default and its meaning (from the keys' declarations)."""
    from rich.table import Table

    from experiments.keys import ROOT, rendered
    from server.config import KEYS

    if write:
        if not (ROOT / "pyproject.toml").is_file():
            say("error", f"--write needs a checkout of SpikeFed; {ROOT} holds no pyproject.toml")
            raise typer.Exit(2)
        for path, text in rendered().items():
            if path.read_text() != text:
                path.write_text(text)
                print(f"wrote {path}")
        return
    table = Table("key", "default", "meaning", box=None)
    for name, key in KEYS.items():
        table.add_row(name, repr(key.default), key.meaning.replace("`", ""))
    Console().print(table)


def simulate_and_report(overrides: dict, verbose: bool = False) -> None:
    """Validate, simulate, print the results folder and the final metric. Flower's output
    goes to the run's log.txt and the console shows one live line (``verbose``: Flower's
    output on the console instead, as a grid's cells run)."""
    from rich.progress import TextColumn, TimeRemainingColumn

    from experiments.live import RoundLine, flower_output_to
    from experiments.simulation import read_rounds, resolve, simulate
    from models import get_workload
    from server.results import run_dir

    with config_errors():
        launch = resolve(overrides)
    start = time.perf_counter()
    log = run_dir(launch.cfg) / "log.txt"
    if verbose:
        directory = simulate(launch)
    else:
        with flower_output_to(log), progress(TimeRemainingColumn(), TextColumn("{task.fields[info]}")) as bars:
            directory = simulate(launch, [RoundLine(bars, launch.cfg, launch.done)])
    rows = read_rounds(directory)
    if not rows:
        say("error", f"the run wrote no rounds; see {'the log above' if verbose else log}")
        raise typer.Exit(1)
    final = rows[-1]
    print(f"results: {directory.resolve()}")
    headline = [f"test_{name}" for name in get_workload(launch.cfg.workload).METRICS]  # the workload's, first first
    metric = next((m for m in headline if final.get(m, "") != ""), None)
    value = f"{float(final[metric]):.4f}" if metric else "not measured"
    print(f"final {(metric or headline[0]).replace('_', ' ')}: {value} after {final['round']} rounds "
          f"({time.perf_counter() - start:.0f} s)")


def print_summary(experiment) -> None:
    """The grid's summary as a table on stdout, one row per strategy and partition (means over
    seeds), and the path of each partition's curves."""
    import pandas as pd
    from rich.table import Table

    path = experiment.directory / "summary.csv"
    summary = pd.read_csv(path) if path.stat().st_size > 1 else pd.DataFrame()
    if summary.empty:
        return
    metric, several = experiment.metric, summary["partition"].nunique() > 1
    table = Table(box=None, title=f"{experiment.name}: {metric} (target {experiment.target:g}), mean over "
                                  f"{summary['seeds'].max()} seed(s); clients' local trainings and spiking energy")
    for name in (["partition"] if several else []) + ["strategy"]:  # names in full, the figures wrap instead
        table.add_column(name, no_wrap=True, min_width=max(len(str(v)) for v in summary[name]))
    clock = "sim_seconds_mean" in summary and summary["sim_seconds_mean"].notna().any()  # devices on
    for name in ("final", "last 10", "rounds to target", *(["sim s to target"] if clock else []), "trained",
                 "mJ to target", "mJ in all"):
        table.add_column(name)
    for row in summary.itertuples():
        rounds, energy = row.rounds_to_target_median, row.energy_to_target_j_mean
        seconds = row.sim_seconds_to_target_mean if clock else 0.0
        table.add_row(*([row.partition] if several else []), row.strategy, f"{getattr(row, f'final_{metric}_mean'):.3f}",
                      f"{getattr(row, f'last10_{metric}_mean'):.3f}", "never" if rounds == float("inf") else f"{rounds:g}",
                      *([("-" if seconds != seconds else f"{seconds:.0f}")] if clock else []),
                      f"{row.client_updates_mean:.0f}", "-" if energy != energy else f"{energy * 1e3:.2f}",
                      f"{row.energy_snn_j_mean * 1e3:.2f}")
    Console().print(table)
    for partition in sorted(set(summary["partition"])):
        print(f"curves: {(experiment.directory / f'{metric}-{partition}.png').resolve()}")


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


@app.command()
def compare(
    config: Annotated[Path, typer.Argument(
        help="Experiment TOML, or the name of one shipped in experiments/configs/ (smoke, sfedca_digits, ...)")],
    set_: Annotated[list[str], typer.Option("--set", help="Override a key: a top-level experiment key "
                                            "(strategies, seeds, metric, target, name) or a [run] key")] = [],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cells and whether each is complete; run nothing")] = False,
) -> None:
    """Run a grid of simulations (strategies x partitions x seeds) and write tables, plots
    and report.md. Re-running the same command skips complete cells."""
    from experiments.compare import is_complete, run_experiment
    from experiments.grid import load_experiment
    from experiments.report import write_report
    from experiments.simulation import resolve

    with config_errors():
        experiment = load_experiment(config, parse_sets(set_))
        cells = experiment.cells()
        if not dry_run:
            for cell in cells:  # the data and partitions too, before the first cell starts
                resolve(cell.config.to_mapping())
    done = [c for c in cells if is_complete(c)]
    if dry_run:
        for cell in cells:
            print(f"{cell.id}\t{'complete' if cell in done else 'to run'}")
        print(f"{len(cells)} cells, {len(done)} complete; results in {experiment.directory}")
        return
    if done:
        console.print(f"resuming: {len(done)} of {len(cells)} cells already complete, skipped")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the cell in flight too
    try:
        with progress() as bars:
            failures = run_experiment(experiment, bars)
    except KeyboardInterrupt:
        console.print("interrupted: complete cells are kept; run the same command again to finish")
        raise typer.Exit(130) from None
    command = " ".join(["spikefed compare", str(config), *(f"--set {s}" for s in set_)])
    report = write_report(experiment, command)
    for failure in failures:
        say("failed", failure)
    print_summary(experiment)
    print(f"results: {experiment.directory.resolve()}")
    print(f"report: {report.resolve()}")
    if failures:
        raise typer.Exit(1)


Dataset = Annotated[str, typer.Option(help="digits (embedded), mnist, fashion-mnist or cifar10")]
DataDir = Annotated[str, typer.Option(help="folder with torchvision's dataset files")]
NumGpus = Annotated[float, typer.Option(help="> 0: train on CUDA when torch sees a GPU (said when it does not)")]

esvae_app = typer.Typer(help="ESVAE (spiking VAE with a Poisson latent) trained centrally.", no_args_is_help=True)
app.add_typer(esvae_app, name="esvae")


@esvae_app.command("train")
def esvae_train(
    dataset: Dataset = DEFAULTS["dataset"],
    model: Annotated[str, typer.Option(help="esvae; fsvae (autoregressive Bernoulli latent, ESVAE's spiking "
                                                  "baseline); ann: the same-shape ANN VAE with a Gaussian latent")] = "esvae",
    epochs: Annotated[int, typer.Option(help="training epochs")] = 30,
    timesteps: Annotated[int, typer.Option(help="T, simulation steps")] = 16,
    latent_dim: Annotated[int, typer.Option(help="latent neurons")] = 32,
    batch_size: Annotated[int, typer.Option(help="batch size")] = 64,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (ESVAE's prior layer gets 10x)")] = 0.003,
    mmd_lambda: Annotated[float, typer.Option(help="weight of MMD(r_q, r_p)")] = 0.001,
    mmd_kernel: Annotated[str, typer.Option(help="rbf or linear")] = "rbf",
    seed: Annotated[int, typer.Option(help="seed of init, batches, sampling")] = DEFAULTS["seed"],
    data_dir: DataDir = DEFAULTS["data-dir"],
    num_gpus: NumGpus = 0.0,
    out: Annotated[Path | None, typer.Option(help="output folder [default: results/esvae-<model>-<dataset>-seed<seed>]")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Another run-config key, e.g. image-size=32, "
                                                         "max-train-samples=10000, esvae-weight-decay=0")] = [],
) -> None:
    """Train ESVAE or an ANN VAE; write checkpoint.pt, metrics.json and PNG grids."""
    from rich.progress import TextColumn

    from experiments.esvae import MODELS, esvae_config, train_central

    with config_errors():
        check_option("--model", model, MODELS)
        cfg = esvae_config(dataset, data_dir, epochs, timesteps, latent_dim, batch_size, lr, mmd_lambda,
                           mmd_kernel, seed, num_gpus, parse_sets(set_))
        check_data(cfg)
    out = out or Path("results") / f"esvae-{model}-{dataset}-seed{seed}"
    with progress(TextColumn("loss {task.fields[loss]}")) as bars:
        task = bars.add_task(f"{model} epochs", total=epochs, loss="-")
        metrics = train_central(model, cfg, out, lambda e, loss: bars.update(task, completed=e + 1,
                                                                              loss=f"{loss:.4f}"))
    print(f"results: {out.resolve()}")
    print(f"test MSE {metrics['test_mse']:.4f}, FAD of samples {metrics['fad_samples']:.2f}, Frechet distance of "
          f"samples (classifier features) {metrics['frechet_samples']:.3f}, {metrics['train_seconds']:.0f} s")


@esvae_app.command("report")
def esvae_report(
    runs: Annotated[list[Path], typer.Argument(help="folders written by `spikefed esvae train`")],
    out: Annotated[Path, typer.Option(help="where esvae.csv, esvae.md and curves.png go")] = Path("results/esvae"),
) -> None:
    """The runs side by side: a CSV, a Markdown table and the training curves."""
    from experiments.esvae import report

    with config_errors():
        report(runs, out)
    print(f"results: {out.resolve()}")


@app.command("train-teacher")
def train_teacher_cmd(
    dataset: Dataset = DEFAULTS["dataset"],
    kind: Annotated[str, typer.Option(help="ann (AnnCNN, 32/64 channels) or resnet (AnnResNet-14)")] = "ann",
    epochs: Annotated[int, typer.Option(help="training epochs")] = 15,
    seed: Annotated[int, typer.Option(help="seed of init and batches")] = DEFAULTS["seed"],
    data_dir: DataDir = DEFAULTS["data-dir"],
    num_gpus: NumGpus = 0.0,
    set_: Annotated[list[str], typer.Option("--set", help="shrink the data: image-size, max-train-samples, "
                                                         "max-test-samples, e.g. --set image-size=14")] = [],
    out: Annotated[Path | None, typer.Option(help="output folder [default: results/teacher-<dataset>-seed<seed>]")] = None,
) -> None:
    """Train the ANN teacher that `spikefed dda distill` distils from; writes teacher.pt."""
    from experiments.dda import TEACHERS, train_teacher
    from server.config import load_config

    with config_errors():
        check_option("--kind", kind, tuple(TEACHERS))
        cfg = load_config({"dataset": dataset, "data-dir": data_dir, "seed": seed, "batch-size": 64,
                           "num-gpus": num_gpus, **checked_sets(set_, DATA_SETS, dda=False)})
        check_data(cfg)
    out = out or Path("results") / f"teacher-{dataset}-seed{seed}"
    with console.status(f"training the teacher on {dataset} for {epochs} epochs"):
        _, metrics = train_teacher(cfg, out, epochs, kind)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"teacher: {(out / 'teacher.pt').resolve()}")
    print(f"teacher test accuracy: {metrics['test_accuracy']:.4f}")


DATA_SETS = ("image-size", "max-train-samples", "max-test-samples")  # keys train-teacher's --set takes
DDA_SETS = ("timesteps", "batch-size", "data-dir", "num-gpus", "neuron-backend", *DATA_SETS)  # and dda-*
DDA_BATCH = 128  # the authors' student batch (GitHub SLGSP/DDA scripts/dda)


def checked_sets(pairs: list[str], accepted: Sequence[str], dda: bool, option: str = "--set") -> dict[str, str]:
    """``key=value`` pairs of ``option`` limited to ``accepted`` keys (and ``dda-*`` when ``dda``)."""
    sets = parse_sets(pairs)
    bad = [k for k in sets if not (dda and k.startswith("dda-")) and k not in accepted]
    if bad:
        raise ConfigError(f"{option} {bad[0]}=... is not accepted here; accepted: "
                          f"{'dda-*, ' if dda else ''}{', '.join(accepted)}")
    return sets


dda_app = typer.Typer(help="DDA: data-free distillation with diffusion augmentation.", no_args_is_help=True)
app.add_typer(dda_app, name="dda")


def epoch_bar(bars, total: int, label: str):
    """A progress task over ``total`` distillation epochs; returns the ``on_epoch`` callback."""
    task = bars.add_task(f"{label}: synthesis + distillation epochs", total=total, accuracy="")

    def on_epoch(row: dict) -> None:
        score = "" if row["accuracy"] is None else f"accuracy {row['accuracy']:.3f}, "
        bars.update(task, completed=row["epoch"], accuracy=f"{score}pool {row['pool']}")
    return on_epoch


@dda_app.command("distill")
def dda_distill(
    teacher: Annotated[str, typer.Option(help="teacher.pt from `spikefed train-teacher`")],
    student: Annotated[str, typer.Option(help="snn (the classify workload's spiking CNN) or ann")] = "snn",
    mode: Annotated[str, typer.Option(help="dda, no-filter (all variants), synthetic (no diffusion), "
                                           "or real (the same schedule on the real training data: the upper bound)")] = "dda",
    dataset: Annotated[str, typer.Option(help="the teacher's dataset (for the test split)")] = DEFAULTS["dataset"],
    timesteps: Annotated[int, typer.Option(help="T of a spiking student")] = DEFAULTS["timesteps"],
    seed: Annotated[int, typer.Option(help="seed of every stage")] = DEFAULTS["seed"],
    data_dir: DataDir = DEFAULTS["data-dir"],
    num_gpus: NumGpus = 0.0,
    set_: Annotated[list[str], typer.Option("--set", help="any dda-* key (docs/configuration.md) or image-size, "
                                                         "max-train-samples, max-test-samples, batch-size, "
                                                         "e.g. --set dda-epochs=10")] = [],
    out: Annotated[Path | None, typer.Option(help="output folder [default: results/dda-<mode>-<student>-seed<seed>]")] = None,
) -> None:
    """Distil the teacher into a student without its training data; writes student.pt,
    metrics.json (final and best accuracy), epochs.csv and dda.png (synthetic images,
    variants, kept vs dropped)."""
    from experiments.dda import distill_student, load_teacher
    from models.dda.networks import STUDENTS
    from models.dda.pipeline import MODES
    from server.config import load_config

    with config_errors():
        check_option("--student", student, STUDENTS)
        check_option("--mode", mode, MODES)
        cfg = load_config({"dataset": dataset, "data-dir": data_dir, "seed": seed, "timesteps": timesteps,
                           "batch-size": DDA_BATCH, "num-gpus": num_gpus, **checked_sets(set_, DDA_SETS, dda=True)})
        teacher_model = load_teacher(teacher, cfg)
    out = out or Path("results") / f"dda-{mode}-{student}-seed{seed}"
    from rich.progress import TextColumn

    with progress(TextColumn("{task.fields[accuracy]}")) as bars:
        metrics = distill_student(teacher_model, student, mode, cfg, out, epoch_bar(bars, cfg.dda_epochs, mode))
    print(f"results: {out.resolve()}")
    kept = f", kept {metrics['kept_fraction']:.0%} of variants" if "kept_fraction" in metrics else ""
    print(f"student test accuracy {metrics['final_accuracy']:.4f} at the last epoch, best "
          f"{metrics['best_accuracy']:.4f} (epoch {metrics['best_epoch']}); teacher {metrics['teacher_accuracy']:.4f}"
          f"{kept}; {metrics['total_seconds']:.0f} s")


@dda_app.command("ablation")
def dda_ablation(
    dataset: Dataset = DEFAULTS["dataset"],
    seeds: Annotated[str, typer.Option(help="comma-separated seeds; each trains its own teacher")] = "0,1",
    variant: Annotated[list[str], typer.Option(help="a spiking student to distil: 'defaults', or comma-separated "
                                                    "key=value of dda-* keys and mode (real, synthetic, "
                                                    "no-filter, dda); repeat it; the first is the reference")] = [],
    teacher_epochs: Annotated[int, typer.Option(help="epochs of each seed's teacher")] = 15,
    teacher_kind: Annotated[str, typer.Option(help="ann (AnnCNN) or resnet (AnnResNet-14)")] = "ann",
    set_: Annotated[list[str], typer.Option("--set", help="keys every variant shares, e.g. --set dda-epochs=8")] = [],
    out: Annotated[Path | None, typer.Option(help="output folder [default: results/dda-ablation-<dataset>]")] = None,
) -> None:
    """One spiking student per variant, per seed, from the seed's teacher; writes
    ablation.csv and ablation.md (mean ± std, gain over the first variant)."""
    from experiments.dda import TEACHERS, ablation
    from models.dda.pipeline import MODES
    from server.config import load_config

    with config_errors():
        check_option("--teacher-kind", teacher_kind, tuple(TEACHERS))
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds {seeds!r} is not a comma-separated list of integers") from None
        cfg = load_config({"dataset": dataset, "batch-size": DDA_BATCH, **checked_sets(set_, DDA_SETS, dda=True)})
        variants = []
        for text in variant or ["defaults"]:
            changes = {} if text == "defaults" else checked_sets(text.split(","), ("mode",), dda=True, option="--variant")
            mode = changes.pop("mode", "dda")
            check_option("--variant mode", mode, MODES)
            load_config({**cfg.to_mapping(), **changes})
            variants.append((text, mode, changes))
        check_data(cfg)
    out = out or Path("results") / f"dda-ablation-{dataset}"
    with progress() as bars:
        task = bars.add_task("students (seeds x variants)", total=len(seed_list) * len(variants))
        ablation(cfg, seed_list, teacher_epochs, out, tuple(variants), lambda: bars.advance(task), teacher_kind)
    print(f"results: {out.resolve()}")
    print((out / "ablation.md").read_text())


@dda_app.command("merge")
def dda_merge(
    folders: Annotated[list[Path], typer.Argument(help="folders written by `spikefed dda ablation`")],
    out: Annotated[Path, typer.Option(help="folder for the merged ablation.csv and ablation.md")],
) -> None:
    """One table from several ablation runs (e.g. one per seed, run side by side)."""
    from experiments.dda import merge_ablations

    with config_errors():
        for folder in folders:
            if not (folder / "ablation.csv").exists():
                raise ConfigError(f"{folder} holds no ablation.csv; accepted: folders of `spikefed dda ablation`")
    merge_ablations(folders, out)
    print(f"results: {out.resolve()}")
    print((out / "ablation.md").read_text())


BENCHMARKS = ("orchestration", "delivery", "scale", "selection", "balance", "spiking")


@app.command("probe-statistics")
def probe_statistics(
    rounds: Annotated[str, typer.Option(help="comma-separated rounds at which every client is probed (0: the initial model)")] = "0,1,5,10,20,40",
    epsilons: Annotated[str, typer.Option(help="comma-separated epsilons of the local DP compared (one release)")] = "1,4,16",
    out: Annotated[Path, typer.Option(help="folder for probe.csv, probe-l1.md, probe-cosine.md")] = Path("results/probe"),
    set_: Annotated[list[str], typer.Option("--set", help="a run-config key: dataset, partitioner, seed...")] = [],
) -> None:
    """How close SFedCA's before- and after-training statistic (and its local-DP release)
    is to each client's label histogram, by round, under random selection (docs/privacy.md)."""
    from experiments.statistics_probe import probe, write
    from experiments.simulation import resolve

    with config_errors():
        cfg = resolve(parse_sets(set_)).cfg
        probed = sorted({int(r) for r in rounds.split(",")})
        dp = [float(e) for e in epsilons.split(",") if e]
        if probed[0] < 0 or any(e <= 0 for e in dp):
            raise ConfigError(f"--rounds {rounds} / --epsilons {epsilons}; accepted: rounds >= 0, epsilons > 0")
    frame = probe(cfg, probed, dp)
    write(frame, out)
    say("results", str(out))


@app.command()
def bench(
    only: Annotated[list[str], typer.Option(help=f"run only these: {', '.join(BENCHMARKS)}")] = [],
    smoke: Annotated[bool, typer.Option("--smoke", help="tiny sizes: checks that every benchmark runs, times mean nothing")] = False,
    out: Annotated[Path, typer.Option(help="folder for benchmarks.json and benchmarks.md")] = Path("results/bench"),
) -> None:
    """Measure orchestration overhead, scale, selection cost and spiking compute; print
    the tables and write them to OUT."""
    from tabulate import tabulate

    from experiments import bench as b

    with config_errors():
        for name in only:
            check_option("--only", name, BENCHMARKS)
    chosen = only or list(BENCHMARKS)
    run = {"dataset": "synthetic", "partitioner": "iid", "local-epochs": 1, "num-cpus": 2.0, "strategy": "random"}
    if smoke:
        jobs = {
            "orchestration": lambda: [b.orchestration({**run, "dataset": "digits", "num-partitions": 10,
                                                       "fraction-train": 0.2, "num-server-rounds": 2}, repeats=1)],
            "scale": lambda: [b.scale({**run, "dataset": "digits", "num-cpus": 1.0, "num-partitions": 20,
                                       "fraction-train": 0.1, "num-server-rounds": 2})],
            "selection": lambda: b.selection(200, 0.1, repeats=2),
            "delivery": lambda: b.delivery([200], messages=20, sample=50),
            "balance": lambda: b.balance(200, 100, seeds=1),
            "spiking": lambda: b.spiking([1, 2], batch_size=8, image_size=8, repeats=2),
        }
    else:
        jobs = {
            # one actor with the loop's 2 threads (the goal's like-for-like), then 2 one-thread actors (the default)
            "orchestration": lambda: [b.orchestration({**run, "num-cpus": n, "num-partitions": 100, "fraction-train": 0.1,
                                                       "num-server-rounds": 6}, repeats=r) for n, r in ((2.0, 2), (1.0, 1))],
            # 1,000 clients per round at most; 100,000 clients need more than synthetic's 60,000 images
            "scale": lambda: [b.scale({**run, "num-cpus": 1.0, "num-partitions": n, "fraction-train": min(0.1, 1000 / n),
                                       "num-server-rounds": 3, "dataset": "synthetic-1m" if n > 10_000 else "synthetic"})
                              for n in (100, 1000, 10_000, 100_000)],
            "selection": lambda: b.selection(10_000, 0.1, repeats=20),
            "delivery": lambda: b.delivery([1000, 10_000, 100_000], messages=1000),
            "balance": lambda: b.balance(2000, 1000, seeds=3),
            "spiking": lambda: b.spiking([1, 4, 8], batch_size=32, image_size=8, repeats=30),
        }
    results = {}
    out.mkdir(parents=True, exist_ok=True)
    with progress() as bar:
        task = bar.add_task("benchmarks", total=len(chosen))
        for name in chosen:
            bar.update(task, description=name)
            results[name] = jobs[name]()
            bar.advance(task)
    tables = "\n\n".join(f"### {name}\n\n" + tabulate(rows, headers="keys", tablefmt="github", floatfmt=".4g")
                         for name, rows in results.items())
    (out / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "benchmarks.md").write_text(tables + "\n")
    print(tables)
    print(f"\nwritten: {out / 'benchmarks.md'}, {out / 'benchmarks.json'}")
