"""An experiment's tables and plots: runs.csv, summary.csv, PNGs and report.md."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.compare import DONE, cell_dir, is_complete  # noqa: E402
from experiments.grid import Experiment  # noqa: E402
from server.config import clients_per_round  # noqa: E402
from server.results import test_columns  # noqa: E402


def run_columns() -> list[str]:
    """The columns of runs.csv: rounds.csv's, less the per-client detail, with the cell's labels first."""
    return ["strategy", "partition", "seed", "round", *test_columns(), "train_loss", "selected_clients",
            "client_updates", "rejected_clients", "firing_rate", "uplink_bytes", "downlink_bytes", "energy_snn_j",
            "energy_ann_j", "seconds", "sim_seconds", "dp_statistics_epsilon", "dp_model_epsilon"]


# per-cell totals over the run, averaged over seeds in the summary
TOTALS = ["client_updates", "uplink_bytes", "downlink_bytes", "energy_snn_j", "energy_ann_j"]


def rounds_to_target(values: Sequence[float], target: float, higher_is_better: bool = True) -> int | None:
    """The first round (1-based) whose value is >= ``target`` (<= when lower is better);
    None if never reached."""
    for i, value in enumerate(values, start=1):
        if (value >= target) if higher_is_better else (value <= target):
            return i
    return None


def collect_runs(experiment: Experiment) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every round of every complete cell (runs), and one row per cell (its final figures)."""
    rounds, cells = [], []
    for cell in experiment.cells():
        if not is_complete(cell):
            continue
        directory = cell_dir(cell)
        frame = pd.read_csv(directory / "rounds.csv", dtype={"selected_clients": str, "rejected_clients": str})
        frame["strategy"] = cell.strategy  # the grid's label: a variant's, not its registry name
        frame.insert(1, "partition", cell.partition)
        frame.insert(2, "seed", cell.seed)
        rounds.append(frame.reindex(columns=run_columns()))
        values = frame[experiment.column].to_numpy(dtype=float)
        m = experiment.metric
        reached = rounds_to_target(values, experiment.target, experiment.higher_is_better)
        energy = frame["energy_snn_j"].cumsum().to_numpy(dtype=float) if "energy_snn_j" in frame else None
        traffic = (frame["uplink_bytes"] + frame["downlink_bytes"]).cumsum().to_numpy(dtype=float)
        # devices on: the simulated clock (strategies/devices.py)
        clock = (frame["sim_seconds"].cumsum().to_numpy(dtype=float)
                 if "sim_seconds" in frame and frame["sim_seconds"].notna().all() else None)
        cells.append({
            "strategy": cell.strategy, "partition": cell.partition, "seed": cell.seed,
            f"final_{m}": values[-1], f"last10_{m}": values[-10:].mean(),
            f"best_{m}": values.max() if experiment.higher_is_better else values.min(),
            "rounds_to_target": reached,
            **{key: frame[key].sum() if key in frame else np.nan for key in TOTALS},
            # the clients' spiking energy spent until the target was first reached
            "energy_to_target_j": energy[reached - 1] if reached and energy is not None else np.nan,
            "bytes_to_target": traffic[reached - 1] if reached else np.nan,  # uplink + downlink
            "sim_seconds": clock[-1] if clock is not None else np.nan,
            "sim_seconds_to_target": clock[reached - 1] if reached and clock is not None else np.nan,
            "wall_seconds": json.loads((directory / DONE).read_text())["wall_seconds"],
        })
    runs = pd.concat(rounds, ignore_index=True) if rounds else pd.DataFrame(columns=run_columns())
    return runs, pd.DataFrame(cells)


