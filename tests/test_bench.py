"""`spikefed bench --smoke`: every benchmark runs for real at tiny sizes and the tables
come out (times are not asserted: benchmarks are not unit tests)."""

import json

import pytest
from typer.testing import CliRunner

from experiments.cli import BENCHMARKS, app


@pytest.mark.slow
def test_bench_smoke_writes_every_table(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--smoke", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "benchmarks.json").read_text())
    assert list(results) == list(BENCHMARKS)
    assert results["orchestration"][0]["ratio"] > 0 and results["scale"][0]["peak_rss_gib"] > 0
    assert results["delivery"][0]["delivered"] == results["delivery"][0]["messages"] > 0
    assert {r["strategy"] for r in results["selection"]} >= {"sfedca", "random"}
    assert [r["T"] for r in results["spiking"]] == [1, 1, 1, 2, 2]
    table = (tmp_path / "benchmarks.md").read_text()
    assert all(f"### {name}" in table for name in BENCHMARKS)


def test_unknown_benchmark_is_refused_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--only", "speed", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--only 'speed' is unknown; accepted: orchestration" in result.output