def summarise(cells: pd.DataFrame, metric: str = "accuracy", order: Sequence[str] = ()) -> pd.DataFrame:
    """Per strategy x partition: mean and std over seeds. Rounds to target averages the
    seeds that reached it (``reached`` says how many); blank when none did."""
    rows = []
    for (partition, strategy), group in cells.groupby(["partition", "strategy"], sort=False):
        reached = group["rounds_to_target"].dropna().astype(float)
        row = {"partition": partition, "strategy": strategy, "seeds": len(group)}
        for key in (f"final_{metric}", f"last10_{metric}", f"best_{metric}"):
            row[f"{key}_mean"] = group[key].mean()
            row[f"{key}_std"] = group[key].std(ddof=0)
        row["rounds_to_target_mean"] = reached.mean() if len(reached) else np.nan
        row["rounds_to_target_std"] = reached.std(ddof=0) if len(reached) else np.nan
        # a seed that never reached the target counts as beyond the run, so the median stays honest
        never = group["rounds_to_target"].isna().sum()
        row["rounds_to_target_median"] = (np.median(np.concatenate([reached, np.full(never, np.inf)]))
                                          if len(group) else np.nan)
        row["reached"] = f"{len(reached)}/{len(group)}"
        for key in TOTALS:
            row[f"{key}_mean"] = group[key].mean() if key in group else np.nan
        for key in ("energy_to_target_j", "bytes_to_target", "sim_seconds", "sim_seconds_to_target"):
            values = group[key].dropna() if key in group else pd.Series(dtype=float)
            row[f"{key}_mean"] = values.mean() if len(values) else np.nan
        row["wall_seconds_mean"] = group["wall_seconds"].mean()
        row["wall_seconds_std"] = group["wall_seconds"].std(ddof=0)
        rows.append(row)
    summary = pd.DataFrame(rows)
    if order and len(summary):
        rank = {s: i for i, s in enumerate(order)}
        summary = summary.sort_values("strategy", key=lambda s: s.map(rank), kind="stable")
        summary = summary.sort_values("partition", key=lambda s: s.map(
            {p: i for i, p in enumerate(dict.fromkeys(cells["partition"]))}), kind="stable")
    return summary.reset_index(drop=True)


def plot_curves(runs: pd.DataFrame, column: str, partition: str, strategies: Sequence[str], path: Path) -> None:
    """``column`` (e.g. test_accuracy) vs round for one partition setting: mean over seeds, shaded +-1 std."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for strategy in strategies:
        frame = runs[(runs["partition"] == partition) & (runs["strategy"] == strategy)]
        if frame.empty:
            continue
        stats = frame.groupby("round")[column].agg(["mean", "std"]).fillna(0.0)
        ax.plot(stats.index, stats["mean"], label=strategy, linewidth=1.4)
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.2)
    label = column.replace("_", " ")
    ax.set(xlabel="round", ylabel=label, title=f"{partition}: {label} vs round (mean ± std over seeds)")
    if column == "test_accuracy":
        ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rounds_to_target(summary: pd.DataFrame, goal: str, strategies: Sequence[str], path: Path) -> None:
    """Grouped bars: rounds to reach the target per partition and strategy; 'never' when no seed did."""
    partitions = list(dict.fromkeys(summary["partition"]))
    strategies = [s for s in strategies if s in set(summary["strategy"])]  # those with a complete cell
    width = 0.8 / max(len(strategies), 1)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.6 * len(partitions)), 4.0))
    for i, strategy in enumerate(strategies):
        rows = summary[summary["strategy"] == strategy].set_index("partition").reindex(partitions)
        x = np.arange(len(partitions)) + (i - (len(strategies) - 1) / 2) * width
        heights = rows["rounds_to_target_mean"].to_numpy(dtype=float)
        bars = ax.bar(x, np.nan_to_num(heights), width, yerr=np.nan_to_num(rows["rounds_to_target_std"].to_numpy(dtype=float)),
                      label=strategy, capsize=2)
        for bar, height, reached in zip(bars, heights, rows["reached"]):
            done, total = reached.split("/")
            label = "never" if np.isnan(height) else (reached if done != total else "")
            if label:
                ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                            va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(np.arange(len(partitions)), partitions)
    ax.set(ylabel="rounds", title=f"rounds to reach {goal} (mean ± std over seeds that reached it)")
    ax.title.set_fontsize(9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt(mean: float, std: float, digits: int) -> str:
    return "" if np.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(summary: pd.DataFrame, metric: str) -> str:
    """The summary as a Markdown table, mean ± std over seeds."""
    digits = 3 if metric == "accuracy" else 4
    table = pd.DataFrame({
        "partition": summary["partition"],
        "strategy": summary["strategy"],
        **{f"{kind} {metric}": [fmt(m, s, digits) for m, s in zip(summary[f"{kind}_{metric}_mean"],
                                                                   summary[f"{kind}_{metric}_std"])]
           for kind in ("final", "last10", "best")},
        "rounds to target": [fmt(m, s, 1) or "never" for m, s in zip(summary["rounds_to_target_mean"],
                                                                      summary["rounds_to_target_std"])],
        "median rounds": [("never" if np.isinf(m) else f"{m:g}") for m in summary["rounds_to_target_median"]],
        "reached": summary["reached"],
        "client updates": summary["client_updates_mean"].round().astype(int),
        "uplink MB": (summary["uplink_bytes_mean"] / 1e6).round(2),
        "downlink MB": (summary["downlink_bytes_mean"] / 1e6).round(2),
        "energy SNN J": summary["energy_snn_j_mean"].round(3),
        "SNN J to target": summary["energy_to_target_j_mean"].round(4),
        "MB to target": (summary["bytes_to_target_mean"] / 1e6).round(2),
        "energy ANN J": summary["energy_ann_j_mean"].round(3),
        "wall s": summary["wall_seconds_mean"].round(1),
    })
    if summary["sim_seconds_mean"].notna().any():  # devices on: simulated time beside rounds
        table.insert(6, "sim s to target", summary["sim_seconds_to_target_mean"].round(1))
        table.insert(7, "sim s", summary["sim_seconds_mean"].round(1))
    return table.to_markdown(index=False)


def write_report(experiment: Experiment, command: str) -> Path:
    """Write runs.csv, summary.csv, the PNG plots and report.md; returns report.md's path."""
    out = experiment.directory
    out.mkdir(parents=True, exist_ok=True)
    runs, cells = collect_runs(experiment)
    runs.to_csv(out / "runs.csv", index=False)
    summary = summarise(cells, experiment.metric, experiment.strategies) if len(cells) else pd.DataFrame()
    summary.to_csv(out / "summary.csv", index=False)
    if summary.empty:
        return out / "summary.csv"
    plots = []
    for partition in experiment.partitions:
        if partition in set(summary["partition"]):
            name = f"{experiment.metric}-{partition}.png"
            plot_curves(runs, experiment.column, partition, experiment.strategies, out / name)
            plots.append((f"{experiment.column.replace('_', ' ').capitalize()} vs round, {partition}", name))
    goal = f"{experiment.column.replace('_', ' ')} {'>=' if experiment.higher_is_better else '<='} {experiment.target:g}"
    plot_rounds_to_target(summary, goal, experiment.strategies, out / "rounds-to-target.png")
    plots.append((f"Rounds to {goal}", "rounds-to-target.png"))
    done, total = len(cells), len(experiment.cells())
    cfg = experiment.cells()[0].config
    lines = [
        f"# {experiment.name}: client-selection strategies compared",
        "",
        f"Produced by `{command}`: {done} of {total} cells complete "
        f"({len(experiment.strategies)} strategies x {len(experiment.partitions)} partition settings, "
        f"seeds per setting in the table), dataset `{cfg.dataset}`, workload `{cfg.workload}`, "
        f"{cfg.num_partitions} clients, {clients_per_round(cfg)} aggregated per round, "
        f"{cfg.num_server_rounds} rounds, target {goal}.",
        "",
        "Mean ± std over seeds. *last10* is the mean over the last 10 rounds (the final round "
        "alone is noisy when the sampled clients change); *rounds to target* averages the seeds that reached the target "
        "(*reached*); *median rounds* is over all seeds, a seed that never reached it counting as "
        "infinite; *client updates* counts local trainings over the run (SFedCA trains a "
        "candidate set larger than the aggregated set); *uplink / downlink MB* are the serialised "
        "message contents over the run; *energy* is the clients' estimated energy of local training "
        "and inference over the run (spiking: synaptic operations x 0.9 pJ; the same-shape ANN: MACs "
        "x 4.6 pJ), and until the target was first reached (seeds that reached it); *MB to target*: uplink "
        "plus downlink until then; *wall s* includes "
        "Ray's start-up.",
        "",
        markdown_table(summary, experiment.metric),
        "",
    ]
    for title, name in plots:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"
